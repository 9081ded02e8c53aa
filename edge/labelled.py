"""Labelled image sets for evaluation: which file shows which emotion.

Three layouts are accepted, so the same command evaluates a user's folder and FER2013 as shipped:
``DIR/labels.csv`` (``file,label``, paths relative to DIR); a CSV beside DIR named after it
(``fer2013/val.csv`` with paths relative to ``fer2013/``); or one sub-folder per label.
Labels are mapped to canonical names here (``angry`` -> ``anger``), never in the data.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from engines.labels import canonical_label

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class DatasetError(Exception):
    """The folder or its label file cannot be used (missing, malformed, unknown labels)."""


@dataclass(frozen=True)
class LabelledImages:
    root: Path
    files: tuple[Path, ...]
    labels: tuple[str, ...]  # canonical names, one per file
    source: str  # which layout was found, for the report

    def __len__(self) -> int:
        return len(self.files)


def load_labelled_images(folder: str | Path) -> LabelledImages:
    root = Path(folder)
    if not root.is_dir():
        raise DatasetError(f"no such folder: {root}")
    own = root / "labels.csv"
    if own.is_file():
        return _from_csv(own, base=root)
    beside = root.parent / f"{root.name}.csv"
    if beside.is_file():
        return _from_csv(beside, base=root.parent)
    return _from_subfolders(root)


def read_labels_csv(csv_path: Path, base: Path) -> list[tuple[int, Path, str]]:
    """Rows of a ``file,label`` table as ``(line, image path, canonical label)``.

    Every bad row is an error naming its line: a silently skipped row would change the class balance
    of an evaluation or a training set. Shared by ``emostream eval`` and ``training.data``.
    """
    rows: list[tuple[int, Path, str]] = []
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = {f.strip() for f in reader.fieldnames or []}
        if not {"file", "label"} <= fields:
            raise DatasetError(f"{csv_path} needs a header with columns file,label "
                               f"(found: {', '.join(reader.fieldnames or []) or 'nothing'})")
        for line, row in enumerate(reader, start=2):
            name, label = (row.get("file") or "").strip(), (row.get("label") or "").strip()
            if not name or not label:
                raise DatasetError(f"{csv_path}:{line}: empty file or label")
            try:
                label = canonical_label(label)
            except ValueError as exc:
                raise DatasetError(f"{csv_path}:{line}: {exc}") from None
            path = base / name
            if not path.is_file():
                raise DatasetError(f"{csv_path}:{line}: image {name!r} not found under {base}")
            rows.append((line, path, label))
    if not rows:
        raise DatasetError(f"{csv_path} lists no images")
    return rows


def _from_csv(csv_path: Path, base: Path) -> LabelledImages:
    rows = read_labels_csv(csv_path, base)
    return LabelledImages(base, tuple(p for _, p, _ in rows), tuple(lab for _, _, lab in rows), csv_path.name)


def _from_subfolders(root: Path) -> LabelledImages:
    files: list[Path] = []
    labels: list[str] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            label = canonical_label(sub.name)
        except ValueError:
            continue  # not a label folder
        for f in sorted(sub.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                files.append(f)
                labels.append(label)
    if not files:
        raise DatasetError(f"{root} has no labels.csv, no {root.name}.csv beside it and no label sub-folders "
                           f"with images (e.g. {root}/happy/*.jpg)")
    return LabelledImages(root, tuple(files), tuple(labels), "sub-folders")
