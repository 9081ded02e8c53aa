"""Prometheus metrics over real HTTP: names, values, a private registry, and the live CLI endpoint."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import REPO

from emostream.edge.metrics import Metrics, MetricsError


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        return resp.read().decode()


def _value(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not in metrics:\n{text}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_endpoint_answers_with_the_expected_metrics():
    m = Metrics(fps_window_s=5.0)
    m.stream_started("cam0")
    for i in range(11):
        m.frame("cam0", faces=2, now=100.0 + i * 0.1)  # 10 fps
    m.stage("detect", 0.004)
    m.stage("detect", 0.02)
    m.tracks("cam0", 2)
    m.event("cam0", "track_start")
    m.escalation_sent("cam0")
    m.escalation_dropped("cam0", "queue_full")
    m.escalation_answered("cam0")
    m.set_queue_depth("escalation", 3)
    m.dropped_frames("cam0", 4)
    server = m.serve(0)
    try:
        assert server.host == "127.0.0.1" and server.port > 0
        text = _get(server.url)
    finally:
        server.close()
    assert _value(text, 'emostream_frames_total{stream="cam0"}') == 11
    assert _value(text, 'emostream_faces_total{stream="cam0"}') == 22
    assert _value(text, 'emostream_stream_fps{stream="cam0"}') == pytest.approx(10.0)
    assert _value(text, 'emostream_stage_seconds_count{stage="detect"}') == 2
    assert _value(text, 'emostream_stage_seconds_bucket{le="0.005",stage="detect"}') == 1
    assert _value(text, 'emostream_tracks_active{stream="cam0"}') == 2
    assert _value(text, 'emostream_tracks_started_total{stream="cam0"}') == 1
    assert _value(text, 'emostream_events_total{kind="track_start",stream="cam0"}') == 1
    assert _value(text, 'emostream_escalations_sent_total{stream="cam0"}') == 1
    assert _value(text, 'emostream_escalations_dropped_total{reason="queue_full",stream="cam0"}') == 1
    assert _value(text, 'emostream_escalations_answered_total{stream="cam0"}') == 1
    assert _value(text, 'emostream_queue_depth{queue="escalation"}') == 3
    assert _value(text, 'emostream_frames_dropped_total{stream="cam0"}') == 4
    assert _value(text, 'emostream_stream_up{stream="cam0"}') == 1


def test_registries_are_private_and_the_port_is_released():
    a, b = Metrics(), Metrics()
    a.frame("x", 1)
    assert b"emostream_frames_total{stream=\"x\"}" in a.render()
    assert b'stream="x"' not in b.render()
    server = a.serve(0)
    port = server.port
    server.close()
    again = b.serve(port)  # closed means closed: the port is free again
    again.close()


def test_port_in_use_and_bad_port_are_one_clear_error():
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        with pytest.raises(MetricsError, match=f"cannot serve metrics on 127.0.0.1:{busy.getsockname()[1]}"):
            Metrics().serve(busy.getsockname()[1])
    finally:
        busy.close()
    with pytest.raises(MetricsError, match="0..65535"):
        Metrics().serve(70000)


def test_cli_serves_metrics_while_running(tmp_path):
    """A real `emostream run` on a live test source, scraped over HTTP while it runs."""
    port = _free_port()
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "GLOG_minloglevel": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "emostream", "run", "test://?pattern=ball&fps=30", "--stream-id", "cam",
         "--max-frames", "150", "--metrics-port", str(port), "-q", "-o", str(out)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    text = ""
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                text = _get(f"http://127.0.0.1:{port}/metrics")
                if _value(text, 'emostream_frames_total{stream="cam"}') >= 10:
                    break
            except (OSError, AssertionError):
                pass
            time.sleep(0.2)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert _value(text, 'emostream_frames_total{stream="cam"}') >= 10
    assert _value(text, 'emostream_stream_up{stream="cam"}') == 1
    assert _value(text, 'emostream_stream_fps{stream="cam"}') > 1
    for stage in ("detect", "align", "infer", "track"):
        assert _value(text, f'emostream_stage_seconds_count{{stage="{stage}"}}') >= 1
    assert len(out.read_text().splitlines()) == 150  # no faces in the test pattern: frame records only


def test_escalations_are_counted_in_the_metrics(data_file):
    """The real pipeline + the in-process knowledge reasoner: sent/answered counters and queue depth move."""
    from emostream.edge.escalation import EscalationHook, open_escalator
    from emostream.edge.faces import FaceDetector
    from emostream.edge.multistream import run_streams
    from emostream.edge.pipeline import FrameAnalyzer
    from emostream.engines.emotion import load_engine
    from emostream.streams import open_source

    metrics = Metrics()
    analyzer = FrameAnalyzer(FaceDetector(), load_engine("onnxruntime", "v0"))
    escalator = open_escalator("inproc", keys_dir=None, insecure=False, labels=analyzer.labels)
    records: list[dict] = []
    hook = EscalationHook(escalator, records.append, metrics=metrics)
    try:
        run_streams(analyzer, [open_source(str(data_file("video/single_face.mp4")), stream="cam")],
                    records.append, metrics=metrics, sinks=[hook])
        hook.close()
    finally:
        analyzer.close()
    answered = sum(r["type"] == "reasoning" for r in records)
    text = metrics.render().decode()
    assert answered >= 1
    assert _value(text, 'emostream_escalations_sent_total{stream="cam"}') >= answered
    assert _value(text, 'emostream_escalations_answered_total{stream="cam"}') == answered
    assert _value(text, 'emostream_queue_depth{queue="escalation"}') == 0
