"""Named teacher and student architectures for training, and checkpoint loading.

All are :class:`engines.emotion.plain_convnet.PlainConvNet` at different widths: the network class lives
in ``engines/`` (the torch backend rebuilds it from a model card), the recipes that size it live here.
Width is the knob: the student is narrow for ≤0.5 ms/face on 2 CPU threads, the teachers wide.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from emostream.engines.emotion.plain_convnet import PlainConvNet

#: arch name -> PlainConvNet kwargs. MACs at 48x48: student 15.9M, student_wide 18.9M, student_l 26.9M,
#: teacher_s 153M, teacher 469M (see ``count_macs``). ``student_l`` is the student with its last stage
#: doubled (96 -> 192): the widest that still meets 0.5 ms/face at batch 1 on 2 CPU threads, and reachable
#: from trained student weights by :func:`widen_state` instead of from scratch.
ARCHS: MappingProxyType[str, dict[str, Any]] = MappingProxyType({
    "student": {"stages": ((16, 1), (32, 1), (64, 2), (96, 2)), "dropout": 0.2},
    "student_wide": {"stages": ((16, 1), (32, 1), (64, 2), (128, 2)), "dropout": 0.2},
    "student_l": {"stages": ((16, 1), (32, 1), (64, 2), (192, 2)), "dropout": 0.2},
    "student_m": {"stages": ((16, 1), (32, 1), (96, 2), (192, 2)), "dropout": 0.2},
    "teacher_s": {"stages": ((32, 2), (64, 2), (128, 2), (256, 2)), "dropout": 0.3},
    "teacher": {"stages": ((64, 2), (128, 2), (256, 2), (512, 2)), "dropout": 0.3},
})


class CheckpointError(Exception):
    """A checkpoint file is missing or was not written by this project's training loop."""


def arch_kwargs(arch: str, num_classes: int = 7) -> dict[str, Any]:
    """JSON-ready constructor arguments (what a model card stores as ``arch_kwargs``)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")
    spec = ARCHS[arch]
    return {"stages": [list(s) for s in spec["stages"]], "num_classes": num_classes, "in_channels": 1,
            "dropout": spec["dropout"]}


def build_model(arch: str, num_classes: int = 7) -> PlainConvNet:
    """Factory by name, the same name checkpoints store."""
    return PlainConvNet(**arch_kwargs(arch, num_classes))


def count_macs(model: nn.Module, size: int = 48) -> int:
    """Multiply-accumulates of one forward pass (convs and linear), for the model card."""
    total = 0

    def hook(mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            total += out.numel() * mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1] // mod.groups
        elif isinstance(mod, nn.Linear):
            total += mod.in_features * mod.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 1, size, size))
    model.train(was_training)
    for h in handles:
        h.remove()
    return total


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a ``best.pt``/``last.pt`` written by :func:`training.loop.train`, with a clear error otherwise.

    A registered model name whose card carries torch weights (e.g. the shipped ``student``) is read as a
    checkpoint too, so shipped weights can be continued (``distill --init student``) or re-calibrated
    (``calibrate student``) with the same commands that made them.
    """
    p = Path(path)
    if not p.is_file() and p.suffix != ".pt" and len(p.parts) == 1:
        return _checkpoint_from_card(str(path))
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - pickle/zip errors all mean "not a checkpoint"
        raise CheckpointError(f"cannot read checkpoint {p}: {exc}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "arch" not in ckpt:
        raise CheckpointError(f"{p} is not a checkpoint from `emostream train`/`distill` (no arch/model)")
    return ckpt


def _checkpoint_from_card(name: str) -> dict[str, Any]:
    from emostream.engines.emotion import EngineError, load_model_info

    try:
        info = load_model_info(name)
    except EngineError as exc:
        raise CheckpointError(f"{name!r} is neither a checkpoint file nor a registered model ({exc})") from None
    kwargs = dict(info.arch_kwargs)
    arch = next((a for a in ARCHS if arch_kwargs(a, len(info.labels)) == kwargs), None)
    if arch is None or info.torch_state is None or not info.torch_state.is_file():
        raise CheckpointError(f"model {name!r} has no torch weights of a known training architecture")
    return {"model": torch.load(info.torch_state, map_location="cpu", weights_only=True), "arch": arch,
            "labels": list(info.labels), "input_size": info.input_size,
            "config": {"mean": info.mean, "scale": info.scale}, "source": f"registered model {name}"}


def load_checkpoint_model(path: str | Path) -> PlainConvNet:
    """Rebuild a network from a checkpoint: the checkpoint stores its own ``arch`` name and labels."""
    ckpt = load_checkpoint(path)
    model = build_model(ckpt["arch"], num_classes=len(ckpt.get("labels", range(7))))
    model.load_state_dict(ckpt["model"])
    return model.eval()


def widen_state(state: dict[str, torch.Tensor], src_arch: str, dst_arch: str, num_classes: int = 7,
                seed: int = 0, noise: float = 0.01) -> dict[str, torch.Tensor]:
    """Net2WiderNet (Chen et al., 2016): ``src_arch`` weights as a ``dst_arch`` network computing the same function.

    A wider network started from trained narrow weights keeps what they learnt and only has to learn
    with its extra capacity, which on 2 CPU cores is hours cheaper than training it from scratch. Every
    new channel copies a random existing one (conv filter and BN statistics); the next layer's input
    weights of a copied channel are shared among its copies, so the output is unchanged. A little noise on
    those shares (``noise`` x their scale, summing to zero over the copies) breaks the copies' symmetry
    without changing the function. Stages must have the same number of convs and may only grow.
    """
    unknown = [a for a in (src_arch, dst_arch) if a not in ARCHS]
    if unknown:
        raise CheckpointError(f"cannot widen: unknown architecture {unknown[0]!r}; known: {', '.join(ARCHS)}")
    src, dst = ARCHS[src_arch]["stages"], ARCHS[dst_arch]["stages"]
    if len(src) != len(dst) or any(ns != nd or cd < cs for (cs, ns), (cd, nd) in zip(src, dst, strict=True)):
        raise CheckpointError(f"cannot widen {src_arch!r} {list(src)} into {dst_arch!r} {list(dst)}: "
                              "same stages and convs per stage, each at least as wide, are needed")
    rng = torch.Generator().manual_seed(seed)
    out = {k: v.clone() for k, v in state.items()}
    convs = sorted({k.rsplit(".", 1)[0] for k in state if k.startswith("features.") and state[k].dim() == 4},
                   key=lambda k: int(k.split(".")[1]))
    widths = [int(c) for c, n in dst for _ in range(int(n))]
    for i, conv in enumerate(convs):
        w = out[conv + ".weight"]
        c_old, c_new = w.shape[0], widths[i]
        if c_new == c_old:
            continue
        pick = torch.cat([torch.arange(c_old), torch.randint(0, c_old, (c_new - c_old,), generator=rng)])
        copies = torch.bincount(pick, minlength=c_old).to(w.dtype)
        out[conv + ".weight"] = w[pick].clone()
        bn = f"features.{int(conv.split('.')[1]) + 1}"
        for name in ("weight", "bias", "running_mean", "running_var"):
            out[f"{bn}.{name}"] = out[f"{bn}.{name}"][pick].clone()
        nxt = convs[i + 1] + ".weight" if i + 1 < len(convs) else "head.weight"
        share = out[nxt][:, pick] / copies[pick].view(1, -1, *([1] * (out[nxt].dim() - 2)))
        jitter = noise * share.std() * torch.randn(share.shape, generator=rng)
        for c in torch.nonzero(copies > 1).flatten().tolist():  # zero-sum noise within each copy group
            cols = torch.nonzero(pick == c).flatten()
            jitter[:, cols] -= jitter[:, cols].mean(dim=1, keepdim=True)
        jitter[:, torch.isin(pick, torch.nonzero(copies == 1).flatten())] = 0
        out[nxt] = share + jitter
    model = build_model(dst_arch, num_classes)
    model.load_state_dict(out)  # shapes checked here, by torch
    return out
