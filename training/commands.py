"""``emostream train teacher`` and ``emostream distill`` (``emostream calibrate`` is ``calibration.commands``).

Each handler parses paths, loads data through the cached loaders and calls the library function, so the
documented commands are exactly what produced the shipped weights.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from emostream.datasets import DatasetError

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
    _common(distill, arch="student", epochs=50, out="runs/student")
    distill.add_argument("--teacher", action="append", default=[], metavar="CKPT",
                         help="teacher: a checkpoint (best.pt from `train teacher`) or a registered model "
                              "name such as v0; repeat to ensemble (logits averaged); none = plain cross-entropy")
    distill.add_argument("--init", metavar="CKPT|NAME",
                         help="start from these weights (same arch): a checkpoint, or a registered model such "
                              "as the shipped `student`, e.g. to continue it with self-distillation")
    distill.add_argument("--alpha", type=float, default=0.5, help="KD weight α (default 0.5)")
    distill.add_argument("--temperature", type=float, default=2.0, help="KD temperature T (default 2)")
    distill.set_defaults(handler=_cmd_distill)


def _need_sub(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _common(p: argparse.ArgumentParser, arch: str, epochs: int, out: str) -> None:
    p.add_argument("--data", type=Path, default=DEFAULT_FER,
                   help="FER2013 folder with train/<label>/ and val/<label>/ "
                        "(default ../shared/data/fer2013)")
    p.add_argument("--arch", default=arch, help=f"architecture name (default {arch})")
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1, help="peak learning rate of the one-cycle schedule")
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


def _run(args: argparse.Namespace, teachers_ckpts: list[str], alpha: float, temperature: float) -> int:
    import numpy as np

    from emostream.training.data import load_fer_cached
    from emostream.training.loop import TrainConfig, train
    from emostream.training.models import build_model
    from emostream.training.teachers import load_teacher

    try:
        model = build_model(args.arch)
    except ValueError as exc:
        raise DatasetError(str(exc)) from None
    train_ds = load_fer_cached(args.data, "train", cache_dir=args.cache)
    val_ds = load_fer_cached(args.data, "val", cache_dir=args.cache)
    if args.limit:
        rng = np.random.default_rng(args.seed)
        train_ds = train_ds.subset(np.sort(rng.permutation(len(train_ds))[: args.limit]))
    teachers = [load_teacher(p, train_ds.names) for p in teachers_ckpts]
    init = getattr(args, "init", None)
    if init is not None and not (args.out / "last.pt").is_file():  # on resume, last.pt wins
        model.load_state_dict(_init_state(init, args.arch, train_ds.names))
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      weight_decay=args.weight_decay, label_smoothing=args.label_smoothing, alpha=alpha,
                      temperature=temperature, seed=args.seed, threads=args.threads,
                      time_budget_s=args.time_budget)
    meta = {"arch": args.arch, "labels": list(train_ds.names), "input_size": 48,
            "teachers": [str(p) for p in teachers_ckpts], "init": str(init) if init else None}
    best = train(model, train_ds, val_ds, cfg, args.out, teachers=teachers, extra_meta=meta,
                 progress=not args.no_progress)
    print(f"done: {args.arch} best epoch {best['epoch']} val_acc {best['accuracy']:.4f} "
          f"val_macro_f1 {best['macro_f1']:.4f} val_nll {best['nll']:.4f} -> {args.out / 'best.pt'}")
    return 0


def _init_state(spec: str, arch: str, labels: tuple[str, ...]) -> dict:
    """Weights to start from: a training checkpoint or a registered model with torch weights."""
    from emostream.training.models import CheckpointError, load_checkpoint

    ckpt = load_checkpoint(spec)
    if ckpt["arch"] != arch:
        raise CheckpointError(f"--init {spec} is a {ckpt['arch']!r} network, not {arch!r}")
    if tuple(ckpt.get("labels", labels)) != tuple(labels):
        raise CheckpointError(f"--init {spec}: its labels {ckpt['labels']} are not the training labels {labels}")
    return ckpt["model"]


def _cmd_teacher(args: argparse.Namespace) -> int:
    return _run(args, [], alpha=0.0, temperature=1.0)


def _cmd_distill(args: argparse.Namespace) -> int:
    ckpts = [t for t in args.teacher if t.lower() != "none"]
    return _run(args, ckpts, alpha=args.alpha if ckpts else 0.0, temperature=args.temperature)
