"""One decoded frame, kept in the decoder's own pixel format until a consumer asks for another.

Why: video decoders (H.264, HEVC, VP9, MJPEG) and most cameras produce planar YUV 4:2:0 (I420). The
edge needs *luma* on every frame (optical flow, the gray 48x48 crops of the emotion network) and RGB
only now and then (overlays, keyframes, the console; a full face detection every few frames takes a small
picture scaled from the planes, :meth:`Frame.rgb_scaled`). Having
GStreamer convert every frame to RGB cost 0.3 ms of CPU per 640x360 frame and 3 ms per 1080p frame
(``videoconvert``; 1.02 vs 0.74 and 9.1 vs 6.1 ms of decode CPU per frame on the README's 2-core AMD
EPYC), more than the whole detector per frame. Here the Y plane *is* the gray picture, and RGB is made
on first use, once per frame, by OpenCV (0.1 ms at 640x360).

Colour follows the stream's caps: BT.601 limited range (SD video, GStreamer's default) takes OpenCV's
own I420 conversion; BT.709/BT.2020 or full range (MJPEG webcams) a 3x4 matrix on the upsampled planes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

#: (Kr, Kb) luma weights of the colour matrices GStreamer names (ITU-R BT.601/709/2020, FCC, SMPTE 240M).
MATRICES: dict[str, tuple[float, float]] = {
    "bt601": (0.299, 0.114),
    "bt709": (0.2126, 0.0722),
    "bt2020": (0.2627, 0.0593),
    "fcc": (0.30, 0.11),
    "smpte240m": (0.212, 0.087),
}

#: Limited ("studio") range luma 16..235 stretched to 0..255: the gray picture of a limited-range Y plane.
LIMITED_TO_FULL = np.clip(np.round((np.arange(256) - 16) * 255.0 / 219.0), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Colour:
    """How a YUV frame's numbers map to RGB: the matrix (a key of :data:`MATRICES`) and the range."""

    matrix: str = "bt601"
    full_range: bool = False

    def __post_init__(self) -> None:
        if self.matrix not in MATRICES:
            raise ValueError(f"unknown colour matrix {self.matrix!r}; known: {', '.join(MATRICES)}")


def yuv_to_rgb_matrix(colour: Colour) -> np.ndarray:
    """(3, 4) affine map from (Y, U, V) bytes to (R, G, B) for ``cv2.transform``."""
    kr, kb = MATRICES[colour.matrix]
    kg = 1.0 - kr - kb
    if colour.full_range:
        ys, cs, y0 = 1.0, 1.0, 0.0
    else:
        ys, cs, y0 = 255.0 / 219.0, 255.0 / 224.0, 16.0
    # R = Y' + 2(1-Kr) Cr;  B = Y' + 2(1-Kb) Cb;  G = (Y' - Kr R - Kb B) / Kg
    cr_r, cb_b = 2 * (1 - kr) * cs, 2 * (1 - kb) * cs
    cb_g, cr_g = -kb * cb_b / kg, -kr * cr_r / kg
    m = np.array([[ys, 0.0, cr_r], [ys, cb_g, cr_g], [ys, cb_b, 0.0]])
    offset = -(m[:, 0] * y0 + (m[:, 1] + m[:, 2]) * 128.0)
    return np.concatenate([m, offset[:, None]], axis=1).astype(np.float32)


class Frame:
    """One decoded frame: its pixels plus where it sits in its stream. Immutable.

    ``image`` is HxWx3 uint8 RGB, C-contiguous; ``gray`` HxW uint8 full-range luma. A frame built from
    RGB (``Frame(image, index, pts_ns, stream)``: the Python API, still images) derives ``gray`` on first
    use; one from the decoder's I420 planes (:meth:`from_i420`: video files, cameras, RTSP) has ``gray``
    almost for free and derives ``image`` on first use. Both are computed once and kept, so every
    consumer of a frame sees the same arrays; treat them as read-only (draw on a copy).
    Frames compare and hash by identity.
    """

    __slots__ = ("index", "pts_ns", "stream", "width", "height", "_rgb", "_gray", "_i420", "_colour")

    def __init__(self, image: np.ndarray, index: int, pts_ns: int, stream: str) -> None:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"a Frame's image must be HxWx3 uint8 RGB, got {image.dtype} {image.shape}")
        self._init(index, pts_ns, stream, image.shape[1], image.shape[0])
        object.__setattr__(self, "_rgb", image)

    @classmethod
    def from_i420(cls, i420: np.ndarray, width: int, height: int, index: int, pts_ns: int, stream: str,
                  colour: Colour = Colour()) -> Frame:
        """A frame from I420 planes packed as OpenCV lays them out: a (H2 * 3/2, W2) uint8 array holding Y
        (H2 x W2), then U and V (H2/2 x W2/2 each), where H2, W2 are ``height``, ``width`` rounded up to even
        (see :func:`pack_i420`)."""
        h2, w2 = height + height % 2, width + width % 2
        if i420.dtype != np.uint8 or i420.shape != (h2 * 3 // 2, w2):
            raise ValueError(f"I420 planes of a {width}x{height} frame must be a ({h2 * 3 // 2}, {w2}) uint8 "
                             f"array, got {i420.dtype} {i420.shape}")
        frame = cls.__new__(cls)
        frame._init(index, pts_ns, stream, width, height)
        object.__setattr__(frame, "_i420", i420)
        object.__setattr__(frame, "_colour", colour)
        return frame

    def _init(self, index: int, pts_ns: int, stream: str, width: int, height: int) -> None:
        for name, value in (("index", int(index)), ("pts_ns", int(pts_ns)), ("stream", stream),
                            ("width", int(width)), ("height", int(height)),
                            ("_rgb", None), ("_gray", None), ("_i420", None), ("_colour", None)):
            object.__setattr__(self, name, value)

    def placed(self, index: int, pts_ns: int, stream: str) -> Frame:
        """The same pixels (and whatever was already converted) at another place in another stream: for a
        consumer that numbers frames itself (the Python API's ``Analyzer``)."""
        other = Frame.__new__(Frame)
        other._init(index, pts_ns, stream, self.width, self.height)
        for name in ("_rgb", "_gray", "_i420", "_colour"):
            object.__setattr__(other, name, getattr(self, name))
        return other

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Frame is immutable (cannot set {name!r})")

    @property
    def t(self) -> float:
        """Timestamp in seconds."""
        return self.pts_ns / 1e9

    @property
    def shape(self) -> tuple[int, int, int]:
        """(height, width, 3): the RGB image's shape, without converting to it."""
        return (self.height, self.width, 3)

    @property
    def planar(self) -> bool:
        """True when the frame came as YUV planes (``gray`` is free, ``image`` costs one conversion)."""
        return self._i420 is not None

    @property
    def i420(self) -> np.ndarray | None:
        """The decoder's planes as :meth:`from_i420` takes them (None for a frame made from RGB): what a
        process hands on to another, with :attr:`colour`, to rebuild the same frame."""
        return self._i420

    @property
    def colour(self) -> Colour | None:
        """The colour standard of the planes (None for a frame made from RGB)."""
        return self._colour

    @property
    def image(self) -> np.ndarray:
        """HxWx3 uint8 RGB (converted from the YUV planes on first use, then kept)."""
        if self._rgb is None:
            object.__setattr__(self, "_rgb", i420_to_rgb(self._i420, self.width, self.height, self._colour))
        return self._rgb

    def rgb_scaled(self, width: int, height: int) -> np.ndarray:
        """A small RGB picture of the whole frame (``height`` x ``width`` x 3, bilinear), for a consumer whose
        input is small (a face detector's 192 px): a video frame's planes are scaled first and only the small
        result is converted, so a 1080p frame costs ~0.3 ms here instead of ~3 ms for its full RGB. Not kept
        (one use per frame); :attr:`image` is not made."""
        size = (int(width), int(height))
        if self._rgb is not None or self._i420 is None:
            return cv2.resize(self.image, size, interpolation=cv2.INTER_LINEAR)
        h2, w2 = self._i420.shape[0] * 2 // 3, self._i420.shape[1]
        quarter = (h2 // 2) * (w2 // 2)
        chroma = self._i420[h2:].reshape(-1)
        planes = (self._i420[: self.height, : self.width], chroma[:quarter].reshape(h2 // 2, w2 // 2),
                  chroma[quarter:].reshape(h2 // 2, w2 // 2))
        yuv = cv2.merge([cv2.resize(p, size, interpolation=cv2.INTER_LINEAR) for p in planes])
        return cv2.transform(yuv, yuv_to_rgb_matrix(self._colour))

    @property
    def gray(self) -> np.ndarray:
        """HxW uint8 luma, full range 0..255 (the Y plane, stretched when limited range; or from RGB)."""
        if self._gray is None:
            if self._i420 is not None:
                y, to_gray = self.luma
                gray = np.ascontiguousarray(y) if to_gray is None else cv2.LUT(y, to_gray)
            else:
                gray = cv2.cvtColor(self._rgb, cv2.COLOR_RGB2GRAY)
            object.__setattr__(self, "_gray", gray)
        return self._gray

    @property
    def luma(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The luma as decoded, without a copy, and the 256-entry table that maps it to :attr:`gray` (None when
        it already is ``gray``). For consumers that only *warp or track* luma: they look up their small
        output instead of the whole frame (a 1080p frame's lookup costs ~0.5 ms; a 48x48 crop's nothing)."""
        if self._i420 is not None:
            return self._i420[: self.height, : self.width], None if self._colour.full_range else LIMITED_TO_FULL
        return self.gray, None

    def __reduce__(self) -> tuple:  # pickling goes around the immutability guard
        if self._i420 is not None:
            return (Frame.from_i420, (self._i420, self.width, self.height, self.index, self.pts_ns, self.stream,
                                 self._colour))
        return (Frame, (self._rgb, self.index, self.pts_ns, self.stream))

    def __repr__(self) -> str:
        kind = "I420" if self.planar else "RGB"
        return f"Frame({self.stream!r} #{self.index}, {self.width}x{self.height} {kind}, t={self.t:.3f}s)"


def i420_to_rgb(i420: np.ndarray, width: int, height: int, colour: Colour = Colour()) -> np.ndarray:
    """RGB (height x width x 3) of packed I420 planes (see :meth:`Frame.from_i420`)."""
    if colour == Colour():  # BT.601 limited range: OpenCV's own SIMD conversion
        rgb = cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420)
    else:
        h2, w2 = i420.shape[0] * 2 // 3, i420.shape[1]
        quarter = (h2 // 2) * (w2 // 2)
        chroma = i420[h2:].reshape(-1)
        u = chroma[:quarter].reshape(h2 // 2, w2 // 2)
        v = chroma[quarter:].reshape(h2 // 2, w2 // 2)
        # Nearest chroma upsampling, as OpenCV's I420 path does, so both paths differ only in the matrix.
        up = (w2, h2)
        yuv = cv2.merge([i420[:h2], cv2.resize(u, up, interpolation=cv2.INTER_NEAREST),
                         cv2.resize(v, up, interpolation=cv2.INTER_NEAREST)])
        rgb = cv2.transform(yuv, yuv_to_rgb_matrix(colour))
    if rgb.shape[:2] != (height, width):
        rgb = np.ascontiguousarray(rgb[:height, :width])
    return rgb


def pack_i420(data: Any, width: int, height: int, offsets: tuple[int, int, int],
              strides: tuple[int, int, int]) -> np.ndarray:
    """The three planes of an I420 buffer (GStreamer's layout: any offsets, padded rows) packed as
    :meth:`Frame.from_i420` takes them. Odd sizes are padded to even by repeating the last row/column
    (OpenCV's I420 layout needs even sizes; the chroma planes already cover the extra pixel).

    Zero-copy (a view of ``data``) when the buffer is already packed that way, the common case.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    cw, ch = (width + 1) // 2, (height + 1) // 2
    w2, h2 = 2 * cw, 2 * ch
    if (w2, h2) == (width, height) and strides == (width, cw, cw) and offsets == (
            0, width * height, width * height + cw * ch):
        return buf[: width * height * 3 // 2].reshape(height * 3 // 2, width)

    def plane(k: int, w: int, h: int) -> np.ndarray:
        need = strides[k] * (h - 1) + w
        rows = buf[offsets[k]: offsets[k] + need]
        if rows.size < need:
            raise ValueError(f"I420 buffer too small for a {width}x{height} frame ({buf.size} bytes)")
        return np.lib.stride_tricks.as_strided(rows, shape=(h, w), strides=(strides[k], 1))

    out = np.empty((h2 * 3 // 2, w2), np.uint8)
    out[:height, :width] = plane(0, width, height)
    if w2 != width:
        out[:height, width] = out[:height, width - 1]
    if h2 != height:
        out[height, :] = out[height - 1, :]
    chroma = out[h2:].reshape(-1)
    chroma[: cw * ch].reshape(ch, cw)[:] = plane(1, cw, ch)
    chroma[cw * ch:].reshape(ch, cw)[:] = plane(2, cw, ch)
    return out
