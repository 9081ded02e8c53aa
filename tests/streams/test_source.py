"""Video sources on real media: decode counts, timestamps, scaling, stride, live delivery and bad inputs.

Everything runs real GStreamer pipelines. The suite keeps to a few seconds: each full decode of a clip
happens once (module fixtures keep only metadata, never hundreds of frames).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

# Imported from the modules, not the package: under pytest's default import mode ``tests/`` is on
# sys.path, so ``tests/streams`` can shadow the ``streams`` package as a namespace package unless the
# repo root comes first (``pythonpath = ["."]`` in the pytest config).
from emostream.streams.errors import SourceError, SourceNotFoundError, SourceTimeoutError, UnsupportedSourceError
from emostream.streams.source import Frame, VideoSource, _gst, _head, _tail, open_source
from emostream.streams.uri import parse_uri

PEXELS = "video/WolfgangLanger_Pexels.mp4"
HEVC = "video/face_noface.mov"
STILL = "multiface/multi_face.jpg"


@dataclass
class Decoded:
    """What a full pass over a clip showed, without keeping the frames."""

    count: int
    shapes: set[tuple[int, ...]]
    pts: list[int]
    indices: list[int]
    contiguous: bool
    dtype: set[str]
    width: int | None
    height: int | None
    fps: float | None
    open_width: int | None  # known straight after open, before the first read


def decode_all(uri: str, **kwargs) -> Decoded:
    with open_source(uri, **kwargs) as src:
        open_width = src.width
        shapes, pts, indices, dtypes, contiguous = set(), [], [], set(), True
        for frame in src:
            shapes.add(frame.image.shape)
            pts.append(frame.pts_ns)
            indices.append(frame.index)
            dtypes.add(str(frame.image.dtype))
            contiguous &= frame.image.flags.c_contiguous
        return Decoded(
            len(pts), shapes, pts, indices, contiguous, dtypes, src.width, src.height, src.fps, open_width
        )


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.fixture(scope="module")
def pexels(data_file) -> Decoded:
    return decode_all(str(data_file(PEXELS)))


# --------------------------------------------------------------------------------------------------
# files


def test_h264_file_delivers_every_frame_in_order(pexels: Decoded):
    assert 470 <= pexels.count <= 474
    assert pexels.shapes == {(360, 640, 3)}
    assert pexels.dtype == {"uint8"} and pexels.contiguous
    assert pexels.indices == list(range(pexels.count))
    assert all(b > a for a, b in zip(pexels.pts, pexels.pts[1:], strict=False)), "pts must strictly increase"
    assert pexels.fps == pytest.approx(23.976, abs=0.01)
    assert (pexels.open_width, pexels.width, pexels.height) == (640, 640, 360)
    # 472 frames at 23.976 fps: the last one sits just before 19.7 s.
    assert pexels.pts[-1] / 1e9 == pytest.approx((pexels.count - 1) / 23.976, abs=0.1)


def test_hevc_file_decodes(data_file):
    decoded = decode_all(str(data_file(HEVC)))
    assert 167 <= decoded.count <= 171
    assert decoded.shapes == {(540, 960, 3)}
    assert all(b > a for a, b in zip(decoded.pts, decoded.pts[1:], strict=False))


def test_frames_carry_stream_id_and_seconds(data_file):
    path = data_file("video/single_face.mp4")
    with open_source(path.as_uri(), stream="cam-7") as src:  # the file:// form
        first = src.read()
        second = src.read()
    assert isinstance(first, Frame) and first.stream == "cam-7"
    assert (first.index, second.index) == (0, 1)
    assert second.t == pytest.approx(second.pts_ns / 1e9)
    assert second.t - first.t == pytest.approx(1 / src.fps, abs=0.01)


def test_stream_id_defaults_to_the_uri(data_file):
    uri = str(data_file("video/single_face.mp4"))
    with open_source(uri) as src:
        assert src.stream == uri and src.read().stream == uri
        assert src.is_live is False


def test_scaling_to_a_size(data_file):
    with open_source(str(data_file(PEXELS)), width=320, height=180) as src:
        frame = src.read()
    assert frame.image.shape == (180, 320, 3)
    assert (src.width, src.height) == (320, 180)


def test_size_of_another_aspect_is_letterboxed_not_stretched(data_file):
    with open_source(str(data_file(PEXELS)), width=320, height=320) as src:
        image = src.read().image
    assert image.shape == (320, 320, 3)
    # 640x360 -> 320x180 picture centred in 320x320: 70 black rows above and below, picture between.
    assert image[:68].max() == 0 and image[-68:].max() == 0
    assert image[75:245].mean() > 20


def test_odd_width_rows_are_unpadded_and_match_a_resize(data_file):
    """321 px * 3 = 963 bytes per row, padded by GStreamer to 964: the copy must drop the padding."""
    uri = str(data_file(PEXELS))
    with open_source(uri) as src:
        full = src.read().image
    with open_source(uri, width=321) as src:
        small = src.read().image
    assert small.shape[1] == 321 and abs(small.shape[0] - 180) <= 1  # aspect kept
    assert small.flags.c_contiguous
    expected = cv2.resize(full, (321, small.shape[0]), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(small.astype(int) - expected).mean() < 4.0  # a stride error would shear the picture


def test_fps_option_retimes_the_file(data_file):
    decoded = decode_all(str(data_file(PEXELS)), fps=10, width=160, height=90)
    assert decoded.fps == pytest.approx(10.0)
    assert 195 <= decoded.count <= 199  # 19.7 s at 10 fps
    steps = np.diff(decoded.pts) / 1e9
    assert np.allclose(steps, 0.1, atol=1e-3)


def test_truncated_file_delivers_what_it_has_then_says_so(data_file, tmp_path: Path, pexels: Decoded):
    """The first 30 % of the mp4 (its index comes first): the frames that are there arrive, then a clear
    error says the file stopped short of its stated length (nothing is silently missing)."""
    data = data_file(PEXELS).read_bytes()
    cut = tmp_path / "truncated.mp4"
    cut.write_bytes(data[: int(len(data) * 0.3)])
    frames = []
    with open_source(str(cut), timeout=5) as src:
        with pytest.raises(SourceError, match=r"ended at .* of its stated 19\.\d+ s: the file is truncated"):
            for frame in src:
                frames.append(frame)
    assert 0 < len(frames) < pexels.count
    assert {f.image.shape for f in frames} == {(360, 640, 3)}


@pytest.mark.parametrize("clip", ["video/WolfgangLanger_Pexels.mp4", "video/single_face.mp4", "video/no_face.mp4",
                                  "video/face_noface.mov", "video/noface_face.mov"])
def test_complete_files_do_not_look_truncated(data_file, clip):
    with open_source(str(data_file(clip)), width=160, height=90) as src:
        assert sum(1 for _ in src) > 60


# --------------------------------------------------------------------------------------------------
# still images


def test_still_image_is_one_frame_with_cv2_pixels(data_file):
    path = data_file(STILL)
    with open_source(str(path)) as src:
        frames = list(src)
        assert src.read() is None  # stays at EOS
    reference = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    assert len(frames) == 1
    image = frames[0].image
    assert image.shape == reference.shape and image.dtype == np.uint8
    diff = np.abs(image.astype(int) - reference.astype(int))
    # Two JPEG decoders differ by chroma upsampling and YCbCr rounding, a few levels on average.
    assert diff.mean() < 3.0
    assert np.percentile(diff, 99) < 16
    assert src.fps is None


@pytest.mark.parametrize("width", [641, 640])  # 641 px * 3 = 1923 bytes: GStreamer pads rows to 1924
def test_bmp_still_image_matches_cv2_exactly(data_file, tmp_path: Path, width: int):
    """BMP is lossless, so both decoders must agree to the last bit (decodebin alone decodes nothing)."""
    bgr = cv2.imread(str(data_file(STILL)))[:, :width]
    path = tmp_path / "photo.bmp"
    assert cv2.imwrite(str(path), bgr)
    with open_source(str(path)) as src:
        frames = list(src)
    assert len(frames) == 1
    assert frames[0].pts_ns == 0 and frames[0].index == 0
    assert frames[0].image.flags.c_contiguous
    np.testing.assert_array_equal(frames[0].image, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def test_still_image_can_be_scaled(data_file):
    with open_source(str(data_file(STILL)), width=500) as src:
        frames = list(src)
    assert len(frames) == 1 and frames[0].image.shape[1] == 500


# --------------------------------------------------------------------------------------------------
# live sources


def test_padded_rows_from_a_642_px_test_source():
    # I420 of 642 px: Y rows of 644 bytes, chroma rows of 321 px in 324 bytes; any slip in the unpadding
    # shifts rows and shows as colour at the frame's right edge or bottom.
    with open_source("test://?width=642&height=6&pattern=red&num-buffers=2&live=0") as src:
        frame = src.read()
        image = frame.image
    assert frame.planar and image.shape == (6, 642, 3)
    # Red through BT.601 limited-range YUV and back: within rounding of (255, 0, 0) everywhere.
    assert np.abs(image.astype(int) - [255, 0, 0]).max() <= 2
    assert frame.gray.shape == (6, 642) and np.ptp(frame.gray) == 0  # one luma everywhere, no padding bytes


@pytest.mark.parametrize(("width", "height"), [(641, 361), (643, 5), (640, 360)])
def test_odd_and_padded_i420_frames_match_gstreamers_own_rgb(width, height):
    """The I420 planes unpacked and converted here give GStreamer's videoconvert RGB, also at odd sizes
    (OpenCV needs even ones: the last row/column is repeated) and padded strides. Measured on flat colours
    (SMPTE bars have sharp chroma edges where nearest and linear chroma upsampling differ by design)."""
    import gi

    gi.require_version("Gst", "1.0")
    from gi.repository import Gst

    uri = f"test://?width={width}&height={height}&pattern=white&num-buffers=1&live=0"
    for pattern, want in (("white", 255), ("black", 0)):
        with open_source(uri.replace("white", pattern)) as src:
            frame = src.read()
        assert frame.planar and frame.image.shape == (height, width, 3) and frame.gray.shape == (height, width)
        assert np.abs(frame.image.astype(int) - want).max() <= 2 and np.abs(frame.gray.astype(int) - want).max() <= 2
    # A picture with structure: a moving ball on black, as GStreamer itself converts it to RGB.
    Gst.init(None)
    pipe = Gst.parse_launch(f"videotestsrc num-buffers=1 pattern=ball ! video/x-raw,width={width},height={height}"
                            " ! videoconvert ! video/x-raw,format=RGB ! appsink name=s")
    pipe.set_state(Gst.State.PLAYING)
    sample = pipe.get_by_name("s").emit("pull-sample")
    buf = sample.get_buffer()
    stride = (width * 3 + 3) // 4 * 4
    raw = np.frombuffer(buf.extract_dup(0, buf.get_size()), np.uint8)[: stride * height]
    ref = raw.reshape(height, stride)[:, : width * 3].reshape(height, width, 3)
    pipe.set_state(Gst.State.NULL)
    with open_source(f"test://?width={width}&height={height}&pattern=ball&num-buffers=1&live=0") as src:
        frame = src.read()
    diff = np.abs(frame.image.astype(int) - ref)
    assert diff.mean() < 3.0, diff.mean()
    assert np.abs(frame.gray.astype(int) - cv2_gray(ref)).mean() < 3.0


def cv2_gray(rgb: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(int)


def test_test_source_is_live_and_keeps_only_the_latest_frame():
    with open_source("test://?pattern=ball&width=160&height=120&fps=30") as src:
        assert src.is_live and src.latest_only
        assert (src.width, src.height, src.fps) == (160, 120, 30.0)
        frames = [src.read()]
        for _ in range(3):
            time.sleep(0.25)
            frames.append(src.read())
    assert [f.index for f in frames] == [0, 1, 2, 3]
    gaps = np.diff([f.t for f in frames])
    assert (gaps > 0.2).all(), "a slow reader gets the newest frame, not the next queued one"
    assert src.frames_dropped >= 3 * 5  # ~7 frames arrive per 0.25 s, one is read


def test_latest_only_false_on_a_live_source_loses_nothing_when_read_promptly():
    with open_source("test://?num-buffers=10&width=64&height=48&fps=100", latest_only=False) as src:
        frames = list(src)
    assert len(frames) == 10 and src.frames_dropped == 0


def test_finite_test_source_ends():
    with open_source("test://?num-buffers=5&live=0&width=32&height=24") as src:
        assert not src.is_live
        assert len(list(src)) == 5
        assert src.read() is None


def test_read_timeout_raises_instead_of_hanging():
    with open_source("test://?fps=1&width=32&height=24") as src:
        src.read()  # the frame pulled while opening
        started = time.monotonic()
        with pytest.raises(SourceTimeoutError, match="no frame"):
            src.read(timeout=0.2)
        assert time.monotonic() - started < 1.0


@pytest.fixture()
def rtsp_url():
    """A real RTSP server (gst-rtsp-server) on a loopback port, serving a live MJPEG test pattern."""
    import gi

    try:
        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import GLib, GstRtspServer
    except (ImportError, ValueError):
        pytest.skip("gst-rtsp-server introspection data (gir1.2-gst-rtsp-server-1.0) not installed")
    _gst()
    context = GLib.MainContext.new()
    loop = GLib.MainLoop.new(context, False)
    server = GstRtspServer.RTSPServer.new()
    server.set_address("127.0.0.1")
    server.set_service("0")
    factory = GstRtspServer.RTSPMediaFactory.new()
    # videotestsrc's default 320x240 @ 30 fps. (A caps filter inside this launch line stalled the
    # server's DESCRIBE in GStreamer 1.22 here, for plain rtspsrc clients too; the defaults avoid it.)
    factory.set_launch("( videotestsrc is-live=true pattern=ball ! jpegenc ! rtpjpegpay name=pay0 pt=96 )")
    factory.set_shared(True)
    server.get_mount_points().add_factory("/test", factory)
    source_id = server.attach(context)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        yield f"rtsp://127.0.0.1:{server.get_bound_port()}/test"
    finally:
        loop.quit()
        thread.join(2)
        context.find_source_by_id(source_id).destroy()


def test_rtsp_stream_delivers_latest_frames(rtsp_url: str):
    with open_source(rtsp_url, timeout=10) as src:
        assert src.is_live and src.latest_only
        frames = [src.read(timeout=5) for _ in range(3)]
    assert all(f.image.shape == (240, 320, 3) for f in frames)
    assert all(b.pts_ns > a.pts_ns for a, b in zip(frames, frames[1:], strict=False))


# --------------------------------------------------------------------------------------------------
# bad input: one clear line, quickly


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    noise = root / "noise.mp4"
    noise.write_bytes(rng.integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    text = root / "notes.mp4"
    text.write_text("these are not video frames\n" * 500)
    return {"noise": noise, "text": text, "dir": root}


def assert_clean(exc: SourceError) -> str:
    message = str(exc)
    assert message and "\n" not in message
    assert "Gst" not in message and ".c(" not in message, f"GStreamer jargon leaked: {message}"
    return message


def open_failing(uri: str, timeout: float = 5.0) -> SourceError:
    started = time.monotonic()
    with pytest.raises(SourceError) as info:
        open_source(uri, timeout=timeout)
    assert time.monotonic() - started < timeout + 1.0, "must fail within the timeout"
    assert_clean(info.value)
    return info.value


def test_missing_file(tmp_path: Path):
    exc = open_failing(str(tmp_path / "nope.mp4"))
    assert isinstance(exc, SourceNotFoundError) and str(exc).startswith("no such file: ")


def test_unknown_scheme():
    exc = open_failing("foo://bar")
    assert isinstance(exc, UnsupportedSourceError)
    assert str(exc) == "unknown source scheme 'foo://' (known: file, v4l2, csi, rtsp, test)"


def test_csi_camera_needs_a_jetson():
    if _gst()[0].ElementFactory.find("nvarguscamerasrc") is not None:
        pytest.skip("this machine has nvarguscamerasrc")
    exc = open_failing("csi://0")
    assert "Jetson" in str(exc) and "nvarguscamerasrc" in str(exc)


@pytest.mark.parametrize("uri", ["/dev/video9", "v4l2:///dev/video9"])
def test_missing_camera(uri: str):
    if Path("/dev/video9").exists():
        pytest.skip("/dev/video9 exists here")
    exc = open_failing(uri)
    assert isinstance(exc, SourceNotFoundError) and "/dev/video9" in str(exc)


def test_random_bytes_named_mp4(bad_files):
    assert "not a recognised video or image format" in str(open_failing(str(bad_files["noise"])))


def test_text_file_named_mp4(bad_files):
    message = str(open_failing(str(bad_files["text"])))
    assert message.startswith("cannot decode") and "text file" in message


def test_directory_is_not_a_source(bad_files):
    assert "directory" in str(open_failing(str(bad_files["dir"])))


def test_audio_only_file_has_no_video(tmp_path: Path):
    Gst = _gst()[0]
    path = tmp_path / "tone.ogg"
    pipe = Gst.parse_launch(
        f"audiotestsrc num-buffers=20 ! audioconvert ! vorbisenc ! oggmux ! filesink location={path}"
    )
    pipe.set_state(Gst.State.PLAYING)
    pipe.get_bus().timed_pop_filtered(5 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    pipe.set_state(Gst.State.NULL)
    assert "has no video stream" in str(open_failing(str(path)))


def test_clobbered_header_is_a_clean_error(data_file, tmp_path: Path):
    data = bytearray(data_file(PEXELS).read_bytes())
    data[:64] = bytes(64)  # the ftyp/moov box headers are gone
    bad = tmp_path / "clobbered.mp4"
    bad.write_bytes(bytes(data))
    # Typefinding takes the remains for MPEG video; which element gives up first is a race (decodebin's
    # "all streams without buffers" or the parser's "no valid frames"), and ~40% of opens used to say
    # "has no video stream". Both must read as a decode failure, every time.
    messages = {str(open_failing(str(bad))) for _ in range(15)}
    assert all(m.startswith("cannot decode") for m in messages), messages


def test_missing_decoder_names_the_codec(data_file):
    """With every H.265 decoder ranked out, decodebin reports a missing plug-in; we say which, and how."""
    Gst = _gst()[0]
    decoders = [
        factory
        for factory in Gst.Registry.get().get_feature_list(Gst.ElementFactory)
        if "Decoder" in (factory.get_metadata("klass") or "")
        and any(
            "h265" in template.get_caps().to_string()
            for template in factory.get_static_pad_templates()
            if template.direction == Gst.PadDirection.SINK
        )
    ]
    ranks = [(factory, factory.get_rank()) for factory in decoders]
    try:
        for factory in decoders:
            factory.set_rank(Gst.Rank.NONE)
        message = str(open_failing(str(data_file(HEVC))))
    finally:
        for factory, rank in ranks:
            factory.set_rank(rank)
    assert "missing GStreamer plug-in" in message and "H.265" in message and "gstreamer1.0-libav" in message


def test_rtsp_closed_port():
    message = str(open_failing("rtsp://127.0.0.1:9/x"))
    assert message.startswith("cannot connect to rtsp://127.0.0.1:9/x")


@pytest.mark.parametrize(
    "uri, fragment",
    [
        ("", "empty source URI"),
        ("csi://front", "expected csi://N"),
        ("test://?colour=red", "unknown test:// parameter"),
        ("test://?num-buffers=-3", "num-buffers"),
        ("test://?pattern=nosuch", "pattern"),
    ],
)
def test_malformed_uris(uri: str, fragment: str):
    assert fragment in str(open_failing(uri))


def test_bad_options(data_file):
    with pytest.raises(SourceError, match="width"):
        open_source(str(data_file(STILL)), width=0)
    with pytest.raises(SourceError, match="fps"):
        open_source(str(data_file(STILL)), fps=-1)


# --------------------------------------------------------------------------------------------------
# URI parsing and life cycle


def test_parse_uri_forms(data_file, tmp_path: Path):
    clip = data_file("video/single_face.mp4")
    assert parse_uri(str(clip)).kind == "file"
    spaced = tmp_path / "a clip.mp4"
    spaced.write_bytes(b"")
    assert parse_uri(spaced.as_uri()).path == spaced.resolve()  # %20 decoded
    assert parse_uri(str(data_file(STILL))).is_image
    assert not parse_uri(str(clip)).is_image
    assert parse_uri("csi://1").sensor_id == 1
    assert parse_uri("rtsp://cam.local:8554/live").is_live
    assert parse_uri("test://?live=0").is_live is False
    assert parse_uri("test://").is_live is True


def test_closed_source_refuses_reads_and_leaks_no_threads(data_file):
    uri = str(data_file("video/single_face.mp4"))
    with open_source(uri) as src:  # warm up: GStreamer's own long-lived threads start once
        src.read()
    before = thread_count()
    for _ in range(5):
        src = open_source(uri)
        assert isinstance(src, VideoSource)
        src.read()
        src.close()
        src.close()  # idempotent
        with pytest.raises(SourceError, match="closed"):
            src.read()
    time.sleep(0.2)
    assert thread_count() <= before + 1


def test_latest_only_file_plays_in_real_time(data_file):
    """A file opened latest-only behaves like a camera: a reader that naps skips ahead, never lags."""
    with open_source(str(data_file(PEXELS)), latest_only=True) as src:
        assert not src.is_live and src.latest_only
        src.read()
        time.sleep(0.5)
        frame = src.read()
    assert frame.index == 1 and frame.t > 0.35
    assert src.frames_dropped >= 5


def test_package_exports_the_api():
    """``from emostream.streams import ...`` as other packages use it, from a folder outside the repo."""
    import subprocess
    import sys

    code = ("from emostream.streams import Frame, SourceError, VideoSource, open_source; "
            "print(open_source.__module__)")
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "emostream.streams.source"


def test_pipeline_text_for_sources_this_machine_cannot_run():
    """CSI needs a Jetson and v4l2 a camera: check at least the pipelines they would get."""
    csi = parse_uri("csi://1")
    head, dynamic = _head(csi, 1280, 720)
    assert not dynamic
    assert head == (
        "nvarguscamerasrc name=src sensor-id=1 ! nvvidconv ! video/x-raw,format=I420,width=1280,height=720"
    )
    tail = _tail(csi, 1280, 720, 15.0)
    assert tail.startswith("videorate name=tail ! videoscale ! videoconvert ! ")
    assert tail.endswith("video/x-raw,format=I420,framerate=15/1,width=1280,height=720,pixel-aspect-ratio=1/1"
                         " ! appsink name=sink")
    assert "format=RGB" in _tail(csi, 1280, 720, 15.0, rgb=True)
    rtsp_head, rtsp_dynamic = _head(parse_uri("rtsp://cam.local/live"))
    assert rtsp_dynamic and rtsp_head.startswith("rtspsrc name=src latency=200 ! decodebin")


def test_plotting_or_mediapipe_after_opening_a_source_does_not_kill_python(data_file, tmp_path):
    """matplotlib's ft2font, first imported after GStreamer initialised in a process with OpenCV, used to abort
    Python outright (a C++ exception): `open_source` then `import matplotlib.pyplot` in a notebook, or then an
    `emostream.Analyzer` on MediaPipe's graphs. Run in a fresh interpreter, the only place the order is clean."""
    import subprocess
    import sys

    script = tmp_path / "order.py"
    script.write_text(
        "import cv2\n"
        "from emostream.streams import open_source\n"
        f"src = open_source({str(data_file('video/single_face.mp4'))!r})\n"
        "assert src.read().image.shape[2] == 3\n"
        "import matplotlib.pyplot\n"
        "import mediapipe\n"
        "from emostream.edge.faces import FaceDetector\n"
        "assert len(FaceDetector('short', runtime='mediapipe').detect(src.read().image)) == 1\n"
        "src.close()\n"
        "print('survived')\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "survived" in proc.stdout, (proc.returncode, proc.stderr[-2000:])
