"""One frame in, per-face emotions out: detector → alignment → emotion engine.

The analyzer is the unit both ``emostream run`` and the benchmarks drive, so the stage
timings they print come from the same code path the product runs. It knows nothing about
where frames come from (``streams/``) or where records go (the CLI).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from emostream.edge.faces import FaceDetector, Faces, align_faces
from emostream.edge.timing import StageTimer
from emostream.engines.emotion import EmotionEngine
from emostream.streams import Frame

#: Probabilities are written with this many decimals: enough to rank and to average, and it keeps a
#: JSON line per frame short.
PROB_DECIMALS = 4


@dataclass(frozen=True)
class FrameAnalysis:
    """What the edge knows about one frame: the faces, their aligned crops and label probabilities."""

    frame: Frame
    faces: Faces
    crops: np.ndarray  # (N, S, S) uint8 grayscale, as fed to the engine
    probs: np.ndarray  # (N, C) float32, rows sum to 1
    labels: tuple[str, ...]

    def top_labels(self) -> list[str]:
        return [self.labels[i] for i in np.argmax(self.probs, axis=1)] if len(self.faces) else []

    def face_records(self) -> list[dict]:
        records = []
        for i, label in enumerate(self.top_labels()):
            x, y, w, h = (round(float(v), 1) for v in self.faces.boxes[i])
            records.append(
                {
                    "box": [x, y, w, h],
                    "score": round(float(self.faces.scores[i]), 3),
                    "label": label,
                    "probs": {
                        name: round(float(p), PROB_DECIMALS) for name, p in zip(self.labels, self.probs[i])
                    },
                }
            )
        return records

    def record(self) -> dict:
        """The ``{"type": "frame", …}`` JSON-lines record of the output contract."""
        return {
            "type": "frame",
            "stream": self.frame.stream,
            "frame": self.frame.index,
            "t": round(self.frame.t, 4),
            "faces": self.face_records(),
        }


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

    def analyze(self, frame: Frame) -> FrameAnalysis:
        return self.analyze_many([frame])[0]

    def analyze_many(self, frames: Sequence[Frame]) -> list[FrameAnalysis]:
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
        results = []
        start = 0
        for frame, faces, crops in zip(frames, all_faces, all_crops):
            n = len(crops)
            results.append(FrameAnalysis(frame, faces, crops, probs[start : start + n], self.labels))
            start += n
        return results

    def close(self) -> None:
        self.detector.close()
        self.engine.close()
