"""The one per-frame face object: a numpy-backed batch, from detection to every output.

Why one object: the detector, the emotion engine, the tracker/smoother and the outputs (JSON records,
overlay, metrics, events, keyframes) used to pass the same faces around in five shapes -- parallel
lists, record dicts edited in place, drawing structs, ten positional arguments. Each conversion was a
place where a field could be dropped or two outputs could disagree. :class:`FaceBatch` is shaped like
supervision's ``Detections`` (parallel arrays, row ``i`` is face ``i``) because every stage works on
all faces of a frame at once; a stage *adds* columns with :meth:`FaceBatch.with_tracks` and never edits
one it was given (the batch is frozen), so what the overlay draws is exactly what the record says.

``frame_record`` is the only writer of the ``{"type": "frame", …}`` record of the output contract
(README, "Output").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from emostream.edge.faces import KEYPOINT_NAMES, Faces

if TYPE_CHECKING:
    from emostream.streams import Frame

#: Probabilities are written with this many decimals: enough to rank and to average, and it keeps a
#: JSON line per frame short.
PROB_DECIMALS = 4


class FaceBatchError(ValueError):
    """Arrays of a :class:`FaceBatch` that do not describe the same faces (wrong lengths or shapes)."""


def _column(value: Any, n: int, shape: tuple[int, ...], dtype: Any, fill: Any) -> np.ndarray:
    if value is None:
        return np.full((n, *shape), fill, dtype)
    return np.asarray(value, dtype)


@dataclass(frozen=True, eq=False)
class FaceBatch:
    """All faces of one frame (or of one image), as parallel arrays; ``len(batch)`` faces.

    Columns filled by the analyzer (:class:`emostream.edge.pipeline.FrameAnalyzer`):

    * ``boxes`` (N, 4) float32 ``[x, y, w, h]`` pixels, ``scores`` (N,), ``keypoints`` (N, 6, 2) -- the
      detector's :class:`~emostream.edge.faces.Faces`;
    * ``crops`` (N, S, S) uint8 aligned grayscale faces, as the engine saw them;
    * ``probs`` (N, C) float32 over ``labels``, rows sum to 1; ``valence_arousal`` (N, 2) raw per face.

    Columns filled per stream by tracking and smoothing (:meth:`with_tracks`; defaults mean "not
    tracked"): ``track_ids`` (N,) int64, -1 untracked; ``smoothed_labels`` (N,) object, None untracked;
    ``smoothed_confidence`` (N,) float32; ``smoothed_va`` (N, 2) float64, NaN where unknown;
    ``keyframe_reasons`` (N,) object: why face ``i`` is escalated to the reasoner this frame, or None.

    ``frame`` is the source frame (``emostream.streams.Frame``) or None for a bare image.
    """

    boxes: np.ndarray
    scores: np.ndarray
    keypoints: np.ndarray
    crops: np.ndarray
    probs: np.ndarray
    labels: tuple[str, ...]
    valence_arousal: np.ndarray
    frame: Frame | None = None
    track_ids: np.ndarray = None  # type: ignore[assignment]
    smoothed_labels: np.ndarray = None  # type: ignore[assignment]
    smoothed_confidence: np.ndarray = None  # type: ignore[assignment]
    smoothed_va: np.ndarray = None  # type: ignore[assignment]
    keyframe_reasons: np.ndarray = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        n = len(self.boxes)
        c = len(self.labels)
        fill = {
            "track_ids": _column(self.track_ids, n, (), np.int64, -1),
            "smoothed_labels": _column(self.smoothed_labels, n, (), object, None),
            "smoothed_confidence": _column(self.smoothed_confidence, n, (), np.float32, np.nan),
            "smoothed_va": _column(self.smoothed_va, n, (2,), np.float64, np.nan),
            "keyframe_reasons": _column(self.keyframe_reasons, n, (), object, None),
        }
        for name, value in fill.items():
            object.__setattr__(self, name, value)
        want = {
            "boxes": (n, 4), "scores": (n,), "keypoints": (n, len(KEYPOINT_NAMES), 2), "probs": (n, c),
            "valence_arousal": (n, 2), "track_ids": (n,), "smoothed_labels": (n,),
            "smoothed_confidence": (n,), "smoothed_va": (n, 2), "keyframe_reasons": (n,),
        }
        for name, shape in want.items():
            got = getattr(self, name).shape
            if got != shape:
                raise FaceBatchError(f"FaceBatch.{name} has shape {got}, want {shape} for {n} faces")
        if self.crops.ndim < 1 or len(self.crops) != n:
            raise FaceBatchError(f"FaceBatch.crops has shape {self.crops.shape}, want {n} crops")

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_faces(cls, faces: Faces, crops: np.ndarray, probs: np.ndarray, labels: Sequence[str],
                   valence_arousal: np.ndarray, frame: Frame | None = None) -> FaceBatch:
        """The analyzer's batch: detections plus what the engine said about each."""
        return cls(faces.boxes, faces.scores, faces.keypoints, crops, probs, tuple(labels), valence_arousal, frame)

    @classmethod
    def empty(cls, labels: Sequence[str], crop_size: int = 48, frame: Frame | None = None) -> FaceBatch:
        """No faces (an empty frame still yields a batch, so callers never test for None)."""
        f = Faces.empty()
        return cls.from_faces(f, np.zeros((0, crop_size, crop_size), np.uint8),
                              np.zeros((0, len(labels)), np.float32), labels, np.zeros((0, 2), np.float32), frame)

    def with_tracks(self, track_ids: np.ndarray, smoothed_labels: Sequence[str | None],
                    smoothed_confidence: np.ndarray, smoothed_va: np.ndarray,
                    keyframe_reasons: Sequence[str | None] | None = None) -> FaceBatch:
        """A copy with the per-stream columns (tracking, smoothing, keyframe decisions) filled in."""
        return dataclasses.replace(
            self, track_ids=np.asarray(track_ids, np.int64),
            smoothed_labels=np.array(list(smoothed_labels) + [None], object)[:-1],
            smoothed_confidence=np.asarray(smoothed_confidence, np.float32),
            smoothed_va=np.asarray(smoothed_va, np.float64).reshape(-1, 2),
            keyframe_reasons=None if keyframe_reasons is None
            else np.array(list(keyframe_reasons) + [None], object)[:-1],
        )

    # ------------------------------------------------------------------ access

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, idx: Any) -> FaceBatch:
        """Select faces by boolean mask, index array, slice or int (an int keeps the batch axis)."""
        if isinstance(idx, (int, np.integer)):
            idx = [int(idx)]
        return FaceBatch(
            self.boxes[idx], self.scores[idx], self.keypoints[idx], self.crops[idx], self.probs[idx],
            self.labels, self.valence_arousal[idx], self.frame, self.track_ids[idx], self.smoothed_labels[idx],
            self.smoothed_confidence[idx], self.smoothed_va[idx], self.keyframe_reasons[idx],
        )

    @property
    def faces(self) -> Faces:
        """The detector's view (boxes, scores, keypoints), e.g. for the tracker."""
        return Faces(self.boxes, self.scores, self.keypoints)

    @property
    def tracked(self) -> np.ndarray:
        """Boolean mask of faces that have a track id."""
        return self.track_ids >= 0

    def top_labels(self) -> list[str]:
        """Per-frame arg-max label of each face (unsmoothed)."""
        return [self.labels[i] for i in np.argmax(self.probs, axis=1)] if len(self) else []

    def display(self, i: int) -> tuple[str, float, float | None, float | None]:
        """What to show for face ``i``: smoothed label/confidence/V-A when tracked, raw otherwise."""
        if self.track_ids[i] >= 0 and self.smoothed_labels[i] is not None:
            va = self.smoothed_va[i]
            v, a = (float(va[0]), float(va[1])) if np.all(np.isfinite(va)) else (None, None)
            return (str(self.smoothed_labels[i]), float(self.smoothed_confidence[i]), v, a)
        k = int(np.argmax(self.probs[i]))
        return (self.labels[k], float(self.probs[i, k]), float(self.valence_arousal[i, 0]),
                float(self.valence_arousal[i, 1]))


def face_records(batch: FaceBatch) -> list[dict[str, Any]]:
    """The ``faces`` list of a frame record, field order as in the README's output contract."""
    records = []
    for i, label in enumerate(batch.top_labels()):
        x, y, w, h = (round(float(v), 1) for v in batch.boxes[i])
        track = int(batch.track_ids[i])
        smoothed = batch.smoothed_labels[i] if track >= 0 else None
        face: dict[str, Any] = {
            "box": [x, y, w, h],
            "score": round(float(batch.scores[i]), 3),
            "label": label,
            "probs": {name: round(float(p), PROB_DECIMALS) for name, p in zip(batch.labels, batch.probs[i])},
            "track": track if track >= 0 else None,
            "smoothed_label": smoothed,
            "valence": round(float(batch.valence_arousal[i, 0]), 3),
            "arousal": round(float(batch.valence_arousal[i, 1]), 3),
        }
        sva = batch.smoothed_va[i]
        if smoothed is not None and np.all(np.isfinite(sva)):
            face["smoothed_va"] = [round(float(sva[0]), 3), round(float(sva[1]), 3)]
        records.append(face)
    return records


def frame_record(batch: FaceBatch) -> dict[str, Any]:
    """The ``{"type": "frame", …}`` JSON-lines record of one analysed frame (the only place it is built)."""
    frame = batch.frame
    if frame is None:
        raise FaceBatchError("a frame record needs the batch's frame (stream, index, time)")
    return {
        "type": "frame",
        "stream": frame.stream,
        "frame": frame.index,
        "t": round(frame.t, 4),
        "faces": face_records(batch),
    }
