"""H.264 sinks through real GStreamer: files decode again, RTP and RTSP deliver, bad input is one error."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest

from emostream.streams import open_source
from emostream.streams.sink import SinkError, open_sink, parse_sink_uri


def _frame(i: int, w: int = 320, h: int = 240) -> np.ndarray:
    """A frame whose left part is white up to a column that moves with ``i`` (checkable after decode)."""
    img = np.full((h, w, 3), 40, np.uint8)
    img[:, : 8 + 4 * i] = 255
    img[: h // 4, :, 0] = 200  # a red band: channel order survives the round trip
    return img


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_file_round_trip_keeps_every_frame_timing_and_content(tmp_path, suffix):
    path = tmp_path / f"out{suffix}"
    with open_sink(str(path), 320, 240, 23.976) as sink:
        for i in range(40):
            sink.write(_frame(i))
        assert sink.frames == 40
    src = open_source(str(path))
    frames = list(src)
    assert len(frames) == 40
    assert src.fps == pytest.approx(23.976, abs=0.01)
    assert frames[-1].t - frames[0].t == pytest.approx(39 / 23.976, abs=0.01)
    last = frames[-1].image.astype(int)
    edge = 8 + 4 * 39
    assert last[200, edge - 6].min() > 200 and last[200, edge + 6].max() < 80  # white | grey at the column
    assert last[10, 300, 0] > 150 and last[10, 300, 1] < 90  # red band stayed red (RGB, not BGR)


def test_capture_timestamps_are_kept_relative_to_the_first(tmp_path):
    path = tmp_path / "ts.mp4"
    with open_sink(str(path), 160, 120, 10) as sink:
        for i in range(10):  # a live source's clock: starts far from zero, 2 frames apart each time
            sink.write(_frame(i, 160, 120), pts_ns=5_000_000_000 + i * 200_000_000)
    frames = list(open_source(str(path)))
    assert len(frames) == 10
    assert frames[-1].t - frames[0].t == pytest.approx(1.8, abs=0.01)


def test_rtp_output_is_received_as_h264(tmp_path):
    """A real GStreamer receiver (udpsrc ! rtph264depay ! avdec_h264) decodes what the sink sends."""
    import gi

    gi.require_version("Gst", "1.0")
    from gi.repository import Gst

    Gst.init(None)
    port = _free_port(socket.SOCK_DGRAM)
    rx = Gst.parse_launch(
        f'udpsrc port={port} caps="application/x-rtp,media=video,encoding-name=H264,payload=96,clock-rate=90000" '
        "! rtph264depay ! h264parse ! avdec_h264 ! videoconvert ! video/x-raw,format=RGB ! appsink name=sink "
        "sync=false max-buffers=100"
    )
    appsink = rx.get_by_name("sink")
    rx.set_state(Gst.State.PLAYING)
    try:
        with open_sink(f"rtp://127.0.0.1:{port}", 320, 240, 30) as sink:
            for i in range(30):
                sink.write(_frame(i))
                time.sleep(0.005)
        got = 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and got < 25:
            if appsink.try_pull_sample(100_000_000) is not None:
                got += 1
        assert got >= 25  # UDP on loopback: all or nearly all frames arrive
    finally:
        rx.set_state(Gst.State.NULL)


def test_rtsp_server_output_is_readable_by_open_source():
    pytest.importorskip("gi")
    port = _free_port()
    try:
        sink = open_sink(f"rtsp://127.0.0.1:{port}/overlay", 320, 240, 30)
    except SinkError as exc:
        if "GstRtspServer" in str(exc):
            pytest.skip(str(exc))
        raise
    stop = threading.Event()

    def feed() -> None:
        i = 0
        while not stop.is_set():
            sink.write(_frame(i % 60))
            i += 1
            time.sleep(1 / 30)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        src = open_source(f"rtsp://127.0.0.1:{port}/overlay", timeout=10)
        frames = [src.read() for _ in range(10)]
        src.close()
        assert all(f is not None and f.image.shape == (240, 320, 3) for f in frames)
    finally:
        stop.set()
        feeder.join(timeout=5)
        sink.close()
    assert sink.frames >= 10


@pytest.mark.parametrize(
    "uri, message",
    [
        ("", "empty output URI"),
        ("out.avi", "unsupported output file type"),
        ("/nonexistent/dir/out.mp4", "does not exist"),
        ("rtp://127.0.0.1", "expected rtp://HOST:PORT"),
        ("rtsp://", "expected rtsp://@:PORT/PATH"),
        ("srt://host:1234", "unknown output scheme"),
    ],
)
def test_bad_output_uris_are_one_clear_error(uri, message):
    with pytest.raises(SinkError, match=message):
        parse_sink_uri(uri)


def test_bad_sizes_and_frames_are_errors_and_close_is_idempotent(tmp_path):
    with pytest.raises(SinkError, match="even"):
        open_sink(str(tmp_path / "a.mp4"), 321, 240, 30)
    with pytest.raises(SinkError, match="fps"):
        open_sink(str(tmp_path / "a.mp4"), 320, 240, 0)
    sink = open_sink(str(tmp_path / "b.mp4"), 320, 240, 30)
    with pytest.raises(SinkError, match="expected a 240x320x3 uint8"):
        sink.write(np.zeros((240, 320), np.uint8))
    with pytest.raises(SinkError, match="expected a 240x320x3 uint8"):
        sink.write(np.zeros((240, 320, 3), np.float32))
    sink.write(_frame(0))
    sink.close()
    sink.close()
    with pytest.raises(SinkError, match="closed"):
        sink.write(_frame(1))
    assert len(list(open_source(str(tmp_path / "b.mp4")))) == 1
