"""Datasets for training the emotion network: an image folder with ``labels.csv`` and the FER2013 layout.

Everything is loaded once into uint8 numpy arrays (N, S, S) plus int64 label indices, because decoding
28k JPEGs per epoch would cost more CPU than the tiny student's forward pass. Labels are mapped to the
project's canonical names here (``angry`` -> ``anger``) so nothing downstream ever sees dataset spellings.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from emostream.contract import FER7_LABELS, canonical_label
from emostream.datasets import IMAGE_SUFFIXES, DatasetError, read_labels_csv

#: Models trained here use ``contract.FER7_LABELS``: the 7 FER2013 classes in canonical (AffectNet-8)
#: order, contempt omitted, declared in their card; indices never leave the model without their names.
#: (Named apart from ``contract.FER2013_INDEX_ORDER``, the dataset's own angry..neutral order.)

@dataclass
class FaceDataset:
    """Grayscale face crops in memory: ``images`` uint8 (N, S, S), ``labels`` int64 indices into ``names``."""

    images: np.ndarray
    labels: np.ndarray
    names: tuple[str, ...]
    files: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def counts(self) -> dict[str, int]:
        """Images per label name, the first thing to check when a loader changes."""
        binc = np.bincount(self.labels, minlength=len(self.names))
        return {name: int(n) for name, n in zip(self.names, binc, strict=True)}

    def subset(self, idx: np.ndarray) -> FaceDataset:
        files = tuple(self.files[i] for i in idx) if self.files else ()
        return FaceDataset(self.images[idx], self.labels[idx], self.names, files)


def _label_index(raw: str, names: tuple[str, ...], where: str) -> int:
    try:
        name = canonical_label(raw)
    except ValueError as exc:
        raise DatasetError(f"{where}: {exc}") from None
    if name not in names:
        raise DatasetError(f"{where}: label {name!r} is not one of the model's labels ({', '.join(names)})")
    return names.index(name)


def _read_gray(path: Path, size: int) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise DatasetError(f"cannot read image {path}")
    if img.shape != (size, size):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return img


def _stack(paths: list[Path], labels: list[int], names: tuple[str, ...], size: int,
           root: Path) -> FaceDataset:
    images = np.empty((len(paths), size, size), dtype=np.uint8)
    for i, p in enumerate(paths):
        images[i] = _read_gray(p, size)
    files = tuple(str(p.relative_to(root)) for p in paths)
    return FaceDataset(images, np.asarray(labels, dtype=np.int64), names, files)


def load_labels_csv(folder: str | Path, size: int = 48, names: tuple[str, ...] = FER7_LABELS,
                    csv_name: str = "labels.csv") -> FaceDataset:
    """Load an image folder described by ``labels.csv`` (``file,label``; paths relative to the folder).

    Every bad row is an error naming the row, because a silently skipped row changes class balance.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DatasetError(f"image folder not found: {root}")
    table = root / csv_name
    if not table.is_file():
        raise DatasetError(f"{table} not found (expected columns file,label)")
    rows = read_labels_csv(table, root)
    paths = [path for _, path, _ in rows]
    labels = [_label_index(label, names, f"{table}:{line}") for line, _, label in rows]
    return _stack(paths, labels, names, size, root)


def load_fer_split(root: str | Path, split: str, size: int = 48,
                   names: tuple[str, ...] = FER7_LABELS) -> FaceDataset:
    """Load ``<root>/<split>/<label>/*.jpg`` (the FER2013 folder layout), files sorted for determinism."""
    base = Path(root)
    folder = base / split
    if not folder.is_dir():
        raise DatasetError(f"FER2013 split folder not found: {folder}")
    paths: list[Path] = []
    labels: list[int] = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        idx = _label_index(sub.name, names, f"{folder}: folder {sub.name!r}")
        files = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths.extend(files)
        labels.extend([idx] * len(files))
    if not paths:
        raise DatasetError(f"no images under {folder}/<label>/")
    return _stack(paths, labels, names, size, base)


def _cache_key(root: Path, split: str, size: int, names: tuple[str, ...]) -> str:
    """Key on the file list, not just the folder name, so an edited folder never reuses a stale cache."""
    listing = sorted(str(p.relative_to(root)) for p in (root / split).rglob("*") if p.is_file())
    h = hashlib.sha1("\n".join(listing).encode())
    h.update(f"{split}|{size}|{','.join(names)}".encode())
    return h.hexdigest()[:16]


def load_fer_cached(root: str | Path, split: str, size: int = 48, cache_dir: str | Path = ".cache",
                    names: tuple[str, ...] = FER7_LABELS) -> FaceDataset:
    """`load_fer_split` through ``.cache/fer2013_<split>.npz``, rebuilt when the file list changes."""
    base = Path(root)
    if not (base / split).is_dir():
        raise DatasetError(f"FER2013 split folder not found: {base / split}")
    cache = Path(cache_dir) / f"fer2013_{split}{'' if size == 48 else f'_{size}'}.npz"
    key = _cache_key(base, split, size, names)
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            if str(z["key"]) == key:
                return FaceDataset(z["images"], z["labels"], tuple(str(n) for n in z["names"]),
                                   tuple(str(f) for f in z["files"]))
    ds = load_fer_split(base, split, size, names)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, images=ds.images, labels=ds.labels, names=np.array(ds.names), files=np.array(ds.files),
             key=np.array(key))
    tmp.replace(cache)
    return ds
