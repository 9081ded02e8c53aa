"""Several streams in one process: independent outputs, identical to running each alone; clear errors."""

from __future__ import annotations

import json

import pytest

from emostream.edge.cli import main
from emostream.edge.faces import FaceDetector
from emostream.edge.multistream import StreamConfigError, run_streams
from emostream.edge.pipeline import FrameAnalyzer
from emostream.engines.emotion import DEFAULT_MODEL, load_engine
from emostream.streams import open_source


@pytest.fixture(scope="module")
def analyzer():
    a = FrameAnalyzer(FaceDetector(), load_engine("onnxruntime", DEFAULT_MODEL))
    yield a
    a.close()


def _run(analyzer, specs: list[tuple[str, str]], **kw) -> tuple[dict[str, list[dict]], list]:
    records: list[dict] = []
    sources = [open_source(uri, stream=sid) for uri, sid in specs]
    results = run_streams(analyzer, sources, records.append, **kw)
    by_stream: dict[str, list[dict]] = {sid: [] for _, sid in specs}
    for r in records:
        by_stream[r["stream"]].append(r)
    return by_stream, results


def _comparable(records: list[dict]) -> list[dict]:
    """Records with probabilities rounded coarser: batch size may change ORT's last float bits."""
    out = []
    for r in records:
        r = json.loads(json.dumps(r))
        for f in r.get("faces", []):
            f["probs"] = {k: round(v, 2) for k, v in f["probs"].items()}
            f.pop("smoothed_va", None)
            f.pop("valence", None)
            f.pop("arousal", None)
        for k in ("confidence", "valence", "arousal", "summary"):
            r.pop(k, None)
        out.append(r)
    return out


def test_two_streams_at_once_give_the_same_results_as_each_alone(data_file, analyzer):
    a = str(data_file("video/single_face.mp4"))
    b = str(data_file("video/face_noface.mov"))
    together, results = _run(analyzer, [(a, "a"), (b, "b")])
    alone_a, _ = _run(analyzer, [(a, "a")])
    alone_b, _ = _run(analyzer, [(b, "b")])
    assert [r.frames for r in results] == [72, 169]
    assert _comparable(together["a"]) == _comparable(alone_a["a"])
    assert _comparable(together["b"]) == _comparable(alone_b["b"])
    # Each stream numbers its own tracks and has its own events.
    for sid in ("a", "b"):
        frames = [r for r in together[sid] if r["type"] == "frame"]
        assert [r["frame"] for r in frames] == list(range(len(frames)))
        starts = [e for e in together[sid] if e.get("kind") == "track_start"]
        ends = [e for e in together[sid] if e.get("kind") == "track_end"]
        assert [e["track"] for e in starts] == [1] and [e["track"] for e in ends] == [1]
        tracked = [f["track"] for r in frames for f in r["faces"] if f["track"] is not None]
        assert set(tracked) <= {1, 2}
        assert all(f["smoothed_label"] for r in frames for f in r["faces"] if f["track"] is not None)


def test_the_same_file_twice_under_two_ids_is_two_identical_independent_streams(data_file, analyzer):
    clip = str(data_file("video/single_face.mp4"))
    by_stream, _ = _run(analyzer, [(clip, "left"), (clip, "right")])
    left = [{**r, "stream": None} for r in by_stream["left"]]
    right = [{**r, "stream": None} for r in by_stream["right"]]
    assert len(left) > 72 and _comparable(left) == _comparable(right)


def test_a_live_source_beside_a_file(data_file, analyzer):
    """The file is read completely and in order; the live source delivers its latest frames."""
    by_stream, results = _run(analyzer, [(str(data_file("video/single_face.mp4")), "file"),
                                         ("test://?pattern=ball&fps=30", "live")], max_frames=72)
    file_frames = [r["frame"] for r in by_stream["file"] if r["type"] == "frame"]
    live = [r for r in by_stream["live"] if r["type"] == "frame"]
    assert file_frames == list(range(72))
    assert len(live) == 72 and all(b["t"] > a["t"] for a, b in zip(live, live[1:]))
    assert results[1].live and results[1].error is None


def test_duplicate_stream_ids_and_mismatched_overlays_are_errors(data_file, analyzer):
    clip = str(data_file("multiface/single_face.jpg"))
    with pytest.raises(StreamConfigError, match="unique"):
        run_streams(analyzer, [open_source(clip, stream="x"), open_source(clip, stream="x")], print)
    with pytest.raises(StreamConfigError, match="overlay"):
        run_streams(analyzer, [open_source(clip, stream="x")], print, overlays=["a.mp4", "b.mp4"])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--stream-id", "only-one"], "--stream-id names for 2 sources"),
        (["--overlay", "out.mp4"], "put {i} in it"),
        (["--overlay", "out.avi", "--overlay", "b.mp4"], "unsupported output file type"),
        (["--metrics-port", "99999"], "--metrics-port"),
    ],
)
def test_cli_multi_source_mistakes_are_one_line(capsys, data_file, extra, message):
    """Checked before any source or model is opened (in-process: the CLI's own error boundary)."""
    clips = [str(data_file("multiface/single_face.jpg")), str(data_file("multiface/multi_face.jpg"))]
    assert main(["run", *clips, *extra]) == 2
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("emostream: error:")]
    assert len(errors) == 1 and message in errors[0], stderr


def test_cli_runs_two_sources_with_overlays(emostream, data_file, tmp_path):
    clip = str(data_file("multiface/single_face.jpg"))
    out = tmp_path / "two.jsonl"
    proc = emostream("run", clip, str(data_file("video/single_face.mp4")), "--stream-id", "photo",
                     "--stream-id", "video", "-o", str(out), "--overlay", str(tmp_path / "ov{i}.mp4"))
    assert proc.returncode == 0, proc.stderr
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    frames = [r for r in recs if r["type"] == "frame"]
    assert sum(r["stream"] == "photo" for r in frames) == 1 and sum(r["stream"] == "video" for r in frames) == 72
    assert len(list(open_source(str(tmp_path / "ov1.mp4")))) == 72
    assert len(list(open_source(str(tmp_path / "ov0.mp4")))) == 1
    assert "2 streams" in proc.stderr.strip().splitlines()[-1]


def test_a_stream_that_fails_midway_ends_alone_and_its_records_are_kept(capsys, data_file, tmp_path):
    """A truncated file fails after ~9.6 s of video; the other stream is unaffected, the exit code says so."""
    whole = data_file("video/WolfgangLanger_Pexels.mp4").read_bytes()
    broken = tmp_path / "truncated.mp4"
    broken.write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "out.jsonl"
    status = main(["run", str(broken), str(data_file("video/single_face.mp4")), "--stream-id", "broken",
                   "--stream-id", "ok", "-o", str(out)])
    stderr = capsys.readouterr().err
    assert status == 1
    errors = [line for line in stderr.splitlines() if line.startswith("emostream: error:")]
    assert len(errors) == 1 and "truncated" in errors[0] and "broken" in errors[0], stderr
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    ok = [r for r in recs if r["stream"] == "ok" and r["type"] == "frame"]
    bad = [r for r in recs if r["stream"] == "broken" and r["type"] == "frame"]
    assert len(ok) == 72 and 200 <= len(bad) < 472
    [end] = [r for r in recs if r["stream"] == "broken" and r.get("kind") == "track_end"]
    assert end["reason"] == "source_error" and end["frame"] == bad[-1]["frame"]
    assert [r["reason"] for r in recs if r["stream"] == "ok" and r.get("kind") == "track_end"] == ["end_of_stream"]


# ---------------------------------------------------------------------------------------------------
# the overlapped front half (detection on its own thread)


def test_overlapped_and_sequential_loops_write_the_same_records(data_file, analyzer):
    """Detection on a second thread must not change a record: same frames, faces, tracks, events, order."""
    specs = [(str(data_file("video/single_face.mp4")), "a"), (str(data_file("video/face_noface.mov")), "b")]
    over, res_over = _run(analyzer, specs, overlap=True)
    seq, res_seq = _run(analyzer, specs, overlap=False)
    for sid in ("a", "b"):
        assert _comparable(over[sid]) == _comparable(seq[sid])
    assert [r.frames for r in res_over] == [r.frames for r in res_seq] == [72, 169]
    # Every analysed frame has its latency from the source to the sinks, and it is plausible.
    for r in res_over:
        assert len(r.latency_s) == r.frames and 0 < min(r.latency_s) and max(r.latency_s) < 30


def test_a_stop_with_steps_in_flight_writes_every_taken_frame(data_file, analyzer):
    """A stop request while the front thread has steps queued: those frames are still analysed and
    written, in order, then the track ends as `interrupted` -- nothing taken is lost."""
    records: list[dict] = []

    def should_stop() -> bool:
        return sum(r["type"] == "frame" for r in records) >= 10

    src = open_source(str(data_file("video/WolfgangLanger_Pexels.mp4")), stream="s")
    [result] = run_streams(analyzer, [src], records.append, should_stop=should_stop)
    frames = [r["frame"] for r in records if r["type"] == "frame"]
    assert frames == list(range(len(frames))) and 10 <= len(frames) < 472
    assert result.frames == len(frames) and result.interrupted
    assert [r["reason"] for r in records if r.get("kind") == "track_end"] == ["interrupted"]


def test_a_detector_failure_on_the_front_thread_surfaces_on_the_callers(data_file):
    """The front thread's exception is raised by run_streams (not swallowed, no hang); open tracks end."""
    from emostream.edge.faces import FaceDetectorError

    broken = FaceDetector()
    broken.close()  # detect() now raises FaceDetectorError("FaceDetector is closed")
    a = FrameAnalyzer(broken, load_engine("onnxruntime", DEFAULT_MODEL))
    records: list[dict] = []
    with pytest.raises(FaceDetectorError, match="closed"):
        run_streams(a, [open_source(str(data_file("video/single_face.mp4")), stream="s")], records.append)
    assert not [r for r in records if r["type"] == "frame"]
    a.engine.close()
