"""Temperature scaling on a set with known miscalibration: recovers T, lowers NLL and ECE, keeps accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from emostream.calibration.temperature import (
    CalibrationError,
    expected_calibration_error,
    fit_temperature,
    nll,
    softmax,
)


def _miscalibrated(true_t: float, n: int = 4000, seed: int = 0):
    """Labels drawn from softmax(z); the model reports z * true_t (over-confident when true_t > 1)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, 7))
    p = softmax(z)
    y = np.array([rng.choice(7, p=row) for row in p])
    return z * true_t, y


@pytest.mark.parametrize("true_t", [2.5, 0.5])
def test_fit_recovers_temperature_and_improves_calibration(true_t):
    logits, y = _miscalibrated(true_t)
    fit = fit_temperature(logits, y)
    assert fit.temperature == pytest.approx(true_t, rel=0.1)
    assert fit.nll_after < fit.nll_before - 0.05
    assert fit.ece_after < fit.ece_before / 2
    assert fit.ece_after < 0.03
    # Argmax is invariant: accuracy does not move.
    assert np.array_equal(softmax(logits).argmax(1), softmax(logits, fit.temperature).argmax(1))


def test_well_calibrated_set_stays_near_one():
    logits, y = _miscalibrated(1.0, seed=1)
    assert fit_temperature(logits, y).temperature == pytest.approx(1.0, rel=0.1)


def test_ece_of_perfect_and_worst_cases():
    y = np.array([0, 1, 2, 3])
    assert expected_calibration_error(np.eye(4), y) == 0.0
    wrong = np.roll(np.eye(4), 1, axis=1)
    assert expected_calibration_error(wrong, y) == pytest.approx(1.0)


def test_nll_matches_definition():
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    y = np.array([0, 2])
    p = softmax(logits)
    assert nll(logits, y) == pytest.approx(-np.mean(np.log([p[0, 0], p[1, 2]])))


def test_bad_shapes_are_errors():
    with pytest.raises(CalibrationError):
        fit_temperature(np.zeros((3, 7)), np.zeros(4, dtype=int))
    with pytest.raises(CalibrationError):
        fit_temperature(np.zeros((3, 7)), np.array([0, 1, 9]))
