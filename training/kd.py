"""Knowledge-distillation loss (EmoVLM-KD recipe), and the teachers' target it compares against.

loss = α·KL(softmax(z_t/T) ‖ softmax(z_s/T))·T² + (1−α)·CE(z_s, y)

The T² factor keeps the soft-target gradient on the same scale as the hard-label gradient when T
changes (Hinton et al. 2015: the soft gradients shrink as 1/T²), so α means the same thing at every T.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def kd_loss(student_logits: torch.Tensor, targets: torch.Tensor, teacher_logits: torch.Tensor | None = None,
            alpha: float = 0.5, temperature: float = 2.0, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean KD loss over the batch; plain (label-smoothed) cross-entropy when there is no teacher or α=0.

    ``teacher_logits`` may average several teachers' logits: the caller decides how to ensemble.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    ce = F.cross_entropy(student_logits, targets, label_smoothing=label_smoothing)
    if teacher_logits is None or alpha == 0.0:
        return ce
    t = temperature
    log_p_s = F.log_softmax(student_logits / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach() / t, dim=1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return alpha * kl * (t * t) + (1.0 - alpha) * ce


def teacher_logits(teachers: Sequence[nn.Module], x: torch.Tensor, flip: bool = False) -> torch.Tensor | None:
    """Average of the teachers' logits on the *same augmented batch* the student sees (and on its mirror
    image when ``flip``: faces are left-right symmetric in meaning, so the mirror is a free second view)."""
    if not teachers:
        return None
    views = (x, x.flip(-1)) if flip else (x,)
    with torch.no_grad():
        return torch.stack([t(v) for t in teachers for v in views]).mean(0)
