"""Valence/arousal *derived* from label probabilities through a circumplex prior (not trained).

No dataset the project may use carries valence/arousal labels, so the estimate is the expectation of
fixed per-label prototype coordinates under the network's probabilities:

    (v, a) = Σ_k p_k · (v_k, a_k),  clipped to [-1, 1]  (AffectNet convention)

The prototypes are the contract's one table (``emostream.contract.CIRCUMPLEX_PROTOTYPES``, Russell
1980 Fig. 4; disgust and contempt by assumption; sources per entry there). The reasoner's knowledge
engine and SEKE checks use the very same table, so frame records and reasoning replies agree.

What this means for users: the numbers move smoothly with the label distribution and have the right
signs and ordering, but they are a mapping of the class probabilities, not a measurement; they carry no
information the probabilities do not. The model card says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from emostream.contract import CIRCUMPLEX_PROTOTYPES, canonical_label

__all__ = ["CIRCUMPLEX_PROTOTYPES", "prototype_matrix", "valence_arousal"]


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
