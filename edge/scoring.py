"""Classification scores for ``emostream eval``: accuracy, macro-F1, recall, confusion matrix.

Plain numpy so the edge install needs no scikit-learn. Classes are names; a true label the model
cannot output (e.g. ``contempt`` for a 7-class model) stays in the matrix as a row with no column,
so it is counted as wrong and reported rather than silently dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Scores:
    classes: tuple[str, ...]  # rows of the confusion matrix: every true or predicted label
    confusion: np.ndarray  # (K, K) int, rows true, columns predicted
    missing_from_model: tuple[str, ...]  # true labels the model has no output for

    @property
    def n(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / self.n) if self.n else 0.0

    def recall(self) -> dict[str, float]:
        support = self.confusion.sum(axis=1)
        return {c: float(self.confusion[i, i] / support[i]) for i, c in enumerate(self.classes) if support[i]}

    def f1(self) -> dict[str, float]:
        tp = np.diag(self.confusion).astype(float)
        predicted = self.confusion.sum(axis=0)
        support = self.confusion.sum(axis=1)
        out = {}
        for i, c in enumerate(self.classes):
            if support[i] == 0 and predicted[i] == 0:
                continue
            denom = support[i] + predicted[i]
            out[c] = float(2 * tp[i] / denom) if denom else 0.0
        return out

    @property
    def macro_f1(self) -> float:
        """Mean F1 over classes present in the data (a class with no samples does not dilute it)."""
        support = self.confusion.sum(axis=1)
        f1 = self.f1()
        present = [c for i, c in enumerate(self.classes) if support[i] > 0]
        return float(np.mean([f1[c] for c in present])) if present else 0.0


def score(true: Sequence[str], predicted: Sequence[str], model_labels: Sequence[str]) -> Scores:
    if len(true) != len(predicted):
        raise ValueError("true and predicted differ in length")
    # Extra columns: true labels the model lacks, and non-labels such as "no face" in detect mode.
    classes = list(model_labels) + sorted((set(true) | set(predicted)) - set(model_labels))
    index = {c: i for i, c in enumerate(classes)}
    cm = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for t, p in zip(true, predicted):
        cm[index[t], index[p]] += 1
    missing = tuple(sorted(set(true) - set(model_labels)))
    return Scores(tuple(classes), cm, missing)
