"""``emostream train teacher`` and ``emostream distill`` (``emostream calibrate`` is ``calibration.commands``).

Each handler parses paths, loads data through the cached loaders and calls the library function, so the
documented commands are exactly what produced the shipped weights.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emostream.datasets import DatasetError
from emostream.errors import positive_int

if TYPE_CHECKING:
    from emostream.training.augment import AugmentConfig

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FER = REPO.parent / "shared" / "data" / "fer2013"


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train models (teachers for distillation)")
    tsub = train.add_subparsers(dest="train_what", metavar="WHAT")
    teacher = tsub.add_parser("teacher", help="train a teacher network from scratch on FER2013 train")
    _common(teacher, arch="teacher_s", epochs=30, out="runs/teacher")
    teacher.set_defaults(handler=_cmd_teacher)
    train.set_defaults(handler=lambda args: _need_sub(train))

    distill = subparsers.add_parser("distill", help="train the student, distilled from teacher checkpoints")
    _common(distill, arch="student_l", epochs=50, out="runs/student")
    distill.add_argument("--teacher", action="append", default=[], metavar="CKPT",
                         help="teacher: a checkpoint (best.pt from `train teacher`) or a registered model "
                              "name such as v0; repeat to ensemble (logits averaged); none = plain cross-entropy")
    distill.add_argument("--init", metavar="CKPT|NAME",
                         help="start from these weights: a checkpoint, or a registered model such as the shipped "
                              "`student`, e.g. to continue it with self-distillation; a narrower network of the "
                              "same stages is widened into --arch first (Net2WiderNet: same function)")
    distill.add_argument("--teacher-flip", action="store_true",
                         help="KD target = the teachers' logits averaged over each batch and its mirror image "
                              "(flip TTA: a stronger target for a second teacher pass per step)")
    distill.add_argument("--alpha", type=float, default=0.5, help="KD weight α (default 0.5)")
    distill.add_argument("--temperature", type=float, default=2.0, help="KD temperature T (default 2)")
    distill.add_argument("--views", type=Path, metavar="DIR",
                         help="train on a view pool from `emostream teacher-views` (augmented faces with the "
                              "teachers' answers, made once): no teacher or augmentation runs per step; not "
                              "with --teacher, --mixup, --camera-aug or --light-aug (the pool fixed those)")
    distill.set_defaults(handler=_cmd_distill)
    add_views_parser(subparsers)
    add_pack_parser(subparsers)
    add_instructions_parser(subparsers)
    add_tune_vlm_parser(subparsers)


def add_views_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "teacher-views", help="make a view pool: augmented train faces with the teachers' averaged answers",
        description="K augmented views of every train face (the training augmentation, seeded per view), stored "
                    "as the uint8 pixels the teachers saw and their averaged logits, for `distill --views DIR`: "
                    "the teachers' cost is paid once per view instead of once per epoch, and the pool serves "
                    "every later student. Resumes: views already in --out are kept.")
    p.add_argument("--teacher", action="append", required=True, metavar="CKPT",
                   help="teacher checkpoint or registered model name; repeat to ensemble (logits averaged)")
    p.add_argument("--teacher-flip", action="store_true",
                   help="average each teacher over the view and its mirror (then a mirrored view keeps its target, "
                        "so `distill` also mirrors views at random)")
    p.add_argument("--views", type=positive_int, default=8, metavar="K", help="views per face (default 8)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="pool directory (resumes)")
    p.add_argument("--data", type=Path, default=DEFAULT_FER,
                   help="FER2013 folder or `pack-fer` file (default ../shared/data/fer2013)")
    p.add_argument("--cache", type=Path, default=REPO / ".cache", help="where the decoded .npz arrays go")
    p.add_argument("--limit", type=int, default=0, help="a seeded sample of N train faces (smoke runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]")
    p.add_argument("--no-bf16", action="store_true", help="teachers in fp32 instead of bf16 autocast")
    p.add_argument("--light-aug", action="store_true", help="exposure augmentation in the views (as in training)")
    p.add_argument("--camera-aug", action="store_true", help="camera degradations in the views (as in training)")
    p.set_defaults(handler=_cmd_views)


def _cmd_views(args: argparse.Namespace) -> int:
    import torch

    from emostream.training.loop import autocast_bf16, resolve_device
    from emostream.training.teachers import load_teacher
    from emostream.training.views import build_views

    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    train_ds = _train_faces(args)
    teachers = [load_teacher(t, train_ds.names) for t in args.teacher]
    bf16 = autocast_bf16(device, not args.no_bf16)
    print(f"emostream: {args.views} views of {len(train_ds):,} faces, {len(teachers)} teacher(s)"
          f"{' and their mirrors' if args.teacher_flip else ''} on {device} ({'bf16' if bf16 else 'fp32'}) "
          f"-> {args.out}", flush=True)
    build_views(train_ds, teachers, [str(t) for t in args.teacher], args.out, args.views,
                _augment(args.camera_aug, args.light_aug), seed=args.seed, teacher_flip=args.teacher_flip,
                batch_size=args.batch_size, device=str(device), bf16=bf16,
                log=lambda line: print(f"emostream: {line}", flush=True))
    print(f"done: {args.views} views -> {args.out} (`emostream distill --views {args.out} ...`)")
    return 0


def _train_faces(args: argparse.Namespace) -> Any:
    """The train split, or its seeded ``--limit`` sample (the same one ``distill`` draws with that seed)."""
    import numpy as np

    from emostream.training.data import load_fer_data

    train_ds = load_fer_data(args.data, "train", cache_dir=args.cache)
    if args.limit:
        rng = np.random.default_rng(args.seed)
        train_ds = train_ds.subset(np.sort(rng.permutation(len(train_ds))[: args.limit]))
    return train_ds


def add_pack_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pack-fer", help="pack FER2013 train+val into one compressed .npz (to carry to a GPU machine)",
        description="Decode FER2013 train and val (through the --cache) into one LZMA-compressed .npz of uint8 "
                    "48x48 faces, int64 labels and label names per split, for `train`/`distill --data FILE.npz`. "
                    "Fails if the file would exceed --max-mib (the device tool carries 64 MiB in all).")
    p.add_argument("data", nargs="?", type=Path, default=DEFAULT_FER, metavar="DATA",
                   help="FER2013 folder with train/<label>/ and val/<label>/ (default ../shared/data/fer2013)")
    p.add_argument("-o", "--out", type=Path, default=Path("packed/fer2013.npz"), metavar="FILE.npz",
                   help="output (default packed/fer2013.npz; packed/ is git-ignored)")
    p.add_argument("--cache", type=Path, default=REPO / ".cache", help="where the decoded .npz arrays go")
    p.add_argument("--max-mib", type=float, default=64.0, help="refuse a larger pack (default 64)")
    p.set_defaults(handler=_cmd_pack)


def _cmd_pack(args: argparse.Namespace) -> int:
    from emostream.training.data import pack_fer

    size, counts = pack_fer(args.data, args.out, cache_dir=args.cache, max_bytes=int(args.max_mib * 2**20))
    faces = ", ".join(f"{split} {n:,}" for split, n in counts.items())
    print(f"done: {faces} faces -> {args.out} ({size / 2**20:.1f} MiB)")
    return 0


def add_instructions_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "instructions", help="generate SEKE-verified EmoVIT emotion instruction data (LLaVA JSONL) for VLM tuning",
        description="For each labelled face in DATA (labels.csv, DATA.csv beside it, or one sub-folder per label; "
                    "face crops), ask a teacher, keep answers consistent across expression, valence/arousal and "
                    "action units and with the label (resampling up to K answers), and write categorical, reasoning "
                    "and conversation instructions as LLaVA/ShareGPT JSONL.")
    p.add_argument("data", metavar="DATA", help="labelled face folder (the layouts `emostream eval` reads)")
    p.add_argument("-o", "--out", required=True, type=Path, metavar="OUT.jsonl", help="output JSONL file")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--teacher", default="knowledge", metavar="knowledge|VLM_DIR",
                   help="knowledge (embedded engine on the emotion network, CPU; default) or a local "
                        "transformers VLM directory")
    p.add_argument("--teacher-adapter", metavar="DIR", help="LoRA adapter for a --teacher VLM_DIR (tune-vlm output)")
    p.add_argument("--teacher-url", metavar="URL", help="OpenAI-compatible server, e.g. http://gpu:8000/v1")
    p.add_argument("--teacher-model", default="default", metavar="NAME", help="model name sent to --teacher-url")
    p.add_argument("--model", default=None, metavar="NAME|PATH",
                   help="emotion network for the knowledge teacher, and whose labels a VLM teacher is offered "
                        "(default: the shipped student)")
    p.add_argument("--resample", type=positive_int, default=3, metavar="K",
                   help="SEKE: at most K teacher answers per face before it is rejected (default 3)")
    p.add_argument("--limit", type=positive_int, default=None, metavar="N", help="a seeded random N of the faces")
    p.add_argument("--seed", type=int, default=0, help="face sample, resampling views/sampling, phrasing")
    p.add_argument("--workers", type=positive_int, default=1, help="chunks of faces in flight (HTTP requests for "
                                                                  "--teacher-url; image decoding otherwise)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads of the network / local VLM")
    p.add_argument("--device", default="auto", help="torch device for a VLM_DIR teacher")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_instructions)


def _cmd_instructions(args: argparse.Namespace) -> int:
    import json
    import sys

    from emostream.training.instructions import build_teacher, generate

    if args.teacher_url and args.teacher != "knowledge":
        raise DatasetError("give either --teacher VLM_DIR or --teacher-url, not both")
    if args.teacher_adapter and (args.teacher_url or args.teacher == "knowledge"):
        raise DatasetError("--teacher-adapter needs --teacher VLM_DIR")
    teacher = build_teacher(args.teacher, url=args.teacher_url, model_name=args.teacher_model,
                            emotion_model=args.model, threads=args.threads, workers=args.workers, seed=args.seed,
                            adapter=args.teacher_adapter, device=args.device)
    try:
        summary = generate(args.data, args.out, teacher, k=args.resample, limit=args.limit, seed=args.seed,
                           workers=args.workers, overwrite=args.overwrite, progress=not args.no_progress,
                           warn=lambda line: print(f"emostream: warning: {line}", file=sys.stderr))
    finally:
        teacher.close()
    summary_path = args.out.with_name(args.out.name + ".summary.json")
    summary_path.write_text(json.dumps({"teacher": teacher.name, "resample": args.resample, "seed": args.seed,
                                        **summary.to_json()}, indent=2) + "\n")
    print(summary.table(), file=sys.stderr)
    s = summary.to_json()
    print(f"done: {s['faces']} faces, {s['records']} records kept, "
          f"{sum(s['rejected_per_kind'].values())} kind-answers rejected, {s['unreadable']} unreadable, "
          f"{s['teacher_samples']} teacher answers ({teacher.name}) -> {args.out} (summary {summary_path.name})")
    return 0


def add_tune_vlm_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tune-vlm", help="LoRA / QLoRA instruction tuning of a local VLM on `emostream instructions` data",
        description="LoRA (peft) on the language model's attention and MLP projections, vision tower frozen, loss "
                    "on the assistant turns only; bf16/fp16 on a GPU, fp32 on the CPU, 4-bit QLoRA with "
                    "--qlora (CUDA + bitsandbytes). Rerunning the same command resumes from OUT/checkpoint.")
    p.add_argument("--base", required=True, type=Path, metavar="VLM_DIR", help="local transformers VLM folder")
    p.add_argument("--data", required=True, type=Path, metavar="FILE.jsonl", help="LLaVA/ShareGPT JSONL")
    p.add_argument("--out", required=True, type=Path, metavar="ADAPTER_DIR", help="adapter folder (resumes)")
    p.add_argument("--steps", type=positive_int, default=200, help="optimizer steps (default 200)")
    p.add_argument("--batch-size", type=positive_int, default=4, help="records per micro-batch (default 4)")
    p.add_argument("--grad-accum", type=positive_int, default=4, help="micro-batches per step (default 4)")
    p.add_argument("--lr", type=float, default=2e-4, help="peak learning rate (default 2e-4)")
    p.add_argument("--warmup", type=int, default=10, help="linear warm-up steps, then cosine to 10%% (default 10)")
    p.add_argument("--rank", type=positive_int, default=16, help="LoRA rank r (default 16)")
    p.add_argument("--alpha", type=positive_int, default=32, help="LoRA alpha (default 32)")
    p.add_argument("--dropout", type=float, default=0.05, help="LoRA dropout (default 0.05)")
    p.add_argument("--qlora", action="store_true", help="load the base in 4-bit NF4 (CUDA + bitsandbytes only)")
    p.add_argument("--max-length", type=positive_int, default=2048, help="tokens per record at most")
    p.add_argument("--save-every", type=positive_int, default=50, help="checkpoint every N steps (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda:N")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_tune_vlm)


def _cmd_tune_vlm(args: argparse.Namespace) -> int:
    import signal
    import sys
    import threading

    from emostream.training.tune_vlm import TuneConfig, tune

    # SIGINT/SIGTERM (Ctrl-C, a scheduler's pre-emption) end the run after the current step, with a checkpoint:
    # hours of tuning must not be lost to a signal that arrived a minute before the next --save-every.
    got: list[int] = []
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if got:  # a second signal: stop now (the last checkpoint stands)
            raise KeyboardInterrupt
        got.append(signum)
        stop.set()
        print(f"emostream: {signal.Signals(signum).name}: stopping after this step (again to stop now)",
              file=sys.stderr)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    cfg = TuneConfig(steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr,
                     warmup=args.warmup, rank=args.rank, alpha=args.alpha, dropout=args.dropout, qlora=args.qlora,
                     seed=args.seed, save_every=args.save_every, max_length=args.max_length, device=args.device,
                     threads=args.threads)
    try:
        m = tune(args.base, args.data, args.out, cfg, progress=not args.no_progress,
                 log=lambda line: print(f"emostream: {line}", file=sys.stderr), stop=lambda _step: stop.is_set())
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if got and not m["finished"]:
        print(f"emostream: interrupted ({signal.Signals(got[0]).name}) after step {m['steps']} of {cfg.steps}; "
              f"checkpoint in {args.out / 'checkpoint'}: rerun the same command to resume", file=sys.stderr)
        return 128 + got[0]
    if not m["finished"]:
        return 1  # stop() without a signal cannot happen here; never report a partial run as done
    rate = f"{m['samples_per_s']:.2f} samples/s" if m["samples_per_s"] else "no new steps"
    mem = f", peak {m['peak_memory_gib']:.2f} GiB" if m["peak_memory_gib"] is not None else ""
    print(f"done: {m['steps']} steps on {m['records']} records, loss {m['loss_first']:.4f} -> {m['loss_last']:.4f}, "
          f"probe batch {m['probe_loss_before']:.4f} -> {m['probe_loss_after']:.4f}, "
          f"{m['trainable_params']:,} trainable of {m['total_params']:,} params ({m['lora_layers']} LoRA layers), "
          f"{rate} on {m['device']} {m['precision']}{mem} -> {args.out}")
    return 0


def _need_sub(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _common(p: argparse.ArgumentParser, arch: str, epochs: int, out: str) -> None:
    p.add_argument("--data", type=Path, default=DEFAULT_FER,
                   help="FER2013 folder with train/<label>/ and val/<label>/ (default ../shared/data/fer2013), "
                        "or a pack from `emostream pack-fer` (FILE.npz)")
    p.add_argument("--arch", default=arch, help=f"architecture name (default {arch})")
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate of the one-cycle schedule (default 0.1 x batch-size/128: the linear "
                        "scaling rule, so 0.1 at the CPU's 128 and 0.4 at a GPU's 512)")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--limit", type=int, default=0, help="train on a seeded sample of N images (smoke runs)")
    p.add_argument("--cache", type=Path, default=REPO / ".cache", help="where the decoded .npz arrays go")
    p.add_argument("--out", type=Path, default=Path(out), help="run folder (checkpoints, log.jsonl); resumes")
    p.add_argument("--time-budget", type=float, default=0.0, metavar="SECONDS",
                   help="finish (LR annealed) within this wall-clock time even if --epochs are not all done")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars (background runs)")
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]",
                   help="where to train: auto (default) = cuda when available; model, teachers, batches and "
                        "augmentation all move there; checkpoints are saved with CPU tensors")
    p.add_argument("--no-bf16", action="store_true",
                   help="plain fp32 instead of bf16 autocast (the default on CUDA and on CPUs with native bf16, "
                        "AVX512-BF16/AMX: ~1.6x faster steps there; validation is always fp32)")
    p.add_argument("--mixup", type=_mixup_alpha, default=0.0, metavar="ALPHA",
                   help="mixup: blend each face with another of the batch, λ ~ Beta(ALPHA, ALPHA) (e.g. 0.4; "
                        "default 0 = off); teachers see the blended face, the hard labels are weighed by λ")
    p.add_argument("--ema", type=_ema_decay, default=0.0, metavar="DECAY",
                   help="also keep an exponential moving average of the weights, updated every step with this "
                        "decay (e.g. 0.999), and select and save the average (default 0 = off)")
    p.add_argument("--light-aug", action="store_true",
                   help="also vary exposure: gamma 0.7-1.6 and gain 0.3-1.1 on ~20%% of faces (dim rooms, evenings; "
                        "benchmarks/robustness.py's dim and flat rows)")
    p.add_argument("--camera-aug", action="store_true",
                   help="also degrade faces as cameras do (blur, low resolution, noise, JPEG; each on ~15%% of "
                        "faces): robustness beyond FER2013's web photos, measured by benchmarks/robustness.py")


def _augment(camera: bool, light: bool) -> AugmentConfig:
    from dataclasses import replace

    from emostream.training.augment import CAMERA, LIGHT_P, AugmentConfig

    base = CAMERA if camera else AugmentConfig()
    return replace(base, light_p=LIGHT_P) if light else base


def _number_within(what: str, high: float, high_included: bool) -> Callable[[str], float]:
    """An argparse type: a float in [0, high] (or [0, high)), 0 meaning off."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (0.0 <= value <= high if high_included else 0.0 <= value < high):
            bracket = "]" if high_included else ")"
            raise argparse.ArgumentTypeError(f"{what} must be within [0, {high:g}{bracket} (0 = off), got {value:g}")
        return value

    return parse


_mixup_alpha = _number_within("mixup alpha", 100.0, high_included=True)
_ema_decay = _number_within("EMA decay", 1.0, high_included=False)


def default_lr(batch_size: int) -> float:
    """0.1 at batch 128 (the shipped recipe), scaled linearly with the batch (Goyal et al. 2017)."""
    return 0.1 * batch_size / 128


def _run(args: argparse.Namespace, teachers_ckpts: list[str], alpha: float, temperature: float) -> int:
    from emostream.training.data import load_fer_data
    from emostream.training.loop import TrainConfig, autocast_bf16, resolve_device, train
    from emostream.training.models import build_model
    from emostream.training.teachers import load_teacher

    device = resolve_device(args.device)  # first: a missing GPU is reported before minutes of decoding
    try:
        model = build_model(args.arch)
    except ValueError as exc:
        raise DatasetError(str(exc)) from None
    train_ds = _train_faces(args)
    val_ds = load_fer_data(args.data, "val", cache_dir=args.cache)
    teachers = [load_teacher(p, train_ds.names) for p in teachers_ckpts]
    pool = None
    if getattr(args, "views", None) is not None:
        from emostream.training.views import load_views

        pool = load_views(args.views, train_ds, str(device))
        teachers_ckpts = pool.meta["teachers"]  # for the record (the checkpoint's and the model card's)
        print(f"emostream: {pool.count} views per face from {args.views}"
              f"{', mirrored at random' if pool.flip else ''}", flush=True)
    init = getattr(args, "init", None)
    if init is not None and not (args.out / "last.pt").is_file():  # on resume, last.pt wins
        model.load_state_dict(_init_state(init, args.arch, train_ds.names))
    lr = default_lr(args.batch_size) if args.lr is None else args.lr
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=lr,
                      weight_decay=args.weight_decay, label_smoothing=args.label_smoothing, alpha=alpha,
                      temperature=temperature, seed=args.seed, threads=args.threads,
                      time_budget_s=args.time_budget, device=str(device), bf16=not args.no_bf16,
                      teacher_flip=bool(getattr(args, "teacher_flip", False)), mixup=args.mixup,
                      ema=args.ema, augment=_augment(args.camera_aug, args.light_aug),
                      views=str(args.views) if pool is not None else "")
    precision = "bf16 autocast" if autocast_bf16(device, cfg.bf16) else "fp32"
    print(f"emostream: {args.arch} on {device} ({precision}), {len(train_ds):,} train / {len(val_ds):,} val faces, "
          f"batch {cfg.batch_size}, peak lr {lr:g}", flush=True)
    meta = {"arch": args.arch, "labels": list(train_ds.names), "input_size": 48,
            "teachers": [str(p) for p in teachers_ckpts], "init": str(init) if init else None,
            "camera_aug": bool(args.camera_aug), "light_aug": bool(args.light_aug)}
    if pool is not None:  # the pool's augmentation is what the student saw
        aug = pool.meta["augment"]
        meta.update(views=str(args.views), camera_aug=aug["blur_p"] > 0, light_aug=aug["light_p"] > 0,
                    teacher_flip=pool.flip)
    best = train(model, train_ds, val_ds, cfg, args.out, teachers=teachers, extra_meta=meta,
                 progress=not args.no_progress, views=pool)
    print(f"done: {args.arch} best epoch {best['epoch']} val_acc {best['accuracy']:.4f} "
          f"val_macro_f1 {best['macro_f1']:.4f} val_nll {best['nll']:.4f} -> {args.out / 'best.pt'}")
    return 0


def _init_state(spec: str, arch: str, labels: tuple[str, ...]) -> dict:
    """Weights to start from: a training checkpoint or a registered model with torch weights."""
    from emostream.training.models import CheckpointError, load_checkpoint, widen_state

    ckpt = load_checkpoint(spec)
    if tuple(ckpt.get("labels", labels)) != tuple(labels):
        raise CheckpointError(f"--init {spec}: its labels {ckpt['labels']} are not the training labels {labels}")
    if ckpt["arch"] != arch:
        try:
            state = widen_state(ckpt["model"], ckpt["arch"], arch, num_classes=len(labels))
        except CheckpointError as exc:
            raise CheckpointError(f"--init {spec} is a {ckpt['arch']!r} network, not {arch!r}, and {exc}") from None
        print(f"emostream: --init {spec}: {ckpt['arch']} widened into {arch} (Net2WiderNet, same function)",
              flush=True)
        return state
    return ckpt["model"]


def _cmd_teacher(args: argparse.Namespace) -> int:
    return _run(args, [], alpha=0.0, temperature=1.0)


def _cmd_distill(args: argparse.Namespace) -> int:
    ckpts = [t for t in args.teacher if t.lower() != "none"]
    if args.views is not None:
        given = [flag for flag, on in (("--teacher", ckpts), ("--mixup", args.mixup > 0),
                                       ("--camera-aug", args.camera_aug), ("--light-aug", args.light_aug)) if on]
        if given:
            raise DatasetError(f"--views {args.views} carries its teachers and augmentation; drop {', '.join(given)}")
        return _run(args, [], alpha=args.alpha, temperature=args.temperature)
    return _run(args, ckpts, alpha=args.alpha if ckpts else 0.0, temperature=args.temperature)
