"""A pool of augmented views of the train faces with the teachers' answers, made once (``emostream teacher-views``).

Why: distilling from an ensemble of wide teachers on a CPU spends most of each step in the teachers (two
``teacher_s`` and two students, each on the batch and its mirror, cost ~1.5x the student's own step), and a
session has hours, not days. Teachers are frozen, so their answer to a given augmented face never changes:
make K augmented views of every face once, keep each view's pixels (uint8, exactly what the teachers saw) and
the teachers' averaged logits, and let ``distill --views DIR`` train on random views with no teacher in the
loop. The teacher cost is paid K times per face instead of once per epoch, and once for every student, seed
and recipe that reuses the pool. What it gives up: augmentation is K views per face instead of a new one each
epoch (plus the mirror of each when the teachers were mirror-averaged, whose answer is then the same).

Layout of DIR: ``meta.json`` (teachers, mirror averaging, augmentation, seed, faces, labels) and
``view_000.npz`` ... (``images`` (N, S, S) uint8, ``logits`` (N, C) float16). Views are written one by one
(atomically), so an interrupted build resumes at the first missing view; a view depends only on the seed and its
number, not on how many came before.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from emostream.training.augment import AugmentConfig, augment_batch
from emostream.training.data import FaceDataset
from emostream.training.kd import teacher_logits


class ViewsError(Exception):
    """A view pool is missing, incomplete, or was made for other faces or other settings."""


@dataclass
class ViewPool:
    """K views of N faces: pixels and the teachers' logits; ``flip``: a mirrored view keeps its logits."""

    images: torch.Tensor  # (K, N, S, S) uint8
    logits: torch.Tensor  # (K, N, C) float32
    flip: bool
    meta: dict[str, Any]  # meta.json: teachers, augmentation, seed, faces

    @property
    def count(self) -> int:
        return int(self.images.shape[0])


def faces_fingerprint(ds: FaceDataset) -> str:
    """What identifies a train set: its pixels and labels (a pool made for other faces must not be used)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(ds.images).tobytes())
    h.update(np.ascontiguousarray(ds.labels).tobytes())
    h.update(",".join(ds.names).encode())
    return h.hexdigest()[:16]


def build_views(train_ds: FaceDataset, teachers: Sequence[nn.Module], teacher_names: Sequence[str], out_dir: Path,
                views: int, augment: AugmentConfig, seed: int = 0, teacher_flip: bool = True,
                mean: float = 0.5, scale: float = 4.0, batch_size: int = 256, device: str = "cpu",
                bf16: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write views ``0 .. views-1`` that are not there yet; returns the pool's meta. Refuses a DIR made with
    other teachers, faces, augmentation or seed (adding views to a pool keeps everything else equal)."""
    if views < 1:
        raise ViewsError(f"--views must be at least 1, got {views}")
    if not teachers:
        raise ViewsError("a view pool needs at least one --teacher")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"teachers": list(teacher_names), "teacher_flip": bool(teacher_flip), "augment": asdict(augment),
            "seed": int(seed), "faces": len(train_ds), "fingerprint": faces_fingerprint(train_ds),
            "labels": list(train_ds.names), "size": int(train_ds.images.shape[-1]), "mean": mean, "scale": scale}
    meta_path = out / "meta.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        diff = sorted(k for k in meta if _jsonable(old.get(k)) != _jsonable(meta[k]))
        if diff:
            raise ViewsError(f"{out} holds views made with other {', '.join(diff)}; use another directory")
    else:
        meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    dev = torch.device(device)
    for t in teachers:
        t.eval().to(dev)
    images = torch.from_numpy(train_ds.images)
    for k in range(views):
        path = out / f"view_{k:03d}.npz"
        if path.is_file():
            continue
        t0 = time.time()
        gen = torch.Generator().manual_seed(seed * 1000 + k)  # a view's faces depend on its number only
        pix = np.empty(train_ds.images.shape, np.uint8)
        logits = np.empty((len(train_ds), len(train_ds.names)), np.float16)
        for i in range(0, len(train_ds), batch_size):
            x = augment_batch(images[i:i + batch_size].float().div_(255).unsqueeze(1).to(dev), augment, gen)
            q = (x * 255).round_().clamp_(0, 255).to(torch.uint8)  # what is stored is what the teachers see
            xn = ((q.float() / 255 - mean) * scale).contiguous()
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                z = teacher_logits(teachers, xn, teacher_flip)
            pix[i:i + batch_size] = q[:, 0].cpu().numpy()
            logits[i:i + batch_size] = z.float().cpu().numpy().astype(np.float16)
        tmp = out / f"view_{k:03d}.tmp.npz"
        np.savez(tmp, images=pix, logits=logits)
        tmp.replace(path)
        log(f"view {k + 1}/{views} -> {path} ({time.time() - t0:.0f}s)")
    return meta


def load_views(out_dir: str | Path, train_ds: FaceDataset, device: str = "cpu") -> ViewPool:
    """Every view in DIR, checked against ``train_ds`` (same faces, labels and size)."""
    out = Path(out_dir)
    meta_path = out / "meta.json"
    if not meta_path.is_file():
        raise ViewsError(f"no view pool at {out} (no meta.json): make one with `emostream teacher-views`")
    meta = json.loads(meta_path.read_text())
    if meta.get("fingerprint") != faces_fingerprint(train_ds) or meta.get("labels") != list(train_ds.names):
        raise ViewsError(f"{out} was made for other train faces ({meta.get('faces')} faces, labels "
                         f"{meta.get('labels')}); this run trains on {len(train_ds)} ({list(train_ds.names)})")
    files = sorted(out.glob("view_[0-9][0-9][0-9].npz"))
    if not files:
        raise ViewsError(f"{out} holds no views yet (view_000.npz ...): finish `emostream teacher-views`")
    imgs, logits = [], []
    for f in files:
        try:
            with np.load(f) as z:
                imgs.append(z["images"])
                logits.append(z["logits"].astype(np.float32))
        except Exception as exc:  # noqa: BLE001 - zip/key errors all mean "unusable file"
            raise ViewsError(f"cannot read {f}: {exc}") from None
        if imgs[-1].shape != train_ds.images.shape or logits[-1].shape != (len(train_ds), len(train_ds.names)):
            raise ViewsError(f"{f} has {imgs[-1].shape} faces / {logits[-1].shape} logits, not "
                             f"{train_ds.images.shape} / {(len(train_ds), len(train_ds.names))}")
    return ViewPool(torch.from_numpy(np.stack(imgs)).to(device), torch.from_numpy(np.stack(logits)).to(device),
                    bool(meta["teacher_flip"]), meta)


def draw(pool: ViewPool, idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One random view of each face in ``idx``, mirrored at random where the target allows: (x in [0, 1] as
    (n, 1, S, S) float, teacher logits (n, C))."""
    n = len(idx)
    k = torch.randint(pool.count, (n,), generator=gen).to(pool.images.device)
    x = pool.images[k, idx].float().div_(255).unsqueeze(1)
    if pool.flip:
        m = (torch.rand(n, generator=gen) < 0.5).to(x.device)
        x = torch.where(m.view(n, 1, 1, 1), x.flip(-1), x)
    return x, pool.logits[k, idx]


def _jsonable(v: Any) -> Any:
    return json.loads(json.dumps(v))
