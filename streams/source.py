"""GStreamer video sources addressed by URI, delivering decoded frames (:mod:`streams.frame`: video as the
decoder's I420 planes, still images as RGB).

One ``open_source(uri)`` call covers files (any codec GStreamer can decode, H.264 and HEVC included),
still images, V4L2 cameras, Jetson CSI cameras, RTSP streams and a synthetic test source; see
:mod:`streams.uri` for the URI forms.

Why it is built this way:

* Frames are pulled from an ``appsink`` in the caller's thread (``try_pull_sample`` with short slices)
  and the pipeline bus is polled between slices. No GLib main loop or helper thread is needed, and an
  error or EOS is noticed within ~50 ms, so a broken input can never hang the caller.
* Live sources deliver the *latest* frame (``appsink max-buffers=1 drop=true``): a slow consumer sees
  fresh frames and a bounded lag instead of an ever-growing queue. Files deliver *every* frame by default
  (``drop=false``, a small ``max-buffers``): the decoder is throttled by back-pressure and nothing is lost.
* ``open_source`` waits for the first frame, so a missing file, an undecodable file, a refused RTSP
  connection or an absent camera fails there, with one readable line, within ``timeout`` seconds.
* Size is bounded before pixels are. A still image's header is read first (:mod:`streams.still`): one
  above the pixel limits is refused, one larger than 4096 px on a side is decoded reduced by OpenCV and
  fed in through ``appsrc``. Any other frame larger than ``MAX_FRAME_PIXELS`` is refused on its caps,
  before ``videoconvert`` turns it into RGB copies.
"""

from __future__ import annotations

import collections
import functools
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from emostream.streams.errors import ImageTooLargeError, SourceError, SourceTimeoutError, UnsupportedSourceError
from emostream.streams.frame import Colour, Frame, pack_i420
from emostream.streams.still import MAX_FRAME_PIXELS, check_size, decode_fitted, probe_image
from emostream.streams.uri import SourceSpec, parse_uri

#: How long one blocking pull waits before the bus is checked again (ns). Short enough that errors
#: surface promptly, long enough that an idle live source does not spin.
_PULL_SLICE_NS = 50_000_000
#: Buffers an appsink may hold when every frame is wanted: enough to overlap decoding with the
#: consumer, small enough to bound memory (a 1080p RGB frame is 6 MB).
_FILE_MAX_BUFFERS = 4
_RTSP_LATENCY_MS = 200
#: How long "no video pad" waits for a demuxer error that would explain it better (see _pull).
_NO_VIDEO_GRACE_S = 0.3
_CLOCK_TIME_NONE = 2**64 - 1


@functools.lru_cache(maxsize=1)
def _gst() -> tuple[ModuleType, ModuleType, ModuleType]:
    """Import and initialise GStreamer once, on first use, so importing ``streams`` stays cheap."""
    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstVideo", "1.0")
        gi.require_version("GstPbutils", "1.0")
        gi.require_version("GstApp", "1.0")
        from gi.repository import Gst, GstApp, GstPbutils, GstVideo  # noqa: F401 - GstApp types appsink
    except (ImportError, ValueError) as exc:  # pragma: no cover - depends on the host
        raise SourceError(
            f"GStreamer Python bindings are not available ({exc}); install PyGObject and GStreamer 1.x"
        ) from None
    _import_ft2font_first()
    Gst.init(None)
    return Gst, GstVideo, GstPbutils


def _import_ft2font_first() -> None:
    """Import matplotlib's ``ft2font`` before GStreamer initialises, when matplotlib is installed.

    Why: in a process that has loaded OpenCV, ``ft2font`` (a pybind11 module) imported for the first time
    *after* ``Gst.init`` throws a C++ exception that aborts the whole process (matplotlib 3.11, Debian 12's
    GStreamer 1.22) -- so ``open_source(...)`` followed by ``import matplotlib.pyplot`` in a notebook, or by
    a MediaPipe graph (``import mediapipe`` pulls matplotlib in), killed Python without a word. Imported
    first, it is harmless. Costs ~0.15 s once per process, only where matplotlib exists.
    """
    import importlib.util

    if "matplotlib.ft2font" in sys.modules or importlib.util.find_spec("matplotlib") is None:
        return
    try:
        import matplotlib.ft2font  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken matplotlib must not stop video from opening
        pass


@dataclass
class _Links:
    """State shared with GStreamer's streaming threads while dynamic pads appear (guarded by ``lock``)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    video_linked: bool = False
    no_video: bool = False  # the demuxer finished exposing pads and none was video
    pads: int = 0  # pads decodebin exposed, video or not: none at all means nothing in the file decoded
    arrivals: collections.deque = field(default_factory=lambda: collections.deque(maxlen=256))
    arrived: int = 0  # buffers that reached the appsink (drop counting for latest-only sources)
    too_large: tuple[int, int] | None = None  # (width, height) of caps refused by _guard_frame_size


# ----------------------------------------------------------------------------------------------------
# pipeline construction


def _fraction(value: float) -> str:
    Gst, _, _ = _gst()
    num, den = Gst.util_double_to_fraction(float(value))
    return f"{num}/{den}"


def _tail(spec: SourceSpec, width: int | None, height: int | None, fps: float | None, *,
          still: bool | None = None, rgb: bool = False) -> str:
    """``videorate ! videoscale ! videoconvert ! caps ! appsink``; rate and scale only when asked.

    Rate and scale sit *before* the colour conversion so dropped frames are never converted and the
    conversion runs on the smaller picture. ``still`` (default: the file name says image) skips the rate.
    Video comes out as I420, what decoders and ``nvvidconv`` produce (``videoconvert`` then passes it through
    untouched; RGB is made per frame only when asked for, see :mod:`streams.frame`); still images as RGB, and
    everything as RGB when ``rgb``.
    """
    is_still = spec.is_image if still is None else still
    parts: list[str] = []
    caps = ["video/x-raw", f"format={'RGB' if rgb or is_still else 'I420'}"]
    if fps is not None and not is_still:
        parts.append("videorate")
        caps.append(f"framerate={_fraction(fps)}")
    if width is not None or height is not None:
        parts.append("videoscale")
        if width is not None:
            caps.append(f"width={int(width)}")
        if height is not None:
            caps.append(f"height={int(height)}")
        caps.append("pixel-aspect-ratio=1/1")
    parts += ["videoconvert", ",".join(caps), "appsink name=sink"]
    parts[0] += " name=tail"  # where decodebin's video pad is linked (_connect_dynamic)
    return " ! ".join(parts)


def _head(spec: SourceSpec, width: int | None = None, height: int | None = None) -> tuple[str, bool]:
    """Launch text for the source end; the flag says whether it ends in a ``decodebin`` named ``dec``."""
    if spec.kind == "file":
        if spec.is_image and spec.path is not None and spec.path.suffix.lower() == ".bmp":
            # decodebin picks avdec_bmp, which has no parser in front of it and decodes nothing
            # ("no valid frames"); gdkpixbufdec reads the whole file itself but has rank none, so
            # decodebin never chooses it: name it here.
            return "filesrc name=src ! gdkpixbufdec", False
        return "filesrc name=src ! decodebin name=dec", True
    if spec.kind == "v4l2":
        return "v4l2src name=src ! decodebin name=dec", True
    if spec.kind == "rtsp":
        return f"rtspsrc name=src latency={_RTSP_LATENCY_MS} ! decodebin name=dec", True
    if spec.kind == "csi":
        # nvvidconv scales and converts on the Jetson's VIC engine (to I420 in system memory, the planes the
        # edge reads directly), so the CPU videoscale and videoconvert in the tail pass through.
        size = "".join(f",{k}={int(v)}" for k, v in (("width", width), ("height", height)) if v is not None)
        src = f"nvarguscamerasrc name=src sensor-id={spec.sensor_id}"
        return f"{src} ! nvvidconv ! video/x-raw,format=I420{size}", False
    if spec.kind == "test":
        p = spec.params
        src = f"videotestsrc name=src is-live={'true' if spec.is_live else 'false'}"
        src += f" pattern={p.get('pattern', 'smpte')}"
        if "num-buffers" in p:
            src += f" num-buffers={int(p['num-buffers'])}"
        caps = (
            f"video/x-raw,width={int(p.get('width', 640))},height={int(p.get('height', 480))},"
            f"framerate={_fraction(float(p.get('fps', 30)))}"
        )
        return f"{src} ! {caps}", False
    raise SourceError(f"unsupported source kind {spec.kind!r}")  # pragma: no cover - parse_uri guards


def _check_elements(spec: SourceSpec) -> None:
    """Fail early, with advice, when the element a source needs is not installed."""
    Gst, _, _ = _gst()
    needed = {
        "file": ("filesrc", "decodebin", "gst-plugins-base"),
        "v4l2": ("v4l2src", "decodebin", "gst-plugins-good (gstreamer1.0-plugins-good)"),
        "rtsp": ("rtspsrc", "decodebin", "gst-plugins-good (gstreamer1.0-plugins-good)"),
        "test": ("videotestsrc", "videoconvert", "gst-plugins-base"),
    }
    if spec.kind == "csi":
        if Gst.ElementFactory.find("nvarguscamerasrc") is None:
            raise UnsupportedSourceError(
                f"CSI cameras ({spec.uri}) need a Jetson with nvarguscamerasrc (NVIDIA L4T GStreamer "
                "plugins); this machine has none"
            )
        return
    *elements, hint = needed[spec.kind]
    if spec.is_image and spec.path is not None and spec.path.suffix.lower() == ".bmp":
        elements, hint = ["filesrc", "gdkpixbufdec"], "gst-plugins-good (gstreamer1.0-plugins-good)"
    for element in (*elements, "videoconvert", "appsink"):
        if Gst.ElementFactory.find(element) is None:
            raise SourceError(f"GStreamer element '{element}' is missing; install {hint}")


def _is_video(caps: Any) -> bool:
    return caps is not None and caps.get_size() > 0 and caps.get_structure(0).get_name().startswith("video/")


def _connect_dynamic(pipeline: Any, links: _Links) -> None:
    """Link ``decodebin``'s first video pad to the tail; ignore audio and subtitles without decoding them."""
    dec = pipeline.get_by_name("dec")
    tail_sink = pipeline.get_by_name("tail").get_static_pad("sink")
    if dec is None:
        return

    def autoplug_continue(_bin: Any, _pad: Any, caps: Any) -> bool:
        # Stop (and leave unlinked) anything that is not video, so audio tracks cost nothing.
        name = caps.get_structure(0).get_name() if caps.get_size() else ""
        return not name.startswith(("audio/", "text/", "subpicture/", "application/x-subtitle"))

    def pad_added(_dec: Any, pad: Any) -> None:
        caps = pad.get_current_caps() or pad.query_caps(None)
        with links.lock:
            links.pads += 1
        if not _is_video(caps):
            return
        with links.lock:
            if links.video_linked:
                return
            if pad.link(tail_sink) == _gst()[0].PadLinkReturn.OK:
                links.video_linked = True

    def no_more_pads(_dec: Any) -> None:
        with links.lock:
            if not links.video_linked:
                links.no_video = True

    dec.connect("autoplug-continue", autoplug_continue)
    dec.connect("pad-added", pad_added)
    dec.connect("no-more-pads", no_more_pads)

    src = pipeline.get_by_name("src")
    if src is not None and src.get_factory() is not None and src.get_factory().get_name() == "rtspsrc":
        # Only set up the video stream of an RTSP session; audio would otherwise be sent and dropped.
        def select_stream(_src: Any, _num: int, caps: Any) -> bool:
            return caps.get_size() > 0 and caps.get_structure(0).get_string("media") == "video"

        src.connect("select-stream", select_stream)


def _still_head(image: np.ndarray) -> str:
    """``appsrc`` for a still image decoded outside GStreamer (see :func:`_push_still`)."""
    height, width = image.shape[:2]
    caps = f"video/x-raw,format=RGB,width={width},height={height},framerate=0/1,pixel-aspect-ratio=1/1"
    return f"appsrc name=src format=time caps={caps}"


def _push_still(appsrc: Any, image: np.ndarray) -> None:
    """Queue ``image`` as the only buffer, at time 0, then end the stream.

    Rows are padded to GStreamer's default RGB stride (a multiple of 4 bytes), which the caps imply.
    """
    Gst, _, _ = _gst()
    height, width = image.shape[:2]
    stride = (width * 3 + 3) // 4 * 4
    if stride != width * 3:
        padded = np.zeros((height, stride), dtype=np.uint8)
        padded[:, : width * 3] = image.reshape(height, width * 3)
        image = padded
    buf = Gst.Buffer.new_wrapped(image.tobytes())
    buf.pts = 0
    appsrc.emit("push-buffer", buf)
    appsrc.emit("end-of-stream")


def _guard_frame_size(pipeline: Any, links: _Links) -> None:
    """Refuse caps above MAX_FRAME_PIXELS where the tail starts, before any frame is converted.

    Dropping the caps event stops the frame at the tail (the decoder then fails "not negotiated");
    ``links.too_large`` lets the reader say why in one line instead. Catches what the header probe
    cannot see: video frames, and images in formats it does not read (GIF, TIFF, WebP, PNM, ...).
    """
    Gst, _, _ = _gst()

    def probe(_pad: Any, info: Any) -> Any:
        event = info.get_event()
        if event is None or event.type != Gst.EventType.CAPS:
            return Gst.PadProbeReturn.OK
        structure = event.parse_caps().get_structure(0)
        ok_w, width = structure.get_int("width")
        ok_h, height = structure.get_int("height")
        if ok_w and ok_h and width * height > MAX_FRAME_PIXELS:
            with links.lock:
                links.too_large = (width, height)
            return Gst.PadProbeReturn.DROP
        return Gst.PadProbeReturn.OK

    pipeline.get_by_name("tail").get_static_pad("sink").add_probe(Gst.PadProbeType.EVENT_DOWNSTREAM, probe)


def _count_arrivals(appsink: Any, links: _Links) -> None:
    """Note every buffer reaching the appsink so frames replaced in its 1-slot queue can be counted."""
    Gst, _, _ = _gst()

    def probe(_pad: Any, info: Any) -> Any:
        buf = info.get_buffer()
        with links.lock:
            links.arrived += 1
            links.arrivals.append((buf.pts if buf is not None else _CLOCK_TIME_NONE, links.arrived))
        return Gst.PadProbeReturn.OK

    appsink.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, probe)


# ----------------------------------------------------------------------------------------------------
# the source


def _colour_of(colorimetry: Any) -> Colour:
    """The :class:`Colour` of GStreamer's colorimetry (unknown matrices count as BT.601, as for SD video)."""
    _, GstVideo, _ = _gst()
    matrices = {GstVideo.VideoColorMatrix.BT709: "bt709", GstVideo.VideoColorMatrix.BT2020: "bt2020",
                GstVideo.VideoColorMatrix.FCC: "fcc", GstVideo.VideoColorMatrix.SMPTE240M: "smpte240m"}
    full = colorimetry.range == GstVideo.VideoColorRange(1)  # GST_VIDEO_COLOR_RANGE_0_255
    return Colour(matrices.get(colorimetry.matrix, "bt601"), full)


def _describe(spec: SourceSpec) -> str:
    if spec.kind == "file":
        return f"'{spec.path}'"
    if spec.kind == "v4l2":
        return f"camera {spec.device}"
    if spec.kind == "csi":
        return f"CSI camera {spec.sensor_id}"
    return spec.uri


def _one_line(text: str) -> str:
    return " ".join(str(text).split()).rstrip(".")


class VideoSource:
    """An opened, running source. Iterate it, or ``read()`` frames one at a time; ``close()`` when done."""

    def __init__(
        self,
        spec: SourceSpec,
        pipeline: Any,
        *,
        stream: str,
        latest_only: bool,
        links: _Links,
        timeout: float,
        dynamic: bool = False,
    ) -> None:
        self.uri = spec.uri
        self.stream = stream
        self.is_live = spec.is_live
        self.latest_only = latest_only
        self.width: int | None = None
        self.height: int | None = None
        self.fps: float | None = None
        self.frames_dropped = 0
        self.timeout = timeout
        self._spec = spec
        self._pipeline = pipeline
        self._appsink = pipeline.get_by_name("sink")
        self._bus = pipeline.get_bus()
        self._links = links
        self._dynamic = dynamic
        self._pending: Any = None  # the first sample, pulled while opening
        self._missing_plugins: list[str] = []  # decodebin names these before its error arrives
        self._index = 0
        self._last_seq = 0
        self._last_pts: int | None = None
        self._eos = False
        self._closed = False
        self._caps: Any = None
        self._planar = False  # I420 (video, cameras) or RGB (stills, rgb=True), as the negotiated caps say
        self._colour = Colour()
        # width, height, per-plane strides and offsets (one plane for RGB, three for I420)
        self._layout: tuple[int, int, tuple[int, ...], tuple[int, ...]] = (0, 0, (0,), (0,))

    # -- reading ---------------------------------------------------------------------------------

    def read(self, timeout: float | None = None) -> Frame | None:
        """The next frame (latest-only sources: the newest one), or None at end of stream.

        ``timeout`` bounds the wait in seconds (None: the ``timeout`` given to ``open_source``); when it
        passes without a frame, :class:`SourceTimeoutError` is raised (a stalled camera never hangs).
        """
        if self._closed:
            raise SourceError(f"{_describe(self._spec)} is closed")
        if self._eos:
            return None
        sample = self._pending
        self._pending = None
        if sample is not None and self.latest_only:
            newer = self._appsink.try_pull_sample(0)
            if newer is not None:
                sample = newer
        if sample is None:
            sample = self._pull(self.timeout if timeout is None else timeout)
            if sample is None:
                self._eos = True
                self._check_complete()
                return None
        return self._to_frame(sample)

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:
            yield frame

    def _pull(self, timeout: float) -> Any:
        """Wait for a sample in short slices, checking the bus between them; None means EOS."""
        deadline = time.monotonic() + max(0.0, timeout)
        no_video_since: float | None = None
        while True:
            remaining_ns = int((deadline - time.monotonic()) * 1e9)
            sample = self._appsink.try_pull_sample(max(0, min(_PULL_SLICE_NS, remaining_ns)))
            if sample is not None:
                return sample
            self._check_bus()
            if self._appsink.is_eos():
                return None
            if self._links.no_video:
                # A demuxer that gives up on a corrupt file also ends its pads without video, and its
                # error ("cannot decode ...") may reach the bus a moment later: give it that moment.
                no_video_since = no_video_since or time.monotonic()
                if time.monotonic() - no_video_since >= _NO_VIDEO_GRACE_S:
                    raise SourceError(self._no_video_text())
                continue
            if remaining_ns <= 0:
                raise SourceTimeoutError(f"no frame from {_describe(self._spec)} within {timeout:g} s")

    def _check_complete(self) -> None:
        """At end of a file: raise if it stopped well short of the length its container states.

        A truncated download or a cut-off recording otherwise ends "cleanly" with frames missing, and
        the user would never learn that part of the video was not analysed.
        """
        if self._spec.kind != "file" or self._spec.is_image or self._last_pts is None:
            return
        Gst, _, _ = _gst()
        ok, duration = self._pipeline.query_duration(Gst.Format.TIME)
        if not ok or duration <= 0 or duration == _CLOCK_TIME_NONE:
            return
        frame_ns = int(1e9 / self.fps) if self.fps else 0
        missing = duration - (self._last_pts + frame_ns)
        if missing > max(1e9, 0.05 * duration):
            raise SourceError(
                f"{_describe(self._spec)} ended at {self._last_pts / 1e9:.2f} s of its stated "
                f"{duration / 1e9:.2f} s: the file is truncated or corrupt"
            )

    def _check_bus(self) -> None:
        """Raise the first error posted on the bus as one clear line; discard everything else.

        Refused oversized caps come first: the decoder's own "not negotiated" error is their echo.
        """
        Gst, _, GstPbutils = _gst()
        with self._links.lock:
            too_large = self._links.too_large
        if too_large is not None:
            width, height = too_large
            raise ImageTooLargeError(
                f"{_describe(self._spec)} has frames of {width}x{height} pixels ({width * height / 1e6:.0f} "
                f"megapixels); frames above {MAX_FRAME_PIXELS / 1e6:.0f} megapixels are refused"
            )
        missing = self._missing_plugins
        while True:
            msg = self._bus.pop_filtered(Gst.MessageType.ERROR | Gst.MessageType.ELEMENT)
            if msg is None:
                return
            if msg.type == Gst.MessageType.ELEMENT:
                if GstPbutils.is_missing_plugin_message(msg):
                    missing.append(GstPbutils.missing_plugin_message_get_description(msg))
                continue
            err, _debug = msg.parse_error()
            raise SourceError(self._error_text(err, missing))

    def _error_text(self, err: Any, missing: list[str]) -> str:
        """Turn a GStreamer GError into advice a user can act on."""
        Gst, _, _ = _gst()
        what = _describe(self._spec)
        text = _one_line(err.message)
        if missing:
            needs = "; ".join(missing)
            return f"cannot decode {what}: missing GStreamer plug-in: {needs} (install gstreamer1.0-libav)"
        if err.matches(Gst.StreamError.quark(), Gst.StreamError.TYPE_NOT_FOUND):
            return f"cannot decode {what}: not a recognised video or image format"
        if err.matches(Gst.StreamError.quark(), Gst.StreamError.CODEC_NOT_FOUND):
            return f"cannot decode {what}: no GStreamer decoder for its format (install gstreamer1.0-libav)"
        with self._links.lock:
            unlinked = self._dynamic and not self._links.video_linked
        if unlinked and err.matches(Gst.StreamError.quark(), Gst.StreamError.FAILED):
            # The demuxer stopped because none of its streams was linked: there is no video in it --
            # or, when it exposed no stream at all, nothing in the file could be decoded.
            return self._no_video_text()
        if self._spec.kind == "rtsp":
            return f"cannot connect to {what}: {text[:1].lower() + text[1:]}"
        text = text[:1].lower() + text[1:]
        if self._spec.kind == "v4l2":
            return f"cannot open {what}: {text}"
        if self._spec.kind == "file":
            return f"cannot decode {what}: {text}"
        return f"{what}: {text}"

    def _no_video_text(self) -> str:
        """Audio-only files expose pads (none video); a corrupt file typefound as something exposes none.

        A video stream whose decoder is not installed also ends up unlinked: decodebin's missing-plugin
        message says so, and that is the advice the user needs.
        """
        if self._missing_plugins:
            needs = "; ".join(self._missing_plugins)
            return (f"cannot decode {_describe(self._spec)}: missing GStreamer plug-in: {needs} "
                    "(install gstreamer1.0-libav)")
        with self._links.lock:
            pads = self._links.pads
        if pads:
            return f"{_describe(self._spec)} has no video stream"
        return f"cannot decode {_describe(self._spec)}: no stream in it could be decoded (corrupt or truncated?)"

    def _update_caps(self, caps: Any) -> None:
        """Re-read the frame layout when the negotiated caps change (once, or on a resolution switch)."""
        if self._caps is not None and caps.is_equal(self._caps):
            return
        _, GstVideo, _ = _gst()
        info = GstVideo.VideoInfo.new_from_caps(caps)
        self._caps = caps
        self._planar = info.finfo.format == GstVideo.VideoFormat.I420
        planes = 3 if self._planar else 1
        self._layout = (info.width, info.height, tuple(info.stride[:planes]), tuple(info.offset[:planes]))
        if self._planar:
            self._colour = _colour_of(info.colorimetry)
        self.width, self.height = info.width, info.height
        self.fps = info.fps_n / info.fps_d if info.fps_n > 0 and info.fps_d > 0 else None

    def _to_frame(self, sample: Any) -> Frame:
        """Copy the sample out of GStreamer's buffer: I420 planes packed for OpenCV, or a C-contiguous HxWx3
        RGB array without the row padding (stride)."""
        _, GstVideo, _ = _gst()
        self._update_caps(sample.get_caps())
        buf = sample.get_buffer()
        width, height, strides, offsets = self._layout
        meta = GstVideo.buffer_get_video_meta(buf)
        if meta is not None:  # the producer's own layout wins over the one implied by the caps
            strides, offsets = tuple(meta.stride[: len(strides)]), tuple(meta.offset[: len(offsets)])
        data = buf.extract_dup(0, buf.get_size())
        if self._planar:
            try:
                planes = pack_i420(data, width, height, offsets, strides)
            except ValueError as exc:
                raise SourceError(f"{_describe(self._spec)}: {exc}") from None
        else:
            stride, offset = strides[0], offsets[0]
            rows = np.frombuffer(data, dtype=np.uint8, count=stride * (height - 1) + width * 3, offset=offset)
            if stride == width * 3:
                image = rows.reshape(height, width, 3).copy()
            else:  # rows padded to 4-byte multiples (e.g. 642 px * 3 = 1926 -> 1928 bytes): drop the padding
                padded = np.lib.stride_tricks.as_strided(rows, shape=(height, width, 3), strides=(stride, 3, 1))
                image = padded.copy()
        pts = buf.pts
        if pts == _CLOCK_TIME_NONE:  # e.g. gdkpixbufdec's still image: it sits at the start
            pts = 0 if self._spec.is_image else self._running_time()
        if self.latest_only:
            self._count_drop(buf.pts)
        if buf.pts != _CLOCK_TIME_NONE:
            self._last_pts = int(buf.pts)
        if self._planar:
            frame = Frame.from_i420(planes, width, height, self._index, int(pts), self.stream, self._colour)
        else:
            frame = Frame(image, self._index, int(pts), self.stream)
        self._index += 1
        return frame

    def _count_drop(self, pts: int) -> None:
        with self._links.lock:
            seq = next((s for p, s in reversed(self._links.arrivals) if p == pts), None)
        if seq is None:
            return
        if seq > self._last_seq + 1:
            self.frames_dropped += seq - self._last_seq - 1
        self._last_seq = max(self._last_seq, seq)

    def _running_time(self) -> int:
        clock = self._pipeline.get_clock()
        if clock is None:
            return 0
        return max(0, clock.get_time() - self._pipeline.get_base_time())

    # -- life cycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the pipeline and free its threads; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._pending = None
        Gst, _, _ = _gst()
        self._pipeline.set_state(Gst.State.NULL)

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Defensive: a source dropped without close() must not leave decoder threads running.
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown may have torn down GStreamer already
            pass

    def __repr__(self) -> str:
        size = f"{self.width}x{self.height}" if self.width else "?"
        return f"VideoSource({self.uri!r}, {size}, fps={self.fps}, live={self.is_live})"


def open_source(
    uri: str,
    *,
    stream: str | None = None,
    latest_only: bool | None = None,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    timeout: float = 10.0,
    rgb: bool = False,
) -> VideoSource:
    """Open ``uri`` (see :mod:`streams.uri`), start it and wait for its first frame.

    ``latest_only`` defaults to True for live sources (cameras, RTSP, ``test://``) and False for files.
    On a file it plays the file in real time, dropping frames the consumer is too slow for, as a camera
    would. ``width``/``height``/``fps`` ask GStreamer to scale / re-time the frames. Pixels stay square:
    with only one of width/height the other follows the picture's aspect; with both, a picture of another
    aspect is letterboxed (black bars), never stretched, so faces keep their proportions. Every failure --
    unknown scheme, missing file or device, undecodable data, refused connection, nothing within
    ``timeout`` seconds -- raises :class:`SourceError` with one readable line.

    Video frames come as the decoder's I420 planes and become RGB only when ``frame.image`` is read
    (:mod:`streams.frame`); ``rgb=True`` has GStreamer convert every frame instead, on its own thread
    (for consumers that need RGB of every frame anyway; the benchmark's decode-to-RGB baseline).
    """
    for name, value in (("width", width), ("height", height)):
        if value is not None and int(value) <= 0:
            raise SourceError(f"{name} must be a positive number of pixels, got {value}")
    if fps is not None and fps <= 0:
        raise SourceError(f"fps must be positive, got {fps}")
    if timeout <= 0:
        raise SourceError(f"timeout must be positive, got {timeout}")

    spec = parse_uri(uri)
    Gst, _, _ = _gst()
    # A still image's header is read before anything is decoded: too large is refused, larger than
    # MAX_IMAGE_SIDE is decoded reduced (streams.still) and enters through appsrc.
    header = probe_image(spec.path) if spec.kind == "file" and spec.path is not None else None
    fitted: np.ndarray | None = None
    if header is not None:
        check_size(header, _describe(spec))
        if header.oversized:
            fitted = decode_fitted(spec.path, header, _describe(spec))
    if fitted is not None:
        if Gst.ElementFactory.find("appsrc") is None:
            raise SourceError("GStreamer element 'appsrc' is missing; install gst-plugins-base")
        head, dynamic = _still_head(fitted), False
    else:
        _check_elements(spec)
        head, dynamic = _head(spec, width, height)
    if latest_only is None:
        latest_only = spec.is_live
    # decodebin's pads appear later and are linked by hand (_connect_dynamic); static heads link here.
    tail = _tail(spec, width, height, fps, still=True if header is not None else None, rgb=rgb)
    text = f"{head} {'' if dynamic else '! '}{tail}"
    try:
        pipeline = Gst.parse_launch(text)
    except Exception as exc:  # GLib.Error: a bad pattern name and similar
        reason = _one_line(getattr(exc, "message", exc))
        raise SourceError(f"cannot build a pipeline for {spec.uri}: {reason}") from None

    src = pipeline.get_by_name("src")
    if fitted is not None:
        _push_still(src, fitted)
        fitted = None  # the pushed buffer holds its own copy
    elif spec.kind == "file":
        src.set_property("location", str(spec.path))
    elif spec.kind == "v4l2":
        src.set_property("device", spec.device)
    elif spec.kind == "rtsp":
        src.set_property("location", spec.location)

    appsink = pipeline.get_by_name("sink")
    appsink.set_property("emit-signals", False)
    appsink.set_property("enable-last-sample", False)
    # Files in every-frame mode run as fast as the consumer reads; a latest-only file plays in real time.
    appsink.set_property("sync", bool(latest_only and not spec.is_live))
    appsink.set_property("max-buffers", 1 if latest_only else _FILE_MAX_BUFFERS)
    appsink.set_property("drop", bool(latest_only))

    links = _Links()
    _guard_frame_size(pipeline, links)
    if dynamic:
        _connect_dynamic(pipeline, links)
    if latest_only:
        _count_arrivals(appsink, links)

    source = VideoSource(
        spec, pipeline, stream=stream or uri, latest_only=latest_only, links=links, timeout=timeout,
        dynamic=dynamic,
    )
    try:
        if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            source._check_bus()  # the element's own error says why (e.g. cannot open the device)
            raise SourceError(f"cannot start {_describe(spec)}")
        try:
            first = source._pull(timeout)
        except SourceTimeoutError:
            raise SourceTimeoutError(f"no frame from {_describe(spec)} within {timeout:g} s") from None
        if first is None:
            raise SourceError(f"{_describe(spec)} contains no video frames")
        source._pending = first
        # Fill width/height/fps from the negotiated caps now, so callers know them before reading.
        source._update_caps(first.get_caps())
    except BaseException:
        source.close()
        raise
    return source
