"""Batched face augmentation: deterministic per seed, shape- and range-preserving, really changes images."""

from __future__ import annotations

import torch

from emostream.training.augment import AugmentConfig, augment_batch


def _faces(data_file):
    from emostream.training.data import load_fer_split

    ds = load_fer_split(data_file("fer2013"), "val")
    return torch.from_numpy(ds.images[:64]).float().div(255).unsqueeze(1)


def test_deterministic_and_in_range(data_file):
    x = _faces(data_file)
    a = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(3))
    b = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(3))
    c = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(4))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    assert (a - x).abs().mean() > 0.02  # it does something


def test_flip_only_is_a_mirror(data_file):
    x = _faces(data_file)
    cfg = AugmentConfig(flip=1.0, rotate_deg=0, scale=(1.0, 1.0), shift=0, brightness=0, contrast=0, erase_p=0)
    out = augment_batch(x, cfg, torch.Generator().manual_seed(0))
    assert torch.allclose(out, torch.flip(x, dims=[3]), atol=1e-5)


def test_identity_config_keeps_images(data_file):
    x = _faces(data_file)
    cfg = AugmentConfig(flip=0.0, rotate_deg=0, scale=(1.0, 1.0), shift=0, brightness=0, contrast=0, erase_p=0)
    assert torch.allclose(augment_batch(x, cfg, torch.Generator().manual_seed(0)), x, atol=1e-5)
