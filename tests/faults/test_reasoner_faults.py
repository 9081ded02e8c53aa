"""Reasoner faults across real processes and real ZeroMQ sockets: nothing lost without a count.

* an unreachable reasoner: the run says so and does not wait for it at the end;
* replies the service could not deliver (a peer that never reads, a peer that left) are counted
  as such, never as replied;
* malformed keyframes (not a distribution, unknown labels) get a typed ``malformed`` error;
* malformed replies from a hostile reasoner are dropped and counted by the edge, which keeps working.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq

from emostream.edge.escalation import EscalationHook, RemoteEscalator
from emostream.edge.keyframes import make_keyframe
from emostream.engines.labels import CANONICAL_LABELS
from emostream.reasoner.schema import MAX_MESSAGE_BYTES, pack
from tests.reasoner.procs import REPO, RawClient, free_port, jpeg, keyframe_msg, reasoner_process

pytestmark = pytest.mark.faults

L = CANONICAL_LABELS
CROP = jpeg(np.full((48, 48, 3), 120, np.uint8))
SUMMARY_NUMBERS = re.compile(r"(\d+) (keyframes|answered|late|expired|errors|dropped|unreachable)\b")


def balanced(c: dict) -> bool:
    """Every request is in exactly one state (the identity in edge/escalation.py)."""
    dropped = c["dropped_queue"] + c["dropped_unreachable"] + c["dropped_stale"]
    return (
        c["submitted"] == c["sent"] + dropped + c["queued"]
        and c["sent"] == c["answered"] + c["errors"] + c["expired"] + c["abandoned"] + c["in_flight"]
    )


def keyframe(i: int, deadline_ms: int = 3000) -> dict:
    """A real keyframe built by the edge's own code (JPEG crop and context, a proper distribution)."""
    p = np.full(len(L), 0.3 / (len(L) - 1))
    p[L.index("happy")] = 0.7
    crop = np.full((64, 64, 3), 100 + i % 50, np.uint8)
    return make_keyframe("cam0", 1, i, i * 41_000_000, crop, crop, [0, 0, 64, 64], p, L, "heartbeat",
                         deadline_ms=deadline_ms)


def closed_endpoint() -> str:
    """A loopback port nobody listens on (connects are refused at once)."""
    return f"tcp://127.0.0.1:{free_port()}"


def stopped_stats(log: Path) -> dict:
    """The counters the reasoner logs as JSON when it stops."""
    text = log.read_text()
    assert "stopped " in text, text[-2000:]
    return json.loads(text.rsplit("stopped ", 1)[1].splitlines()[0])


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def wait_until_idle(pid: int, quiet_s: float = 0.6, limit_s: float = 30.0) -> None:
    """Wait until a process has used (almost) no CPU for ``quiet_s``: it has worked through its input."""
    end = time.monotonic() + limit_s
    last = cpu_ticks(pid)
    while time.monotonic() < end:
        time.sleep(quiet_s)
        now = cpu_ticks(pid)
        if now - last <= 2:
            return
        last = now


# --------------------------------------------------------------------------- unreachable reasoner


def test_unreachable_reasoner_close_does_not_wait_and_counts_every_keyframe_unreachable():
    """Nothing listens: keyframes wait until their deadline and are then counted unreachable while
    the run goes on; close() returns without sitting out its drain time, and the summary line says
    UNREACHABLE with the number of keyframes dropped for it."""
    endpoint = closed_endpoint()
    esc = RemoteEscalator(endpoint, L, connect_grace_s=0.2).start()
    lines: list[dict] = []
    hook = EscalationHook(esc, lines.append)
    for i in range(6):
        esc.submit(keyframe(i, deadline_ms=300))
    # Live accounting, before any close: each keyframe is dropped as unreachable once its deadline passes.
    end = time.monotonic() + 20
    while time.monotonic() < end and esc.counters()["dropped_unreachable"] < 6:
        time.sleep(0.05)
    live = esc.counters()
    assert live["dropped_unreachable"] == 6 and live["queued"] == 0 and live["sent"] == 0, live
    for i in range(6, 10):  # still queued (deadline 3 s) when the run ends
        esc.submit(keyframe(i))
    start = time.monotonic()
    summary = hook.close(drain_s=30.0)
    waited = time.monotonic() - start
    assert waited < 10.0, f"close() sat out the drain for a reasoner that was never there ({waited:.1f} s)"
    c = esc.counters()
    assert balanced(c), c
    assert c["submitted"] == 10 and c["dropped_unreachable"] == 10 and c["answered"] == 0, c
    assert "UNREACHABLE" in summary and f"never connected to {endpoint}" in summary, summary
    numbers = {k: int(v) for v, k in SUMMARY_NUMBERS.findall(summary)}
    assert numbers["keyframes"] == 10 and numbers["dropped"] == 10 and numbers["unreachable"] == 10, summary
    assert lines == []


def test_emostream_run_against_an_unreachable_reasoner_says_so(data_file, tmp_path):
    """The real CLI on a real clip, `--reasoner tcp://127.0.0.1:<closed port>`: every frame analysed,
    exit 0 (the analysis succeeded), and the summary says the reasoner was unreachable and how many
    keyframes were dropped for it."""
    video = str(data_file("video/WolfgangLanger_Pexels.mp4"))
    endpoint = closed_endpoint()
    out = tmp_path / "out.jsonl"
    r = subprocess.run(
        [sys.executable, "-m", "emostream", "run", video, "--max-frames", "96", "--reasoner", endpoint, "-o", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )
    assert r.returncode == 0, r.stderr
    summary = next((line for line in r.stderr.splitlines() if "keyframes" in line), r.stderr)
    assert "UNREACHABLE" in summary and endpoint in summary, summary
    numbers = {k: int(v) for v, k in SUMMARY_NUMBERS.findall(summary)}
    assert numbers["keyframes"] >= 1 and numbers["answered"] == 0, summary
    assert numbers["dropped"] == numbers["keyframes"] == numbers["unreachable"], summary
    frames = [json.loads(line) for line in out.read_text().splitlines()]
    assert [f["frame"] for f in frames if f["type"] == "frame"] == list(range(96))
    assert not [f for f in frames if f["type"] == "reasoning"]


# --------------------------------------------------------------------------- service send accounting


def test_replies_to_a_peer_that_never_reads_are_counted_dropped_full_not_replied(tmp_path):
    """A client floods requests and never reads: once its queue at the ROUTER is full, the replies
    are dropped -- counted ``dropped_full``, not ``replied`` -- and the service keeps serving others.

    Each request draws a ~360-byte error reply (an unknown field with a long name). Sent: enough
    for 1.5x the ROUTER's high-water mark (1000) plus the most loopback TCP can buffer (the kernel
    grows a send buffer up to tcp_wmem's maximum, 4 MB by default) -- at least 20,000."""
    wmem_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    n = max(20_000, int(1.5 * (wmem_max + 1000 * 360) / 360))
    with reasoner_process(tmp_path) as (proc, endpoint, log):
        ctx = zmq.Context()
        flood = ctx.socket(zmq.DEALER)
        flood.setsockopt(zmq.LINGER, 0)
        flood.setsockopt(zmq.RCVHWM, 1)  # never reads: keep what it can buffer small
        flood.setsockopt(zmq.RCVBUF, 4096)
        flood.connect(endpoint)
        try:
            for i in range(n):
                flood.send(pack({"v": 1, "type": "keyframe", "id": f"flood-{i:06d}-" + "x" * 51, "f" * 250: 1}))
            wait_until_idle(proc.pid)
            other = RawClient(endpoint)
            try:
                assert other.ask({"v": 1, "type": "ping", "id": "other"}, timeout_s=10)["type"] == "pong"
            finally:
                other.close()
        finally:
            flood.close(linger=0)
            ctx.term()
    stats = stopped_stats(log)
    print("flood:", stats)
    assert stats["dropped_full"] > 0, stats
    assert stats["replied"] < stats["received"] <= n + 1, stats
    assert stats["received"] == stats["replied"] + stats["dropped_full"] + stats["dropped_unroutable"] + stats[
        "pending"], stats


def test_replies_to_a_peer_that_left_are_counted_unroutable_not_replied(tmp_path):
    """A client sends keyframes and disconnects before the batch runs: their replies cannot be
    routed and are counted ``dropped_unroutable``; a client that stays is answered."""
    k = 5
    with reasoner_process(tmp_path, "--max-batch", "64", "--max-wait-ms", "1000") as (_, endpoint, log):
        leaver = RawClient(endpoint)
        try:
            for _ in range(k):
                leaver.send(keyframe_msg(CROP, deadline_ms=20_000))
            # A ping after them: its pong proves the service has read the keyframes (one pipe is FIFO).
            assert leaver.ask({"v": 1, "type": "ping", "id": "sync"}, timeout_s=10)["type"] == "pong"
        finally:
            leaver.close()
        stayer = RawClient(endpoint)
        try:
            reply = stayer.ask(keyframe_msg(CROP, deadline_ms=20_000), timeout_s=20)  # batched after them
            assert reply is not None and reply["type"] == "reply", reply
        finally:
            stayer.close()
    stats = stopped_stats(log)
    print("leaver:", stats)
    assert stats["dropped_unroutable"] == k, stats
    assert stats["replied"] == 2 and stats["received"] == k + 2, stats  # the pong and the stayer's reply


# --------------------------------------------------------------------------- malformed keyframes


def _bad_keyframes() -> list[tuple[str, dict]]:
    """(why, change) pairs, each a keyframe that breaks the contract while every field has the right type."""
    eighth = [1 / 8] * 8
    return [
        ("sums to 7", {"probs": [0.875] * 8}),
        ("sums to 0.5", {"probs": [0.0625] * 8}),
        ("sums to 0", {"probs": [0.0] * 8}),
        ("sums to 1.02", {"probs": [0.1275] * 8}),
        ("negative", {"probs": [-0.05, 0.65, 0.05, 0.1, 0.05, 0.05, 0.1, 0.05]}),
        ("NaN", {"probs": [math.nan, *eighth[1:]]}),
        ("+inf", {"probs": [math.inf, *eighth[1:]]}),
        ("-inf", {"probs": [-math.inf, *eighth[1:]]}),
        ("above 1", {"probs": [1.5, -0.5, 0, 0, 0, 0, 0, 0]}),
        ("alias label", {"labels": ["angry", *L[1:]]}),
        ("unknown label", {"labels": [*L[:7], "boredom"]}),
        ("capitalised label", {"labels": ["Neutral", *L[1:]]}),
        ("duplicated label", {"labels": [*L[:7], "neutral"]}),
        ("empty label", {"labels": ["", *L[1:]]}),
        ("one prob too few", {"probs": eighth[:7]}),
    ]


@pytest.mark.parametrize(("why", "change"), _bad_keyframes(), ids=[w for w, _ in _bad_keyframes()])
def test_schema_refuses_keyframes_that_are_not_distributions_over_canonical_labels(why, change):
    from emostream.reasoner.schema import ProtocolError, unpack, validate_keyframe

    with pytest.raises(ProtocolError) as err:
        validate_keyframe(unpack(pack(keyframe_msg(CROP, **change))))
    assert err.value.code == "malformed", why


def test_reasoner_process_answers_malformed_keyframes_with_typed_errors(tmp_path):
    """Each bad keyframe over a real socket gets ``{"type": "error", "code": "malformed"}`` naming the
    problem; within-tolerance rounding and a 7-class model's label set are still accepted."""
    with reasoner_process(tmp_path) as (proc, endpoint, log):
        client = RawClient(endpoint)
        try:
            for why, change in _bad_keyframes():
                msg = keyframe_msg(CROP, **change)
                reply = client.ask(msg)
                assert reply is not None and reply["type"] == "error", (why, reply)
                assert reply["code"] == "malformed" and reply["id"] == msg["id"], (why, reply)
            fine = [
                keyframe_msg(CROP, probs=[0.1249] * 8),  # sums to 0.9992: float32 softmax, rounded
                keyframe_msg(CROP, labels=list(L[:7]), probs=[0.1, 0.4, 0.1, 0.1, 0.1, 0.1, 0.1]),
            ]
            for msg in fine:
                reply = client.ask(msg)
                assert reply is not None and reply["type"] == "reply", reply
                assert set(reply["fused"]) == set(msg["labels"])
        finally:
            client.close()
        assert proc.poll() is None
    stats = stopped_stats(log)
    assert stats["errors"] == {"malformed": len(_bad_keyframes())}, stats


# --------------------------------------------------------------------------- malformed replies


#: Fields of a reply that an error reply does not have.
REPLY_ONLY = ["expression", "valence", "arousal", "aus", "rationale", "verified", "agreement", "samples", "fused",
              "engine", "engine_ms"]


def _good_fused() -> dict:
    return {label: (0.65 if label == "happy" else 0.05) for label in L}


def _bad_replies() -> list[tuple[str, dict, bool]]:
    """(why, script entry, carries the request's id) for the hostile reasoner."""
    fused = _good_fused()
    return [
        ("fused sums to 7", {"set": {"fused": dict.fromkeys(L, 0.875)}}, True),
        ("fused negative", {"set": {"fused": {**fused, "sad": -0.05, "happy": 0.75}}}, True),
        ("fused NaN", {"set": {"fused": {**fused, "sad": math.nan}}}, True),
        ("fused inf", {"set": {"fused": {**fused, "sad": math.inf}}}, True),
        ("fused unknown label", {"set": {"fused": {**{k: v for k, v in fused.items() if k != "sad"}, "joy": 0.05}}},
         True),
        ("fused missing a label", {"set": {"fused": {k: v for k, v in fused.items() if k != "neutral"}}}, True),
        ("fused not a map", {"set": {"fused": [0.125] * 8}}, True),
        ("valence 1.5", {"set": {"valence": 1.5}}, True),
        ("arousal -2", {"set": {"arousal": -2}}, True),
        ("valence NaN", {"set": {"valence": math.nan}}, True),
        ("valence a string", {"set": {"valence": "high"}}, True),
        ("unknown AU", {"set": {"aus": [{"au": "AU99", "intensity": 0.5}]}}, True),
        ("AU intensity 1.5", {"set": {"aus": [{"au": "AU6", "intensity": 1.5}]}}, True),
        ("AU intensity negative", {"set": {"aus": [{"au": "AU6", "intensity": -0.1}]}}, True),
        ("AU intensity NaN", {"set": {"aus": [{"au": "AU6", "intensity": math.nan}]}}, True),
        ("AU twice", {"set": {"aus": [{"au": "AU6", "intensity": 0.5}, {"au": "AU6", "intensity": 0.4}]}}, True),
        ("AU as a list", {"set": {"aus": [["AU6", 0.5]]}}, True),
        ("expression unknown", {"set": {"expression": "bored"}}, True),
        ("expression a number", {"set": {"expression": 3}}, True),
        ("rationale 10k", {"set": {"rationale": "x" * 10_000}}, True),
        ("verified a string", {"set": {"verified": "yes"}}, True),
        ("agreement 2", {"set": {"agreement": 2.0}}, True),
        ("samples bool", {"set": {"samples": True}}, True),
        ("unknown field", {"set": {"mood": "good"}}, True),
        ("missing expression", {"delete": ["expression"]}, True),
        ("wrong version", {"set": {"v": 2}}, True),
        ("wrong type", {"set": {"type": "frame"}}, True),
        ("unlisted error code", {"delete": REPLY_ONLY, "set": {"type": "error", "code": "kaboom", "message": "x"}},
         True),
        ("error message 10k",
         {"delete": REPLY_ONLY, "set": {"type": "error", "code": "engine", "message": "x" * 10_000}}, True),
        ("a pong", {"delete": [k for k in REPLY_ONLY if k != "engine"], "set": {"type": "pong"}}, True),
        ("someone else's id", {"set": {"id": "0" * 32}}, False),
        ("id a list", {"set": {"id": [1, 2]}}, False),
        ("garbage bytes", {"raw": b"\xc1\xff\x00garbage"}, False),
        ("msgpack list", {"raw": msgpack.packb([1, 2, 3])}, False),
        ("too large", {"raw": msgpack.packb({"v": 1, "pad": b"\0" * (MAX_MESSAGE_BYTES + 10)})}, False),
    ]


def test_edge_drops_and_counts_malformed_replies_from_a_hostile_reasoner(tmp_path):
    """A real reasoner process that answers with broken replies (scripted, interleaved with valid
    ones): the edge writes records only for the valid ones, counts every broken one, keeps its
    worker alive and its accounting balanced."""
    bad = _bad_replies()
    script: list[dict] = []
    for _, entry, _ in bad:
        script += [entry, {}]  # each broken reply followed by a valid one
    script_path = tmp_path / "script.msgpack"
    script_path.write_bytes(msgpack.packb(script, use_bin_type=True))
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    log = tmp_path / "hostile.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tests.faults.hostile_reasoner", endpoint, str(script_path)],
                                cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    esc = None
    try:
        end = time.monotonic() + 60
        while "listening" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < end, log.read_text()
            time.sleep(0.05)
        esc = RemoteEscalator(endpoint, L, queue_size=len(script) + 1).start()
        end = time.monotonic() + 20
        while not esc.connected and time.monotonic() < end:
            time.sleep(0.02)
        assert esc.connected
        for i in range(len(script)):
            esc.submit(keyframe(i, deadline_ms=5000))  # id-less broken replies leave theirs to expire
        records: list[dict] = []
        end = time.monotonic() + 60
        while time.monotonic() < end:
            records += esc.poll()
            c = esc.counters()
            if c["queued"] == 0 and c["in_flight"] == 0 and c["sent"] == len(script):
                break
            time.sleep(0.05)
        esc.close(drain_s=0)
        records += esc.poll()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    c = esc.counters()
    print("hostile:", c, esc.last_error)
    with_id = sum(1 for _, _, has_id in bad if has_id)
    assert esc._thread.is_alive() is False and "worker stopped" not in str(esc.last_error)
    assert c["answered"] == len(records) == len(bad), (c, len(records))
    assert c["malformed_replies"] == len(bad), c
    assert c["errors"] == with_id and c["expired"] == len(bad) - with_id, c
    assert balanced(c) and c["abandoned"] == 0, c
    for r in records:  # every record that reached the output is a valid one
        assert r["expression"] in L and -1 <= r["valence"] <= 1 and -1 <= r["arousal"] <= 1
        assert set(r["fused"]) == set(L) and abs(sum(r["fused"].values()) - 1) <= 1e-2
        assert all(0 <= a["intensity"] <= 1 for a in r["aus"])
