"""The edge's escalation client against real reasoner processes: never blocks, never loses count."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from emostream.edge.escalation import EscalationError, open_escalator
from emostream.edge.keyframes import KeyframePolicy, KeyframeState, PolicyConfig, make_keyframe
from emostream.engines.labels import CANONICAL_LABELS
from tests.reasoner.procs import REPO, FakeOpenAI, face_crop, reasoner_process

L = CANONICAL_LABELS
FPS = 24.0
#: submit() is a deque append under a lock: no I/O, no waiting on the reasoner. What it can still
#: wait for is the GIL (an inproc worker holds it for up to the 5 ms switch interval) and the OS on
#: this shared, overloaded 2-core box (a niced test process can be descheduled for hundreds of ms at
#: any line). So the check is on the 90th percentile, far below one frame period (42 ms at 24 fps);
#: a submit that waited on the reasoner (a socket, a reply, a 0.6 s VLM call) would fail it at once.
SUBMIT_P90_S = 0.01
RECORD_KEYS = {
    "type",
    "stream",
    "frame",
    "track",
    "reason",
    "expression",
    "valence",
    "arousal",
    "aus",
    "rationale",
    "verified",
    "engine",
    "latency_ms",
    "agreement",
    "fused",
}


def balanced(c: dict) -> bool:
    """Every request is in exactly one state (see edge/escalation.py)."""
    dropped = c["dropped_queue"] + c["dropped_unreachable"] + c["dropped_stale"]
    return (
        c["submitted"] == c["sent"] + dropped + c["queued"]
        and c["sent"] == c["answered"] + c["errors"] + c["expired"] + c["abandoned"] + c["in_flight"]
    )


@pytest.fixture(scope="module")
def face(data_file):
    return face_crop(data_file("multiface/single_face.jpg"))


def probs_at(i: int) -> np.ndarray:
    """A face drifting from sad to happy through an uncertain middle (like the Pexels video)."""
    x = min(1.0, i / 60)
    p = np.full(len(L), 0.02)
    p[L.index("sad")] += 0.84 * (1 - x)
    p[L.index("happy")] += 0.84 * x
    return p / p.sum()


def drive(esc, face, n_frames: int, tracks: int = 3, on_frame=None):
    """The edge loop at FPS: policy -> keyframe -> submit; returns (records, submit times s, wall s)."""
    crop, rgb = face
    policy = KeyframePolicy(PolicyConfig(track_interval_s=0.25, rate=12, burst=12, heartbeat_s=1.0))
    states = {track: KeyframeState() for track in range(tracks)}
    records, times = [], []
    start = time.monotonic()
    for i in range(n_frames):
        t = i / FPS
        if on_frame:
            on_frame(i)
        for track in range(tracks):
            p = probs_at(i + 10 * track)
            reason = policy.decide(states[track], t, p)
            if reason:
                kf = make_keyframe(
                    "cam0", track, i, int(t * 1e9), crop, rgb, [0, 0, 96, 96], p, L, reason, deadline_ms=800
                )
                t0 = time.perf_counter()
                esc.submit(kf)
                times.append(time.perf_counter() - t0)
        records += esc.poll()
        time.sleep(max(0.0, start + (i + 1) / FPS - time.monotonic()))
    return records, times, time.monotonic() - start


def fast_submits(times: list[float]) -> bool:
    return float(np.percentile(times, 90)) < SUBMIT_P90_S


def test_inproc_knowledge_escalator(face):
    esc = open_escalator("inproc", keys_dir=None, insecure=False, labels=L)
    records, times, wall = drive(esc, face, 48)
    esc.close(drain_s=1.0)
    records += esc.poll()
    c = esc.counters()
    assert records and all(set(r) == RECORD_KEYS for r in records)
    assert {r["engine"] for r in records} == {"knowledge"}
    assert c["answered"] == len(records) and balanced(c) and fast_submits(times), (c, sorted(times)[-5:])
    first_sad = [r for r in records if r["frame"] < 10 and r["track"] == 0]
    assert first_sad and first_sad[0]["expression"] == "sad" and first_sad[0]["valence"] < 0
    assert records[-1]["expression"] == "happy"


def test_open_escalator_specs():
    assert open_escalator("none", keys_dir=None, insecure=False, labels=L) is None
    with pytest.raises(EscalationError, match="none, inproc or tcp"):
        open_escalator("udp://x", keys_dir=None, insecure=False, labels=L)
    with pytest.raises(EscalationError, match="refusing unencrypted"):
        open_escalator("tcp://10.1.2.3:5555", keys_dir=None, insecure=False, labels=L)
    with pytest.raises(EscalationError, match="keys directory not found"):
        open_escalator("tcp://10.1.2.3:5555", keys_dir="/nonexistent", insecure=False, labels=L)
    esc = open_escalator("tcp://10.1.2.3:5555", keys_dir=None, insecure=True, labels=L)
    start = time.monotonic()
    esc.close()
    assert time.monotonic() - start < 1.0


def test_reasoner_killed_mid_stream_edge_keeps_its_rate_and_counts(tmp_path, face):
    """kill -9 the reasoner at frame 30, start a new one at frame 70: the loop never slows down,
    nothing is lost without a count, and the client reconnects by itself."""
    n = 110
    with reasoner_process(tmp_path) as (proc, endpoint, _log):
        esc = open_escalator(endpoint, keys_dir=None, insecure=False, labels=L)
        state = {}

        def on_frame(i):
            if i == 30:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
                state["at_kill"] = esc.counters()
            if i == 70:  # same port, new process: started without waiting (the loop must not stall)
                log = open(tmp_path / "second.log", "w")  # noqa: SIM115 - closed below
                state["log"] = log
                state["second"] = subprocess.Popen(
                    [sys.executable, "-m", "emostream.reasoner", "reasoner", "--bind", endpoint],
                    cwd=REPO,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )

        try:
            records, times, wall = drive(esc, face, n, on_frame=on_frame)
            # the new reasoner takes ~1 s to start; keep submitting (at the same cadence) until it answers
            end = time.monotonic() + 15
            extra = 0
            while time.monotonic() < end and not [r for r in records if r["frame"] >= 70]:
                more, t, _ = drive(esc, face, 12)
                records += more
                times += t
                extra += 12
            esc.close(drain_s=1.0)
            records += esc.poll()
        finally:
            if "second" in state:
                state["second"].kill()
                state["second"].wait(timeout=5)
                state["log"].close()
    c = esc.counters()
    print("kill-9 run:", c, f"wall {wall:.2f} s, submit max {max(times) * 1000:.2f} ms")
    assert wall < n / FPS * 1.15 + 0.3, f"edge loop slowed down: {wall:.2f} s for {n} frames"
    assert fast_submits(times), f"submit p90 {np.percentile(times, 90) * 1000:.1f} ms"
    assert state["at_kill"]["answered"] > 0
    assert c["disconnects"] >= 1 and c["connects"] >= 2  # reconnected to the new process by itself
    lost = c["dropped_unreachable"] + c["expired"] + c["dropped_stale"]
    assert lost > 0, c  # the dead reasoner's share is counted, not silently gone
    assert any(r["frame"] >= 70 for r in records)  # answers again after the restart
    assert balanced(c), c
    assert c["answered"] + c["late"] == len(records)


def test_slow_reasoner_deadlines_expire_and_late_replies_are_delivered(tmp_path, face):
    slow = FakeOpenAI(mode="slow", delay_s=0.6)
    try:
        with reasoner_process(
            tmp_path, "--vlm-url", slow.url, "--max-batch", "4", "--max-wait-ms", "5", "--resample", "1"
        ) as (_, endpoint, log):
            esc = open_escalator(endpoint, keys_dir=None, insecure=False, labels=L)
            crop, rgb = face
            times = []
            for i in range(20):  # 20 keyframes at 10/s, deadline 400 ms, the VLM needs 600 ms each batch
                kf = make_keyframe(
                    "cam0", i % 2, i, i, crop, rgb, [0, 0, 9, 9], probs_at(60), L, "heartbeat", deadline_ms=400
                )
                t0 = time.perf_counter()
                esc.submit(kf)
                times.append(time.perf_counter() - t0)
                time.sleep(0.1)
            time.sleep(1.5)
            esc.close(drain_s=0.5)
            records = esc.poll()
        stats = log.read_text()
    finally:
        slow.close()
    c = esc.counters()
    print("slow run:", c, f"submit max {max(times) * 1000:.2f} ms")
    assert fast_submits(times) and balanced(c)
    assert c["expired"] >= 10 and c["answered"] == 0
    assert c["late"] >= 1 and all(r.get("late") for r in records) and len(records) == c["late"]
    assert '"expired"' in stats  # the service skipped work whose deadline had passed
    assert slow.problems == []


def test_edge_escalation_path_imports_no_torch_or_transformers():
    code = (
        "import sys, numpy as np\n"
        "from emostream.edge.escalation import open_escalator\n"
        "from emostream.edge.keyframes import KeyframePolicy, make_keyframe\n"
        "from emostream.engines.labels import CANONICAL_LABELS as L\n"
        "esc = open_escalator('inproc', keys_dir=None, insecure=False, labels=L)\n"
        "p = np.full(8, 1 / 8)\n"
        "esc.submit(make_keyframe('c', 1, 0, 0, np.zeros((8, 8), np.uint8), None, [0, 0, 8, 8], p, L, 'x'))\n"
        "esc.close(drain_s=2)\n"
        "assert esc.counters()['answered'] == 1, esc.counters()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'llguidance')))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "emostream", "run", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_emostream_run_merges_reasoning_records(tmp_path, data_file):
    """`emostream run` on a real video: inproc by default, a remote reasoner by tcp://, none disables."""
    video = str(data_file("video/single_face.mp4"))
    out = tmp_path / "inproc.jsonl"
    r = run_cli(video, "-o", str(out))
    assert r.returncode == 0, r.stderr
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    reasoning = [x for x in recs if x["type"] == "reasoning"]
    frames = [x for x in recs if x["type"] == "frame"]
    assert len(frames) == 72 and reasoning and reasoning[0]["reason"] == "new_track"
    assert all(set(x) == RECORD_KEYS and x["engine"] == "knowledge" for x in reasoning)
    tracks = {f["track"] for x in frames for f in x["faces"]}
    assert {x["track"] for x in reasoning} <= tracks
    assert "reasoner inproc:knowledge" in r.stderr and "answered" in r.stderr

    with reasoner_process(tmp_path) as (_, endpoint, _log):
        out = tmp_path / "remote.jsonl"
        r = run_cli(video, "-o", str(out), "--reasoner", endpoint, "--max-frames", "30", "-q")
        assert r.returncode == 0, r.stderr
    remote = [json.loads(line) for line in out.read_text().splitlines()]
    assert [x["frame"] for x in remote if x["type"] == "reasoning"] == [0]

    out = tmp_path / "none.jsonl"
    r = run_cli(video, "-o", str(out), "--reasoner", "none", "--max-frames", "5", "-q")
    assert r.returncode == 0 and "reasoning" not in out.read_text()
    r = run_cli(video, "--reasoner", "udp://x", "-q")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("emostream: error: --reasoner must be")


def test_reasoner_killed_mid_video_the_edge_finishes_every_frame(tmp_path, data_file):
    """A whole real video through `emostream run --reasoner tcp://…`, the reasoner killed -9 a few
    seconds in: every frame is still analysed and written, the run exits 0, and the keyframes that
    could no longer be answered are counted, not lost silently."""
    import re

    video = str(data_file("video/WolfgangLanger_Pexels.mp4"))
    out = tmp_path / "killed.jsonl"
    with reasoner_process(tmp_path) as (reasoner, endpoint, _log):
        edge = subprocess.Popen(
            [sys.executable, "-m", "emostream", "run", video, "-o", str(out), "--reasoner", endpoint],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and edge.poll() is None:
            if out.exists() and out.read_text().count('"type":"frame"') >= 80:
                break
            time.sleep(0.02)
        reasoner.send_signal(signal.SIGKILL)
        reasoner.wait(timeout=10)
        _, stderr = edge.communicate(timeout=120)
    assert edge.returncode == 0, stderr
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    frames = [r for r in recs if r["type"] == "frame"]
    assert [r["frame"] for r in frames] == list(range(472))
    summary = next((line for line in stderr.splitlines() if "keyframes" in line), stderr)
    numbers = dict((k, int(v)) for v, k in re.findall(r"(\d+) (keyframes|answered|late|expired|errors|dropped)",
                                                          summary))
    answered = sum(r["type"] == "reasoning" for r in recs)
    assert numbers["answered"] == answered >= 1, summary
    # Keyframes after the kill were not answered, and each one is accounted for in the summary.
    assert numbers["keyframes"] > numbers["answered"], summary
