"""The Python API for programs that embed emostream (a ROS 2 node, a kiosk app, a notebook).

``emostream run`` is a pipeline; people who already have frames -- from a ROS topic, a camera SDK,
OpenCV -- want one call per frame, the way py-feat, fer and deepface are used::

    import cv2, emostream

    with emostream.Analyzer() as analyzer:                 # detector "full", model "student"
        faces = analyzer.analyze(cv2.imread("photo.jpg"), color="bgr")
        for i in range(len(faces)):
            print(faces.boxes[i], faces.top_labels()[i], faces.valence_arousal[i])

:meth:`Analyzer.analyze` returns the same :class:`~emostream.edge.face_batch.FaceBatch` the CLI's
records are written from (``emostream.frame_record(batch)`` gives the JSON record). With
``track=True`` consecutive calls are one stream: faces get track ids and smoothed labels, as in the
``frame`` records of ``emostream run``. :func:`emostream.open_source` gives frames (RGB) from any
source ``emostream run`` accepts.

Defaults are the CLI's (:mod:`emostream.edge.config`), so a notebook and ``emostream run`` agree.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Literal

import numpy as np

from emostream.edge.config import DetectorOptions, EngineOptions
from emostream.edge.face_batch import FaceBatch

if TYPE_CHECKING:
    from emostream.streams import Frame

Color = Literal["rgb", "bgr"]


class AnalyzerError(ValueError):
    """Input the analyzer cannot take (not an image, wrong dtype or shape, unknown colour order)."""


def _to_rgb(image: object, color: str) -> np.ndarray:
    """An HxWx3 uint8 RGB array from ``image`` in ``color`` order; HxW grayscale is accepted too."""
    if color not in ("rgb", "bgr"):
        raise AnalyzerError(f"color must be 'rgb' or 'bgr', got {color!r}")
    if not isinstance(image, np.ndarray):
        raise AnalyzerError(f"image must be a numpy array (HxWx3 uint8), got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise AnalyzerError(f"image must be uint8 (0..255), got dtype {image.dtype}; "
                            "convert with (image * 255).clip(0, 255).astype(np.uint8) if it is 0..1 float")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise AnalyzerError(f"image must be HxWx3 (colour) or HxW (gray), got shape {image.shape}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise AnalyzerError(f"image too small to search for faces: {image.shape[1]}x{image.shape[0]}")
    return np.ascontiguousarray(image[:, :, ::-1] if color == "bgr" else image)


class Analyzer:
    """Face detection + emotion network (+ optional tracking) on frames you already have.

    ``detector``: ``"full"`` (faces near and far, default) or ``"short"`` (within ~2 m); ``model``: a registered model
    name or a path to a model card/.onnx; ``engine``: ``"auto"``, ``"onnxruntime"``, ``"torch"`` or
    ``"tensorrt"``; ``color``: the default channel order of the images you pass -- ``"rgb"``
    (the default: what :func:`emostream.open_source`, PIL and MediaPipe give) or ``"bgr"`` (OpenCV's
    ``cv2.imread`` / ``VideoCapture``). ``track=True`` treats consecutive calls as one video stream.
    ``detect_interval``: full detection every N calls, faces carried by optical flow in between (see
    ``emostream run --detect-interval``); by default the CLI's (5) with ``track=True`` -- consecutive
    frames of one video -- and 1 without, because unrelated images must each be searched whole.
    Not thread-safe: one Analyzer per thread.
    """

    def __init__(
        self,
        detector: str = DetectorOptions.detector,
        model: str = EngineOptions.model,
        *,
        engine: str = EngineOptions.engine,
        min_score: float = DetectorOptions.min_score,
        threads: int | None = EngineOptions.threads,
        tta: bool = EngineOptions.tta,
        color: Color = "rgb",
        track: bool = False,
        fps: float = 30.0,
        detect_interval: int | None = None,
    ) -> None:
        from emostream.edge.faces import FaceDetector
        from emostream.edge.pipeline import FrameAnalyzer
        from emostream.engines.emotion import load_engine

        if color not in ("rgb", "bgr"):
            raise AnalyzerError(f"color must be 'rgb' or 'bgr', got {color!r}")
        self.color: Color = color
        self.fps = float(fps)
        if detect_interval is None:
            detect_interval = DetectorOptions.detect_interval if track else 1
        face_detector = FaceDetector(model=detector, min_score=min_score)
        try:
            self._analyzer = FrameAnalyzer(face_detector, load_engine(engine, model, threads=threads, tta=tta),
                                           detect_interval=detect_interval)
        except BaseException:
            face_detector.close()
            raise
        self._processor = None
        if track:
            from emostream.edge.track import StreamProcessor

            self._processor = StreamProcessor("api", self.labels, fps=self.fps)
        self._index = 0

    @property
    def labels(self) -> tuple[str, ...]:
        """The emotion labels, in the order of ``FaceBatch.probs`` columns."""
        return self._analyzer.labels

    def analyze(self, image: np.ndarray | Frame, color: Color | None = None, t: float | None = None) -> FaceBatch:
        """The faces in one image: boxes, scores, keypoints, crops, probabilities, valence/arousal (and
        with ``track=True`` track ids and smoothed labels). No face: an empty batch, never None.

        ``image`` is a numpy image, or a ``Frame`` from :func:`emostream.open_source` (taken as decoded:
        a video frame's YUV planes are used as they are, and RGB is made only when the detector runs).
        ``color`` overrides the analyzer's default channel order for this call (numpy images only); ``t``
        is the frame's time in seconds (default: a ``Frame``'s own, else frame count / ``fps``), used by
        tracking and smoothing.
        """
        from emostream.streams import Frame

        if isinstance(image, Frame):
            t = image.t if t is None else float(t)
            frame = image.placed(self._index, int(round(t * 1e9)), "api")
        else:
            rgb = _to_rgb(image, color or self.color)
            t = self._index / self.fps if t is None else float(t)
            frame = Frame(image=rgb, index=self._index, pts_ns=int(round(t * 1e9)), stream="api")
        self._index += 1
        batch = self._analyzer.analyze(frame)
        if self._processor is not None:
            batch = self._processor.process(batch).batch
        return batch

    def close(self) -> None:
        """Free the detector graph and the engine session."""
        self._analyzer.close()

    def __enter__(self) -> Analyzer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
