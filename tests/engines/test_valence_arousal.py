"""Valence/arousal derived from label probabilities: prototypes, expectation, ordering, bounds, errors."""

from __future__ import annotations

import numpy as np
import pytest

from emostream.engines.emotion.valence_arousal import CIRCUMPLEX_PROTOTYPES, prototype_matrix, valence_arousal

FER7 = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger")


def test_one_hot_gives_the_prototype():
    va = valence_arousal(np.eye(7, dtype=np.float32), FER7)
    assert np.allclose(va, [CIRCUMPLEX_PROTOTYPES[n] for n in FER7])


def test_expectation_under_the_probabilities():
    p = np.array([[0.5, 0.5, 0, 0, 0, 0, 0], [0.2, 0.1, 0.3, 0.1, 0.1, 0.1, 0.1]], np.float32)
    want = p @ prototype_matrix(FER7)
    assert np.allclose(valence_arousal(p, FER7), want, atol=1e-6)
    assert np.allclose(valence_arousal(p[0], FER7)[0], [0.415, 0.265], atol=1e-6)


def test_circumplex_ordering():
    va = dict(zip(FER7, valence_arousal(np.eye(7, dtype=np.float32), FER7)))
    assert va["happy"][0] > va["neutral"][0] > va["sad"][0]
    assert va["surprise"][1] > va["neutral"][1] > va["sad"][1]
    assert va["anger"][0] < 0 and va["anger"][1] > 0 and va["fear"][1] > 0


def test_label_order_and_aliases_are_respected():
    p = np.zeros((1, 7), np.float32)
    p[0, 0] = 1.0
    reordered = ("angry",) + FER7[:-1]  # the fer/v0 spelling, first
    assert np.allclose(valence_arousal(p, reordered)[0], CIRCUMPLEX_PROTOTYPES["anger"])


def test_bounds_and_normalisation():
    rng = np.random.default_rng(0)
    p = rng.random((500, 7)).astype(np.float32) * 10  # unnormalised scores
    va = valence_arousal(p, FER7)
    assert va.shape == (500, 2) and np.all(np.abs(va) <= 1)
    assert np.allclose(va, valence_arousal(p / p.sum(1, keepdims=True), FER7), atol=1e-6)


def test_errors():
    with pytest.raises(ValueError, match="do not match"):
        valence_arousal(np.ones((2, 6)), FER7)
    with pytest.raises(ValueError, match="non-negative"):
        valence_arousal(-np.ones((1, 7)), FER7)
    with pytest.raises(ValueError):
        valence_arousal(np.ones((1, 2)), ("happy", "bliss"))
