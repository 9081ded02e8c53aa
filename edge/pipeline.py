"""One frame in, per-face emotions out: detector → alignment → emotion engine.

The analyzer is the unit both ``emostream run`` and the benchmarks drive, so the stage
timings they print come from the same code path the product runs. It knows nothing about
where frames come from (``streams/``) or where records go (the CLI). What it returns is the
:class:`FaceBatch` every later stage reads.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from emostream.edge.face_batch import FaceBatch
from emostream.edge.faces import FaceDetector, Faces, align_faces
from emostream.edge.interval import IntervalDetector
from emostream.edge.timing import StageTimer
from emostream.engines.emotion import EmotionEngine
from emostream.engines.emotion.valence_arousal import valence_arousal
from emostream.streams import Frame

#: Kept for callers of the old name: an analysed frame is a :class:`FaceBatch`.
FrameAnalysis = FaceBatch


@dataclass
class Prepared:
    """The first half of an analysis (detection and alignment) for a list of frames.

    Split out so the scheduler can run this half on one thread while the engine, trackers and sinks
    work on the previous frames on another (:mod:`edge.multistream`). ``seconds`` holds this half's
    per-stage wall time, reported by whoever finishes the analysis (the timer is not shared across
    threads' snapshots).
    """

    frames: list[Frame]
    faces: list[Faces]
    crops: list[np.ndarray]
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class AnalysedFrame:
    """A frame whose front half is already done (by a child process, ``--front process``,
    :mod:`edge.front_process`): :meth:`FrameAnalyzer.prepare` passes its faces and crops through."""

    frame: Frame
    faces: Faces
    crops: np.ndarray
    seconds: dict[str, float] = field(default_factory=dict)
    #: When the frame left its source, on ``time.perf_counter()`` (CLOCK_MONOTONIC: the same clock in every
    #: process), so a record's latency includes the child's detection, not only the way from the child on.
    arrival: float | None = None

    @property
    def pts_ns(self) -> int:  # what ``--realtime`` pacing reads
        return self.frame.pts_ns


def gray_crops(frame: Frame, faces: Faces, size: int) -> np.ndarray:
    """The engine's gray crops of ``faces``: warped from the frame's luma (a video frame's Y plane, stretched to
    full range crop by crop), so a frame whose faces were carried never needs RGB or a full-frame pass."""
    luma, to_gray = frame.luma
    crops = align_faces(luma, faces, size=size, gray=True)
    return to_gray[crops] if to_gray is not None and len(crops) else crops


class FrameAnalyzer:
    """Runs detection, alignment and the emotion engine, timing each stage.

    Several frames (e.g. one per stream) can be analysed together so the engine sees one batch:
    the per-call overhead of ONNX Runtime or TensorRT is paid once per step, not once per stream.
    """

    def __init__(self, detector: FaceDetector, engine: EmotionEngine, timer: StageTimer | None = None,
                 detect_interval: int = 1, interval_tracker: str = "flow") -> None:
        self.detector = detector
        self.engine = engine
        self.timer = timer or StageTimer()
        #: Full-frame detection every N frames per stream (:mod:`edge.interval`); 1 = every frame here,
        #: the library default; ``emostream run`` defaults to 5 (its ``--detect-interval``).
        self.interval = IntervalDetector(detector, detect_interval, interval_tracker)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.engine.labels)

    def analyze(self, frame: Frame) -> FaceBatch:
        return self.analyze_many([frame])[0]

    def analyze_many(self, frames: Sequence[Frame]) -> list[FaceBatch]:
        """One :class:`FaceBatch` per frame; the engine runs once over all faces of all frames."""
        return self.complete(self.prepare(frames))

    def prepare(self, frames: Sequence[Frame | AnalysedFrame]) -> Prepared:
        """Detect and align the faces of ``frames`` (no engine call); thread-safe against :meth:`complete`.

        A frame whose front half a child process already did (:class:`AnalysedFrame`, ``--front process``)
        passes through with its faces, crops and the child's timings."""
        size = self.engine.input_size
        out = Prepared([f.frame if isinstance(f, AnalysedFrame) else f for f in frames], [], [])
        t_detect = t_align = 0.0
        for frame in frames:
            if isinstance(frame, AnalysedFrame):
                t_detect += frame.seconds.get("detect", 0.0)
                t_align += frame.seconds.get("align", 0.0)
                out.faces.append(frame.faces)
                out.crops.append(frame.crops)
                continue
            t0 = time.perf_counter()
            faces = self.interval.detect_frame(frame)
            t1 = time.perf_counter()
            crops = gray_crops(frame, faces, size)
            t2 = time.perf_counter()
            t_detect += t1 - t0
            t_align += t2 - t1
            out.faces.append(faces)
            out.crops.append(crops)
        if frames:
            out.seconds = {"detect": t_detect, "align": t_align}
            self.timer.add("detect", t_detect, len(frames))
            self.timer.add("align", t_align, len(frames))
        return out

    def complete(self, prepared: Prepared) -> list[FaceBatch]:
        """Run the engine once over all prepared faces and build each frame's :class:`FaceBatch`."""
        size = self.engine.input_size
        crops = prepared.crops
        batch = np.concatenate(crops, axis=0) if crops else np.zeros((0, size, size), np.uint8)
        t0 = time.perf_counter()
        probs = self.engine.run(batch) if len(batch) else np.zeros((0, len(self.labels)), np.float32)
        t_infer = time.perf_counter() - t0
        prepared.seconds["infer"] = t_infer
        self.timer.add("infer", t_infer)
        va = valence_arousal(probs, self.labels) if len(probs) else np.zeros((0, 2), np.float32)
        results = []
        start = 0
        for frame, faces, face_crops in zip(prepared.frames, prepared.faces, crops):
            n = len(face_crops)
            rows = slice(start, start + n)
            results.append(FaceBatch.from_faces(faces, face_crops, probs[rows], self.labels, va[rows], frame))
            start += n
        return results

    def close(self) -> None:
        self.interval.close()
        self.detector.close()
        self.engine.close()
