"""A detection interval (like DeepStream nvinfer's ``interval``): full-frame detection every N frames of a
stream, and between those, each known face carried to the next frame.

Why not just copy the boxes (DeepStream's way): the emotion network needs an *aligned* crop, and the
alignment comes from the eye and mouth keypoints; a stale box would crop a moving face off-centre. Two
ways of carrying are offered:

* ``flow`` (default, :mod:`edge.flow`): the face's own motion by sparse optical flow moves the last full
  detection's box and keypoints (~0.5 ms a face against ~4-5 ms for a full-range detection of a
  640x360 frame on the README's CPU);
* ``region``: a short-range BlazeFace pass on a square region of ``ROI_SCALE`` times the box side around
  each face (fresh keypoints and scores; ~1-2 ms a face).

Either notices when a face is lost (the flow fit fails, or the region holds no face): then the full
detector runs on that same frame. A doubtful face (score below ``min_carry_score``; the detector's
false positives score just above its threshold) is not carried until a full detection on the next frame
finds it again in place (false positives are one-frame blips, elsewhere each time), and a frame with no known
face gets a full detection, so an empty scene finds a newcomer at once. What users get still differs
from detecting every frame, and ``emostream bench`` measures by how much (frames with exactly one
face, label agreement): a face that *joins* others is found at the next full detection, up to N-1
frames late, and crops on carried frames come from moved rather than re-detected keypoints.

State is per stream (``frame.stream``) and follows the frame order of the caller, which is one
thread in the scheduler (:mod:`edge.multistream`), so no locking is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emostream.edge import flow
from emostream.edge.faces import FaceDetector, FaceDetectorError, Faces, _clip_boxes, _concat, _nms, box_iou
from emostream.streams import Frame

#: Side of the re-detection region, in box sides (the face fills about half of it, as short range likes).
ROI_SCALE = 2.0
#: Above this many faces one full-frame detection costs less than a region pass per face.
MAX_ROI_FACES = 3
#: Flow costs ~0.5 ms a face (5 faces of ~100 px in multi_face.jpg: 2.4 ms; a full-range detection of that
#: 1000x667 photo: 4.4 ms), so beyond this many a full detection is as cheap and also finds newcomers.
MAX_FLOW_FACES = 8
#: Faces scored below this are not carried until a second full detection finds them in the same place (the
#: next frame gets a full detection again): most false positives score just above the detection threshold and
#: last one frame, and must not be copied onto N frames; a real face that scores low (a crying face, a face in
#: shadow) is found again where it was, and is carried from then on.
MIN_CARRY_SCORE = 0.7
#: A doubtful face found again with at least this IoU to a known face of the previous frame is persistent.
PERSISTENT_IOU = 0.5
MAX_INTERVAL = 30


#: How faces are carried between full detections: ``flow`` (optical flow, :mod:`edge.flow`, default)
#: or ``region`` (a short-range BlazeFace pass around each face).
TRACKERS: tuple[str, ...] = ("flow", "region")


@dataclass
class _StreamState:
    since: int  # frames since the last full detection
    faces: Faces
    frame: np.ndarray | None = None  # the luma of the frame the faces were found on, for the flow tracker
    sure: np.ndarray | None = None  # per face: may be carried (confident, or found twice in place)


class IntervalDetector:
    """Full detection every ``interval`` frames per stream, faces carried (flow or region) in between."""

    def __init__(self, detector: FaceDetector, interval: int, tracker: str = "flow",
                 min_carry_score: float = MIN_CARRY_SCORE) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int) or not 1 <= interval <= MAX_INTERVAL:
            raise FaceDetectorError(f"detect interval must be an integer within 1..{MAX_INTERVAL}, got {interval!r}")
        if tracker not in TRACKERS:
            raise FaceDetectorError(f"unknown interval tracker {tracker!r}; known: {', '.join(TRACKERS)}")
        self.detector = detector
        self.interval = interval
        self.tracker = tracker
        self.min_carry_score = float(min_carry_score)
        self.roi: FaceDetector | None = None
        if interval > 1 and tracker == "region":
            self.roi = FaceDetector("short", min_score=detector.min_score, runtime=detector.runtime)
        self._state: dict[str, _StreamState] = {}
        self.full_detections = 0
        self.roi_detections = 0
        self.redetections = 0  # full detections forced by a face lost between intervals
        self.doubtful_detections = 0  # full detections forced by a face scored below min_carry_score

    def detect(self, rgb: np.ndarray, stream: str, index: int) -> Faces:
        """Faces of RGB frame ``index`` of ``stream`` (frames of a stream must come in order)."""
        return self.detect_frame(Frame(rgb, index, 0, stream))

    def detect_frame(self, frame: Frame) -> Faces:
        """Faces of ``frame`` (frames of a stream must come in order). RGB is asked of the frame only for a
        full detection (or a region pass); the flow between them works on its gray picture."""
        stream, index = frame.stream, frame.index
        if self.interval == 1:
            return self._full(frame)
        state = self._state.get(stream)
        if (state is None or index == 0 or state.since + 1 >= self.interval or len(state.faces) == 0
                or len(state.faces) > self.max_tracked):
            return self._full(frame)
        if state.sure is not None and not state.sure.all():
            # A doubtful face seen once is re-detected, not copied forward; `emostream bench` says how often.
            self.doubtful_detections += 1
            return self._full(frame)
        cur = None
        if self.tracker == "flow":
            prev, cur = state.frame, frame.luma[0]
            faces = flow.track_faces(prev, cur, state.faces) if prev is not None and prev.shape == cur.shape else None
            sure = state.sure
            if faces is not None:
                faces = _clip_boxes(faces, frame.width, frame.height)
                if len(faces) > 1:  # two carried faces that drifted onto one face become one
                    kept = np.sort(_nms(faces.boxes, faces.scores, 0.3))
                    faces = faces[kept]
                    sure = None if sure is None else sure[kept]
                self.roi_detections += len(faces)
        else:
            faces = self._track(frame.image, state.faces) if self.roi is not None else None
            sure = None if faces is None else faces.scores >= self.min_carry_score  # fresh region scores
        if faces is None:
            self.redetections += 1
            return self._full(frame)
        state.since += 1
        state.faces = faces
        state.sure = sure
        state.frame = cur
        return faces

    @property
    def max_tracked(self) -> int:
        """Flow follows many faces for little; region passes beyond a few cost more than one full detection."""
        return MAX_FLOW_FACES if self.tracker == "flow" else MAX_ROI_FACES

    def _full(self, frame: Frame) -> Faces:
        self.full_detections += 1
        faces = self.detector.detect_frame(frame)
        if self.interval > 1:
            before = self._state.get(frame.stream)
            sure = faces.scores >= self.min_carry_score
            if before is not None and len(before.faces) and not sure.all():
                sure |= box_iou(faces.boxes, before.faces.boxes).max(axis=1) >= PERSISTENT_IOU
            # The luma flow tracks from next time: the frame's own, as decoded (nobody writes to it; flow needs
            # no full range).
            gray = frame.luma[0] if self.tracker == "flow" else None
            self._state[frame.stream] = _StreamState(0, faces, gray, sure)
        return faces

    def _track(self, rgb: np.ndarray, known: Faces) -> Faces | None:
        """Each known face re-found near its last box; None as soon as one is not found."""
        assert self.roi is not None
        h, w = rgb.shape[:2]
        parts = []
        for box in known.boxes:
            side = ROI_SCALE * float(max(box[2], box[3]))
            cx, cy = float(box[0] + box[2] / 2), float(box[1] + box[3] / 2)
            x0, y0 = max(0, int(round(cx - side / 2))), max(0, int(round(cy - side / 2)))
            x1, y1 = min(w, int(round(cx + side / 2))), min(h, int(round(cy + side / 2)))
            if x1 - x0 < 8 or y1 - y0 < 8:
                return None
            self.roi_detections += 1
            found = self.roi.detect(np.ascontiguousarray(rgb[y0:y1, x0:x1]))
            if len(found) == 0:
                return None
            best = found[0]  # sorted best-first; the region holds one face unless faces overlap
            offset = np.array([x0, y0], np.float32)
            best = Faces(np.concatenate([best.boxes[:, :2] + offset, best.boxes[:, 2:]], axis=1),
                         best.scores, best.keypoints + offset)
            parts.append(best)
        faces = _concat(parts)
        if len(faces) > 1:
            faces = faces[_nms(faces.boxes, faces.scores, 0.3)]
        faces = faces[np.argsort(-faces.scores, kind="stable")]
        if self.detector.max_faces is not None:
            faces = faces[: self.detector.max_faces]
        return _clip_boxes(faces, w, h)

    def close(self) -> None:
        if self.roi is not None:
            self.roi.close()
            self.roi = None
