"""Augmentation for 48x48 grayscale faces, batched on tensors.

One ``affine_grid``/``grid_sample`` call does flip, rotation, scale and shift for the whole batch, which
on a 2-core CPU is far cheaper than per-image OpenCV calls. Ranges are small on purpose: faces are
already aligned crops, and large rotations or crops would teach the network poses the edge never sends.

*Camera degradations* (off by default; ``--camera-aug`` turns on :data:`CAMERA`): a fraction of the faces
gets blurred (focus, motion), shrunk and re-enlarged (a face 16-32 px across), sensor noise, or JPEG
compression, the way an edge camera degrades a face that FER2013's web photos rarely show. *Exposure*
(``--light-aug``): a gamma and a mostly darkening gain on a fraction of the faces (dim rooms, evenings).
``benchmarks/robustness.py`` measures what a model loses under the same kinds of damage. With every
probability at 0 no random numbers are drawn for them, so older runs resume and reproduce bit for bit.
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
    #: Camera degradations: probability per face and range of each (see the module docstring).
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.5, 2.0)
    lowres_p: float = 0.0
    lowres_side: tuple[int, int] = (16, 32)
    noise_p: float = 0.0
    noise_sigma: tuple[float, float] = (2 / 255, 20 / 255)
    jpeg_p: float = 0.0
    jpeg_quality: tuple[int, int] = (10, 60)
    #: Exposure: a gamma and a gain (mostly darker) on the selected faces, for rooms and evenings that are
    #: darker than FER2013's photos; the +-12.5 % brightness above does not reach there.
    light_p: float = 0.0
    light_gain: tuple[float, float] = (0.3, 1.1)
    light_gamma: tuple[float, float] = (0.7, 1.6)


#: The ``--camera-aug`` preset: each degradation on about one face in six.
CAMERA = AugmentConfig(blur_p=0.15, lowres_p=0.15, noise_p=0.15, jpeg_p=0.15)
#: What ``--light-aug`` adds (to the default augmentation, or to ``--camera-aug``): exposure on one face in five.
LIGHT_P = 0.2


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
    if cfg.light_p > 0:
        sel = (torch.rand(n, generator=gen) < cfg.light_p).view(n, 1, 1, 1)
        gain = cfg.light_gain[0] + torch.rand(n, 1, 1, 1, generator=gen) * (cfg.light_gain[1] - cfg.light_gain[0])
        gamma = cfg.light_gamma[0] * (cfg.light_gamma[1] / cfg.light_gamma[0]) ** torch.rand(n, 1, 1, 1, generator=gen)
        lit = (out.clamp_min(1e-6) ** gamma.to(x.device) * gain.to(x.device)).clamp(0, 1)
        out = torch.where(sel.to(x.device), lit, out)
    if cfg.erase_p > 0:
        out = _random_erase(out, cfg, gen)
    if cfg.blur_p > 0:
        out = _blur(out, cfg, gen)
    if cfg.lowres_p > 0:
        out = _lowres(out, cfg, gen)
    if cfg.noise_p > 0:
        sel = (torch.rand(n, generator=gen) < cfg.noise_p).view(n, 1, 1, 1)
        sigma = cfg.noise_sigma[0] + torch.rand(n, 1, 1, 1, generator=gen) * (cfg.noise_sigma[1] - cfg.noise_sigma[0])
        noise = torch.randn(x.shape, generator=gen) * sigma * sel
        out = (out + noise.to(x.device)).clamp(0, 1)
    if cfg.jpeg_p > 0:
        out = _jpeg(out, cfg, gen)
    return out


def _blur(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Gaussian blur of a random sigma on the selected faces: one separable depthwise conv for the batch."""
    n = x.shape[0]
    sel = torch.rand(n, generator=gen) < cfg.blur_p
    sigma = cfg.blur_sigma[0] + torch.rand(n, generator=gen) * (cfg.blur_sigma[1] - cfg.blur_sigma[0])
    if not bool(sel.any()):
        return x
    r = int(math.ceil(3 * cfg.blur_sigma[1]))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t.view(1, -1) / sigma.view(-1, 1)) ** 2)
    k = (k / k.sum(1, keepdim=True)).to(x.device)  # (n, 2r+1): one kernel per face
    y = x.transpose(0, 1)  # (1, n, h, w): faces as channels of one image -> grouped conv
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="replicate"), k.view(n, 1, 1, -1), groups=n)
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k.view(n, 1, -1, 1), groups=n)
    return torch.where(sel.view(n, 1, 1, 1).to(x.device), y.transpose(0, 1).clamp(0, 1), x)


def _lowres(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Shrink the selected faces to a random side (area average) and bring them back (bilinear)."""
    n, _, h, w = x.shape
    sel = torch.rand(n, generator=gen) < cfg.lowres_p
    sides = torch.randint(cfg.lowres_side[0], cfg.lowres_side[1] + 1, (n,), generator=gen)
    out = x.clone()
    for side in sides[sel].unique().tolist():  # a handful of sizes per batch
        idx = torch.nonzero(sel & (sides == side)).flatten().to(x.device)
        small = F.interpolate(x[idx], size=(side, side), mode="area")
        out[idx] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return out


def _jpeg(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """JPEG round trip at a random quality for the selected faces (OpenCV, on the CPU: a few per batch)."""
    import cv2
    import numpy as np

    n = x.shape[0]
    sel = torch.rand(n, generator=gen) < cfg.jpeg_p
    quality = torch.randint(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1, (n,), generator=gen)
    idx = torch.nonzero(sel).flatten()
    if len(idx) == 0:
        return x
    faces = (x[idx.to(x.device)].detach().cpu().squeeze(1).numpy() * 255).round().astype(np.uint8)
    back = []
    for face, q in zip(faces, quality[idx].tolist()):
        ok, buf = cv2.imencode(".jpg", face, [cv2.IMWRITE_JPEG_QUALITY, int(q)])
        back.append(cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE))
    out = x.clone()
    out[idx.to(x.device)] = torch.from_numpy(np.stack(back)).float().div(255).unsqueeze(1).to(x.device)
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
