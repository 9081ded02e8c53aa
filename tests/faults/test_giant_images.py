"""Giant and hostile still images: bounded memory, bounded time, or one clear refusal.

A flat 20000x20000 JPEG is a few MB on disk; ``emostream run`` used to decode it at full size and
convert it to RGB copies -- 5.5 GB of RAM and ~25 s, which gets a Jetson's process killed. These tests
run the real CLI as a child and read the child's own peak RSS from ``os.wait4``, so earlier children
of the test process cannot hide or inflate it.

The files are built here without ever holding their pixels: the JPEGs are hand-made baseline files
whose entropy data is one repeated 3-byte pattern (every 8x8 block flat grey), the PNG bombs are a
deflate stream of zeros written block by block, the BMP bomb is an RLE8 header with an end-of-bitmap.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import REPO

from emostream.streams.errors import ImageTooLargeError, SourceError
from emostream.streams.source import _gst, open_source
from emostream.streams.still import (
    MAX_FRAME_PIXELS,
    MAX_IMAGE_PIXELS,
    MAX_IMAGE_SIDE,
    MAX_REDUCIBLE_PIXELS,
    fitted_size,
    probe_image,
)

pytestmark = pytest.mark.faults

#: What any of these runs may cost. The CLI with its models loaded sits near 300 MB; the 20000x20000
#: JPEG took 5.5 GB before the fix and ~470 MB after, a 1-gigapixel JPEG ~650 MB.
RSS_BOUND = 1 << 30
#: Wall time bound for one run: ~3 s here (2.5 s of it start-up); the unbounded decode took ~25 s.
TIME_BOUND = 20.0


# --------------------------------------------------------------------------------------------------
# files built without their pixels


def _segment(marker: int, payload: bytes) -> bytes:
    return b"\xff" + bytes([marker]) + struct.pack(">H", len(payload) + 2) + payload


# The Annex K luminance Huffman tables: only DC category 0 ("00") and AC end-of-block ("1010") are used.
_DC_BITS = bytes([0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
_AC_BITS = bytes([0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D])
_AC_VALS = bytes.fromhex(
    "01020300041105122131410613516107227114328191a1082342b1c11552d1f02433627282090a161718191a25262728292a3435"
    "363738393a434445464748494a535455565758595a636465666768696a737475767778797a838485868788898a92939495969798"
    "999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4"
    "f5f6f7f8f9fa"
)


def write_flat_jpeg(path: Path, width: int, height: int, *, sof: int = 0xC0, data: bool = True) -> Path:
    """A valid 3-component 4:4:4 JPEG, flat grey (128), of any size, written in O(1) memory.

    Each 8x8 block codes as DC difference 0 then end-of-block: 6 bits, so four blocks are the three
    bytes 0x28 0xA2 0x8A (no 0xFF, so no byte stuffing). ``sof`` 0xC2 marks it progressive (only its
    header is then meaningful); ``data=False`` writes the headers alone.
    """
    components = 3
    out = bytearray(b"\xff\xd8")
    out += _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    out += _segment(0xDB, b"\x00" + bytes([1] * 64))
    frame = struct.pack(">BHHB", 8, height, width, components)
    frame += b"".join(bytes([c + 1, 0x11, 0]) for c in range(components))
    out += _segment(sof, frame)
    out += _segment(0xC4, b"\x00" + _DC_BITS + bytes(range(12)))
    out += _segment(0xC4, b"\x10" + _AC_BITS + _AC_VALS)
    scan = bytes([components]) + b"".join(bytes([c + 1, 0x00]) for c in range(components)) + b"\x00\x3f\x00"
    out += _segment(0xDA, scan)
    blocks = -(-width // 8) * -(-height // 8) * components
    with open(path, "wb") as fh:
        fh.write(out)
        if data:
            four, rest = divmod(blocks, 4)
            unit = b"\x28\xa2\x8a"
            for _ in range(four // 1_000_000):
                fh.write(unit * 1_000_000)
            fh.write(unit * (four % 1_000_000))
            if rest:
                bits = "001010" * rest
                bits += "1" * (-len(bits) % 8)
                fh.write(int(bits, 2).to_bytes(len(bits) // 8, "big"))
        fh.write(b"\xff\xd9")
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_zero_png(path: Path, width: int, height: int) -> Path:
    """A valid black RGB PNG of any size in O(1) memory and time: the classic decompression bomb.

    The filtered scanlines of a black image are all zero bytes, so the zlib stream is one full-flushed
    deflate block of 1 MiB of zeros repeated (full flush makes each copy independent), then the rest.
    Adler-32 of L zero bytes is ((L mod 65521) << 16) | 1.
    """
    total = height * (1 + 3 * width)
    mib = 1 << 20
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = comp.compress(bytes(mib)) + comp.flush(zlib.Z_FULL_FLUSH)
    whole, rest = divmod(total, mib)
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.write(_png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
        idat = bytearray(b"\x78\x01")
        for _ in range(whole):
            idat += block
            if len(idat) > mib:
                fh.write(_png_chunk(b"IDAT", bytes(idat)))
                idat.clear()
        idat += comp.compress(bytes(rest)) + comp.flush(zlib.Z_FINISH)
        idat += struct.pack(">I", ((total % 65521) << 16) | 1)
        fh.write(_png_chunk(b"IDAT", bytes(idat)) + _png_chunk(b"IEND", b""))
    return path


def write_rle_bmp(path: Path, width: int, height: int) -> Path:
    """An 8-bit RLE BMP whose only code is end-of-bitmap: a 1 KB file claiming ``width`` x ``height``."""
    palette = b"".join(bytes([i, i, i, 0]) for i in range(256))
    pixels = b"\x00\x01"
    offset = 14 + 40 + len(palette)
    header = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    path.write_bytes(header + info + palette + pixels)
    return path


# --------------------------------------------------------------------------------------------------
# the CLI as a measured child


@dataclass
class Measured:
    returncode: int
    stdout: str
    stderr: str
    max_rss: int  # bytes, this child only
    seconds: float


#: Reaps ``emostream`` and prints its rusage peak. It runs as a fresh small process because Linux keeps
#: a process's pre-exec peak across execve: a child forked straight from this (GB-sized) pytest process
#: would report pytest's RSS, not its own.
_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, "-m", "emostream", *sys.argv[2:]])
_, status, usage = os.wait4(pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(*args: str, tmp: Path, timeout: float = 120) -> Measured:
    """Run ``emostream ARGS`` under a small launcher that reaps it with ``os.wait4``: its own peak RSS."""
    env = {**os.environ, "GLOG_minloglevel": "2"}
    out, err, rss = tmp / "child.out", tmp / "child.err", tmp / "child.maxrss"
    started = time.monotonic()
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(rss), *args], stdout=fo, stderr=fe,
                                env=env, cwd=REPO, start_new_session=True)
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            pytest.fail(f"emostream {' '.join(args)} ran past {timeout} s")
    seconds = time.monotonic() - started
    return Measured(returncode, out.read_text(), err.read_text(), int(rss.read_text()) * 1024, seconds)


def frames_of(stdout: str) -> list[dict]:
    return [r for r in map(json.loads, stdout.splitlines()) if r.get("type") == "frame"]


def assert_one_error_line(result: Measured, *fragments: str) -> str:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("emostream: error: ")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def assert_bounded(result: Measured) -> None:
    assert result.max_rss < RSS_BOUND, f"peak RSS {result.max_rss / 2**20:.0f} MiB"
    assert result.seconds < TIME_BOUND, f"{result.seconds:.1f} s"


# --------------------------------------------------------------------------------------------------
# the case from the issue, through the real CLI


def test_20000px_jpeg_is_delivered_fitted_with_bounded_memory_and_time(tmp_path: Path):
    """The 400-megapixel JPEG: one frame, analysed, within a fixed RAM and time budget."""
    path = write_flat_jpeg(tmp_path / "photo.jpg", 20000, 20000)
    assert path.stat().st_size < 20_000_000  # small on disk: the header is what costs
    result = run_measured("run", str(path), "--quiet", tmp=tmp_path)
    assert result.returncode == 0, result.stderr
    frames = frames_of(result.stdout)
    assert len(frames) == 1 and frames[0]["faces"] == []
    assert_bounded(result)


def test_largest_sequential_jpeg_is_delivered_and_one_pixel_more_is_refused(tmp_path: Path):
    """At the 1-gigapixel limit the reduced decode still fits the budget; past it, a header is enough."""
    side = int(MAX_REDUCIBLE_PIXELS**0.5)
    at = write_flat_jpeg(tmp_path / "at.jpg", side, side)
    result = run_measured("run", str(at), "--quiet", tmp=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(frames_of(result.stdout)) == 1
    assert_bounded(result)

    over = write_flat_jpeg(tmp_path / "over.jpg", MAX_REDUCIBLE_PIXELS // 20000 + 1, 20000, data=False)
    result = run_measured("run", str(over), "--quiet", tmp=tmp_path)
    assert_one_error_line(result, "over.jpg", "decompression-bomb guard", "1,000,000,000 pixels")
    assert_bounded(result)


@pytest.mark.parametrize(
    "name, build, fragment",
    [
        ("bomb.png", lambda p: write_zero_png(p, 20000, 20000), "PNG (decoded at full size)"),
        ("bomb.bmp", lambda p: write_rle_bmp(p, 30000, 30000), "BMP (decoded at full size)"),
        ("bomb.jpg", lambda p: write_flat_jpeg(p, 10000, 10000, sof=0xC2, data=False), "progressive"),
        # Content decides, not the name: a PNG bomb called .mp4 is still a PNG.
        ("bomb.mp4", lambda p: write_zero_png(p, 20000, 20000), "PNG (decoded at full size)"),
    ],
)
def test_images_that_must_be_decoded_at_full_size_are_refused_above_the_limit(tmp_path, name, build, fragment):
    path = build(tmp_path / name)
    result = run_measured("run", str(path), "--quiet", tmp=tmp_path)
    assert_one_error_line(result, name, fragment, f"{MAX_IMAGE_PIXELS:,} pixels")
    assert result.stdout == ""
    assert_bounded(result)


def test_png_just_under_the_full_decode_limit_is_delivered_within_budget(tmp_path: Path):
    side = int(MAX_IMAGE_PIXELS**0.5)
    path = write_zero_png(tmp_path / "big.png", side, side)
    result = run_measured("run", str(path), "--quiet", tmp=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(frames_of(result.stdout)) == 1
    assert_bounded(result)


def test_video_frames_above_the_frame_limit_are_refused_on_their_caps(tmp_path: Path):
    """An MJPEG video of 8000x6000 frames (48 MP): 1.6 GB before; now refused before any conversion."""
    Gst = _gst()[0]
    path = tmp_path / "huge.mkv"
    pipe = Gst.parse_launch(
        "videotestsrc num-buffers=3 pattern=black ! video/x-raw,format=I420,width=8000,height=6000,framerate=5/1 "
        f"! jpegenc ! matroskamux ! filesink location={path}"
    )
    pipe.set_state(Gst.State.PLAYING)
    msg = pipe.get_bus().timed_pop_filtered(30 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    pipe.set_state(Gst.State.NULL)
    assert msg is not None and msg.type == Gst.MessageType.EOS
    assert 8000 * 6000 > MAX_FRAME_PIXELS
    result = run_measured("run", str(path), "--quiet", tmp=tmp_path)
    assert_one_error_line(result, "huge.mkv", "8000x6000", f"{MAX_FRAME_PIXELS // 1_000_000} megapixels")
    assert_bounded(result)


# --------------------------------------------------------------------------------------------------
# what is delivered, in process (files of moderate size only)


def test_oversized_photo_is_fitted_and_faces_are_boxed_in_delivered_pixels(data_file, tmp_path: Path):
    """A real photo at 6x: the frame is 4096 px wide and every box lies in that frame, where the faces are."""
    from conftest import run_emostream

    original = data_file("multiface/multi_face.jpg")
    bgr = cv2.imread(str(original))
    big = cv2.resize(bgr, (bgr.shape[1] * 6, bgr.shape[0] * 6), interpolation=cv2.INTER_CUBIC)
    path = tmp_path / "big.jpg"
    assert cv2.imwrite(str(path), big, [cv2.IMWRITE_JPEG_QUALITY, 90])
    target = fitted_size(big.shape[1], big.shape[0])
    assert max(target) == MAX_IMAGE_SIDE

    with open_source(str(path)) as src:
        frames = list(src)
    assert len(frames) == 1 and (src.width, src.height) == target
    image = frames[0].image
    assert image.shape == (target[1], target[0], 3) and image.flags.c_contiguous
    reference = cv2.cvtColor(cv2.resize(big, target, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    assert np.abs(image.astype(int) - reference.astype(int)).mean() < 3.0

    small = run_emostream("run", str(original), "-q", "--detector", "full")
    large = run_emostream("run", str(path), "-q", "--detector", "full")
    assert small.returncode == 0 and large.returncode == 0, large.stderr
    boxes_small = [f["box"] for f in frames_of(small.stdout)[0]["faces"]]
    boxes_large = [f["box"] for f in frames_of(large.stdout)[0]["faces"]]
    assert boxes_small and len(boxes_large) == len(boxes_small)
    scale = target[0] / bgr.shape[1]  # original pixels -> delivered pixels
    for x, y, w, h in boxes_large:
        assert 0 <= x and x + w <= target[0] + 1 and 0 <= y and y + h <= target[1] + 1
    centres = sorted((x + w / 2, y + h / 2) for x, y, w, h in boxes_large)
    expected = sorted(((x + w / 2) * scale, (y + h / 2) * scale) for x, y, w, h in boxes_small)
    for (cx, cy), (ex, ey) in zip(centres, expected):
        assert abs(cx - ex) < 0.02 * target[0] and abs(cy - ey) < 0.02 * target[0]


@pytest.mark.parametrize("kind", ["png", "bmp", "progressive.jpg"])
def test_oversized_lossless_and_progressive_images_match_a_reference_resize(tmp_path: Path, kind: str):
    rng = np.random.default_rng(1)
    bgr = cv2.resize(rng.integers(0, 256, (40, 61, 3), dtype=np.uint8), (6101, 4000),
                     interpolation=cv2.INTER_LINEAR)
    path = tmp_path / f"photo.{kind}"
    params = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1, cv2.IMWRITE_JPEG_QUALITY, 95] if kind.endswith("jpg") else []
    assert cv2.imwrite(str(path), bgr, params)
    header = probe_image(path)
    assert header is not None and header.oversized and not header.reducible
    target = fitted_size(6101, 4000)
    with open_source(str(path), stream="s") as src:
        frames = list(src)
    assert len(frames) == 1 and frames[0].pts_ns == 0 and src.fps is None
    reference = cv2.cvtColor(cv2.resize(bgr, target, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    diff = np.abs(frames[0].image.astype(int) - reference.astype(int))
    assert frames[0].image.shape == reference.shape
    assert diff.mean() < (2.0 if kind.endswith("jpg") else 0.01)


def test_oversized_image_still_honours_width_and_letterboxing(tmp_path: Path):
    path = write_flat_jpeg(tmp_path / "wide.jpg", 12000, 3000)
    with open_source(str(path), width=640, height=640) as src:
        image = src.read().image
    assert image.shape == (640, 640, 3)
    assert image[:200].max() == 0 and image[-200:].max() == 0  # black bars, picture not stretched
    assert abs(int(image[320, 320, 0]) - 128) <= 2


def test_refusal_is_a_source_error_from_open_source(tmp_path: Path):
    path = write_zero_png(tmp_path / "bomb.png", 20000, 20000)
    started = time.monotonic()
    with pytest.raises(ImageTooLargeError) as info:
        open_source(str(path))
    assert isinstance(info.value, SourceError)
    assert time.monotonic() - started < 1.0  # the header alone decides
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------------------------------
# the header probe on broken headers: never an exception other than None / a decoder's own error


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xd8",  # SOI alone
        b"\xff\xd8\xff\xc0\x00",  # truncated SOF length
        b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x00\x10\x00\x03",  # height 0 (DNL), truncated
        b"\xff\xd8\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00",  # scan before frame header
        b"\xff\xd8\xff\xe0\x00\x01",  # segment length below 2
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x00\x00\x00\x00\x00\x01",  # zero width
        b"BM" + bytes(12),  # BMP too short for its sizes
        b"GIF89a\x10\x00\x10\x00",  # a format the probe leaves to GStreamer
    ],
)
def test_probe_on_broken_headers_says_unknown(tmp_path: Path, data: bytes):
    path = tmp_path / "x.img"
    path.write_bytes(data)
    assert probe_image(path) is None


def test_probe_reads_size_past_garbage_and_app_segments(tmp_path: Path):
    path = write_flat_jpeg(tmp_path / "a.jpg", 5000, 3000)
    raw = path.read_bytes()
    exif = _segment(0xE1, b"Exif\x00\x00" + bytes(60000))
    path.write_bytes(raw[:2] + exif + b"junk" + raw[2:])  # libjpeg skips the junk with a warning
    header = probe_image(path)
    assert header is not None and (header.width, header.height, header.reducible) == (5000, 3000, True)
    with open_source(str(path)) as src:
        assert src.read().image.shape == (2458, 4096, 3)
