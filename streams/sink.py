"""GStreamer video sinks addressed by URI: encode RGB numpy frames to a file, RTP or RTSP.

``open_sink(uri, width, height, fps)`` mirrors jetson-utils' ``videoOutput``: the URI says where the
pictures go and the sink picks the encoder.

* ``out.mp4`` / ``out.mkv`` / ``out.mov`` (or ``file://...``) -- an H.264 file (mp4mux / matroskamux /
  qtmux). The file is complete only after :meth:`VideoSink.close`, which sends end-of-stream and waits
  for the muxer to write its index: an mp4 without that index does not play.
* ``rtp://HOST:PORT`` -- H.264 over RTP/UDP (``rtph264pay ! udpsink``), SPS/PPS repeated every key
  frame so a receiver may join at any time. Receive with e.g.
  ``gst-launch-1.0 udpsrc port=PORT caps="application/x-rtp,media=video,encoding-name=H264,payload=96"
  ! rtph264depay ! avdec_h264 ! autovideosink``.
* ``rtsp://@:PORT/PATH`` (or ``rtsp://0.0.0.0:PORT/PATH``, ``rtsp://127.0.0.1:PORT/PATH``) -- an RTSP
  *server* on this machine serving the stream at ``PATH`` (the jetson-utils convention). Needs the
  GstRtspServer typelib (Debian: ``gir1.2-gst-rtsp-server-1.0``); frames written while no client is
  watching are dropped, as a camera's would be.

Encoder: ``nvv4l2h264enc`` (Jetson hardware, fed through ``nvvidconv``) where the element exists,
else ``x264enc`` (ultrafast, zero-latency), else ``openh264enc``.

Frames go in through ``appsrc`` with explicit caps and timestamps (index / fps unless the caller
passes capture times), so the output plays at the source's rate whatever the processing speed.
Every failure is a :class:`SinkError` with one readable line.
"""

from __future__ import annotations

import functools
import re
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np

_CONTAINERS = {".mp4": "mp4mux", ".mkv": "matroskamux", ".mov": "qtmux"}
#: Seconds ``close()`` waits for the muxer to finish the file after end-of-stream.
_EOS_TIMEOUT_S = 30.0
_CLOCK_TIME_NONE = 2**64 - 1


class SinkError(Exception):
    """A video sink could not be opened or written; the message is one human-readable line."""


@dataclass(frozen=True)
class SinkSpec:
    """What an output URI names: ``kind`` is ``file``, ``rtp`` or ``rtsp``."""

    kind: str
    uri: str
    path: Path | None = None
    host: str | None = None
    port: int | None = None
    mount: str | None = None


@functools.lru_cache(maxsize=1)
def _gst() -> ModuleType:
    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstApp", "1.0")
        from gi.repository import Gst, GstApp  # noqa: F401 - GstApp gives appsrc its methods
    except (ImportError, ValueError) as exc:  # pragma: no cover - depends on the host
        raise SinkError(f"GStreamer Python bindings are not available ({exc})") from None
    Gst.init(None)
    return Gst


def parse_sink_uri(uri: str) -> SinkSpec:
    """Classify an output URI; raise SinkError for unknown forms before any pipeline exists."""
    if not isinstance(uri, str) or not uri.strip():
        raise SinkError("empty output URI (give out.mp4, out.mkv, rtp://HOST:PORT or rtsp://@:PORT/PATH)")
    uri = uri.strip()
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", uri)
    scheme = match.group(1).lower() if match else "file"
    parts = urlsplit(uri)
    if scheme == "file":
        host = parts.netloc if parts.netloc not in ("", "localhost") else ""  # as streams.uri reads sources
        raw = unquote(host + parts.path) if match else uri
        path = Path(raw).expanduser()
        suffix = path.suffix.lower()
        if suffix not in _CONTAINERS:
            raise SinkError(f"unsupported output file type {suffix or '(none)'!r} for {uri} "
                            f"(use {', '.join(_CONTAINERS)})")
        if not path.parent.is_dir():
            raise SinkError(f"cannot write {path}: folder {path.parent} does not exist")
        if path.is_dir():
            raise SinkError(f"cannot write {path}: it is a directory")
        return SinkSpec(kind="file", uri=uri, path=path)
    if scheme in ("rtp", "rtsp"):
        try:
            port = parts.port
        except ValueError:
            port = None
        host = parts.hostname or ("@" if "@" in parts.netloc else None)
        if port is None or not host:
            form = "rtp://HOST:PORT" if scheme == "rtp" else "rtsp://@:PORT/PATH"
            raise SinkError(f"bad output URI {uri!r} (expected {form})")
        if scheme == "rtp":
            return SinkSpec(kind="rtp", uri=uri, host=host, port=port)
        mount = parts.path if parts.path not in ("", "/") else "/stream"
        return SinkSpec(kind="rtsp", uri=uri, host=host, port=port, mount=mount)
    raise SinkError(f"unknown output scheme '{scheme}://' (known: file path, rtp://, rtsp://)")


def _fraction(fps: float) -> Fraction:
    if not fps > 0:
        raise SinkError(f"fps must be positive, got {fps}")
    return Fraction(fps).limit_denominator(1001)


def _encoder(fps: Fraction, bitrate_kbps: int, live: bool) -> str:
    """The H.264 encoder chain from raw RGB: Jetson hardware first, then x264, then openh264."""
    Gst = _gst()
    gop = max(1, round(float(fps)))  # a key frame a second: receivers and seeking recover quickly
    if Gst.ElementFactory.find("nvv4l2h264enc") is not None and Gst.ElementFactory.find("nvvidconv"):
        return (f"videoconvert ! video/x-raw,format=RGBA ! nvvidconv ! "
                f"video/x-raw(memory:NVMM),format=NV12 ! "
                f"nvv4l2h264enc bitrate={bitrate_kbps * 1000} iframeinterval={gop} insert-sps-pps=true")
    if Gst.ElementFactory.find("x264enc") is not None:
        tune = "tune=zerolatency " if live else ""
        return (f"videoconvert ! video/x-raw,format=I420 ! x264enc speed-preset=ultrafast {tune}"
                f"bitrate={bitrate_kbps} key-int-max={gop}")
    if Gst.ElementFactory.find("openh264enc") is not None:
        return (f"videoconvert ! video/x-raw,format=I420 ! "
                f"openh264enc bitrate={bitrate_kbps * 1000} gop-size={gop}")
    raise SinkError("no H.264 encoder in GStreamer (install gstreamer1.0-plugins-ugly for x264enc)")


def _caps(width: int, height: int, fps: Fraction) -> str:
    return (f"video/x-raw,format=RGB,width={width},height={height},"
            f"framerate={fps.numerator}/{fps.denominator},pixel-aspect-ratio=1/1")


class VideoSink:
    """An open encoder pipeline. ``write(rgb)`` frames in order, then ``close()`` (or use ``with``)."""

    def __init__(self, spec: SinkSpec, width: int, height: int, fps: Fraction, bitrate_kbps: int) -> None:
        self.spec = spec
        self.uri = spec.uri
        self.width = width
        self.height = height
        self.fps = float(fps)
        self.frames = 0  # frames handed to the encoder
        self.frames_dropped = 0  # RTSP: frames written while no client was watching
        self._frame_ns = int(round(1e9 * fps.denominator / fps.numerator))
        self._first_pts: int | None = None
        self._last_pts = -1
        self._closed = False
        self._server: Any = None
        self._loop: Any = None
        self._loop_thread: threading.Thread | None = None
        self._appsrc: Any = None
        self._media_lock = threading.Lock()
        Gst = _gst()
        live = spec.kind != "file"
        encoder = _encoder(fps, bitrate_kbps, live)
        caps = _caps(width, height, fps)
        if spec.kind == "rtsp":
            self._pipeline = None
            self._start_rtsp(caps, encoder)
            return
        if spec.kind == "file":
            mux = _CONTAINERS[spec.path.suffix.lower()]
            tail = f"h264parse ! {mux} ! filesink name=out"
        else:
            tail = (f"h264parse config-interval=-1 ! rtph264pay config-interval=-1 pt=96 ! "
                    f"udpsink name=out host={spec.host} port={spec.port} sync=false async=false")
        text = (f"appsrc name=src format=time is-live={'true' if live else 'false'} block=true "
                f"max-bytes={4 * width * height * 3} caps=\"{caps}\" ! {encoder} ! {tail}")
        try:
            self._pipeline = Gst.parse_launch(text)
        except Exception as exc:  # GLib.Error from a bad element property
            raise SinkError(f"cannot build an encoder pipeline for {spec.uri}: "
                            f"{getattr(exc, 'message', exc)}") from None
        if spec.kind == "file":
            self._pipeline.get_by_name("out").set_property("location", str(spec.path))
        self._appsrc = self._pipeline.get_by_name("src")
        self._bus = self._pipeline.get_bus()
        if self._pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            self._raise_bus_error(f"cannot start the encoder for {spec.uri}")

    # -- RTSP server ----------------------------------------------------------------------------

    def _start_rtsp(self, caps: str, encoder: str) -> None:
        """Serve ``rtsp://…:PORT/MOUNT`` from this process; each write feeds the shared media's appsrc."""
        try:
            import gi

            gi.require_version("GstRtspServer", "1.0")
            from gi.repository import GLib, GstRtspServer
        except (ImportError, ValueError):
            raise SinkError("rtsp:// output needs the GstRtspServer typelib "
                            "(Debian/Ubuntu: apt install gir1.2-gst-rtsp-server-1.0)") from None
        spec = self.spec
        address = "0.0.0.0" if spec.host in ("@", "0.0.0.0", None) else spec.host
        self._bus = None
        self._context = GLib.MainContext.new()
        server = GstRtspServer.RTSPServer.new()
        server.set_address(address)
        server.set_service(str(spec.port))
        factory = GstRtspServer.RTSPMediaFactory.new()
        factory.set_launch(f"( appsrc name=src format=time is-live=true do-timestamp=false caps=\"{caps}\" "
                           f"! {encoder} ! rtph264pay name=pay0 pt=96 config-interval=-1 )")
        factory.set_shared(True)

        def configure(_factory: Any, media: Any) -> None:
            src = media.get_element().get_by_name("src")
            with self._media_lock:
                self._appsrc = src
                self._first_pts = None  # each new session starts its clock at zero

        def unprepared(_media: Any) -> None:
            with self._media_lock:
                self._appsrc = None

        factory.connect("media-configure", configure)
        factory.connect("media-constructed", lambda _f, media: media.connect("unprepared", unprepared))
        server.get_mount_points().add_factory(spec.mount, factory)
        try:
            source_id = server.attach(self._context)
        except Exception as exc:  # GLib.Error: address in use, cannot bind
            raise SinkError(f"cannot serve {spec.uri}: {getattr(exc, 'message', exc)}") from None
        if source_id == 0:
            raise SinkError(f"cannot serve {spec.uri}: port {spec.port} unavailable")
        self._server = server
        self._source_id = source_id
        self._loop = GLib.MainLoop.new(self._context, False)
        self._loop_thread = threading.Thread(target=self._loop.run, name="rtsp-sink", daemon=True)
        self._loop_thread.start()

    # -- writing --------------------------------------------------------------------------------

    def write(self, rgb: np.ndarray, pts_ns: int | None = None) -> None:
        """Encode one HxWx3 uint8 RGB frame of the size given at open time.

        ``pts_ns`` is the frame's capture time (any origin; the first one written becomes zero); by
        default frames are spaced 1/fps apart. Timestamps that do not increase are nudged forward by
        one frame so the muxer never sees time run backwards.
        """
        if self._closed:
            raise SinkError(f"{self.uri} is closed")
        want = (self.height, self.width, 3)
        if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.shape != want:
            got = rgb.shape if isinstance(rgb, np.ndarray) else type(rgb).__name__
            raise SinkError(f"{self.uri}: expected a {self.height}x{self.width}x3 uint8 RGB frame, got {got}")
        Gst = _gst()
        self._check_bus()
        with self._media_lock:
            appsrc = self._appsrc
            if appsrc is None:  # RTSP with nobody watching
                self.frames_dropped += 1
                return
            if pts_ns is None:
                pts = self.frames * self._frame_ns
            else:
                if self._first_pts is None:
                    self._first_pts = int(pts_ns)
                pts = int(pts_ns) - self._first_pts
            if self.spec.kind == "rtsp" and pts_ns is None:
                pts = self._rtsp_pts()
            if pts <= self._last_pts:
                pts = self._last_pts + self._frame_ns
            self._last_pts = pts
        buf = Gst.Buffer.new_wrapped(np.ascontiguousarray(rgb).tobytes())
        buf.pts = pts
        buf.duration = self._frame_ns
        ret = appsrc.emit("push-buffer", buf)
        if ret not in (Gst.FlowReturn.OK, Gst.FlowReturn.FLUSHING):
            self._check_bus()
            raise SinkError(f"{self.uri}: the encoder refused a frame ({ret.value_nick})")
        self.frames += 1

    def _rtsp_pts(self) -> int:
        """RTSP media restart at zero per session; count frames from the session's start."""
        if self._first_pts is None:
            self._first_pts = self.frames
            self._last_pts = -1
        return (self.frames - self._first_pts) * self._frame_ns

    def _check_bus(self) -> None:
        if self._bus is None:
            return
        Gst = _gst()
        msg = self._bus.pop_filtered(Gst.MessageType.ERROR)
        if msg is not None:
            err, _debug = msg.parse_error()
            raise SinkError(f"cannot write {self._where()}: {' '.join(err.message.split())}")

    def _raise_bus_error(self, fallback: str) -> None:
        self._check_bus()
        raise SinkError(fallback)

    def _where(self) -> str:
        return str(self.spec.path) if self.spec.path else self.uri

    # -- life cycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Send end-of-stream, wait until the muxer has finished the file, stop; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        Gst = _gst()
        if self._server is not None:
            self._close_rtsp()
            return
        error: str | None = None
        try:
            self._appsrc.emit("end-of-stream")
            msg = self._bus.timed_pop_filtered(int(_EOS_TIMEOUT_S * 1e9),
                                               Gst.MessageType.EOS | Gst.MessageType.ERROR)
            if msg is None:
                error = f"{self._where()}: the encoder did not finish within {_EOS_TIMEOUT_S:g} s"
            elif msg.type == Gst.MessageType.ERROR:
                err, _debug = msg.parse_error()
                error = f"cannot write {self._where()}: {' '.join(err.message.split())}"
        finally:
            self._pipeline.set_state(Gst.State.NULL)
        if error:
            raise SinkError(error)

    def _close_rtsp(self) -> None:
        with self._media_lock:
            appsrc, self._appsrc = self._appsrc, None
        if appsrc is not None:
            appsrc.emit("end-of-stream")
        pool = self._server.get_session_pool()
        pool.cleanup()
        self._loop.quit()
        if self._loop_thread is not None:
            self._loop_thread.join(timeout=5)
        # Close the listening socket: destroying the server's GSource in our private context releases it.
        source = self._context.find_source_by_id(self._source_id)
        if source is not None:
            source.destroy()
        self._context = None
        self._server = None

    def __enter__(self) -> VideoSink:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"VideoSink({self.uri!r}, {self.width}x{self.height}@{self.fps:g})"


def open_sink(uri: str, width: int, height: int, fps: float = 30.0, *, bitrate_kbps: int = 2000) -> VideoSink:
    """Open an H.264 output at ``uri`` for ``width`` x ``height`` RGB frames at ``fps``.

    Raises :class:`SinkError` for a bad URI, a missing folder, odd sizes, an absent encoder or a port
    that cannot be bound.
    """
    spec = parse_sink_uri(uri)
    for name, value in (("width", width), ("height", height)):
        if not isinstance(value, (int, np.integer)) or value < 16:
            raise SinkError(f"output {name} must be an integer of at least 16 pixels, got {value}")
    if width % 2 or height % 2:
        raise SinkError(f"H.264 output needs even frame sizes, got {width}x{height} (crop or scale first)")
    if not 1 <= bitrate_kbps <= 200_000:
        raise SinkError(f"bitrate must be within 1..200000 kbit/s, got {bitrate_kbps}")
    return VideoSink(spec, int(width), int(height), _fraction(fps), bitrate_kbps)
