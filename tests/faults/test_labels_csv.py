"""Hostile and awkward ``labels.csv`` files, and folders whose images cannot be read.

Each bad input must end in one ``emostream: error:`` line naming the file (and the line, where there is
one) with a non-zero exit -- never a traceback, never a silently wrong accuracy. The awkward-but-valid
ones (a spreadsheet's byte-order mark, CRLF, quoted commas, columns in another order) must just work.
The CLI cases run the real ``emostream eval`` as a child on real JPEGs from ``../shared/data``; the
training loader, which shares the reader, is checked in process on the same files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import run_emostream

from emostream.edge.labelled import DatasetError, load_labelled_images, read_labels_csv
from emostream.training.data import load_labels_csv

pytestmark = pytest.mark.faults

FACE = "multiface/single_face.jpg"


@pytest.fixture
def folder(tmp_path: Path, data_file) -> Path:
    """A folder with two real images (``a.jpg``, ``sub/b, c.jpg``) and a decoy outside it."""
    root = tmp_path / "set"
    (root / "sub").mkdir(parents=True)
    shutil.copy(data_file(FACE), root / "a.jpg")
    shutil.copy(data_file(FACE), root / "sub" / "b, c.jpg")
    shutil.copy(data_file(FACE), tmp_path / "outside.jpg")
    return root


def eval_json(root: Path) -> tuple[dict, str]:
    proc = run_emostream("eval", str(root), "--no-detect", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr


def eval_error(root: Path, *args: str) -> str:
    proc = run_emostream("eval", str(root), "--no-detect", "--json", *args)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    # libjpeg may print its own warning first ("Premature end of JPEG file"); ours is the one error line.
    lines = [line for line in proc.stderr.splitlines() if line.startswith("emostream: error: ")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


# --------------------------------------------------------------------------------------------------
# refused: one line, naming file and line


BAD = [
    # (id, bytes of labels.csv, fragments of the one error line)
    ("latin-1", "file,label\na.jpg,happy\ncafé.jpg,sad\n".encode("latin-1"), ["labels.csv:3:", "not UTF-8"]),
    ("utf-16", "file,label\na.jpg,happy\n".encode("utf-16"), ["labels.csv:1:", "not UTF-8"]),
    ("field over 128 KiB", b"file,label\na.jpg,happy\n" + b"x" * 140_000 + b".jpg,sad\n",
     ["labels.csv:3:", "longer than 131072 characters"]),
    ("unterminated quote over 128 KiB", b'file,label\n"a.jpg,happy\n' + b"y" * 140_000 + b"\n",
     ["labels.csv:", "longer than 131072"]),
    ("NUL byte", b"file,label\na.jpg,ha\x00ppy\n", ["labels.csv:2:"]),
    ("parent traversal", b"file,label\na.jpg,happy\n../outside.jpg,sad\n",
     ["labels.csv:3:", "'../outside.jpg' is outside"]),
    ("deep traversal", b"file,label\nsub/../../../../../../etc/passwd,sad\n", ["labels.csv:2:", "is outside"]),
    ("absolute path", b"file,label\n/etc/passwd,sad\n", ["labels.csv:2:", "'/etc/passwd' is outside"]),
    ("empty file", b"", ["labels.csv is empty"]),
    ("blank lines only", b"\r\n\n  \n", ["labels.csv is empty"]),
    ("BOM only", b"\xef\xbb\xbf", ["labels.csv is empty"]),
    ("header only", b"file,label\r\n", ["lists no images"]),
    ("wrong columns", b"path,emotion\na.jpg,happy\n", ["labels.csv:1:", "columns file,label", "'path'"]),
    ("duplicate column", b"file,label,label\na.jpg,happy,sad\n", ["labels.csv:1:", "'label' appears twice"]),
    ("header repeated", b"file,label\na.jpg,happy\nfile,label\na.jpg,sad\n",
     ["labels.csv:3:", "header appears again"]),
    ("unquoted comma", b"file,label\nsub/b, c.jpg,happy\n", ["labels.csv:2:", "quote a file name"]),
    ("too few fields", b"file,label\na.jpg\n", ["labels.csv:2:", "1 field(s) where the header has 2"]),
    ("unknown label", b"file,label\na.jpg,bored\n", ["labels.csv:2:", "unknown emotion label 'bored'"]),
    ("missing image", b"file,label\nnope.jpg,sad\n", ["labels.csv:2:", "'nope.jpg' not found"]),
    ("directory as image", b"file,label\nsub,sad\n", ["labels.csv:2:", "'sub' not found"]),
    ("name too long", b"file,label\n" + b"n" * 300 + b".jpg,sad\n", ["labels.csv:2:"]),
    ("line number after a quoted newline", b'file,label\na.jpg,happy\n"multi\nline.jpg",sad\n',
     ["labels.csv:4:", "'multi\\nline.jpg' not found"]),
]


@pytest.mark.parametrize("content, fragments", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_labels_file_is_one_error_line_through_the_cli(folder: Path, content: bytes, fragments: list[str]):
    (folder / "labels.csv").write_bytes(content)
    line = eval_error(folder)
    assert str(folder / "labels.csv") in line
    for fragment in fragments:
        assert fragment in line, line
    assert len(line) < 400, "errors quote fields cut short, whatever their length"


@pytest.mark.parametrize("content, fragments", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_training_loader_refuses_the_same_files_with_the_same_error(folder: Path, content: bytes,
                                                                    fragments: list[str]):
    (folder / "labels.csv").write_bytes(content)
    with pytest.raises(DatasetError) as info:
        load_labels_csv(folder)
    for fragment in fragments:
        assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_unreadable_labels_file_is_a_dataset_error(folder: Path):
    (folder / "labels.csv").mkdir()
    with pytest.raises(DatasetError, match="cannot read"):
        read_labels_csv(folder / "labels.csv", folder)


# --------------------------------------------------------------------------------------------------
# accepted: what spreadsheets and other tools write


GOOD = [
    ("BOM + CRLF (Excel 'CSV UTF-8')", b'\xef\xbb\xbffile,label\r\na.jpg,happy\r\n"sub/b, c.jpg",Sadness\r\n'),
    ("quoted everything", b'"file","label"\n"a.jpg","happy"\n"sub/b, c.jpg","sad"\n'),
    ("other column order, extra columns, header case",
     b"Usage,Label,File\ntrain,happy,a.jpg\ntest,sad,\"sub/b, c.jpg\"\n"),
    ("blank lines and trailing empty fields", b"file,label\n\na.jpg,happy,\n\n\"sub/b, c.jpg\",sad\n\n"),
    ("no final newline, spaces", b"file , label\n a.jpg , happy \n\"sub/b, c.jpg\",sad"),
    ("harmless ./ and sub/..", b"file,label\n./a.jpg,happy\nsub/../sub/b, c.jpg,sad\n".replace(
        b"sub/../sub/b, c.jpg", b'"sub/../sub/b, c.jpg"')),
]


@pytest.mark.parametrize("content", [g[1] for g in GOOD], ids=[g[0] for g in GOOD])
def test_awkward_but_valid_labels_files_are_read(folder: Path, content: bytes):
    (folder / "labels.csv").write_bytes(content)
    data = load_labelled_images(folder)
    assert data.labels == ("happy", "sad")
    assert [p.resolve() for p in data.files] == [(folder / "a.jpg").resolve(), (folder / "sub" / "b, c.jpg").resolve()]
    assert len(load_labels_csv(folder)) == 2


def test_bom_and_crlf_file_evaluates_through_the_cli(folder: Path):
    (folder / "labels.csv").write_bytes(GOOD[0][1])
    result, _ = eval_json(folder)
    assert result["n"] == 2 and result["unreadable"] == 0


def test_line_numbers_count_physical_lines(folder: Path):
    shutil.copy(folder / "a.jpg", folder / "sub" / "two\nlines.jpg")
    (folder / "labels.csv").write_bytes(b'file,label\n\n"a.jpg",happy\n"sub/two\nlines.jpg",sad\n')
    rows = read_labels_csv(folder / "labels.csv", folder)
    assert [line for line, _, _ in rows] == [3, 5]  # the blank line 2 counts; a row ends on its last line


# --------------------------------------------------------------------------------------------------
# images that cannot be read


def test_folder_where_no_image_can_be_read_fails_instead_of_scoring_zero(folder: Path):
    (folder / "x.jpg").write_text("not an image")
    (folder / "y.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    (folder / "labels.csv").write_text("file,label\nx.jpg,happy\ny.png,sad\n")
    line = eval_error(folder)
    assert "none of the 2 images" in line and "x.jpg" in line


def test_subfolder_layout_with_only_unreadable_images_fails_too(tmp_path: Path):
    (tmp_path / "happy").mkdir()
    (tmp_path / "happy" / "x.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    line = eval_error(tmp_path)
    assert "none of the 1 images" in line and "sub-folders" in line


def test_some_unreadable_images_are_counted_and_named(folder: Path):
    (folder / "x.jpg").write_text("not an image")
    (folder / "labels.csv").write_text("file,label\na.jpg,happy\nx.jpg,sad\n")
    result, stderr = eval_json(folder)
    assert result["n"] == 2 and result["unreadable"] == 1
    assert "could not read image" in stderr and "x.jpg: not a decodable image" in stderr


def test_decompression_bomb_in_an_eval_folder_is_counted_not_decoded(folder: Path):
    """A 20000x20000 PNG among the images: refused from its header, reported, the rest evaluated."""
    from tests.faults.test_giant_images import write_zero_png

    write_zero_png(folder / "bomb.png", 20000, 20000)
    (folder / "labels.csv").write_text("file,label\na.jpg,happy\nbomb.png,sad\n")
    result, stderr = eval_json(folder)
    assert result["n"] == 2 and result["unreadable"] == 1
    assert "bomb.png: it is 20000x20000" in stderr and "decompression-bomb guard" in stderr


@pytest.mark.parametrize("limit", ["0", "-3", "x"])
def test_limit_must_be_a_positive_count(folder: Path, limit: str):
    (folder / "labels.csv").write_text("file,label\na.jpg,happy\n")
    proc = run_emostream("eval", str(folder), "--no-detect", "--limit", limit)
    assert proc.returncode == 2 and "--limit" in proc.stderr and "Traceback" not in proc.stderr
