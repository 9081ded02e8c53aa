"""Stop signals against the real `emostream run`: SIGTERM (systemd, Docker, Kubernetes) must lose
nothing, exactly like Ctrl-C.

Each test starts the CLI as a child process on real video, waits for an observable moment (records
in the output file, onnxruntime mapped into the child, the child connecting to a camera), sends real
signals with ``os.kill`` and then checks what an operator would: the exit code, stderr, every JSON
line, the track events and the annotated mp4 decoded back frame by frame.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.faults

VIDEO = "video/WolfgangLanger_Pexels.mp4"
VIDEO_FRAMES = 472
#: Generous upper bound on any wait (a busy 2-core machine); never a speed assertion.
PATIENCE_S = 180.0


class Child:
    """`emostream ARGS` as a child process, its stderr in a file (no pipe to fill and block)."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.stderr_path = tmp / "stderr.txt"
        env = {**os.environ, "GLOG_minloglevel": "2"}
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "emostream", *args], cwd=REPO, env=env,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def kill(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def wait_until(self, what: str, ready: Callable[[], bool]) -> None:
        """Poll ``ready`` until true; fail (with the child's stderr) if the child ends first."""
        deadline = time.monotonic() + PATIENCE_S
        while not ready():
            if self.proc.poll() is not None:
                pytest.fail(f"emostream exited ({self.proc.returncode}) before {what}:\n{self.stderr}")
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"no {what} within {PATIENCE_S:g} s:\n{self.stderr}")
            time.sleep(0.005)

    def wait(self) -> int:
        try:
            return self.proc.wait(timeout=PATIENCE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"emostream did not exit within {PATIENCE_S:g} s of the signal:\n{self.stderr}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def child(tmp_path):
    """Start children with ``child(*args)``; any still running at the end is killed."""
    started: list[Child] = []

    def start(*args: str) -> Child:
        c = Child(tmp_path, *args)
        started.append(c)
        return c

    yield start
    for c in started:
        c.close()


def json_lines(path: Path) -> list[dict]:
    """Every line of the output, each of which must be one complete JSON object."""
    text = path.read_text()
    assert text.endswith("\n"), f"last line cut: {text[-200:]!r}"
    return [json.loads(line) for line in text.splitlines()]


def frames_in(path: Path) -> int:
    """How many records the file holds so far (cheap enough to poll)."""
    try:
        return path.read_bytes().count(b'"type":"frame"')
    except FileNotFoundError:
        return 0


def decoded_frames(video: Path) -> int:
    """Decode the overlay with the project's own reader: an mp4 without its index does not open."""
    from emostream.streams import open_source

    src = open_source(str(video))
    try:
        n = 0
        while src.read() is not None:
            n += 1
        return n
    finally:
        src.close()


def check_orderly_stop(out: Path, overlay: Path, stderr: str, sig: int) -> list[dict]:
    """What an interrupted run must leave: whole records, every track ended, a playable overlay."""
    assert "Traceback" not in stderr, stderr
    name = signal.Signals(sig).name
    assert stderr.rstrip().splitlines()[-1] == f"emostream: interrupted ({name})", stderr
    recs = json_lines(out)
    frames = [r["frame"] for r in recs if r["type"] == "frame"]
    assert 0 < len(frames) < VIDEO_FRAMES, "the run was not stopped mid-clip; the test proves nothing"
    assert frames == list(range(len(frames))), "frame records missing or repeated"
    events = [r for r in recs if r["type"] == "event"]
    started = [e["track"] for e in events if e["kind"] == "track_start"]
    ended = [e for e in events if e["kind"] == "track_end"]
    assert started, "no track started before the signal; the test proves nothing"
    assert sorted(e["track"] for e in ended) == sorted(started), "a track was left open"
    assert {e["reason"] for e in ended} == {"interrupted"}
    assert all(e["summary"]["labels"] for e in ended)
    assert f"overlay -> {overlay} ({len(frames)} frames)" in stderr
    assert decoded_frames(overlay) == len(frames), "overlay does not hold every analysed frame"
    return recs


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_mid_run_keeps_every_record_ends_tracks_and_finishes_the_overlay(
        data_file, tmp_path, child, sig):
    out, overlay = tmp_path / "t.jsonl", tmp_path / "t.mp4"
    run = child("run", str(data_file(VIDEO)), "-o", str(out), "--overlay", str(overlay))
    # Records are written as they happen: wait for a track to be announced and a few more frames.
    run.wait_until("a track_start", lambda: b"track_start" in out.read_bytes() if out.exists() else False)
    seen = frames_in(out)
    run.wait_until("more frames", lambda: frames_in(out) >= seen + 5)
    run.kill(sig)
    assert run.wait() == 128 + sig, run.stderr
    check_orderly_stop(out, overlay, run.stderr, sig)


def test_signals_during_the_shutdown_do_not_cut_it_short(data_file, tmp_path, child):
    """A second Ctrl-C, or a supervisor repeating SIGTERM, while the output is being finished."""
    out, overlay = tmp_path / "t.jsonl", tmp_path / "t.mp4"
    run = child("run", str(data_file(VIDEO)), "-o", str(out), "--overlay", str(overlay))
    run.wait_until("a track_start", lambda: b"track_start" in out.read_bytes() if out.exists() else False)
    run.kill(signal.SIGTERM)
    sent = 1
    while run.proc.poll() is None:  # keep signalling through the whole shutdown
        run.kill(signal.SIGINT if sent % 2 else signal.SIGTERM)
        sent += 1
        time.sleep(0.01)
    assert sent >= 3, "the shutdown ended before a second signal could be sent"
    rc = run.wait()
    # The first signal handled decides the exit code (two pending signals are handled in signal
    # number order, so that may be the SIGINT sent right after the SIGTERM); the rest are ignored.
    assert rc in (128 + signal.SIGTERM, 128 + signal.SIGINT), run.stderr
    check_orderly_stop(out, overlay, run.stderr, rc - 128)
    assert run.stderr.count(" again: still writing the output") <= 1, run.stderr


def _maps(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc to see the models load")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_while_models_load_is_one_line(data_file, tmp_path, child, sig):
    """Signalled while onnxruntime loads: Python's KeyboardInterrupt there used to print a traceback,
    or make the pybind11 module abort the process (SIGABRT)."""
    out = tmp_path / "kept.jsonl"
    earlier = b'{"type":"frame","stream":"earlier session","frame":0,"t":0.0,"faces":[]}\n'
    out.write_bytes(earlier)
    run = child("run", str(data_file(VIDEO)), "-o", str(out))
    run.wait_until("onnxruntime loading", lambda: "onnxruntime" in _maps(run.proc.pid))
    run.kill(sig)
    assert run.wait() == 128 + sig, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert lines == [f"emostream: interrupted ({signal.Signals(sig).name})"], run.stderr
    assert out.read_bytes() == earlier, "start-up touched the output"


class SilentRtspServer:
    """Accepts RTSP connections and never answers: a camera that hangs while being opened."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connected = threading.Event()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            self.connected.set()

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_while_a_camera_opens_is_one_line(tmp_path, child, sig):
    server = SilentRtspServer()
    try:
        out = tmp_path / "never.jsonl"
        run = child("run", f"rtsp://127.0.0.1:{server.port}/cam", "-o", str(out))
        run.wait_until("the camera connection", server.connected.is_set)
        run.kill(sig)
        assert run.wait() == 128 + sig, run.stderr
        lines = [line for line in run.stderr.splitlines() if line.strip()]
        assert lines == [f"emostream: interrupted ({signal.Signals(sig).name})"], run.stderr
        assert not out.exists(), "start-up created the output"
    finally:
        server.close()
