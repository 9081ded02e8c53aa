"""``fit-gate``'s numbers: shrinkage chosen by CV, stratified halves, accuracy/macro-F1, the held-out report.

Synthetic inputs on purpose: the point is how the fitting reacts to a VLM that is useful, useless or
absent, which real data from a random tiny VLM cannot show (the real loop is in tests/training/test_tune_vlm.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from emostream.calibration.fusion import (
    FusionError,
    accuracy_f1,
    fit_gate_cv,
    gate_report,
    network_gate,
    softmax,
    split_halves,
)

LABELS = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger")
C = len(LABELS)


def faces(n: int, vlm_quality: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vlm answer index, network probs, truth): a network right ~60 %, a VLM right ``vlm_quality`` of the time."""
    y = rng.integers(0, C, n)
    logits = rng.normal(0, 1, (n, C))
    logits[np.arange(n), y] += 1.6
    probs = softmax(logits)
    vlm = np.where(rng.random(n) < vlm_quality, y, rng.integers(0, C, n))
    return vlm, probs, y


def test_accuracy_and_macro_f1_by_hand():
    truth = np.array([0, 0, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, -1])  # -1: no answer, always wrong
    acc, f1 = accuracy_f1(truth, pred, 3)
    assert acc == pytest.approx(3 / 5)
    # F1: class 0: tp1 fp0 fn1 -> 2/3; class 1: tp2 fp1 fn0 -> 4/5; class 2: 0
    assert f1 == pytest.approx((2 / 3 + 4 / 5 + 0) / 3)


def test_halves_are_stratified_and_disjoint():
    y = np.array([0] * 10 + [1] * 5 + [2] * 1)
    fit, held = split_halves(y, seed=3)
    assert not set(fit) & set(held) and len(fit) + len(held) == len(y)
    assert (y[fit] == 0).sum() == 5 and (y[held] == 0).sum() == 5
    assert (y[fit] == 1).sum() == 3 and (y[fit] == 2).sum() == 1  # odd counts: the extra face goes to fitting


def test_a_useless_vlm_is_shrunk_away_and_a_good_one_is_trusted():
    rng = np.random.default_rng(0)
    for quality, expect_vlm_weight in ((0.0, "small"), (0.8, "large")):
        vlm, probs, y = faces(600, quality, rng)
        onehot = np.eye(C)[vlm]
        gate, l2 = fit_gate_cv(LABELS, onehot, np.log(probs), y)
        w = float(np.mean(np.diag(gate.weight[:, :C])))
        if expect_vlm_weight == "small":
            assert abs(w) < 0.3, (w, l2)
            fused_acc = (gate.logits(onehot, np.log(probs)).argmax(1) == y).mean()
            assert fused_acc >= (probs.argmax(1) == y).mean() - 0.01
        else:
            assert w > 1.0, (w, l2)


@pytest.mark.parametrize("quality", [0.0, 0.3, 0.8])
def test_fused_is_not_worse_than_the_better_input_on_held_out_faces(quality):
    rng = np.random.default_rng(1)
    vlm, probs, y = faces(1000, quality, rng)
    vlm[rng.random(len(vlm)) < 0.1] = -1  # some keyframes got no VLM answer
    gate, report = gate_report(LABELS, vlm, probs, y, seed=0)
    s = report["held_out_scores"]
    best = max(s["network"]["accuracy"], s["vlm"]["accuracy"])
    assert s["fitted_gate"]["accuracy"] >= best - 0.01, report  # within noise of 500 faces
    assert report["fit"] + report["held_out"] == 1000 and report["vlm_answered"] == pytest.approx(0.9, abs=0.03)
    assert report["fused_at_least_best_input"] == (s["fitted_gate"]["accuracy"] >= best) or "why_not" in report
    if quality == 0.8:
        assert s["fitted_gate"]["accuracy"] > best + 0.02  # two useful opinions beat either


def test_a_gate_that_falls_short_says_why_and_too_few_faces_is_an_error():
    # A report constructed to fall short: held-out faces the network gets right, a fit half that teaches otherwise.
    rng = np.random.default_rng(2)
    vlm, probs, y = faces(40, 0.5, rng)
    _, report = gate_report(LABELS, vlm, probs, y, seed=0)
    s = report["held_out_scores"]
    if s["fitted_gate"]["accuracy"] < max(s["network"]["accuracy"], s["vlm"]["accuracy"]):
        assert "held-out face(s) below" in report["why_not"]
    else:
        assert "why_not" not in report
    with pytest.raises(FusionError, match="too few"):
        gate_report(LABELS, np.array([0]), np.full((1, C), 1 / C), np.array([0]))


def test_network_gate_reproduces_the_network():
    rng = np.random.default_rng(3)
    _, probs, _ = faces(50, 0.0, rng)
    g = network_gate(LABELS)
    fused = np.stack([g.fuse(LABELS[0], p) for p in probs])
    assert np.allclose(fused, probs / probs.sum(1, keepdims=True), atol=1e-5)
