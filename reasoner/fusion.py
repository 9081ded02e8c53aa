"""Gate fusion of the VLM's answer with the per-frame network (EmoVLM-KD style): the gate's *application*.

EmoVLM-KD fuses the VLM and the distilled network with a gate: concatenate the VLM's one-hot
answer and the network's logits and pass them through one linear layer. That layer has to be
learned on labelled data; until a fitted gate exists (``fit_gate`` + ``save_gate``), the reasoner
uses the documented fixed weighting ``fixed_gate``:

    fused_logits = ALPHA * onehot(vlm) + log p_net          (W = [ALPHA*I | I], b = 0)

i.e. the VLM's vote multiplies the network's odds for the named label by ``exp(ALPHA) = 3``. Why a
factor 3: a verified VLM answer should overturn a hesitant network (top-2 margin < 3x) but not a
confident one; and it is a linear layer of the fitted form, so fitting only replaces the numbers.

Pure numpy; no torch (the edge runs the fusion in-process). Fitting a gate is offline work and lives
in ``emostream.calibration.fusion.fit_gate``; the reasoner, a runtime layer, must not import the
calibration layer (``make lint``), so the gate type, the fixed gate and the gate file format live here
and calibration imports them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: The fixed gate's VLM weight: exp(ALPHA) = 3 (see the module docstring).
ALPHA = float(np.log(3.0))


class FusionError(ValueError):
    """Inputs of the wrong shape, or a gate file that does not fit the labels."""


@dataclass(frozen=True)
class Gate:
    """One linear layer on ``[onehot(vlm) (C), network logits (C)]`` -> C fused logits."""

    labels: tuple[str, ...]
    weight: np.ndarray  # (C, 2C)
    bias: np.ndarray  # (C,)
    fitted: bool = False

    def logits(self, vlm_onehot: np.ndarray, net_logits: np.ndarray) -> np.ndarray:
        x = gate_features(vlm_onehot, net_logits, len(self.labels))
        return x @ self.weight.T + self.bias

    def fuse(self, vlm_label: str | None, net_probs: np.ndarray) -> np.ndarray:
        """Fused probabilities for one keyframe (``vlm_label`` None: network alone)."""
        c = len(self.labels)
        onehot = np.zeros((1, c))
        if vlm_label is not None:
            if vlm_label not in self.labels:
                raise FusionError(f"label {vlm_label!r} not in the gate's labels {self.labels}")
            onehot[0, self.labels.index(vlm_label)] = 1.0
        p = np.asarray(net_probs, dtype=np.float64).reshape(1, c)
        return softmax(self.logits(onehot, np.log(np.clip(p, 1e-6, 1.0))))[0]


def fixed_gate(labels: tuple[str, ...] | list[str], alpha: float = ALPHA) -> Gate:
    """The documented fixed weighting used until a gate is fitted."""
    c = len(labels)
    weight = np.concatenate([alpha * np.eye(c), np.eye(c)], axis=1)
    return Gate(tuple(labels), weight, np.zeros(c))


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def gate_features(vlm_onehot: np.ndarray, net_logits: np.ndarray, c: int) -> np.ndarray:
    """The gate's input ``[onehot(vlm), net logits]`` (N, 2C): one definition for fitting and applying."""
    a = np.asarray(vlm_onehot, dtype=np.float64)
    b = np.asarray(net_logits, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape != b.shape or a.shape[1] != c:
        raise FusionError(f"expected two (N, {c}) arrays, got {a.shape} and {b.shape}")
    return np.concatenate([a, b], axis=1)


def save_gate(gate: Gate, path: str | Path) -> None:
    Path(path).write_text(
        json.dumps(
            {
                "kind": "emostream-fusion-gate",
                "labels": list(gate.labels),
                "weight": gate.weight.tolist(),
                "bias": gate.bias.tolist(),
                "fitted": gate.fitted,
            }
        )
    )


def load_gate(path: str | Path, labels: tuple[str, ...] | list[str] | None = None) -> Gate:
    """Read a gate written by :func:`save_gate`; ``labels`` (if given) must match its labels."""
    try:
        raw = json.loads(Path(path).read_text())
        gate = Gate(
            tuple(raw["labels"]),
            np.asarray(raw["weight"], dtype=np.float64),
            np.asarray(raw["bias"], dtype=np.float64),
            bool(raw.get("fitted", True)),
        )
    except FileNotFoundError:
        raise FusionError(f"fusion gate file not found: {path}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FusionError(f"fusion gate file {path} is not readable ({exc})") from None
    c = len(gate.labels)
    if gate.weight.shape != (c, 2 * c) or gate.bias.shape != (c,):
        raise FusionError(f"fusion gate file {path} has weights of the wrong shape")
    if labels is not None and tuple(labels) != gate.labels:
        raise FusionError(f"fusion gate {path} was fitted for labels {gate.labels}, not {tuple(labels)}")
    return gate
