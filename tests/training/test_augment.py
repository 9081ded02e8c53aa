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


_IDENTITY = dict(flip=0.0, rotate_deg=0, scale=(1.0, 1.0), shift=0, brightness=0, contrast=0, erase_p=0)


def _high_freq(x: torch.Tensor) -> float:
    """Mean absolute Laplacian: what blur, low resolution and JPEG remove, and noise adds."""
    lap = x[..., 1:-1, 1:-1] * 4 - x[..., :-2, 1:-1] - x[..., 2:, 1:-1] - x[..., 1:-1, :-2] - x[..., 1:-1, 2:]
    return float(lap.abs().mean())


def test_camera_degradations_do_what_they_say(data_file):
    from dataclasses import replace

    x = _faces(data_file)
    base = AugmentConfig(**_IDENTITY)
    sharp = _high_freq(x)
    for field, lower in [("blur_p", True), ("lowres_p", True), ("jpeg_p", True), ("noise_p", False)]:
        cfg = replace(base, **{field: 1.0})
        a = augment_batch(x, cfg, torch.Generator().manual_seed(1))
        b = augment_batch(x, cfg, torch.Generator().manual_seed(1))
        assert torch.equal(a, b), field  # deterministic per seed
        assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1, field
        assert (_high_freq(a) < 0.9 * sharp) if lower else (_high_freq(a) > 1.1 * sharp), field
        # The face is still there: degraded, not replaced.
        assert torch.corrcoef(torch.stack([a.flatten(), x.flatten()]))[0, 1] > 0.8, field


def test_camera_preset_touches_some_faces_not_all(data_file):
    from emostream.training.augment import CAMERA

    x = _faces(data_file)
    cfg = AugmentConfig(**_IDENTITY, blur_p=CAMERA.blur_p, lowres_p=CAMERA.lowres_p, noise_p=CAMERA.noise_p,
                        jpeg_p=CAMERA.jpeg_p)
    out = augment_batch(x, cfg, torch.Generator().manual_seed(0))
    changed = ((out - x).abs().flatten(1).max(1).values > 1e-4).float().mean()
    assert 0.2 < changed < 0.9  # each of 4 kinds on ~15 % of faces: about half the batch


def test_exposure_changes_light_on_some_faces_and_keeps_them(data_file):
    from dataclasses import replace

    from emostream.training.augment import LIGHT_P

    x = _faces(data_file)
    all_lit = replace(AugmentConfig(**_IDENTITY), light_p=1.0)
    a = augment_batch(x, all_lit, torch.Generator().manual_seed(2))
    assert torch.equal(a, augment_batch(x, all_lit, torch.Generator().manual_seed(2)))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    ratio = a.mean(dim=(1, 2, 3)) / x.mean(dim=(1, 2, 3))
    assert ratio.min() < 0.5 and float((ratio < 1).float().mean()) > 0.6  # mostly darker, some much darker
    for i in range(len(x)):  # the same face: light changes monotonically, so the ranks of pixels barely move
        assert torch.corrcoef(torch.stack([a[i].flatten(), x[i].flatten()]))[0, 1] > 0.85
    some = augment_batch(x, replace(AugmentConfig(**_IDENTITY), light_p=LIGHT_P), torch.Generator().manual_seed(0))
    changed = ((some - x).abs().flatten(1).max(1).values > 1e-4).float().mean()
    assert 0.05 < changed < 0.45


def test_light_aug_flag_adds_exposure_to_either_preset():
    from emostream.training.augment import CAMERA, LIGHT_P
    from emostream.training.commands import _augment

    assert _augment(False, False) == AugmentConfig() and _augment(True, False) == CAMERA
    assert _augment(False, True).light_p == LIGHT_P and _augment(False, True).blur_p == 0
    assert _augment(True, True).light_p == LIGHT_P and _augment(True, True).blur_p == CAMERA.blur_p
