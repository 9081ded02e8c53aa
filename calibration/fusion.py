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

__all__ = [
    "ALPHA", "FusionError", "Gate", "accuracy_f1", "fit_gate", "fit_gate_cv", "fixed_gate", "gate_report", "load_gate",
    "network_gate", "save_gate", "softmax", "split_halves",
]


def fit_gate(
    labels: tuple[str, ...] | list[str],
    vlm_onehot: np.ndarray,
    net_logits: np.ndarray,
    targets: np.ndarray,
    *,
    l2: float = 1e-3,
    iters: int = 300,
    prior: Gate | None = None,
) -> Gate:
    """Fit the gate as multinomial logistic regression (softmax cross-entropy + L2) with numpy.

    Newton-free but well conditioned: full-batch gradient descent with a backtracking step (the
    loss is convex, so this converges without tuning), started from the fixed gate so a tiny
    dataset cannot do worse than the prior by much.

    ``prior``: shrink the weights towards this gate instead of towards zero (and start from it). With the
    network-only gate (:func:`network_gate`) as prior, a strong ``l2`` means "trust the network, give the VLM
    only the weight the data proves" -- the right default when a few hundred faces fit 2C^2+C numbers.
    """
    c = len(labels)
    x = gate_features(vlm_onehot, net_logits, c)
    y = np.asarray(targets)
    if y.shape != (x.shape[0],) or y.min() < 0 or y.max() >= c:
        raise FusionError(f"targets must be {x.shape[0]} class indices in [0, {c})")
    n = x.shape[0]
    xb = np.concatenate([x, np.ones((n, 1))], axis=1)
    init = prior if prior is not None else fixed_gate(labels)
    theta = np.concatenate([init.weight, init.bias[:, None]], axis=1)  # (C, 2C+1)
    # With a prior the bias is shrunk too (towards the prior's): a free bias re-weights the class priors, which
    # a few hundred faces cannot estimate; without one, the original behaviour (weights only, towards zero).
    cols = theta.shape[1] if prior is not None else theta.shape[1] - 1
    centre = theta[:, :cols].copy() if prior is not None else np.zeros((c, cols))
    onehot_y = np.eye(c)[y]

    def loss_grad(th: np.ndarray) -> tuple[float, np.ndarray]:
        p = softmax(xb @ th.T)
        d = th[:, :cols] - centre
        loss = -np.log(np.clip(p[np.arange(n), y], 1e-12, None)).mean() + 0.5 * l2 * (d**2).sum()
        grad = (p - onehot_y).T @ xb / n
        grad[:, :cols] += l2 * d
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


# --------------------------------------------------------------------------- fit-gate: choose, score, report

#: Shrinkage strengths tried by :func:`fit_gate_cv` (towards the network-only gate).
L2_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


def network_gate(labels: tuple[str, ...] | list[str]) -> Gate:
    """The gate that ignores the VLM: fused = the network's own distribution (W = [0 | I])."""
    c = len(labels)
    return Gate(tuple(labels), np.concatenate([np.zeros((c, c)), np.eye(c)], axis=1), np.zeros(c))


def fit_gate_cv(
    labels: tuple[str, ...] | list[str],
    vlm_onehot: np.ndarray,
    net_logits: np.ndarray,
    targets: np.ndarray,
    *,
    folds: int = 3,
    seed: int = 0,
    grid: tuple[float, ...] = L2_GRID,
) -> tuple[Gate, float]:
    """The gate fitted with the shrinkage (towards the network-only gate) that k-fold CV on these faces prefers.

    Why: EmoVLM-KD's gate is learned on plenty of data; a user's folder may hold a few hundred faces. Choosing
    the strength by held-out log-loss inside the fitting half lets a weak VLM be ignored and a strong one be
    trusted, without touching the half the report is scored on.
    """
    y = np.asarray(targets)
    n = len(y)
    prior = network_gate(labels)
    folds = max(2, min(folds, n))
    order = np.random.default_rng(seed).permutation(n)
    parts = [order[i::folds] for i in range(folds)]
    best_l2, best_loss = grid[-1], np.inf
    for l2 in grid:
        total = 0.0
        for k in range(folds):
            test = parts[k]
            train = np.concatenate([parts[j] for j in range(folds) if j != k])
            if len(train) == 0 or len(test) == 0:
                continue
            g = fit_gate(labels, vlm_onehot[train], net_logits[train], y[train], l2=l2, prior=prior)
            p = softmax(g.logits(vlm_onehot[test], net_logits[test]))
            total += -np.log(np.clip(p[np.arange(len(test)), y[test]], 1e-12, None)).sum()
        if total < best_loss - 1e-9:
            best_l2, best_loss = l2, total
    return fit_gate(labels, vlm_onehot, net_logits, y, l2=best_l2, prior=prior), best_l2


def accuracy_f1(truth: np.ndarray, pred: np.ndarray, c: int) -> tuple[float, float]:
    """(accuracy, macro-F1 over the classes present in ``truth``); a prediction of -1 (no answer) is wrong."""
    truth, pred = np.asarray(truth), np.asarray(pred)
    if len(truth) == 0:
        return float("nan"), float("nan")
    acc = float((truth == pred).mean())
    f1s = []
    for k in range(c):
        if not (truth == k).any():
            continue
        tp = float(((pred == k) & (truth == k)).sum())
        fp = float(((pred == k) & (truth != k)).sum())
        fn = float(((pred != k) & (truth == k)).sum())
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return acc, float(np.mean(f1s))


def split_halves(targets: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified halves (fit, held out): every label lands in both halves in proportion."""
    rng = np.random.default_rng(seed)
    fit, held = [], []
    for k in np.unique(targets):
        idx = rng.permutation(np.flatnonzero(targets == k))
        cut = (len(idx) + 1) // 2
        fit += idx[:cut].tolist()
        held += idx[cut:].tolist()
    return np.sort(np.array(fit, dtype=int)), np.sort(np.array(held, dtype=int))


def gate_report(
    labels: tuple[str, ...],
    vlm_idx: np.ndarray,
    net_probs: np.ndarray,
    targets: np.ndarray,
    *,
    seed: int = 0,
) -> tuple[Gate, dict]:
    """Fit on one stratified half, score network / VLM / fixed gate / fitted gate on the other.

    ``vlm_idx`` is the VLM's answer per face as an index into ``labels`` (-1: no answer, fed to the gate as an
    all-zero one-hot, as the reasoner does for a missing vote).
    """
    c = len(labels)
    vlm_idx = np.asarray(vlm_idx)
    onehot = np.zeros((len(vlm_idx), c))
    has = vlm_idx >= 0
    onehot[np.flatnonzero(has), vlm_idx[has]] = 1.0
    logits = np.log(np.clip(np.asarray(net_probs, dtype=np.float64), 1e-6, 1.0))
    y = np.asarray(targets)
    fit, held = split_halves(y, seed)
    if len(fit) < 2 or len(held) < 1:
        raise FusionError(f"{len(y)} usable faces: too few to fit a gate on one half and score it on the other")
    gate, l2 = fit_gate_cv(labels, onehot[fit], logits[fit], y[fit], seed=seed)
    rows = {
        "network": accuracy_f1(y[held], logits[held].argmax(1), c),
        "vlm": accuracy_f1(y[held], vlm_idx[held], c),
        "fixed_gate": accuracy_f1(y[held], fixed_gate(labels).logits(onehot[held], logits[held]).argmax(1), c),
        "fitted_gate": accuracy_f1(y[held], gate.logits(onehot[held], logits[held]).argmax(1), c),
    }
    report = {
        "faces": int(len(y)), "fit": int(len(fit)), "held_out": int(len(held)), "l2": l2,
        "vlm_answered": float(has.mean()),
        "held_out_scores": {k: {"accuracy": round(a, 4), "macro_f1": round(f, 4)} for k, (a, f) in rows.items()},
        "vlm_weight": float(np.mean(np.diag(gate.weight[:, :c]))),
        "network_weight": float(np.mean(np.diag(gate.weight[:, c:]))),
    }
    best_input = max(rows["network"][0], rows["vlm"][0])
    fused = rows["fitted_gate"][0]
    report["fused_at_least_best_input"] = bool(fused >= best_input - 1e-12)
    if not report["fused_at_least_best_input"]:
        # One face is 1/len(held) of accuracy: name the gap in faces, and what would close it.
        gap = round((best_input - fused) * len(held))
        report["why_not"] = (
            f"fused accuracy is {gap} held-out face(s) below the better input on {len(held)} faces; the gate was "
            f"fitted on {len(fit)} faces (chosen shrinkage l2={l2}), too few to separate the two inputs' errors "
            "reliably -- give fit-gate more labelled faces")
    return gate, report
