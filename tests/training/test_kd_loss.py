"""The KD loss: α·KL(p_t‖p_s)·T² + (1−α)·CE, checked against hand-written formulas."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from emostream.training.kd import kd_loss


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    zs = torch.randn(16, 7, generator=g) * 2
    zt = torch.randn(16, 7, generator=g) * 2
    y = torch.randint(0, 7, (16,), generator=g)
    return zs, zt, y


def _kl_manual(zs, zt, t):
    pt = torch.softmax(zt / t, 1)
    return (pt * (torch.log(pt) - torch.log_softmax(zs / t, 1))).sum(1).mean()


def test_alpha_zero_is_cross_entropy(batch):
    zs, zt, y = batch
    assert torch.allclose(kd_loss(zs, y, zt, alpha=0.0), F.cross_entropy(zs, y))
    assert torch.allclose(kd_loss(zs, y, None, alpha=0.5), F.cross_entropy(zs, y))


def test_kl_part_vanishes_for_equal_logits(batch):
    zs, _, y = batch
    assert torch.allclose(kd_loss(zs, y, zs.clone(), alpha=0.5, temperature=2.0), 0.5 * F.cross_entropy(zs, y),
                          atol=1e-6)
    assert kd_loss(zs, y, zs.clone(), alpha=1.0).abs() < 1e-6


@pytest.mark.parametrize("t", [1.0, 2.0, 4.0])
def test_matches_formula_with_t_squared(batch, t):
    zs, zt, y = batch
    want = 0.5 * _kl_manual(zs, zt, t) * t * t + 0.5 * F.cross_entropy(zs, y)
    assert torch.allclose(kd_loss(zs, y, zt, alpha=0.5, temperature=t), want, atol=1e-5)
    assert kd_loss(zs, y, zt, alpha=1.0, temperature=t) > 0


def test_t_squared_keeps_soft_gradients_on_scale(batch):
    """Without T² the soft gradient shrinks ~1/T²; with it, it stays within a small factor across T."""
    zs, zt, y = batch
    norms = []
    for t in (1.0, 4.0):
        z = zs.clone().requires_grad_(True)
        kd_loss(z, y, zt, alpha=1.0, temperature=t).backward()
        norms.append(z.grad.norm().item())
    assert 0.1 < norms[1] / norms[0] < 3.0
    z = zs.clone().requires_grad_(True)
    (_kl_manual(z, zt, 4.0)).backward()  # the unscaled term at T=4
    assert z.grad.norm().item() < norms[1] / 8


def test_teacher_gets_no_gradient(batch):
    zs, zt, y = batch
    zt = zt.clone().requires_grad_(True)
    kd_loss(zs.clone().requires_grad_(True), y, zt).backward()
    assert zt.grad is None


def test_rejects_bad_hyperparameters(batch):
    zs, zt, y = batch
    with pytest.raises(ValueError):
        kd_loss(zs, y, zt, alpha=1.5)
    with pytest.raises(ValueError):
        kd_loss(zs, y, zt, temperature=0.0)
