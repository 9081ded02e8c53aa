"""The reasoner as a real process on 127.0.0.1: answers, bad messages, CURVE, refusals."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from emostream.edge.escalation import RemoteEscalator
from emostream.edge.keyframes import make_keyframe
from emostream.engines.labels import CANONICAL_LABELS
from emostream.reasoner.schema import HARD_MESSAGE_BYTES, MAX_MESSAGE_BYTES, pack

from .procs import REPO, RawClient, face_crop, free_port, jpeg, keyframe_msg, reasoner_process

REPLY_KEYS = {
    "v",
    "type",
    "id",
    "expression",
    "valence",
    "arousal",
    "aus",
    "rationale",
    "verified",
    "agreement",
    "samples",
    "fused",
    "engine",
    "engine_ms",
    "service_ms",
}


def cli(*args: str, timeout: float = 60, shell: str = "emostream.reasoner") -> subprocess.CompletedProcess:
    """Run the commands through ``python -m reasoner`` (fast) or the full ``emostream`` shell."""
    return subprocess.run(
        [sys.executable, "-m", shell, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def crop_jpeg(data_file):
    crop, _ = face_crop(data_file("multiface/single_face.jpg"))
    return jpeg(crop)


def test_knowledge_service_answers_and_keeps_serving_through_bad_messages(tmp_path, crop_jpeg):
    with reasoner_process(tmp_path) as (proc, endpoint, log):
        client = RawClient(endpoint)
        try:
            pong = client.ask({"v": 1, "type": "ping", "id": "p1"})
            assert pong == {"v": 1, "type": "pong", "id": "p1", "engine": "knowledge"}

            msg = keyframe_msg(crop_jpeg)
            reply = client.ask(msg)
            assert reply["type"] == "reply" and reply["id"] == msg["id"]
            assert set(reply) == REPLY_KEYS
            assert reply["expression"] == "happy" and reply["engine"] == "knowledge"
            assert reply["verified"] is True and reply["valence"] > 0
            assert (
                abs(sum(reply["fused"].values()) - 1) < 1e-3 and max(reply["fused"], key=reply["fused"].get) == "happy"
            )

            bad = [
                (b"\xc1garbage", "malformed"),
                (pack({**keyframe_msg(crop_jpeg), "v": 99}), "bad_version"),
                (pack({**keyframe_msg(crop_jpeg), "colour": "red"}), "unknown_field"),
                (pack({**keyframe_msg(crop_jpeg), "probs": "high"}), "malformed"),
                (pack({"v": 1, "type": "keyframe"}), "malformed"),
                (pack([1, 2, 3]), "malformed"),
                (b"\x00" * (MAX_MESSAGE_BYTES + 1), "too_large"),
                (pack(keyframe_msg(crop_jpeg, deadline_ms=1)), "expired"),  # waits 20 ms for a batch
            ]
            for payload, code in bad:
                r = client.ask(payload)
                assert r is not None and r["type"] == "error" and r["code"] == code, (code, r)
            # a two-frame message is refused too
            client.sock.send_multipart([b"a", b"b"])
            assert client.recv()["code"] == "malformed"
            # still serving, and the right answer for a different face
            sad = keyframe_msg(crop_jpeg, probs=[0.05, 0.0, 0.8, 0.0, 0.05, 0.05, 0.05, 0.0])
            assert client.ask(sad)["expression"] == "sad"
            # beyond the transport hard cap zmq drops the connection (no reply); the service survives
            client.send(b"\x00" * (HARD_MESSAGE_BYTES + 1))
            assert client.recv(timeout_s=1.0) is None
        finally:
            client.close()
        client = RawClient(endpoint)  # a fresh connection still gets served
        try:
            assert client.ask({"v": 1, "type": "ping", "id": "p2"})["type"] == "pong"
        finally:
            client.close()
        assert proc.poll() is None
    text = log.read_text()
    assert '"too_large": 1' in text and '"expired": 1' in text and '"bad_version": 1' in text


def test_batches_form_under_load(tmp_path, crop_jpeg):
    """Many keyframes at once are answered in fewer engine calls than keyframes."""
    with reasoner_process(tmp_path, "--max-batch", "8", "--max-wait-ms", "50") as (_, endpoint, log):
        client = RawClient(endpoint)
        try:
            ids = set()
            for _ in range(24):
                m = keyframe_msg(crop_jpeg)
                ids.add(m["id"])
                client.send(m)
            got = {client.recv()["id"] for _ in range(24)}
            assert got == ids
        finally:
            client.close()
    stats = log.read_text().split("stopped ", 1)[1]
    import json

    batches = json.loads(stats)["batches"]
    assert batches < 24, stats


def test_curve_allow_list_admits_known_and_refuses_unknown_keys(tmp_path, data_file):
    keys, other = tmp_path / "keys", tmp_path / "other"
    r = cli("keys", str(keys))
    assert r.returncode == 0, r.stderr
    for name in ("server.key", "server.key_secret", "client.key", "client.key_secret", "authorized/client.key"):
        assert (keys / name).is_file(), name
    assert (keys / "client.key_secret").stat().st_mode & 0o077 == 0
    assert cli("keys", str(other)).returncode == 0
    # a stranger: its own client pair, but it knows our server's public key
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    shutil.copy(other / "client.key_secret", stranger / "client.key_secret")
    shutil.copy(keys / "server.key", stranger / "server.key")

    crop, rgb = face_crop(data_file("multiface/single_face.jpg"))
    probs = np.array([0.05, 0.6, 0.05, 0.1, 0.05, 0.05, 0.05, 0.05])
    with reasoner_process(tmp_path, "--keys", str(keys)) as (_, endpoint, log):
        assert "CURVE" in log.read_text()
        results = {}
        for name, keydir in (("friend", keys), ("stranger", stranger)):
            esc = RemoteEscalator(endpoint, CANONICAL_LABELS, keys_dir=str(keydir)).start()
            records = []
            end = time.monotonic() + 4.0
            i = 0
            while time.monotonic() < end and not records:
                esc.submit(
                    make_keyframe(
                        "cam",
                        1,
                        i,
                        i,
                        crop,
                        rgb,
                        [0, 0, 10, 10],
                        probs,
                        CANONICAL_LABELS,
                        "heartbeat",
                        deadline_ms=1000,
                    )
                )
                i += 1
                time.sleep(0.1)
                records += esc.poll()
            esc.close(drain_s=0.2)
            results[name] = (records, esc.counters(), esc.last_error)
        # plain (non-CURVE) client: never gets through the handshake
        plain = RawClient(endpoint)
        try:
            assert plain.ask({"v": 1, "type": "ping", "id": "x"}, timeout_s=1.0) is None
        finally:
            plain.close()
    records, counts, _ = results["friend"]
    assert records and records[0]["expression"] == "happy" and counts["connects"] >= 1
    records, counts, error = results["stranger"]
    assert records == [] and counts["answered"] == 0
    assert counts["auth_failures"] >= 1 and "CURVE" in error
    # Never admitted: its keyframes waited for a handshake that never came, and are counted as dropped.
    assert counts["sent"] == 0 and counts["dropped_unreachable"] + counts["dropped_stale"] >= 1


def test_cli_refusals_are_one_line(tmp_path):
    port = free_port()
    r = cli("reasoner", "--bind", f"tcp://0.0.0.0:{port}", shell="emostream")  # the real `emostream` shell
    assert r.returncode == 2 and r.stderr.startswith("emostream: error: refusing unencrypted")
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("reasoner", "--bind", "http://127.0.0.1:1")
    assert r.returncode == 2 and "bad ZeroMQ endpoint" in r.stderr
    r = cli("reasoner", "--bind", f"tcp://127.0.0.1:{port}", "--keys", str(tmp_path / "nokeys"))
    assert r.returncode == 2 and "key file not found" in r.stderr
    r = cli("reasoner", "--bind", f"tcp://127.0.0.1:{port}", "--vlm", str(tmp_path))
    assert r.returncode == 2 and "config.json" in r.stderr
    r = cli("reasoner", "--bind", f"tcp://127.0.0.1:{port}", "--gate", str(tmp_path / "g.json"))
    assert r.returncode == 2 and "gate file not found" in r.stderr
    (tmp_path / "file").write_text("x")
    r = cli("keys", str(tmp_path / "file"))
    assert r.returncode == 2 and "cannot write keys" in r.stderr
    with reasoner_process(tmp_path) as (_, endpoint, _log):
        r = cli("reasoner", "--bind", endpoint)  # port taken
        assert r.returncode == 2 and "cannot bind" in r.stderr and "Traceback" not in r.stderr


def test_engine_crash_becomes_an_error_reply_and_the_service_survives(crop_jpeg):
    """In-process serve() with an engine that raises: error replies, then normal service again."""
    import threading

    from emostream.reasoner.core import Reasoner
    from emostream.reasoner.knowledge import KnowledgeEngine
    from emostream.reasoner.service import ServiceConfig, serve

    class Flaky(KnowledgeEngine):
        calls = 0

        def answer(self, labels, probs, va=None):
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise RuntimeError("simulated engine bug")
            return super().answer(labels, probs, va)

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    stop = threading.Event()
    log = open(os.devnull, "w")  # noqa: SIM115 - closed below
    thread = threading.Thread(target=serve, args=(Reasoner(engine=Flaky()), ServiceConfig(endpoint), stop, log))
    thread.start()
    client = RawClient(endpoint)
    try:
        first = client.ask(keyframe_msg(crop_jpeg))
        second = client.ask(keyframe_msg(crop_jpeg))
    finally:
        client.close()
        stop.set()
        thread.join(timeout=5)
        log.close()
    assert first["type"] == "error" and first["code"] == "internal" and "simulated" in first["message"]
    assert second["type"] == "reply" and second["expression"] == "happy"
    assert not thread.is_alive()
