"""One frame in, per-face emotions out: detector → alignment → emotion engine.

The analyzer is the unit both ``emostream run`` and the benchmarks drive, so the stage
timings they print come from the same code path the product runs. It knows nothing about
where frames come from (``streams/``) or where records go (the CLI). What it returns is the
:class:`FaceBatch` every later stage reads.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from emostream.edge.face_batch import FaceBatch
from emostream.edge.faces import FaceDetector, Faces, align_faces
from emostream.edge.timing import StageTimer
from emostream.engines.emotion import EmotionEngine
from emostream.engines.emotion.valence_arousal import valence_arousal
from emostream.streams import Frame

#: Kept for callers of the old name: an analysed frame is a :class:`FaceBatch`.
FrameAnalysis = FaceBatch


class FrameAnalyzer:
    """Runs detection, alignment and the emotion engine, timing each stage.

    Several frames (e.g. one per stream) can be analysed together so the engine sees one batch:
    the per-call overhead of ONNX Runtime or TensorRT is paid once per step, not once per stream.
    """

    def __init__(self, detector: FaceDetector, engine: EmotionEngine, timer: StageTimer | None = None) -> None:
        self.detector = detector
        self.engine = engine
        self.timer = timer or StageTimer()

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.engine.labels)

    def analyze(self, frame: Frame) -> FaceBatch:
        return self.analyze_many([frame])[0]

    def analyze_many(self, frames: Sequence[Frame]) -> list[FaceBatch]:
        """One :class:`FaceBatch` per frame; the engine runs once over all faces of all frames."""
        size = self.engine.input_size
        all_faces: list[Faces] = []
        all_crops: list[np.ndarray] = []
        for frame in frames:
            with self.timer.stage("detect"):
                faces = self.detector.detect(frame.image)
            with self.timer.stage("align"):
                crops = align_faces(frame.image, faces, size=size, gray=True)
            all_faces.append(faces)
            all_crops.append(crops)
        batch = np.concatenate(all_crops, axis=0) if all_crops else np.zeros((0, size, size), np.uint8)
        with self.timer.stage("infer"):
            probs = self.engine.run(batch) if len(batch) else np.zeros((0, len(self.labels)), np.float32)
        va = valence_arousal(probs, self.labels) if len(probs) else np.zeros((0, 2), np.float32)
        results = []
        start = 0
        for frame, faces, crops in zip(frames, all_faces, all_crops):
            n = len(crops)
            rows = slice(start, start + n)
            results.append(FaceBatch.from_faces(faces, crops, probs[rows], self.labels, va[rows], frame))
            start += n
        return results

    def close(self) -> None:
        self.detector.close()
        self.engine.close()
