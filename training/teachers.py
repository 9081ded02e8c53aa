"""Teachers for distillation: our own checkpoints, or any registered engine model (e.g. the v0 port).

A registered model may expect another input size, normalisation and label order than the student (v0:
64x64, ``(x/255-0.5)*2``, fer's label order). :class:`CardTeacher` adapts the *student's* normalised
batch to what the teacher's card asks and reorders its logits into the student's label names, so the KD
loss compares like with like on the very same augmented images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from emostream.training.models import CheckpointError, load_checkpoint_model


class CardTeacher(nn.Module):
    """A frozen network plus the input/label adaptation from the student's batch to its card."""

    def __init__(self, net: nn.Module, size: int, mean: float, scale: float, order: Sequence[int],
                 student_mean: float, student_scale: float) -> None:
        super().__init__()
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.size, self.mean, self.scale = size, mean, scale
        self.student_mean, self.student_scale = student_mean, student_scale
        self.register_buffer("order", torch.as_tensor(list(order), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x01 = x / self.student_scale + self.student_mean  # back to [0, 1] pixels
        if x01.shape[-1] != self.size:
            # Bilinear with half-pixel centres: what cv2.resize does when the edge feeds v0 directly.
            x01 = F.interpolate(x01, size=(self.size, self.size), mode="bilinear", align_corners=False)
        z = self.net(((x01 - self.mean) * self.scale).contiguous())
        return z.index_select(1, self.order)


def load_teacher(spec: str | Path, labels: Sequence[str], student_mean: float = 0.5,
                 student_scale: float = 4.0) -> nn.Module:
    """``spec`` is a checkpoint path (``best.pt``) or a registered model name / card (``v0``)."""
    path = Path(spec)
    if path.suffix == ".pt" or path.is_file() and path.suffix not in (".json", ".onnx"):
        return load_checkpoint_model(path)
    from emostream.engines.emotion import load_model_info
    from emostream.engines.emotion.archs import build_arch

    info = load_model_info(str(spec))
    if info.arch is None or info.torch_state is None or not info.torch_state.is_file():
        raise CheckpointError(f"teacher {spec!r} has no torch architecture/weights in its card")
    if info.outputs != "logits" or info.channels != 1:
        raise CheckpointError(f"teacher {spec!r} must output logits from grayscale crops")
    missing = [n for n in labels if n not in info.labels]
    if missing:
        raise CheckpointError(f"teacher {spec!r} lacks the student's labels {missing}")
    net = build_arch(info.arch, info.arch_kwargs)
    net.load_state_dict(torch.load(info.torch_state, map_location="cpu", weights_only=True))
    return CardTeacher(net, info.input_size, info.mean, info.scale, [info.labels.index(n) for n in labels],
                       student_mean, student_scale)
