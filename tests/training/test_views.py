"""View pools (``emostream teacher-views`` / ``distill --views``): the stored faces are what the teachers answered,
a view depends only on its seed and number, builds resume, pools refuse other faces or settings, and a student
learns from a pool with no teacher in the loop."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from emostream.training.augment import CAMERA, AugmentConfig
from emostream.training.kd import teacher_logits
from emostream.training.loop import TrainConfig, TrainingError, normalize, train
from emostream.training.models import build_model, load_checkpoint
from emostream.training.teachers import load_teacher
from emostream.training.views import ViewsError, build_views, draw, load_views


@pytest.fixture(scope="module")
def faces(fer_easy):
    return fer_easy


@pytest.fixture(scope="module")
def teacher(faces):
    return load_teacher("student", faces[0].names)  # the shipped network: a real teacher's answers


def _build(tr, teachers, out, views, **kw):
    kw.setdefault("augment", CAMERA)
    return build_views(tr, teachers, ["student"], out, views, kw.pop("augment"), log=lambda _: None, **kw)


def test_the_stored_faces_are_what_the_teachers_answered(faces, teacher, tmp_path):
    tr, _ = faces
    meta = _build(tr, [teacher], tmp_path, 2, teacher_flip=True, seed=3)
    pool = load_views(tmp_path, tr)
    assert pool.count == 2 and pool.flip and pool.images.shape == (2, len(tr), 48, 48)
    assert meta["faces"] == len(tr) and meta["augment"]["blur_p"] == CAMERA.blur_p
    x = normalize(pool.images[1].numpy(), 0.5, 4.0)
    want = teacher_logits([teacher], x, flip=True)
    assert torch.allclose(pool.logits[1], want, atol=0.02)  # stored as float16
    assert not torch.equal(pool.images[0], pool.images[1])  # two different views
    assert not np.array_equal(pool.images[0].numpy(), tr.images)  # augmented, not the originals


def test_a_view_depends_on_its_number_only_and_builds_resume(faces, teacher, tmp_path):
    tr, _ = faces
    a, b = tmp_path / "a", tmp_path / "b"
    _build(tr, [teacher], a, 2, augment=AugmentConfig())
    lines: list[str] = []
    build_views(tr, [teacher], ["student"], b, 3, AugmentConfig(), log=lines.append)
    assert len(lines) == 3
    for k in (0, 1):
        with np.load(a / f"view_00{k}.npz") as x, np.load(b / f"view_00{k}.npz") as y:
            assert np.array_equal(x["images"], y["images"]) and np.array_equal(x["logits"], y["logits"])
    (b / "view_001.npz").unlink()
    lines.clear()
    build_views(tr, [teacher], ["student"], b, 3, AugmentConfig(), log=lines.append)
    assert len(lines) == 1 and "view 2/3" in lines[0]  # only the missing view was made again


def test_pools_refuse_other_settings_and_other_faces(faces, teacher, tmp_path):
    tr, _ = faces
    _build(tr, [teacher], tmp_path, 1, augment=AugmentConfig())
    with pytest.raises(ViewsError, match="other augment"):
        _build(tr, [teacher], tmp_path, 2, augment=CAMERA)
    with pytest.raises(ViewsError, match="other faces, fingerprint"):
        _build(tr.subset(np.arange(10)), [teacher], tmp_path, 1, augment=AugmentConfig())
    with pytest.raises(ViewsError, match="made for other train faces"):
        load_views(tmp_path, tr.subset(np.arange(10)))
    with pytest.raises(ViewsError, match="no view pool"):
        load_views(tmp_path / "nowhere", tr)
    with pytest.raises(ViewsError, match="at least one --teacher"):
        build_views(tr, [], [], tmp_path / "x", 1, AugmentConfig())


def test_draw_mirrors_only_where_the_target_allows(faces, teacher, tmp_path):
    tr, _ = faces
    _build(tr, [teacher], tmp_path, 1, augment=AugmentConfig(flip=0.0, rotate_deg=0, shift=0, scale=(1, 1)))
    pool = load_views(tmp_path, tr)
    idx = torch.arange(64)
    for flip in (False, True):
        x, z = draw(replace(pool, flip=flip), idx, torch.Generator().manual_seed(0))
        stored = pool.images[0, idx].float().div(255).unsqueeze(1)
        mirrored = [not torch.equal(x[i], stored[i]) for i in range(64)]
        assert torch.equal(z, pool.logits[0, idx])
        assert (20 < sum(mirrored) < 44) if flip else not any(mirrored)


def test_a_student_learns_from_a_pool_and_resume_pins_it(faces, teacher, tmp_path):
    tr, va = faces
    _build(tr, [teacher], tmp_path / "pool", 3, teacher_flip=True)
    pool = load_views(tmp_path / "pool", tr)
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=4, batch_size=32, lr=0.05, views=str(tmp_path / "pool"))
    meta = {"arch": "student", "labels": list(tr.names), "input_size": 48}
    best = train(build_model("student"), tr, va, cfg, tmp_path / "run", progress=False, log=lambda _: None,
                 extra_meta=meta, views=pool)
    majority = max(np.mean(va.labels == i) for i in np.unique(va.labels))
    assert best["accuracy"] > majority + 0.1, (best, majority)
    assert load_checkpoint(tmp_path / "run" / "best.pt")["config"]["views"] == str(tmp_path / "pool")
    with pytest.raises(TrainingError, match="--views"):
        train(build_model("student"), tr, va, replace(cfg, views="elsewhere"), tmp_path / "run", progress=False,
              log=lambda _: None, views=pool)
    with pytest.raises(TrainingError, match="no teachers or mixup"):
        train(build_model("student"), tr, va, cfg, tmp_path / "other", teachers=[teacher], views=pool)


def test_cli_pool_then_distill_and_one_line_refusals(capsys, fer_sample, tmp_path):
    from emostream.edge.cli import main

    pool = tmp_path / "pool"
    assert main(["teacher-views", "--data", str(fer_sample), "--cache", str(tmp_path / "c"), "--teacher", "student",
                 "--teacher-flip", "--views", "2", "--out", str(pool), "--threads", "1"]) == 0
    assert "done: 2 views" in capsys.readouterr().out
    assert json.loads((pool / "meta.json").read_text())["teachers"] == ["student"]
    run = tmp_path / "run"
    assert main(["distill", "--data", str(fer_sample), "--cache", str(tmp_path / "c"), "--views", str(pool),
                 "--epochs", "1", "--threads", "1", "--no-progress", "--out", str(run)]) == 0
    ckpt = load_checkpoint(run / "best.pt")
    assert ckpt["views"] == str(pool) and ckpt["teachers"] == ["student"] and ckpt["teacher_flip"] is True
    status = main(["distill", "--data", str(fer_sample), "--views", str(pool), "--teacher", "student",
                   "--camera-aug", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert status == 2 and "drop --teacher, --camera-aug" in err and "Traceback" not in err
