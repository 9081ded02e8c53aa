"""Still images: their size read from the header before anything is decoded, and a bounded decode.

Why this exists: a still image's memory cost is set by its header, not by its file size. A flat
20000x20000 JPEG is a few MB on disk, yet decoding it the way a video frame is decoded (``jpegdec``,
then ``videoconvert`` to RGB, then copies into numpy) took 5.5 GB and 30 s -- enough to get the
process killed on a Jetson. So, before a file is decoded:

* its first bytes say what it is (JPEG, PNG or BMP, by content, whatever its name) and how large;
* an image above an absolute pixel limit is refused with one clear line (a decompression-bomb guard);
* an image larger than :data:`MAX_IMAGE_SIDE` on a side is decoded by OpenCV straight to a reduced
  size -- a sequential JPEG is scaled by 1/2, 1/4 or 1/8 inside libjpeg's IDCT, so the full-size
  picture never exists in memory -- and is delivered fitted into ``MAX_IMAGE_SIDE`` x ``MAX_IMAGE_SIDE``.

Images that are not larger than ``MAX_IMAGE_SIDE`` keep their usual GStreamer path untouched.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emostream.streams.errors import ImageTooLargeError, SourceError

#: Largest side (px) of a still image as delivered; larger images are scaled down to fit (aspect kept).
#: 4096 keeps a frame under 50 MB of RGB while leaving far more pixels than the face detector
#: (128 or 192 px input) and the emotion crops (48-64 px) ever use.
MAX_IMAGE_SIDE = 4096
#: Largest image (pixels) that libjpeg can decode at 1/2-1/8 scale (a sequential, single-scan JPEG):
#: decoding holds only the reduced picture (at most ~2x MAX_IMAGE_SIDE on a side), so the cost is
#: time, not memory. 1 gigapixel is also OpenCV's own ceiling (2**30).
MAX_REDUCIBLE_PIXELS = 1_000_000_000
#: Largest image (pixels) that must be decoded at full size first: PNG, BMP, progressive or multi-scan
#: JPEG (libjpeg buffers every DCT coefficient of those: 6 bytes a pixel at 4:4:4). 50 MP admits any
#: camera's photo (45-50 MP full frame) and keeps the decode near 300 MB; at 100 MP a progressive JPEG
#: took the process to 1.1 GB.
MAX_IMAGE_PIXELS = 50_000_000
#: Largest frame (pixels) accepted from any other decoder GStreamer picks (videos, GIF, TIFF, WebP,
#: PNM, ...), checked on the negotiated caps before the frame is converted. 40 MP admits 8K video
#: (7680x4320 and DCI 8192x4320).
MAX_FRAME_PIXELS = 40_000_000

#: Bytes read while looking for a JPEG's frame header (APP segments such as EXIF or ICC come first).
_JPEG_SCAN_LIMIT = 16 * 1024 * 1024
#: JPEG start-of-frame markers with the coding they announce. Sequential codings decode row by row
#: (and can be reduced); the others need the whole coefficient array in memory.
_SEQUENTIAL_SOF = {0xC0, 0xC1, 0xC9}
_OTHER_SOF = {0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn carry no length field


@dataclass(frozen=True)
class ImageHeader:
    """What a still image's header promises, read without decoding it."""

    format: str  # "JPEG", "PNG" or "BMP"
    width: int
    height: int
    reducible: bool  # libjpeg can decode it at 1/2, 1/4 or 1/8 scale without a full-size buffer

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def limit(self) -> int:
        """The pixel count above which this image is refused."""
        return MAX_REDUCIBLE_PIXELS if self.reducible else MAX_IMAGE_PIXELS

    @property
    def oversized(self) -> bool:
        """Larger than MAX_IMAGE_SIDE on a side: delivered scaled down, through :func:`decode_fitted`."""
        return max(self.width, self.height) > MAX_IMAGE_SIDE


def probe_image(path: Path) -> ImageHeader | None:
    """Read the size of a JPEG, PNG or BMP from its first bytes; None if the file is none of these.

    The file's content decides, not its name: ``clip.mp4`` holding a JPEG is decoded as one. A file
    whose magic bytes say image but whose header is unreadable also gives None, and GStreamer then
    reports why it cannot decode it (its frames are still bounded by MAX_FRAME_PIXELS).
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(32)
            if head.startswith(b"\xff\xd8"):
                return _probe_jpeg(fh)
            if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
                width, height = struct.unpack(">II", head[16:24])
                return _header("PNG", width, height, reducible=False)
            if head.startswith(b"BM") and len(head) >= 26:
                (dib,) = struct.unpack("<I", head[14:18])
                if dib == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
                    width, height = struct.unpack("<HH", head[18:22])
                else:
                    width, height = struct.unpack("<ii", head[18:26])  # height < 0: top-down rows
                return _header("BMP", abs(width), abs(height), reducible=False)
    except OSError as exc:
        raise SourceError(f"cannot read '{path}': {exc.strerror or exc}") from None
    return None


def _header(fmt: str, width: int, height: int, *, reducible: bool) -> ImageHeader | None:
    if width <= 0 or height <= 0:
        return None
    return ImageHeader(fmt, width, height, reducible)


def _probe_jpeg(fh) -> ImageHeader | None:
    """Walk the marker segments after SOI to the frame header (SOFn) and the first scan header (SOS).

    A sequential JPEG is only reducible when its first scan holds every component: a multi-scan
    (non-interleaved) file makes libjpeg buffer all coefficients, like a progressive one. Garbage
    between segments is skipped up to the next 0xFF, as libjpeg does, so the two agree on the size.
    """
    fh.seek(2)
    sof: tuple[int, int, int, int] | None = None  # marker, width, height, components
    while fh.tell() < _JPEG_SCAN_LIMIT:
        byte = fh.read(1)
        if not byte:
            break
        if byte != b"\xff":  # garbage: jump to the next 0xFF in one read, not byte by byte
            chunk = fh.read(65536)
            at = chunk.find(b"\xff")
            if at < 0:
                continue
            fh.seek(at + 1 - len(chunk), 1)
        marker = fh.read(1)
        while marker == b"\xff":  # fill bytes
            marker = fh.read(1)
        if not marker:
            break
        code = marker[0]
        if code == 0x00 or code in _STANDALONE:
            continue
        if code == 0xD9:  # EOI before any scan
            break
        raw = fh.read(2)
        if len(raw) < 2:
            break
        (length,) = struct.unpack(">H", raw)
        if length < 2:
            break
        body = fh.read(min(length - 2, 16))
        if code in _SEQUENTIAL_SOF or code in _OTHER_SOF:
            if len(body) < 6 or sof is not None:
                return None  # truncated, or a second frame header: leave it to the decoder to reject
            height, width = struct.unpack(">HH", body[1:5])
            sof = (code, width, height, body[5])
        elif code == 0xDA:  # SOS: the entropy-coded data follows
            if sof is None or not body:
                return None
            code, width, height, components = sof
            reducible = code in _SEQUENTIAL_SOF and body[0] == components
            return _header("JPEG", width, height, reducible=reducible)
        fh.seek(length - 2 - len(body), 1)
    return None


def check_size(header: ImageHeader, what: str) -> None:
    """Refuse an image above its pixel limit, before a byte of it is decoded."""
    if header.pixels > header.limit:
        if header.reducible:
            how = "sequential JPEG (decoded reduced)"
        elif header.format == "JPEG":
            how = "progressive or multi-scan JPEG (decoded at full size)"
        else:
            how = f"{header.format} (decoded at full size)"
        raise ImageTooLargeError(
            f"{what} is {header.width}x{header.height} = {header.pixels:,} pixels; the limit for a {how} "
            f"is {header.limit:,} pixels ({header.limit // 1_000_000} megapixels, a decompression-bomb guard)"
        )


def fitted_size(width: int, height: int, max_side: int = MAX_IMAGE_SIDE) -> tuple[int, int]:
    """``(width, height)`` scaled so the longer side is ``max_side``; unchanged when already within it."""
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def decode_fitted(path: Path, header: ImageHeader, what: str) -> np.ndarray:
    """Decode an oversized image to RGB fitted into MAX_IMAGE_SIDE, never holding more than needed.

    A reducible JPEG is decoded at the smallest 1/2^k scale that still covers the fitted size, then
    area-averaged to it: the decoded picture is under 2x MAX_IMAGE_SIDE on a side whatever the file.
    EXIF orientation is ignored, as GStreamer's decoders ignore it for images of ordinary size.
    """
    import cv2  # an edge dependency already (mediapipe's); imported here so streams stays light

    target = fitted_size(header.width, header.height)
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    if header.reducible:
        for factor, reduced in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                                (2, cv2.IMREAD_REDUCED_COLOR_2)):
            if -(-header.width // factor) >= target[0] and -(-header.height // factor) >= target[1]:
                flags = reduced | cv2.IMREAD_IGNORE_ORIENTATION
                break
    bgr = cv2.imread(str(path), flags)
    if bgr is None:
        raise SourceError(f"cannot decode {what}: its {header.format} data is corrupt or unsupported")
    if (bgr.shape[1], bgr.shape[0]) != target:
        bgr = cv2.resize(bgr, target, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
