"""Labelled image sets: which file shows which emotion (for ``emostream eval`` and for training).

Why here, beside the contract and not in ``edge`` or ``training``: evaluation (an edge command) and
the training loaders both read these files, and the layer rules (``make lint``) forbid training from
importing the edge and the edge from importing training. Pure standard library plus the contract's
label names, so either side may import it.

Three layouts are accepted, so the same command evaluates a user's folder and FER2013 as shipped:
``DIR/labels.csv`` (``file,label``, paths relative to DIR); a CSV beside DIR named after it
(``fer2013/val.csv`` with paths relative to ``fer2013/``); or one sub-folder per label.
Labels are mapped to canonical names here (``angry`` -> ``anger``), never in the data.
"""

from __future__ import annotations

import codecs
import csv
import io
import posixpath
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from emostream.contract import canonical_label

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
    of an evaluation or a training set. Shared by ``emostream eval`` and ``training.data``, so the
    only exception either sees from a labels file is :class:`DatasetError`, one line long.

    What is accepted, and why:

    * UTF-8, with or without the byte-order mark spreadsheets write (``utf-8-sig``); other encodings
      are refused at the first undecodable line rather than guessed.
    * A header naming ``file`` and ``label`` (any case, any order, other columns ignored); CRLF or LF
      line ends; quoted fields (a name holding a comma must be quoted); blank lines skipped.
    * Paths relative to ``base`` that stay inside it: an absolute path or one climbing out with
      ``..`` is refused, so a labels file cannot make the tool read (or train on) files elsewhere.
    """
    rows: list[tuple[int, Path, str]] = []
    reader = None
    try:
        with open(csv_path, "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as text:
            reader = csv.reader(text)
            columns = _header(csv_path, reader)
            for row in reader:
                if not any(field.strip() for field in row):
                    continue  # a blank line
                rows.append(_row(csv_path, reader.line_num, row, columns, base))
    except UnicodeDecodeError:
        line = _first_undecodable_line(csv_path)
        raise DatasetError(f"{csv_path}:{line}: not UTF-8 text (save the file as UTF-8)") from None
    except csv.Error as exc:
        line = reader.line_num if reader is not None else 1
        why = str(exc)
        if "field larger than field limit" in why:
            why = f"a field is longer than {csv.field_size_limit()} characters (is this a labels file?)"
        raise DatasetError(f"{csv_path}:{line}: {_one_line(why)}") from None
    except OSError as exc:
        raise DatasetError(f"cannot read {csv_path}: {exc.strerror or exc}") from None
    if not rows:
        raise DatasetError(f"{csv_path} lists no images")
    return rows


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _show(text: str, limit: int = 80) -> str:
    """``repr`` of a field from the file, cut short: an error must stay one readable line."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _header(csv_path: Path, reader) -> tuple[int, int, tuple[str, ...]]:
    """Indices of the ``file`` and ``label`` columns, from the first non-blank row."""
    for header in reader:
        if any(field.strip() for field in header):
            break
    else:
        raise DatasetError(f"{csv_path} is empty (expected a header with columns file,label)")
    if any("\x00" in field for field in header):
        # UTF-16 without a byte-order mark decodes as "UTF-8" with a NUL after every letter.
        raise DatasetError(f"{csv_path}:{reader.line_num}: not UTF-8 text (NUL bytes: UTF-16?); "
                           "save the file as UTF-8")
    # A byte-order mark that survived (a second one, or one inside a joined file) is not part of a name.
    names = tuple(field.replace("\ufeff", "").strip().lower() for field in header)
    for name in ("file", "label"):
        if names.count(name) > 1:
            raise DatasetError(f"{csv_path}:{reader.line_num}: column {_show(name)} appears twice in the header")
    if "file" not in names or "label" not in names:
        found = ", ".join(_show(field, 40) for field in header[:8]) + (", ..." if len(header) > 8 else "")
        raise DatasetError(f"{csv_path}:{reader.line_num}: needs a header with columns file,label (found: {found})")
    return names.index("file"), names.index("label"), names


def _row(csv_path: Path, line: int, row: list[str], columns: tuple[int, int, tuple[str, ...]],
         base: Path) -> tuple[int, Path, str]:
    """One data row checked: both fields present, a known label, an image inside ``base``."""
    file_at, label_at, names = columns
    where = f"{csv_path}:{line}"
    if len(row) < len(names) and max(file_at, label_at) >= len(row):
        raise DatasetError(f"{where}: {len(row)} field(s) where the header has {len(names)}")
    if any(field.strip() for field in row[len(names):]):
        raise DatasetError(f"{where}: {len(row)} fields where the header has {len(names)} "
                           "(quote a file name that contains a comma)")
    name, label = row[file_at].strip(), row[label_at].strip()
    if tuple(field.replace("\ufeff", "").strip().lower() for field in row[: len(names)]) == names:
        raise DatasetError(f"{where}: the header appears again (two files joined together?)")
    if not name or not label:
        raise DatasetError(f"{where}: empty file or label")
    try:
        label = canonical_label(label)
    except ValueError as exc:
        raise DatasetError(f"{where}: {_one_line(str(exc))}") from None
    return line, _inside(where, name, base), label


def _inside(where: str, name: str, base: Path) -> Path:
    """``base / name`` if it is an existing file that the name keeps inside ``base``.

    Checked on the name (not on resolved links): a symlink placed in the folder is its owner's
    choice, while ``../`` or ``/etc/passwd`` in a downloaded labels file is not.
    """
    if "\x00" in name:
        raise DatasetError(f"{where}: file name {_show(name)} contains a NUL character")
    rel = PurePosixPath(name)
    if rel.is_absolute() or posixpath.normpath(name).split("/")[0] == "..":
        raise DatasetError(f"{where}: image {_show(name)} is outside {base} (paths must be relative to it)")
    path = base / rel
    try:
        found = path.is_file()
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise DatasetError(f"{where}: image {_show(name)}: {exc.strerror or exc}") from None
    if not found:
        raise DatasetError(f"{where}: image {_show(name)} not found under {base}")
    return path


def _first_undecodable_line(csv_path: Path) -> int:
    """The 1-based line holding the first byte sequence that is not UTF-8 (the error's own offset is
    relative to a decoder chunk, not the file)."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    number = 1
    with open(csv_path, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            try:
                decoder.decode(line)
            except UnicodeDecodeError:
                return number
    return number  # a multi-byte sequence cut off by the end of the file


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
