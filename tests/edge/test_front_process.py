"""``--front process``: each stream's front half in a real child process (spawned Python, GStreamer, BlazeFace),
frames back through real shared memory. What must hold: the same records as the thread front, clear errors,
nothing left behind (processes, shared memory), and an orderly stop when Ctrl-C hits the whole process group."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from emostream.edge.faces import FaceDetector
from emostream.edge.front_process import FrontSpec, ProcessSource, open_process_sources
from emostream.edge.multistream import run_streams
from emostream.edge.pipeline import AnalysedFrame, FrameAnalyzer
from emostream.engines.emotion import DEFAULT_MODEL, load_engine
from emostream.streams import SourceError, open_source

PATIENCE_S = 180.0


@pytest.fixture(scope="module")
def analyzer():
    a = FrameAnalyzer(FaceDetector(), load_engine("onnxruntime", DEFAULT_MODEL), detect_interval=5)
    yield a
    a.close()


def _meaning(records: list[dict]) -> dict[str, list[tuple]]:
    """What a user reads from each stream's records, in order (box to 1 px, label, track, smoothed label;
    events by kind)."""
    out: dict[str, list[tuple]] = {}
    for r in records:
        if r["type"] == "frame":
            what = (r["frame"], tuple((tuple(round(v) for v in f["box"]), f["label"], f["track"],
                                       f["smoothed_label"]) for f in r["faces"]))
        else:
            what = (r["kind"], r.get("track"), r.get("reason"))
        out.setdefault(r["stream"], []).append(what)
    return out


def test_records_are_those_of_the_thread_front(data_file, analyzer):
    clip = str(data_file("video/WolfgangLanger_Pexels.mp4"))
    spec = FrontSpec.of(analyzer)
    assert (spec.interval, spec.detector, spec.crop_size) == (5, "full", 48)
    threaded: list[dict] = []
    run_streams(analyzer, [open_source(clip, stream="a"), open_source(clip, stream="b")], threaded.append,
                max_frames=120)
    processed: list[dict] = []
    sources = open_process_sources([(clip, "a"), (clip, "b")], spec)
    results = run_streams(analyzer, sources, processed.append, max_frames=120)
    assert [r.frames for r in results] == [120, 120]
    assert _meaning(processed) == _meaning(threaded)
    assert sum(len(r["faces"]) for r in processed if r["type"] == "frame") >= 230  # faces were found
    cpu = results[0].thread_cpu_s
    assert cpu["front_processes"] > 0.1 and cpu["front"] < cpu["front_processes"]  # the children did the work
    for s in sources:
        assert not s._proc.is_alive() and s._shm is None  # closed by run_streams: nothing left behind


def test_frames_come_back_as_decoded_and_the_ring_is_released(data_file, analyzer):
    clip = str(data_file("video/WolfgangLanger_Pexels.mp4"))
    with open_source(clip) as src:
        direct = [src.read() for _ in range(6)]
    with ProcessSource(clip, FrontSpec.of(analyzer), stream="p") as ps:
        got = [ps.read() for _ in range(6)]
        name = ps._shm.name
        assert Path("/dev/shm", name.lstrip("/")).exists()
    assert not Path("/dev/shm", name.lstrip("/")).exists(), "shared memory left behind"
    arrivals = [b.arrival for b in got]  # the child's clock is this one (latency counts the child's work)
    assert arrivals == sorted(arrivals) and time.perf_counter() - 60 < arrivals[0] < time.perf_counter()
    for a, b in zip(direct, got, strict=True):
        assert isinstance(b, AnalysedFrame) and b.frame.planar and b.frame.stream == "p"
        assert (b.frame.index, b.frame.pts_ns, b.frame.shape) == (a.index, a.pts_ns, a.shape)
        assert np.array_equal(b.frame.image, a.image)  # same planes, same colour standard
        assert b.crops.shape == (len(b.faces), 48, 48)
    assert sum(len(b.faces) for b in got) == 6
    assert len({id(b.frame.i420) for b in got}) == 6  # each frame owns its pixels, not a slot


def test_without_shared_memory_frames_come_pickled_and_the_records_are_the_same(data_file, analyzer):
    """``slots=0`` takes the path a full /dev/shm takes (a container's 64 MiB): no ring, frames through the pipe."""
    clip = str(data_file("video/single_face.mp4"))
    spec = FrontSpec.of(analyzer)
    notes: list[str] = []
    with_ring: list[dict] = []
    run_streams(analyzer, [ProcessSource(clip, spec, stream="v")], with_ring.append)
    piped: list[dict] = []
    source = ProcessSource(clip, spec, stream="v", slots=0, notify=notes.append)
    [result] = run_streams(analyzer, [source], piped.append)
    assert result.frames == 72 and _meaning(piped) == _meaning(with_ring)
    assert source._shm is None and len(notes) == 1 and "frames come through the pipe" in notes[0]


def test_a_still_image_is_pickled_whole(data_file, analyzer):
    photo = str(data_file("multiface/multi_face.jpg"))
    with ProcessSource(photo, FrontSpec.of(analyzer), stream="photo") as ps:
        item = ps.read()
        assert ps.read() is None
    assert not item.frame.planar and len(item.faces) == 5 and item.crops.shape == (5, 48, 48)


def test_a_wrong_uri_is_one_clear_error_and_no_process(tmp_path, analyzer):
    before = _children()
    with pytest.raises(SourceError) as err:
        ProcessSource(str(tmp_path / "missing.mp4"), FrontSpec.of(analyzer))
    assert "missing.mp4" in str(err.value) and "\n" not in str(err.value)
    time.sleep(0.2)
    assert _children() == before


def test_a_front_process_that_dies_ends_its_stream_with_a_source_error(data_file, analyzer):
    clip = str(data_file("video/WolfgangLanger_Pexels.mp4"))
    other = str(data_file("video/single_face.mp4"))
    doomed = ProcessSource(clip, FrontSpec.of(analyzer), stream="doomed")
    fine = open_source(other, stream="fine")
    records: list[dict] = []

    def kill_after_ten(step) -> None:
        if step.batch.frame.stream == "doomed" and step.batch.frame.index == 10:
            os.kill(doomed._proc.pid, signal.SIGKILL)

    results = run_streams(analyzer, [doomed, fine], records.append, on_step=kill_after_ten)
    by = {r.stream: r for r in results}
    assert "front process ended unexpectedly" in by["doomed"].error and "(killed by SIGKILL)" in by["doomed"].error
    assert 10 < by["doomed"].frames < 472 and by["fine"].frames == 72 and by["fine"].error is None
    ends = {e["stream"]: e["reason"] for e in records if e.get("kind") == "track_end"}
    assert ends == {"doomed": "source_error", "fine": "end_of_stream"}


def _children() -> set[int]:
    """This process's live front processes (spawned children; multiprocessing's resource tracker, which
    lives as long as the test process, is not one)."""
    me, out = os.getpid(), set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if int(fields[1]) == me and fields[0] != "Z" and b"spawn_main" in cmd:
                out.add(int(d.name))
    return out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_cli_front_process_and_a_signal_to_the_process_group(tmp_path, data_file, sig):
    """A terminal's Ctrl-C, or systemd's stop, reaches every process of the group: the children ignore it, the
    parent stops in order (every frame taken is written, tracks end ``interrupted``), and no child outlives it."""
    clip = str(data_file("video/WolfgangLanger_Pexels.mp4"))
    out = tmp_path / "out.jsonl"
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "emostream", "run", clip, "test://", "--stream-id", "file",
                                 "--stream-id", "live", "--realtime", "-o", str(out),
                                 "--reasoner", "none"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + PATIENCE_S
        while out.read_bytes().count(b'"stream":"file"') < 30 if out.exists() else True:
            assert proc.poll() is None, err_path.read_text()
            assert time.monotonic() < deadline, err_path.read_text()
            time.sleep(0.02)
        kids = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid), "-f", "spawn_main"],
                                               capture_output=True, text=True).stdout.split()]
        assert len(kids) == 2  # one front process per stream
        os.killpg(proc.pid, sig)
        rc = proc.wait(timeout=PATIENCE_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stderr = err_path.read_text()
    assert rc == 128 + sig and "Traceback" not in stderr, stderr
    assert "front: a process per stream (2)" in stderr  # the default for two streams on 2 cores
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    for sid in ("file", "live"):
        frames = [r["frame"] for r in recs if r["type"] == "frame" and r["stream"] == sid]
        assert frames == sorted(set(frames)) and frames, sid
    file_frames = [r["frame"] for r in recs if r["type"] == "frame" and r["stream"] == "file"]
    assert file_frames == list(range(len(file_frames))) and len(file_frames) < 472
    assert {e["reason"] for e in recs if e.get("kind") == "track_end"} == {"interrupted"}
    deadline = time.monotonic() + 10
    while [k for k in kids if Path(f"/proc/{k}").exists()] and time.monotonic() < deadline:
        time.sleep(0.05)  # an orphan is reaped by init, not at once
    assert not [k for k in kids if Path(f"/proc/{k}").exists()], "a front process outlived the run"


def test_cli_refuses_an_unknown_front(emostream):
    res = emostream("run", "test://", "--front", "fiber", "--max-frames", "1")
    assert res.returncode == 2 and "invalid choice: 'fiber'" in res.stderr and "Traceback" not in res.stderr
