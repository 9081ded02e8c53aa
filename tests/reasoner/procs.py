"""Helpers shared by the reasoner/escalation tests: real reasoner subprocesses and raw sockets."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from emostream.engines.labels import CANONICAL_LABELS
from emostream.reasoner.schema import SCHEMA_VERSION, pack, unpack

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def reasoner_process(tmp_path: Path, *args: str, ready_timeout: float = 60.0) -> Iterator[tuple]:
    """Start ``emostream reasoner --bind tcp://127.0.0.1:PORT ARGS`` and wait for it to listen.

    stderr goes to a file (a pipe nobody reads could fill and block the service). Yields
    ``(process, endpoint, log_path)``; always stops the process (terminate, then kill).
    """
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    log = tmp_path / f"reasoner-{uuid.uuid4().hex[:6]}.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "emostream.reasoner", "reasoner", "--bind", endpoint, *args],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
    try:
        deadline = time.monotonic() + ready_timeout
        while "listening on" not in log.read_text():
            if proc.poll() is not None:
                raise AssertionError(f"reasoner exited with {proc.returncode}: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"reasoner not listening after {ready_timeout} s: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield proc, endpoint, log
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def face_crop(path: Path, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A real face crop (centre square) and the full RGB frame from a shared-data image."""
    bgr = cv2.imread(str(path))
    assert bgr is not None, path
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    s = min(h, w) // 2
    crop = rgb[(h - s) // 2 : (h + s) // 2, (w - s) // 2 : (w + s) // 2]
    return cv2.resize(crop, (size, size)), rgb


def jpeg(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


def keyframe_msg(crop_jpeg: bytes, probs: list[float] | None = None, **over) -> dict:
    labels = list(CANONICAL_LABELS)
    if probs is None:
        probs = [0.05, 0.6, 0.05, 0.1, 0.05, 0.05, 0.05, 0.05]
    msg = {
        "v": SCHEMA_VERSION,
        "type": "keyframe",
        "id": uuid.uuid4().hex,
        "stream": "cam0",
        "track": 1,
        "frame": 7,
        "t_ns": 123,
        "crop": crop_jpeg,
        "labels": labels,
        "probs": probs,
        "reason": "uncertain",
        "deadline_ms": 5000,
    }
    msg.update(over)
    return msg


class RawClient:
    """A bare DEALER for protocol tests (sends whatever bytes it is given)."""

    def __init__(self, endpoint: str, curve: tuple[bytes, bytes, bytes] | None = None) -> None:
        import zmq

        self.zmq = zmq
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            self.sock.curve_publickey, self.sock.curve_secretkey, self.sock.curve_serverkey = curve
        self.sock.connect(endpoint)

    def send(self, payload: bytes | dict) -> None:
        self.sock.send(payload if isinstance(payload, bytes) else pack(payload))

    def recv(self, timeout_s: float = 10.0) -> dict | None:
        if not self.sock.poll(int(timeout_s * 1000)):
            return None
        return unpack(self.sock.recv(), 1 << 24)

    def ask(self, payload: bytes | dict, timeout_s: float = 10.0) -> dict | None:
        self.send(payload)
        return self.recv(timeout_s)

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


class FakeOpenAI:
    """A real OpenAI-compatible HTTP server on 127.0.0.1 (stdlib ``http.server`` in a thread).

    It checks every request's shape (image as a data: URL, json_schema response_format with the
    candidate labels) -- a wrong shape gets HTTP 400 and is recorded in ``problems`` -- and answers
    according to ``mode``: ``ok`` (a coherent answer), ``incoherent`` (first answer contradicts
    itself, resamples are coherent), ``malformed`` (content is not JSON), ``garbage`` (body is not
    a chat completion), ``slow`` (sleeps ``delay_s`` first).
    """

    def __init__(self, mode: str = "ok", delay_s: float = 0.0) -> None:
        import http.server
        import json
        import threading

        self.mode, self.delay_s = mode, delay_s
        self.requests: list[dict] = []
        self.problems: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                problem = outer.check(self.path, body)
                if problem:
                    outer.problems.append(problem)
                    return self.reply(400, {"error": problem})
                if outer.mode == "slow":
                    time.sleep(outer.delay_s)
                if outer.mode == "garbage":
                    return self.reply(200, {"not": "a completion"})
                n = body.get("n", 1)
                texts = [outer.answer(body, i) for i in range(n)]
                self.reply(
                    200,
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "model": body["model"],
                        "choices": [
                            {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                            for i, t in enumerate(texts)
                        ],
                    },
                )

            def reply(self, code, obj):
                data = json.dumps(obj).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client timed out and went away
                    pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def check(path: str, body: dict) -> str | None:
        import base64

        if path != "/v1/chat/completions":
            return f"wrong path {path}"
        try:
            user = [m for m in body["messages"] if m["role"] == "user"][0]
            image = [c for c in user["content"] if c["type"] == "image_url"][0]["image_url"]["url"]
            assert image.startswith("data:image/jpeg;base64,"), "image is not a JPEG data URL"
            assert base64.b64decode(image.split(",", 1)[1])[:2] == b"\xff\xd8", "data URL is not a JPEG"
            text = [c for c in user["content"] if c["type"] == "text"][0]["text"]
            rf = body["response_format"]
            assert rf["type"] == "json_schema", "response_format is not json_schema"
            enum = rf["json_schema"]["schema"]["properties"]["expression"]["enum"]
            assert all(label in text for label in enum), "prompt does not list the candidate labels"
            assert isinstance(body["model"], str) and isinstance(body.get("n", 1), int)
        except (KeyError, IndexError, TypeError, AssertionError) as exc:
            return f"bad request shape: {exc!r}"
        return None

    def answer(self, body: dict, i: int) -> str:
        import json

        if self.mode == "malformed":
            return "I think the person looks happy!"
        coherent = {
            "expression": "happy",
            "valence": 0.6,
            "arousal": 0.3,
            "aus": [{"au": "AU6", "intensity": 0.7}, {"au": "AU12", "intensity": 0.9}],
            "rationale": "cheeks raised, lip corners pulled up",
        }
        if self.mode == "incoherent" and body.get("n", 1) == 1:
            return json.dumps({**coherent, "valence": -0.8, "aus": [{"au": "AU4", "intensity": 0.9}]})
        return json.dumps(coherent)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
