"""A short real training run on a few hundred FER2013 faces: the loop learns and checkpoints resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from emostream.training.augment import AugmentConfig
from emostream.training.loop import TrainConfig, TrainingError, train
from emostream.training.models import build_model, load_checkpoint_model


@pytest.fixture
def easy_data(fer_easy):
    return fer_easy


def _cfg(epochs: int) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=32, lr=0.05, augment=AugmentConfig(erase_p=0.0, rotate_deg=5))


def test_loss_falls_and_accuracy_beats_chance(easy_data, tmp_path):
    torch.manual_seed(0)
    tr, va = easy_data
    best = train(build_model("student"), tr, va, _cfg(4), tmp_path, progress=False, log=lambda _: None,
                 extra_meta={"arch": "student", "labels": list(tr.names), "input_size": 48})
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] - 0.1
    majority = max(np.mean(va.labels == i) for i in np.unique(va.labels))
    assert best["accuracy"] > majority + 0.1, (best, majority)
    # The best checkpoint rebuilds from its own metadata and reproduces its val accuracy.
    model = load_checkpoint_model(tmp_path / "best.pt")
    from emostream.training.loop import evaluate

    assert evaluate(model, va, 0.5, 4.0).accuracy == pytest.approx(best["accuracy"])


def test_resume_continues_and_refuses_other_schedule(easy_data, tmp_path):
    tr, va = easy_data
    small_tr = tr.subset(np.arange(0, len(tr), 4))
    meta = {"arch": "student", "labels": list(tr.names), "input_size": 48}
    train(build_model("student"), small_tr, va, _cfg(2), tmp_path, progress=False, log=lambda _: None,
          extra_meta=meta)
    messages: list[str] = []
    train(build_model("student"), small_tr, va, _cfg(2), tmp_path, progress=False, log=messages.append,
          extra_meta=meta)
    assert messages and messages[0].startswith("resumed") and len(messages) == 1  # nothing left to do
    with pytest.raises(TrainingError, match="epochs=2"):
        train(build_model("student"), small_tr, va, _cfg(3), tmp_path, progress=False, log=lambda _: None)
    # Nor another augmentation or precision half-way (a resumed run must continue what was started).
    from dataclasses import replace

    from emostream.training.augment import CAMERA
    from emostream.training.loop import bf16_native

    camera = replace(_cfg(2), augment=replace(_cfg(2).augment, blur_p=CAMERA.blur_p, jpeg_p=CAMERA.jpeg_p))
    with pytest.raises(TrainingError, match="other augmentation"):
        train(build_model("student"), small_tr, va, camera, tmp_path, progress=False, log=lambda _: None)
    with pytest.raises(TrainingError, match="--teacher-flip False, this run asks for True"):
        train(build_model("student"), small_tr, va, replace(_cfg(2), teacher_flip=True), tmp_path, progress=False,
              log=lambda _: None)
    if bf16_native():
        with pytest.raises(TrainingError, match="trained in bf16 autocast, this run would use fp32"):
            train(build_model("student"), small_tr, va, replace(_cfg(2), bf16=False), tmp_path, progress=False,
                  log=lambda _: None)


def test_time_budget_stops_with_the_lr_annealed(easy_data, tmp_path):
    from dataclasses import replace

    from emostream.training.loop import one_cycle_lr

    assert one_cycle_lr(0.0, 0.1) == pytest.approx(0.1 / 25)
    assert one_cycle_lr(0.15, 0.1) == pytest.approx(0.1)
    assert one_cycle_lr(1.0, 0.1) < 1e-6
    tr, va = easy_data
    cfg = replace(_cfg(50), time_budget_s=1e-3)  # spent after the first step
    train(build_model("student"), tr, va, cfg, tmp_path, progress=False, log=lambda _: None)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["lr"] < 1e-6


def test_bf16_autocast_only_where_the_cpu_has_it():
    """bf16 on the CPU pays only with AVX512-BF16/AMX; elsewhere it is emulated, slower than fp32."""
    from emostream.training.loop import autocast_bf16, bf16_native

    cpu = torch.device("cpu")
    assert autocast_bf16(cpu, True) == bf16_native()
    assert autocast_bf16(cpu, False) is False
    assert autocast_bf16(torch.device("cuda"), True) is True  # the decision only; no GPU needed
    flags = open("/proc/cpuinfo").read()
    assert bf16_native() == ("avx512_bf16" in flags or "amx_bf16" in flags)


def test_no_bf16_trains_in_fp32_where_bf16_is_the_default(easy_data, tmp_path):
    """``--no-bf16`` on a CPU with native bf16: the fp32 path (what AVX2-only CPUs always run) still learns.
    (Elsewhere every run, the first test's included, is fp32 already.)"""
    from dataclasses import replace

    from emostream.training.loop import bf16_native

    if not bf16_native():
        pytest.skip("this CPU has no native bf16 (AVX512-BF16/AMX): every run here is fp32 already")
    torch.manual_seed(0)
    tr, va = easy_data
    best = train(build_model("student"), tr, va, replace(_cfg(4), bf16=False), tmp_path, progress=False,
                 log=lambda _: None, extra_meta={"arch": "student", "labels": list(tr.names), "input_size": 48})
    majority = max(np.mean(va.labels == i) for i in np.unique(va.labels))
    assert best["accuracy"] > majority + 0.1, (best, majority)


def test_teacher_flip_target_is_the_mean_over_both_mirror_views(easy_data):
    """A trained (not mirror-symmetric) network: its logits differ on the mirror image, so the flip target is
    neither view alone but their mean, averaged over teachers too."""
    from emostream.training.kd import teacher_logits as _teacher_logits
    from emostream.training.loop import normalize

    tr, _ = easy_data
    torch.manual_seed(0)
    a, b = build_model("student").eval(), build_model("student").eval()
    x = normalize(tr.images[:16], 0.5, 4.0)
    plain = _teacher_logits([a, b], x)
    flipped = _teacher_logits([a, b], x, flip=True)
    mirror = torch.stack([a(x.flip(-1)), b(x.flip(-1))]).mean(0).detach()
    assert not torch.allclose(plain, mirror, atol=1e-4)  # the views really differ
    assert torch.allclose(flipped, (plain + mirror) / 2, atol=1e-5)
    assert _teacher_logits([], x, flip=True) is None


def test_mixup_learns_draws_reproducibly_and_pins_resume(easy_data, tmp_path):
    from dataclasses import replace

    from emostream.training.loop import mixup_draw

    lams = [mixup_draw(0.4, 8, torch.Generator().manual_seed(s))[0] for s in range(200)]
    assert all(0.0 <= v <= 1.0 for v in lams)
    assert np.mean([v < 0.1 or v > 0.9 for v in lams]) > 0.4  # Beta(0.4, 0.4) piles up at the ends
    a, b = mixup_draw(0.4, 8, torch.Generator().manual_seed(7)), mixup_draw(0.4, 8, torch.Generator().manual_seed(7))
    assert a[0] == b[0] and torch.equal(a[1], b[1]) and sorted(a[1].tolist()) == list(range(8))

    torch.manual_seed(0)
    tr, va = easy_data
    cfg = replace(_cfg(4), mixup=0.4)
    meta = {"arch": "student", "labels": list(tr.names), "input_size": 48}
    best = train(build_model("student"), tr, va, cfg, tmp_path, progress=False, log=lambda _: None, extra_meta=meta)
    majority = max(np.mean(va.labels == i) for i in np.unique(va.labels))
    assert best["accuracy"] > majority + 0.1, (best, majority)
    with pytest.raises(TrainingError, match="--mixup 0.4, this run asks for 0.2"):
        train(build_model("student"), tr, va, replace(cfg, mixup=0.2), tmp_path, progress=False, log=lambda _: None)


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--mixup", "-1", "mixup alpha must be within [0, 100]"),
    ("--ema", "1", "EMA decay must be within [0, 1)"),
])
def test_number_flags_refuse_values_out_of_range(capsys, flag, value, message):
    from emostream.edge.cli import main as cli_main

    with pytest.raises(SystemExit):
        cli_main(["distill", flag, value])
    assert message in capsys.readouterr().err


def test_ema_selects_and_saves_the_average_and_pins_resume(easy_data, tmp_path):
    from dataclasses import replace

    from emostream.training.loop import evaluate

    torch.manual_seed(0)
    tr, va = easy_data
    cfg = replace(_cfg(4), ema=0.6)
    meta = {"arch": "student", "labels": list(tr.names), "input_size": 48}
    best = train(build_model("student"), tr, va, cfg, tmp_path, progress=False, log=lambda _: None, extra_meta=meta)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert all("ema_val_acc" in r for r in rows)
    assert best["accuracy"] == max(r["ema_val_acc"] for r in rows)  # selected on the average, not the iterate
    majority = max(np.mean(va.labels == i) for i in np.unique(va.labels))
    assert best["accuracy"] > majority + 0.1, (best, majority)
    assert evaluate(load_checkpoint_model(tmp_path / "best.pt"), va, 0.5, 4.0).accuracy == pytest.approx(
        best["accuracy"])
    last = torch.load(tmp_path / "last.pt", weights_only=False)
    averaged = {k.removeprefix("module."): v for k, v in last["ema"].items() if k.startswith("module.")}
    weight = "features.0.weight"
    assert averaged.keys() == last["model"].keys()
    assert not torch.equal(averaged[weight], last["model"][weight])  # an average lags the last step
    with pytest.raises(TrainingError, match="--ema 0.6, this run asks for 0.0"):
        train(build_model("student"), tr, va, replace(cfg, ema=0.0), tmp_path, progress=False, log=lambda _: None)
