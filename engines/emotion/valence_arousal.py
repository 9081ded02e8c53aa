"""Valence/arousal *derived* from label probabilities through a circumplex prior (not trained).

No dataset the project may use carries valence/arousal labels, so the estimate is the expectation of
fixed per-label prototype coordinates under the network's probabilities:

    (v, a) = Σ_k p_k · (v_k, a_k),  clipped to [-1, 1]  (AffectNet convention)

The prototypes place each category where Russell's circumplex puts its nearest affect word
(Russell, J. A. (1980). A circumplex model of affect. J. Personality and Social Psychology 39(6),
1161–1178, Fig. 4 — read off the figure and scaled to the unit circle, so they are approximate):
happy ≈ "happy", sad ≈ "sad", anger ≈ "angry", fear ≈ "afraid", surprise ≈ "astonished", neutral at
the origin. Disgust and contempt do not appear in Russell (1980); they are placed by assumption in the
unpleasant, moderately aroused quadrant between "annoyed" and "miserable".

What this means for users: the numbers move smoothly with the label distribution and have the right
signs and ordering, but they are a mapping of the class probabilities, not a measurement; they carry no
information the probabilities do not. The model card says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

import numpy as np

from emostream.engines.labels import canonical_label

#: label -> (valence, arousal) prototype, both in [-1, 1]. See the module docstring for sources.
CIRCUMPLEX_PROTOTYPES: Mapping[str, tuple[float, float]] = MappingProxyType({
    "neutral": (0.0, 0.0),
    "happy": (0.83, 0.53),      # Russell 1980 "happy"
    "sad": (-0.65, -0.27),      # Russell 1980 "sad"
    "surprise": (0.16, 0.89),   # Russell 1980 "astonished"
    "fear": (-0.34, 0.64),      # Russell 1980 "afraid"
    "anger": (-0.52, 0.58),     # Russell 1980 "angry"
    "disgust": (-0.62, 0.25),   # not in Russell 1980: assumption (between "annoyed" and "miserable")
    "contempt": (-0.50, 0.15),  # not in Russell 1980: assumption (milder, less aroused than disgust)
})


def prototype_matrix(labels: Sequence[str],
                     prototypes: Mapping[str, tuple[float, float]] = CIRCUMPLEX_PROTOTYPES) -> np.ndarray:
    """(C, 2) float32 prototypes in a model's label order; unknown labels are an error, never (0, 0)."""
    rows = []
    for name in labels:
        key = canonical_label(name)
        if key not in prototypes:
            raise ValueError(f"no circumplex prototype for label {name!r}")
        rows.append(prototypes[key])
    return np.asarray(rows, dtype=np.float32)


def valence_arousal(probs: np.ndarray, labels: Sequence[str],
                    prototypes: Mapping[str, tuple[float, float]] = CIRCUMPLEX_PROTOTYPES) -> np.ndarray:
    """(N, C) probabilities in ``labels`` order -> (N, 2) float32 [valence, arousal] in [-1, 1].

    Rows are renormalised first so a caller passing unnormalised scores (or a subset of labels) still
    gets a convex combination of prototypes, never a point outside their hull.
    """
    p = np.asarray(probs, dtype=np.float32)
    if p.ndim == 1:
        p = p[None]
    if p.ndim != 2 or p.shape[1] != len(labels):
        raise ValueError(f"probabilities of shape {p.shape} do not match {len(labels)} labels")
    if np.any(p < 0) or not np.all(np.isfinite(p)):
        raise ValueError("probabilities must be finite and non-negative")
    total = p.sum(axis=1, keepdims=True)
    p = np.divide(p, total, out=np.zeros_like(p), where=total > 0)
    return np.clip(p @ prototype_matrix(labels, prototypes), -1.0, 1.0)
