"""The training loop shared by teachers and students: augmentation, optional KD, checkpoints that resume.

A run writes ``<out>/last.pt`` (everything needed to resume: model, optimizer, scheduler, epoch, RNG) after
every epoch and ``<out>/best.pt`` (state dict + metrics) whenever val accuracy improves, plus one JSON line
per epoch in ``<out>/log.jsonl`` so a background run can be followed with ``tail -f``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from emostream.training.augment import AugmentConfig, augment_batch
from emostream.training.data import FaceDataset
from emostream.training.kd import kd_loss, teacher_logits
from emostream.training.views import ViewPool, draw


class TrainingError(Exception):
    """A training run cannot start or resume (bad checkpoint, mismatched arguments)."""


@dataclass
class TrainConfig:
    epochs: int = 40
    batch_size: int = 128
    lr: float = 0.1
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    alpha: float = 0.5
    temperature: float = 2.0
    seed: int = 0
    mean: float = 0.5
    scale: float = 4.0
    threads: int = 2
    #: > 0: a wall-clock budget (seconds). The LR follows the same one-cycle shape but over
    #: max(step / total steps, elapsed / budget), and training stops when that reaches 1, so a run on a
    #: shared CPU always finishes its annealing on time instead of being cut off at a high LR.
    time_budget_s: float = 0.0
    #: "cpu", "cuda" or "cuda:N" (already resolved: see :func:`resolve_device`).
    device: str = "cpu"
    #: Forward passes under bf16 autocast (weights, optimizer, loss and validation stay fp32) on CUDA and on
    #: CPUs with native bf16 (:func:`bf16_native`); elsewhere, and when False, plain fp32.
    bf16: bool = True
    #: Teachers see each batch and its mirror image and their logits are averaged (flip test-time
    #: augmentation as the KD target): a stronger target at the cost of a second teacher pass.
    teacher_flip: bool = False
    #: > 0: mixup (Zhang et al. 2018) with λ ~ Beta(mixup, mixup) per batch: each face blended with another of
    #: the batch; the hard-label loss weighs both labels by λ, and teachers see the blended face itself, so the
    #: KD target is the teachers' answer on what the student sees ("consistent, patient" distillation,
    #: Beyer et al. 2022). 0 = off (and no random numbers drawn for it).
    mixup: float = 0.0
    #: > 0: also keep an exponential moving average of the weights (and BN statistics), updated every step with
    #: this decay (e.g. 0.999: a time constant of ~1000 steps), and select/save *it* on val. Averaging the
    #: iterates of a run near its optimum is a flatter, better-generalizing point than any single iterate
    #: (Polyak averaging; SWA, Izmailov et al. 2018): a uniform soup of six checkpoints of these runs scored
    #: 0.6707 on val against 0.6682 for the best of them. 0 = off.
    ema: float = 0.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    #: A view pool (:mod:`training.views`, ``distill --views DIR``): faces and KD targets come from it, no
    #: augmentation or teacher runs in the loop. Recorded so a resumed run continues with the same pool.
    views: str = ""


@dataclass
class EvalResult:
    accuracy: float
    macro_f1: float
    nll: float
    per_class_recall: dict[str, float]


def bf16_native() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX; Linux ``/proc/cpuinfo`` flags).

    Only then does bf16 autocast pay on the CPU: on the README's AMD EPYC (Zen 4, AVX512-BF16) a student
    training step takes 93 ms instead of 148 (student_l: 131 vs 219), while a CPU without it (AVX2-only
    AMD EPYC, Intel before Cooper Lake) emulates bf16 in software, slower than fp32.
    """
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_bf16(device: torch.device, wanted: bool) -> bool:
    """bf16 autocast for training steps on ``device``: CUDA always, the CPU where it is native."""
    return wanted and (device.type == "cuda" or (device.type == "cpu" and bf16_native()))


def resolve_device(spec: str) -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``, with one clear error otherwise."""
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    head, _, index = spec.partition(":")
    if head != "cuda" or (index and not index.isdigit()):
        raise TrainingError(f"--device {spec!r}: expected auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise TrainingError(f"--device {spec}: CUDA is not available here (torch {torch.__version__}, "
                            f"CUDA build {torch.version.cuda or 'none'}); use --device cpu or auto")
    if index and int(index) >= torch.cuda.device_count():
        raise TrainingError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) here")
    return torch.device(spec)


def cpu_state(obj: object) -> object:
    """A copy of a (nested) state dict with every tensor on the CPU: checkpoints from a GPU load anywhere."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: cpu_state(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_state(v) for v in obj)
    return obj


def normalize(x_uint8: np.ndarray | torch.Tensor, mean: float, scale: float) -> torch.Tensor:
    """uint8 (N, S, S) -> float (N, 1, S, S) as the model card's ``(x/255 - mean) * scale``."""
    x = torch.as_tensor(x_uint8).float().div_(255.0)
    return ((x - mean) * scale).unsqueeze(1)


def macro_f1(pred: np.ndarray, target: np.ndarray, num_classes: int) -> float:
    """Unweighted mean of per-class F1: FER2013's 'disgust' (1.5% of images) counts as much as 'happy'."""
    f1s = []
    for c in range(num_classes):
        tp = np.sum((pred == c) & (target == c))
        fp = np.sum((pred == c) & (target != c))
        fn = np.sum((pred != c) & (target == c))
        denom = 2 * tp + fp + fn
        f1s.append(0.0 if denom == 0 else 2 * tp / denom)
    return float(np.mean(f1s))


@torch.no_grad()
def predict_logits(model: nn.Module, images: np.ndarray, mean: float, scale: float,
                   batch_size: int = 512) -> np.ndarray:
    """fp32 logits on the model's own device (the first parameter's), returned as a CPU array."""
    model.eval()
    device = next(model.parameters()).device
    out = [model(normalize(images[i:i + batch_size], mean, scale).to(device)).float().cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy()


def evaluate_logits(logits: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> EvalResult:
    pred = logits.argmax(1)
    nll = float(F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item())
    recall = {n: float(np.mean(pred[labels == i] == i)) if np.any(labels == i) else float("nan")
              for i, n in enumerate(names)}
    return EvalResult(float(np.mean(pred == labels)), macro_f1(pred, labels, len(names)), nll, recall)


def evaluate(model: nn.Module, ds: FaceDataset, mean: float, scale: float) -> EvalResult:
    return evaluate_logits(predict_logits(model, ds.images, mean, scale), ds.labels, ds.names)


def train(model: nn.Module, train_ds: FaceDataset, val_ds: FaceDataset, cfg: TrainConfig, out_dir: str | Path,
          teachers: Sequence[nn.Module] = (), extra_meta: dict | None = None, progress: bool = True,
          log: Callable[[str], None] = print, views: ViewPool | None = None) -> dict:
    """Train ``model`` on ``train_ds``, select on ``val_ds``; resumes from ``out_dir/last.pt`` if present.

    With ``views`` (a pool of augmented faces and the teachers' answers, :mod:`training.views`) each step
    draws one stored view per face and its stored KD target instead of augmenting and asking ``teachers``.

    Returns the best epoch's metrics. SGD+Nesterov with a one-cycle LR: on a small CPU budget it reaches a
    good optimum in few epochs, and the schedule is a pure function of the step so resuming is exact.
    """
    if views is not None and (teachers or cfg.mixup > 0):
        raise TrainingError("a view pool carries the teachers' answers for its own faces: no teachers or mixup "
                            "beside it")
    torch.set_num_threads(cfg.threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    model.to(device=device, memory_format=torch.channels_last)  # ~20% faster convs on CPU, same numbers
    for t in teachers:
        t.eval().to(device=device, memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed 48x48 shapes: pick the fastest kernels once
    steps_per_epoch = math.ceil(len(train_ds) / cfg.batch_size)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True,
                          weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, epochs=cfg.epochs,
                                                steps_per_epoch=steps_per_epoch, pct_start=0.15)
    start_epoch, best, elapsed0 = 0, {"accuracy": -1.0}, 0.0
    total_steps = cfg.epochs * steps_per_epoch
    last = out / "last.pt"
    use_bf16 = autocast_bf16(device, cfg.bf16)
    precision = "bf16 autocast" if use_bf16 else "fp32"
    ema = None
    if cfg.ema > 0:
        ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
    if last.is_file():
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
        if ckpt.get("config", {}).get("epochs") != cfg.epochs:
            raise TrainingError(f"{last} was made with epochs={ckpt['config'].get('epochs')}, "
                                f"not {cfg.epochs}; use the same arguments to resume or a new --out")
        _check_resume(last, ckpt, cfg, precision)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        if ema is not None:
            ema.load_state_dict(ckpt["ema"])
        start_epoch, best, elapsed0 = ckpt["epoch"], ckpt["best"], float(ckpt.get("elapsed_s", 0.0))
        log(f"resumed from {last} at epoch {start_epoch}")
    # The whole uint8 train set lives on the device (28,709 faces = 66 MB), so a step never waits for a copy.
    images = torch.from_numpy(train_ds.images).to(device)
    labels = torch.from_numpy(train_ds.labels).to(device)
    run_start = time.time() - elapsed0
    done = False
    for epoch in range(start_epoch, cfg.epochs):
        if done:
            break
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)  # per-epoch seed: resume is exact
        order = torch.randperm(len(train_ds), generator=gen)
        model.train()
        t0, loss_sum, correct, seen = time.time(), 0.0, 0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress,
                   leave=False, mininterval=5)
        for step in bar:
            idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size].to(device)
            if views is not None:
                x, pooled = draw(views, idx, gen)
            else:
                x = augment_batch(images[idx].float().div_(255).unsqueeze(1), cfg.augment, gen)
            x = ((x - cfg.mean) * cfg.scale).contiguous(memory_format=torch.channels_last)
            y = labels[idx]
            lam, y2 = 1.0, y
            if cfg.mixup > 0:
                lam, perm = mixup_draw(cfg.mixup, len(idx), gen)
                x = (lam * x + (1.0 - lam) * x[perm.to(device)]).contiguous(memory_format=torch.channels_last)
                y2 = y[perm.to(device)]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                z = model(x)
                zt = pooled if views is not None else teacher_logits(teachers, x, cfg.teacher_flip)
            z = z.float()
            zt = None if zt is None else zt.float()
            loss = kd_loss(z, y, zt, cfg.alpha, cfg.temperature, cfg.label_smoothing)
            if lam < 1.0:  # the KL term is the same for both labels, so this mixes only the cross-entropy
                loss = lam * loss + (1.0 - lam) * kd_loss(z, y2, zt, cfg.alpha, cfg.temperature, cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update_parameters(model)
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((z.argmax(1) == (y if lam >= 0.5 else y2)).sum())
            seen += len(idx)
            if cfg.time_budget_s > 0:
                frac = max((epoch * steps_per_epoch + step + 1) / total_steps,
                           (time.time() - run_start) / cfg.time_budget_s)
                for group in opt.param_groups:
                    group["lr"] = one_cycle_lr(min(frac, 1.0), cfg.lr)
                if frac >= 1.0:
                    done = True
                    break
            else:
                sched.step()
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", refresh=False)
        ev = evaluate(model, val_ds, cfg.mean, cfg.scale)
        row = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen,
               "val_acc": ev.accuracy, "val_macro_f1": ev.macro_f1, "val_nll": ev.nll,
               "lr": opt.param_groups[0]["lr"], "seconds": time.time() - t0}
        selected = model
        if ema is not None:  # the average is what gets selected and shipped; the raw iterate is logged beside it
            selected = ema.module
            ev = evaluate(selected, val_ds, cfg.mean, cfg.scale)
            row.update(ema_val_acc=ev.accuracy, ema_val_macro_f1=ev.macro_f1, ema_val_nll=ev.nll)
        if ev.accuracy > best["accuracy"]:
            best = {"epoch": epoch + 1, "accuracy": ev.accuracy, "macro_f1": ev.macro_f1, "nll": ev.nll,
                    "per_class_recall": ev.per_class_recall}
            torch.save({"model": cpu_state(selected.state_dict()), "metrics": best,
                        "config": _cfg_dict(cfg, precision), **(extra_meta or {})}, out / "best.pt")
        torch.save({"model": cpu_state(model.state_dict()), "optimizer": cpu_state(opt.state_dict()),
                    **({"ema": cpu_state(ema.state_dict())} if ema is not None else {}),
                    "scheduler": sched.state_dict(), "epoch": epoch + 1, "best": best,
                    "elapsed_s": time.time() - run_start,
                    "config": _cfg_dict(cfg, precision), **(extra_meta or {})},
                   out / "last.tmp")
        (out / "last.tmp").replace(last)
        with (out / "log.jsonl").open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        ema_part = f" ema_val_acc {row['ema_val_acc']:.4f}" if ema is not None else ""
        log(f"epoch {epoch + 1}/{cfg.epochs} loss {row['train_loss']:.4f} train_acc {row['train_acc']:.4f} "
            f"val_acc {row['val_acc']:.4f} val_f1 {row['val_macro_f1']:.4f}{ema_part} ({row['seconds']:.0f}s)")
    return best


def mixup_draw(alpha: float, n: int, gen: torch.Generator) -> tuple[float, torch.Tensor]:
    """λ ~ Beta(α, α) and a pairing of the batch, both from ``gen`` (so a resumed epoch draws the same)."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    return lam, torch.randperm(n, generator=gen)


def one_cycle_lr(progress: float, max_lr: float, pct_start: float = 0.15, div: float = 25.0,
                 final_div: float = 1e4) -> float:
    """OneCycleLR's cosine shape as a function of progress in [0, 1] (for the time-budgeted mode)."""
    lo, end = max_lr / div, max_lr / div / final_div
    if progress < pct_start:
        return lo + (max_lr - lo) * (1 - math.cos(math.pi * progress / pct_start)) / 2
    q = (progress - pct_start) / (1 - pct_start)
    return end + (max_lr - end) * (1 + math.cos(math.pi * q)) / 2


def _cfg_dict(cfg: TrainConfig, precision: str | None = None) -> dict:
    d = asdict(cfg)
    if precision is not None:
        d["precision"] = precision  # what the steps really ran in (bf16 depends on the CPU, not only on cfg)
    return d


def _check_resume(last: Path, ckpt: dict, cfg: TrainConfig, precision: str) -> None:
    """A resumed run must continue what was started: same augmentation, same precision of the steps.

    (Checkpoints written before these were recorded carry no ``precision``; that one is then not checked.)
    """
    old = ckpt.get("config", {})
    if "augment" in old:
        # Fields added since the checkpoint was written count as their defaults (off), as they ran then.
        was = {**asdict(AugmentConfig()), **old["augment"]}
        now = asdict(cfg.augment)
        if {k: tuple(v) if isinstance(v, list) else v for k, v in was.items()} != now:
            raise TrainingError(f"{last} was made with other augmentation (--camera-aug given once and not the "
                                "other time?); use the same arguments to resume or a new --out")
    for name, flag in (("teacher_flip", "--teacher-flip"), ("mixup", "--mixup"), ("ema", "--ema"),
                       ("views", "--views")):
        was = old.get(name, getattr(TrainConfig(), name))  # recorded since the flag exists; before: off
        if was != getattr(cfg, name):
            raise TrainingError(f"{last} was made with {flag} {was}, this run asks for {getattr(cfg, name)}; "
                                "use the same arguments to resume or a new --out")
    if old.get("precision") not in (None, precision):
        raise TrainingError(f"{last} was trained in {old['precision']}, this run would use {precision} "
                            "(--no-bf16, or another CPU); use the same arguments and machine kind or a new --out")
