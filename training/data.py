"""Datasets for training the emotion network: an image folder with ``labels.csv`` and the FER2013 layout.

Everything is loaded once into uint8 numpy arrays (N, S, S) plus int64 label indices, because decoding
28k JPEGs per epoch would cost more CPU than the tiny student's forward pass. Labels are mapped to the
project's canonical names here (``angry`` -> ``anger``) so nothing downstream ever sees dataset spellings.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

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
    import cv2  # here, not at the top: a pack (`load_fer_pack`) needs no OpenCV, e.g. on a bare GPU machine

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


#: What ``emostream pack-fer`` writes: one zip of ``.npy`` members, readable by ``np.load``.
PACK_FORMAT = "emostream-fer2013-pack/1"
PACK_SPLITS = ("train", "val")
#: The device tool carries the working tree plus carried paths, 64 MiB in all (the code is ~4 MiB of it).
MAX_PACK_BYTES = 64 * 2**20


def write_pack(splits: dict[str, FaceDataset], out: str | Path, max_bytes: int = MAX_PACK_BYTES) -> int:
    """Write ``splits`` as one LZMA-compressed ``.npz``; returns its size in bytes.

    LZMA, not ``np.savez_compressed``'s deflate: FER2013 train+val is 67.6 MiB deflated (over the device
    tool's 64 MiB carry) and 55.6 MiB with LZMA. ``np.load`` reads LZMA zip members natively, so the file
    stays a plain ``.npz``. Each split keeps its own arrays and label names: train and val are never mixed.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    arrays: dict[str, np.ndarray] = {"format": np.array(PACK_FORMAT)}
    for split, ds in splits.items():
        arrays[f"{split}_images"] = np.ascontiguousarray(ds.images, dtype=np.uint8)
        arrays[f"{split}_labels"] = np.asarray(ds.labels, dtype=np.int64)
        arrays[f"{split}_names"] = np.array(ds.names)
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_LZMA) as zf:
        for key, arr in arrays.items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, arr, allow_pickle=False)
    size = tmp.stat().st_size
    if size > max_bytes:
        tmp.unlink()
        raise DatasetError(f"pack would be {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB "
                           f"the device tool carries; nothing written to {out}")
    tmp.replace(out)
    return size


def pack_fer(root: str | Path, out: str | Path, cache_dir: str | Path = ".cache",
             max_bytes: int = MAX_PACK_BYTES) -> tuple[int, dict[str, int]]:
    """FER2013 ``train`` and ``val`` folders (through the decode cache) -> one pack; (bytes, faces per split)."""
    splits = {s: load_fer_cached(root, s, cache_dir=cache_dir) for s in PACK_SPLITS}
    return write_pack(splits, out, max_bytes), {s: len(ds) for s, ds in splits.items()}


def load_fer_pack(path: str | Path, split: str, names: tuple[str, ...] = FER7_LABELS) -> FaceDataset:
    """One split of a pack from :func:`write_pack`, checked so a wrong or damaged file is one clear error.

    Only that split's members are decompressed. Its label names must equal ``names`` (the model's), which
    also makes a pack whose train and val disagree on names fail, whichever split is read first.
    """
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"pack not found: {p} (make it with `emostream pack-fer -o {p}`)")
    if split not in PACK_SPLITS:
        raise DatasetError(f"{p}: no split {split!r} in a FER2013 pack (splits: {', '.join(PACK_SPLITS)})")
    try:
        with np.load(p, allow_pickle=False) as z:
            missing = [k for k in ("format", f"{split}_images", f"{split}_labels", f"{split}_names",
                                   *(f"{s}_names" for s in PACK_SPLITS)) if k not in z.files]
            if missing:
                raise DatasetError(f"{p} is not a FER2013 pack from `emostream pack-fer` "
                                   f"(missing {', '.join(missing)})")
            if str(z["format"]) != PACK_FORMAT:
                raise DatasetError(f"{p}: pack format {str(z['format'])!r}, expected {PACK_FORMAT!r}")
            split_names = {s: tuple(str(n) for n in z[f"{s}_names"]) for s in PACK_SPLITS}
            images, labels = z[f"{split}_images"], z[f"{split}_labels"]
    except DatasetError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, NotImplementedError) as exc:
        raise DatasetError(f"cannot read pack {p}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    if len(set(split_names.values())) != 1:
        raise DatasetError(f"{p}: train and val label names differ ({split_names['train']} vs {split_names['val']})")
    if split_names[split] != tuple(names):
        raise DatasetError(f"{p}: label names {split_names[split]} are not the model's {tuple(names)}")
    _check_pack_arrays(p, split, images, labels, len(names))
    return FaceDataset(images, labels, tuple(names))


def _check_pack_arrays(p: Path, split: str, images: np.ndarray, labels: np.ndarray, num_classes: int) -> None:
    """Shapes, dtypes and label range: a hand-edited pack must not train on garbage silently."""
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise DatasetError(f"{p}: {split}_images is {images.dtype} {images.shape}, expected uint8 (N, S, S)")
    if labels.dtype != np.int64 or labels.shape != (images.shape[0],):
        raise DatasetError(f"{p}: {split}_labels is {labels.dtype} {labels.shape}, expected int64 "
                           f"({images.shape[0]},)")
    if not labels.size:
        raise DatasetError(f"{p}: split {split} is empty")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DatasetError(f"{p}: {split}_labels outside 0..{num_classes - 1}")


def load_fer_data(data: str | Path, split: str, cache_dir: str | Path = ".cache",
                  names: tuple[str, ...] = FER7_LABELS) -> FaceDataset:
    """``--data`` for train/distill: a pack file (``.npz``) or the FER2013 folder (through the cache)."""
    p = Path(data)
    if p.suffix == ".npz" or p.is_file():
        return load_fer_pack(p, split, names)
    return load_fer_cached(p, split, cache_dir=cache_dir, names=names)
