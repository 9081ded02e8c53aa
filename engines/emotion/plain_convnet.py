"""The student architecture: a plain conv3x3/BN/ReLU/max-pool stack (torch: training, torch backend).

Plain VGG-style blocks on purpose: every op maps 1:1 onto ONNX Runtime and TensorRT kernels (conv+BN+ReLU
fuse into one), INT8-quantizes cleanly, and has no depthwise or attention op whose CPU latency is memory
bound. Width and depth per stage are constructor arguments so a model card (``"arch": "plain_convnet"``
plus ``arch_kwargs``) rebuilds exactly the network its weights belong to.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class PlainConvNet(nn.Module):
    """Stages of ``(channels, convs)``, a 2x2 max-pool after each stage but the last, GAP, one linear."""

    def __init__(self, stages: Sequence[Sequence[int]], num_classes: int = 7, in_channels: int = 1,
                 dropout: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for i, (c_out, n) in enumerate(stages):
            for _ in range(int(n)):
                layers += [nn.Conv2d(c_in, int(c_out), 3, padding=1, bias=False), nn.BatchNorm2d(int(c_out)),
                           nn.ReLU(inplace=True)]
                c_in = int(c_out)
            if i < len(stages) - 1:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, S, S) normalised crops -> (N, classes) logits (softmax/temperature live in the engine)."""
        x = self.pool(self.features(x)).flatten(1)
        return self.head(self.dropout(x))
