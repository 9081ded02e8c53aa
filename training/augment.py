"""Augmentation for 48x48 grayscale faces, batched on tensors.

One ``affine_grid``/``grid_sample`` call does flip, rotation, scale and shift for the whole batch, which
on a 2-core CPU is far cheaper than per-image OpenCV calls. Ranges are small on purpose: faces are
already aligned crops, and large rotations or crops would teach the network poses the edge never sends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    flip: float = 0.5
    rotate_deg: float = 12.0
    scale: tuple[float, float] = (0.88, 1.12)
    shift: float = 0.08
    brightness: float = 0.25
    contrast: float = 0.25
    erase_p: float = 0.4
    erase_area: tuple[float, float] = (0.02, 0.15)


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Augment a float batch (N, 1, S, S) in [0, 1]; returns a new tensor, deterministic given ``gen``.

    ``gen`` is a CPU generator whatever ``x``'s device: the random parameters are drawn on the CPU and
    moved, so a CUDA run draws the same augmentations as a CPU run of the same seed (and CPU runs are
    bit-for-bit what they were before devices existed).
    """
    n, _, h, w = x.shape
    u = lambda *shape: torch.rand(*shape, generator=gen).to(x.device)  # noqa: E731 - local shorthand
    angle = (u(n) * 2 - 1) * math.radians(cfg.rotate_deg)
    scale = cfg.scale[0] + u(n) * (cfg.scale[1] - cfg.scale[0])
    flip = torch.where(u(n) < cfg.flip, -1.0, 1.0)
    tx, ty = (u(n) * 2 - 1) * cfg.shift * 2, (u(n) * 2 - 1) * cfg.shift * 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # Photometric: contrast around the per-image mean, then brightness.
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    c = 1 + (u(n, 1, 1, 1) * 2 - 1) * cfg.contrast
    b = (u(n, 1, 1, 1) * 2 - 1) * cfg.brightness * 0.5
    out = ((out - mean) * c + mean + b).clamp(0, 1)
    if cfg.erase_p > 0:
        out = _random_erase(out, cfg, gen)
    return out


def _random_erase(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Blank one random rectangle per selected image with noise (occlusion by hands, glasses, masks)."""
    n, _, h, w = x.shape
    sel = torch.rand(n, generator=gen) < cfg.erase_p
    area = cfg.erase_area[0] + torch.rand(n, generator=gen) * (cfg.erase_area[1] - cfg.erase_area[0])
    aspect = torch.exp((torch.rand(n, generator=gen) * 2 - 1) * math.log(2.0))
    eh = (torch.sqrt(area * aspect) * h).clamp(1, h).long()
    ew = (torch.sqrt(area / aspect) * w).clamp(1, w).long()
    y0 = (torch.rand(n, generator=gen) * (h - eh + 1).float()).long()
    x0 = (torch.rand(n, generator=gen) * (w - ew + 1).float()).long()
    ys = torch.arange(h).view(1, h, 1)
    xs = torch.arange(w).view(1, 1, w)
    mask = ((ys >= y0.view(n, 1, 1)) & (ys < (y0 + eh).view(n, 1, 1))
            & (xs >= x0.view(n, 1, 1)) & (xs < (x0 + ew).view(n, 1, 1)) & sel.view(n, 1, 1))
    noise = torch.rand(x.shape, generator=gen)
    return torch.where(mask.unsqueeze(1).to(x.device), noise.to(x.device), x)
