"""The console's address/token rules, its snapshot store, and its HTTP server (real uvicorn, real sockets)."""

from __future__ import annotations

import http.client
import json
import threading
import time

import pytest

from emostream.edge.console import ConsoleError, ConsoleServer, SnapshotStore, parse_console_addr
from emostream.edge.metrics import Metrics

TOKEN = "test-token-0123456789"


# --------------------------------------------------------------------------- address and token


def test_bare_port_is_loopback():
    assert parse_console_addr("8080") == ("127.0.0.1", 8080)
    assert parse_console_addr(":0") == ("127.0.0.1", 0)
    assert parse_console_addr("[::1]:9000") == ("::1", 9000)
    assert parse_console_addr("localhost:9000") == ("localhost", 9000)


def test_network_address_needs_a_token():
    with pytest.raises(ConsoleError, match="needs|console-token"):
        parse_console_addr("0.0.0.0:8080")
    assert parse_console_addr("0.0.0.0:8080", TOKEN) == ("0.0.0.0", 8080)
    with pytest.raises(ConsoleError, match="at least"):
        parse_console_addr("0.0.0.0:8080", "short")


@pytest.mark.parametrize("spec", ["host:", "host:http", "127.0.0.1:70000", "", "a:b:c"])
def test_bad_addresses(spec):
    with pytest.raises(ConsoleError):
        parse_console_addr(spec)


# --------------------------------------------------------------------------- the store (records only)


def _ev(kind: str, track: int = 1, t: float = 1.0, **kw) -> dict:
    return {"type": "event", "kind": kind, "stream": "cam", "track": track, "frame": int(t * 30), "t": t, **kw}


def test_store_follows_tracks_alerts_and_answers():
    store = SnapshotStore(["cam"], rules=[{"name": "angry", "rule": "anger>=0.6 for 5s"}], max_events=5)
    store.record(_ev("track_start", label="sad", confidence=0.7, valence=-0.4, arousal=0.1))
    store.record({"type": "reasoning", "stream": "cam", "track": 1, "expression": "sad", "verified": True,
                  "rationale": "AU1+AU4", "frame": 30})
    store.record(_ev("alert", t=6.0, state="raised", name="angry", value=0.7))
    snap = store.snapshot()
    (track,) = snap["streams"][0]["tracks"]
    assert track["label"] == "sad" and track["alerts"] == ["angry"]
    assert track["reasoning"]["expression"] == "sad" and track["reasoning"]["verified"] is True
    assert [e["kind"] for e in snap["events"]] == ["alert", "reasoning", "track_start"]  # newest first
    store.record(_ev("alert", t=7.0, state="cleared", name="angry"))
    store.record(_ev("track_end", t=9.0, reason="lost", duration=8.0, dominant="sad"))
    snap = store.snapshot()
    assert snap["streams"][0]["tracks"] == [] and snap["streams"][0]["ended_tracks"][0]["ended"] == "lost"
    for i in range(10):
        store.record(_ev("emotion_change", t=10 + i, **{"from": "sad", "to": "happy"}))
    assert len(store.snapshot()["events"]) == 5  # bounded
    store.record({"type": "event", "kind": "track_start", "stream": "unknown", "track": 1})  # ignored, no error
    json.dumps(store.snapshot())


# --------------------------------------------------------------------------- the server


def _get(port: int, path: str, headers: dict | None = None, host: str | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    h = dict(headers or {})
    if host:
        h["Host"] = host
    conn.request("GET", path, headers=h)
    resp = conn.getresponse()
    body = resp.read() if "event-stream" not in (resp.getheader("content-type") or "") else resp.read1(4096)
    result = resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    conn.close()
    return result


@pytest.fixture
def served():
    store = SnapshotStore(["cam"])
    store.record(_ev("track_start", label="happy", confidence=0.9))
    server = ConsoleServer(store, "127.0.0.1", 0, token=TOKEN, metrics=Metrics())
    yield store, server
    server.close()


@pytest.mark.parametrize("path", ["/", "/api/state", "/api/live", "/api/frame/0.jpg", "/static/app.js"])
def test_token_is_checked_on_every_request(served, path):
    _store, server = served
    status, _h, _b = _get(server.port, path)
    assert status == 401
    status, _h, _b = _get(server.port, path, {"Authorization": "Bearer wrong-token-0123456"})
    assert status == 401
    status, _h, _b = _get(server.port, path, {"Authorization": f"Bearer {TOKEN}"})
    assert status in (200, 204)  # 204: no frame yet


def test_query_token_sets_a_cookie_that_the_live_channel_accepts(served):
    _store, server = served
    status, headers, body = _get(server.port, f"/?token={TOKEN}")
    assert status == 200 and b"emostream" in body
    cookie = headers["set-cookie"].split(";")[0]
    assert "HttpOnly" in headers["set-cookie"] and "SameSite=Strict" in headers["set-cookie"]
    status, headers, body = _get(server.port, "/api/live", {"Cookie": cookie})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    status, _h, body = _get(server.port, "/api/state", {"Cookie": cookie})
    assert json.loads(body)["streams"][0]["tracks"][0]["label"] == "happy"


def test_live_channel_sends_changes_and_counts_clients(served):
    store, server = served
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/api/live", headers={"Authorization": f"Bearer {TOKEN}"})
    resp = conn.getresponse()
    seen: list[dict] = []

    def read() -> None:
        buf = b""
        while len(seen) < 2:
            chunk = resp.read1(65536)
            if not chunk:
                return
            buf += chunk
            while b"\n\n" in buf:
                msg, buf = buf.split(b"\n\n", 1)
                if msg.startswith(b"data: "):
                    seen.append(json.loads(msg[6:]))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(0.5)
    assert server.clients == 1
    assert server.metrics.registry.get_sample_value("emostream_console_clients") == 1
    store.record(_ev("emotion_change", t=2.0, **{"from": "happy", "to": "sad"}))
    reader.join(5)
    assert len(seen) == 2 and seen[1]["version"] > seen[0]["version"]
    assert seen[1]["events"][0]["text"] == "happy \u2192 sad"
    conn.close()


def test_loopback_without_token_refuses_foreign_host_headers():
    server = ConsoleServer(SnapshotStore(["cam"]), "127.0.0.1", 0)
    try:
        assert _get(server.port, "/api/state")[0] == 200
        assert _get(server.port, "/api/state", host=f"localhost:{server.port}")[0] == 200
        assert _get(server.port, "/api/state", host="attacker.example")[0] == 403  # DNS rebinding
    finally:
        server.close()


def test_port_in_use_is_one_clear_error(served):
    _store, server = served
    with pytest.raises(ConsoleError, match="cannot serve the console on 127.0.0.1"):
        ConsoleServer(SnapshotStore(["cam"]), "127.0.0.1", server.port, token=TOKEN)


def test_unknown_stream_frame_is_404(served):
    _store, server = served
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert _get(server.port, "/api/frame/7.jpg", auth)[0] == 404
    assert _get(server.port, "/api/frame/../x.jpg", auth)[0] == 404
    assert _get(server.port, "/static/../server.py", auth)[0] == 404


def test_store_counts_frames_a_live_reader_skipped():
    import numpy as np

    from emostream.contract import FER7_LABELS
    from emostream.edge.face_batch import FaceBatch
    from emostream.edge.track import StreamStep
    from emostream.streams import Frame

    store = SnapshotStore(["cam"])
    for index in (0, 1, 4, 5, 9):  # the reader replaced frames 2, 3, 6, 7, 8 before the loop took them
        frame = Frame(np.zeros((4, 4, 3), np.uint8), index, index * 33_000_000, "cam")
        store.step(StreamStep(FaceBatch.empty(FER7_LABELS, frame=frame), []))
    (stream,) = store.snapshot()["streams"]
    assert (stream["frames"], stream["dropped"], stream["seq"]) == (5, 5, 5)
    batch, seq = store.latest_batch(0)
    assert batch.frame.index == 9 and seq == 5
