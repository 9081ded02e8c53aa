"""Fitting the EmoVLM-KD fusion gate on labelled data (offline; the gate itself is ``reasoner.fusion``).

The reasoner applies the gate at run time (``emostream.reasoner.fusion``: the :class:`Gate` type, the
documented fixed weighting and the gate file format); this module only fits one. Why the split: no
runtime layer may import calibration (``make lint`` checks it), while calibration may use the
reasoner's gate type. The names of the application side are re-exported so that fitting code needs
one import.
"""

from __future__ import annotations

import numpy as np

from emostream.reasoner.fusion import (
    ALPHA,
    FusionError,
    Gate,
    fixed_gate,
    gate_features,
    load_gate,
    save_gate,
    softmax,
)

__all__ = ["ALPHA", "FusionError", "Gate", "fit_gate", "fixed_gate", "load_gate", "save_gate", "softmax"]


def fit_gate(
    labels: tuple[str, ...] | list[str],
    vlm_onehot: np.ndarray,
    net_logits: np.ndarray,
    targets: np.ndarray,
    *,
    l2: float = 1e-3,
    iters: int = 300,
) -> Gate:
    """Fit the gate as multinomial logistic regression (softmax cross-entropy + L2) with numpy.

    Newton-free but well conditioned: full-batch gradient descent with a backtracking step (the
    loss is convex, so this converges without tuning), started from the fixed gate so a tiny
    dataset cannot do worse than the prior by much.
    """
    c = len(labels)
    x = gate_features(vlm_onehot, net_logits, c)
    y = np.asarray(targets)
    if y.shape != (x.shape[0],) or y.min() < 0 or y.max() >= c:
        raise FusionError(f"targets must be {x.shape[0]} class indices in [0, {c})")
    n = x.shape[0]
    xb = np.concatenate([x, np.ones((n, 1))], axis=1)
    init = fixed_gate(labels)
    theta = np.concatenate([init.weight, init.bias[:, None]], axis=1)  # (C, 2C+1)
    onehot_y = np.eye(c)[y]

    def loss_grad(th: np.ndarray) -> tuple[float, np.ndarray]:
        p = softmax(xb @ th.T)
        loss = -np.log(np.clip(p[np.arange(n), y], 1e-12, None)).mean() + 0.5 * l2 * (th[:, :-1] ** 2).sum()
        grad = (p - onehot_y).T @ xb / n
        grad[:, :-1] += l2 * th[:, :-1]
        return float(loss), grad

    step = 1.0
    loss, grad = loss_grad(theta)
    for _ in range(iters):
        while step > 1e-6:
            cand = theta - step * grad
            cand_loss, cand_grad = loss_grad(cand)
            if cand_loss <= loss - 0.5 * step * float((grad**2).sum()):
                break
            step *= 0.5
        else:
            break
        theta, loss, grad = cand, cand_loss, cand_grad
        step *= 1.5
    return Gate(tuple(labels), theta[:, :-1], theta[:, -1], fitted=True)
