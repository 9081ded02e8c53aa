"""Gate fusion: the fixed weighting is what the docs say, and fitting beats it where it should."""

from __future__ import annotations

import numpy as np
import pytest

from emostream.calibration.fusion import ALPHA, FusionError, fit_gate, fixed_gate, load_gate, save_gate, softmax
from emostream.engines.labels import CANONICAL_LABELS

LABELS = CANONICAL_LABELS
C = len(LABELS)


def test_fixed_gate_multiplies_the_named_labels_odds_by_three():
    gate = fixed_gate(LABELS)
    p = np.array([0.3, 0.25, 0.15, 0.1, 0.05, 0.05, 0.05, 0.05])
    fused = gate.fuse("happy", p)
    assert fused.argmax() == 1  # a VLM vote overturns a hesitant network
    odds = (fused[1] / fused[0]) / (p[1] / p[0])
    assert odds == pytest.approx(np.exp(ALPHA)) == pytest.approx(3.0)
    confident = np.array([0.9] + [0.1 / 7] * 7)
    assert gate.fuse("happy", confident).argmax() == 0  # ... but not a confident one
    assert np.allclose(gate.fuse(None, p), p / p.sum())
    with pytest.raises(FusionError):
        gate.fuse("bored", p)


def synthetic(n: int, rng: np.random.Generator):
    """A network good on the frequent classes and a VLM good on the ones the network confuses.

    Classes 0-3: the network is 85% right, the VLM 40%. Classes 4-7 (fear, disgust, anger,
    contempt): the network is near chance among them, the VLM 90% right. A fixed symmetric weight
    cannot know whom to trust per class; the fitted gate can.
    """
    y = rng.integers(0, C, n)
    net_logits = rng.normal(0, 0.5, (n, C))
    vlm = np.empty(n, dtype=int)
    for i, t in enumerate(y):
        if t < 4:
            net_logits[i, t] += 2.5 if rng.random() < 0.85 else 0.0
            vlm[i] = t if rng.random() < 0.4 else rng.integers(0, C)
        else:
            net_logits[i, 4:] += rng.normal(1.5, 0.2, 4)
            net_logits[i, t] += 0.2
            vlm[i] = t if rng.random() < 0.9 else rng.integers(0, C)
    return np.eye(C)[vlm], net_logits, y


def nll_acc(gate, onehot, logits, y):
    p = softmax(gate.logits(onehot, logits))
    return -np.log(p[np.arange(len(y)), y] + 1e-12).mean(), (p.argmax(1) == y).mean()


def test_fitted_gate_beats_fixed_weighting_on_held_out_data(tmp_path):
    rng = np.random.default_rng(0)
    train = synthetic(3000, rng)
    test = synthetic(2000, rng)
    fixed = fixed_gate(LABELS)
    fitted = fit_gate(LABELS, *train)
    nll_fixed, acc_fixed = nll_acc(fixed, *test)
    nll_fit, acc_fit = nll_acc(fitted, *test)
    assert fitted.fitted and not fixed.fitted
    assert nll_fit < nll_fixed - 0.05
    assert acc_fit > acc_fixed + 0.03
    # save / load round trip keeps the numbers; labels must match
    path = tmp_path / "gate.json"
    save_gate(fitted, path)
    again = load_gate(path, LABELS)
    assert np.allclose(again.weight, fitted.weight) and again.fitted
    with pytest.raises(FusionError, match="labels"):
        load_gate(path, LABELS[:7])


def test_fit_rejects_bad_shapes_and_bad_files(tmp_path):
    with pytest.raises(FusionError):
        fit_gate(LABELS, np.zeros((4, C)), np.zeros((4, C - 1)), np.zeros(4, int))
    with pytest.raises(FusionError):
        fit_gate(LABELS, np.zeros((4, C)), np.zeros((4, C)), np.array([0, 1, 2, 99]))
    with pytest.raises(FusionError, match="not found"):
        load_gate(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(FusionError, match="not readable"):
        load_gate(tmp_path / "bad.json")
