"""Confidence calibration by temperature scaling.

Guo et al. 2017, "On Calibration of Modern Neural Networks".

One scalar T divides the logits; it is fitted by minimising the NLL on held-out data (FER2013 val here),
so accuracy is unchanged (argmax is invariant) while confidences stop over- or under-claiming. The fit is
a bounded 1-D search over log T in numpy: no torch, no scipy, and deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class CalibrationError(Exception):
    """Calibration inputs are unusable (shapes disagree, empty set, labels out of range)."""


@dataclass(frozen=True)
class TemperatureFit:
    temperature: float
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _check(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if logits.ndim != 2 or labels.ndim != 1 or logits.shape[0] != labels.shape[0] or logits.shape[0] == 0:
        raise CalibrationError(
            f"need (N, C) logits and (N,) labels with N > 0, got {logits.shape}, {labels.shape}")
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise CalibrationError(
            f"labels must be in [0, {logits.shape[1]}), got range {labels.min()}..{labels.max()}")
    return logits, labels.astype(np.int64)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true labels at temperature T."""
    logits, labels = _check(logits, labels)
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(labels)), labels].mean())


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """ECE: |accuracy − confidence| averaged over equal-width confidence bins, weighted by bin size."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def fit_temperature(logits: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0),
                    iters: int = 80) -> TemperatureFit:
    """Golden-section search of NLL over log T (NLL is unimodal in T for fixed logits)."""
    logits, labels = _check(logits, labels)
    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    g = (np.sqrt(5) - 1) / 2
    a, b = lo + (1 - g) * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(logits, labels, np.exp(a)), nll(logits, labels, np.exp(b))
    for _ in range(iters):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = lo + (1 - g) * (hi - lo)
            fa = nll(logits, labels, np.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(logits, labels, np.exp(b))
    t = float(np.exp((lo + hi) / 2))
    return TemperatureFit(
        temperature=t,
        nll_before=nll(logits, labels, 1.0),
        nll_after=nll(logits, labels, t),
        ece_before=expected_calibration_error(softmax(logits), labels),
        ece_after=expected_calibration_error(softmax(logits, t), labels),
    )
