"""A detection interval (like DeepStream nvinfer's ``interval``): full-frame detection every N frames of a
stream, and between those, each face re-found in a small region around where it was.

Why not just carry the boxes (DeepStream's way): the emotion network needs an *aligned* crop, and the
alignment comes from the eye and mouth keypoints of the current frame; a carried box would crop a
moving face off-centre. So between full detections each known face gets a cheap short-range BlazeFace
pass on a square region of ``ROI_SCALE`` times its box side around it (a 128x128 input: ~1 ms on the
TFLite interpreter against ~4 ms for full range on the whole frame). That gives fresh keypoints and
scores, and notices at once when a face is lost: then the full detector runs on that same frame.

What users get differs from detecting every frame, and ``emostream bench --detect-interval N``
measures by how much (frames with exactly one face, label agreement): a face that *enters* the view is
found at the next full detection, up to N-1 frames late; boxes on in-between frames come from the
short-range model (a few pixels different from full range's). Scenes with more than
``MAX_ROI_FACES`` faces are cheaper with a full detection, so they get one on every frame.

State is per stream (``frame.stream``) and follows the frame order of the caller, which is one
thread in the scheduler (:mod:`edge.multistream`), so no locking is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emostream.edge.faces import FaceDetector, FaceDetectorError, Faces, _clip_boxes, _concat, _nms

#: Side of the re-detection region, in box sides (the face fills about half of it, as short range likes).
ROI_SCALE = 2.0
#: Above this many faces one full-frame detection costs less than a region pass per face.
MAX_ROI_FACES = 3
MAX_INTERVAL = 30


@dataclass
class _StreamState:
    since: int  # frames since the last full detection
    faces: Faces


class IntervalDetector:
    """Full detection every ``interval`` frames per stream, region re-detection in between."""

    def __init__(self, detector: FaceDetector, interval: int) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int) or not 1 <= interval <= MAX_INTERVAL:
            raise FaceDetectorError(f"detect interval must be an integer within 1..{MAX_INTERVAL}, got {interval!r}")
        self.detector = detector
        self.interval = interval
        self.roi: FaceDetector | None = None
        if interval > 1:
            self.roi = FaceDetector("short", min_score=detector.min_score, runtime=detector.runtime)
        self._state: dict[str, _StreamState] = {}
        self.full_detections = 0
        self.roi_detections = 0
        self.redetections = 0  # full detections forced by a face lost between intervals

    def detect(self, rgb: np.ndarray, stream: str, index: int) -> Faces:
        """Faces of frame ``index`` of ``stream`` (frames of a stream must come in order)."""
        state = self._state.get(stream)
        if (self.roi is None or state is None or index == 0 or state.since + 1 >= self.interval
                or len(state.faces) == 0 or len(state.faces) > MAX_ROI_FACES):
            return self._full(rgb, stream)
        faces = self._track(rgb, state.faces)
        if faces is None:
            self.redetections += 1
            return self._full(rgb, stream)
        state.since += 1
        state.faces = faces
        return faces

    def _full(self, rgb: np.ndarray, stream: str) -> Faces:
        self.full_detections += 1
        faces = self.detector.detect(rgb)
        self._state[stream] = _StreamState(0, faces)
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
