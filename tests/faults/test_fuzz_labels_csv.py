"""Property-based fuzzing of ``labels.csv`` parsing: a valid result or a DatasetError, nothing else.

``edge.labelled.read_labels_csv`` is the one reader behind ``emostream eval`` and ``training.data``, and
its callers turn only :class:`DatasetError` into an ``emostream: error:`` line; any other exception
escaping it is a traceback for the user. So, over thousands of generated files -- random bytes, and
tables built from hostile parts (encodings, byte-order marks, quotes, CR/LF/CRLF, NUL, paths that
climb out of the folder or are absolute, unknown and empty labels, giant fields) -- the only outcomes
allowed are:

* a list of rows, each an existing file *inside* the folder with a canonical label and a line number;
* a DatasetError with a one-line message naming the labels file.

``derandomize=True`` makes every run try the same cases (reproducible CI); ``database=None`` keeps the
runs from writing a ``.hypothesis`` folder; the example counts total 4700 and run in ~8 s here.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from emostream.edge.labelled import DatasetError, load_labelled_images, read_labels_csv
from emostream.engines.labels import CANONICAL_LABELS
from emostream.training.data import FER7_LABELS, load_labels_csv

pytestmark = pytest.mark.faults

FUZZ = settings(
    max_examples=1500,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: Names that exist in the fuzzed folder (real JPEGs, so the training loader can decode them), one
#: that is not an image, and a decoy beside the folder that a path escaping it would reach.
REAL = ["a.jpg", "sub/b, c.jpg", 'q"uote.jpg', "ünï cödé.jpg"]
NOT_IMAGE = "notes.jpg"


@pytest.fixture(scope="module")
def world(tmp_path_factory, data_file) -> Path:
    face = sorted(data_file("fer2013/val/happy").glob("*.jpg"))[0]  # a real 48x48 FER2013 crop
    root = tmp_path_factory.mktemp("fuzz")
    base = root / "set"
    for name in REAL:
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(face, base / name)
    (base / NOT_IMAGE).write_text("not an image")
    (root / "outside.jpg").write_bytes((base / "a.jpg").read_bytes())
    return base


def check(base: Path, content: bytes) -> None:
    """The property: read the file through every entry point; only a valid result or DatasetError."""
    table = base / "labels.csv"
    table.write_bytes(content)
    try:
        rows = read_labels_csv(table, base)
    except DatasetError as exc:
        message = str(exc)
        assert message and "\n" not in message and "\r" not in message, repr(message)
        assert str(table) in message, message
        event("refused: " + message.split(": ", 1)[-1].split("'")[0].split("(")[0][:40])
        rows = None
    if rows is not None:
        event("read")
        assert rows, "an empty result must be an error instead"
        lines = [line for line, _, _ in rows]
        assert lines == sorted(lines) and len(set(lines)) == len(lines) and lines[0] >= 2
        root = os.path.realpath(base)
        for _, path, label in rows:
            assert label in CANONICAL_LABELS
            assert path.is_file()
            assert os.path.commonpath([root, os.path.realpath(path)]) == root, f"{path} escapes {base}"

    # The two public entry points share the reader and must keep its contract.
    try:
        data = load_labelled_images(base)
        assert rows is not None and len(data) == len(rows)
    except DatasetError as exc:
        assert "\n" not in str(exc)
    try:
        ds = load_labels_csv(base, size=16)
        assert rows is not None and len(ds) == len(rows)
        assert all(FER7_LABELS[i] == lab for i, (_, _, lab) in zip(ds.labels, rows))
    except DatasetError as exc:
        assert "\n" not in str(exc)


# --------------------------------------------------------------------------------------------------
# strategies


def _mostly(common: st.SearchStrategy, rare: st.SearchStrategy, odds: int = 7) -> st.SearchStrategy:
    """``common`` about ``odds`` times in ``odds + 1``: enough valid rows that whole files parse too."""
    return st.integers(0, odds).flatmap(lambda i: common if i else rare)


HOSTILE_PATHS = st.sampled_from([
    NOT_IMAGE, "missing.jpg", "../outside.jpg", "sub/../../outside.jpg", "/etc/passwd", "./a.jpg",
    "sub", "sub/", ".", "..", "", " ", "a.jpg\x00", "a.jpg/", "//a.jpg", "sub//b, c.jpg", "~/a.jpg",
    "..\\outside.jpg", "n" * 300, "sub/" + "d/" * 200 + "x.jpg", "\ufeffa.jpg", "a.jpg\r",
])
PATHS = _mostly(st.sampled_from(REAL), st.one_of(HOSTILE_PATHS, st.text(max_size=40)))
LABELS = _mostly(
    st.sampled_from([*CANONICAL_LABELS, "angry", "Happiness", " SAD "]),
    st.one_of(
        st.sampled_from(["contempt", "label", "file", "", " ", "bored", "happy\n", "ha,ppy", 'ha"ppy', "\x00",
                         "\u00e9", "x" * 200]),
        st.text(max_size=12),
    ),
)
HEADERS = _mostly(
    st.sampled_from([["file", "label"], ["label", "file"], ["File", "LABEL"], [" file ", " label "],
                     ["file", "label", "usage"], ["usage", "label", "file"]]),
    st.sampled_from([["file", "label", "label"], ["file"], ["path", "emotion"], [], ["file", ""],
                     ["\ufefffile", "label"]]),
    odds=5,
)
ENCODINGS = _mostly(st.sampled_from(["utf-8", "utf-8-sig"]),
                    st.sampled_from(["utf-16", "utf-16-le", "latin-1", "cp1252", "utf-32"]), odds=5)
NEWLINES = st.sampled_from(["\n", "\r\n", "\r", "\n\r"])
QUOTING = st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC, "raw"])


@st.composite
def tables(draw) -> bytes:
    """A table a person or a tool could plausibly write, then possibly damaged."""
    header = draw(HEADERS)
    width = max(2, len(header))
    rows = [header] if draw(st.integers(0, 9)) else []  # now and then no header at all
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.integers(0, 19))
        if kind == 0:
            rows.append([])  # blank line
        elif kind == 1:
            rows.append(list(header))  # the header again
        elif kind == 2:
            rows.append([draw(PATHS) for _ in range(draw(st.integers(0, width + 2)))])  # ragged
        else:
            row = [draw(PATHS), draw(LABELS)]
            names = [h.strip().lower() for h in header]
            if "label" in names and "file" in names and names.index("label") < names.index("file"):
                row.reverse()
            row += [draw(st.text(max_size=5)) for _ in range(width - 2)]
            rows.append(row)
    quoting = draw(QUOTING)
    newline = draw(NEWLINES)
    if quoting == "raw":  # joined by hand: commas, quotes and newlines left unescaped
        text = newline.join(",".join(row) for row in rows)
    else:
        buf = io.StringIO()
        csv.writer(buf, quoting=quoting, lineterminator=newline).writerows(rows)
        text = buf.getvalue()
    if draw(st.booleans()):
        text += newline
    data = text.encode(draw(ENCODINGS), errors="replace")
    if draw(st.integers(0, 4)) == 0:
        data = b"\xef\xbb\xbf" + data  # a byte-order mark, maybe doubled
    for _ in range(max(0, draw(st.integers(-9, 2)))):  # damage, now and then: insert random bytes
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
    if draw(st.integers(0, 30)) == 0:
        data += b"z" * 140_000  # past the csv module's field limit
    return data


# --------------------------------------------------------------------------------------------------
# the properties


@settings(FUZZ, max_examples=1000)
@given(content=st.binary(max_size=300))
def test_random_bytes(world: Path, content: bytes):
    check(world, content)


@settings(FUZZ, max_examples=1000)
@given(content=st.binary(max_size=200).map(lambda b: b"file,label\n" + b))
def test_random_bytes_after_a_valid_header(world: Path, content: bytes):
    check(world, content)


#: Characters that matter to a CSV parser or a path, plus the names that exist, so random text reaches
#: quoting, line-end and path handling instead of stopping at the first invalid UTF-8 byte.
CSV_ALPHABET = st.one_of(
    st.sampled_from(list(',"\r\n \t\x00\ufeff./\\~') + ["a.jpg", "sub/b, c.jpg", "..", "happy", "sad", "file",
                                                      "label", "file,label\n"]),
    st.characters(),
)


@settings(FUZZ, max_examples=1500)
@given(body=st.lists(CSV_ALPHABET, max_size=60).map("".join), header=st.booleans())
def test_random_csv_text(world: Path, body: str, header: bool):
    text = ("file,label\n" if header else "") + body
    check(world, text.encode("utf-8", errors="surrogatepass"))


@settings(FUZZ, max_examples=1200)
@given(content=tables())
def test_generated_tables(world: Path, content: bytes):
    check(world, content)
