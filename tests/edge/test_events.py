"""Track events: start/change/end at the right frames on real clips, summaries that add up, nothing lost."""

from __future__ import annotations

import numpy as np
import pytest

from emostream.edge.events import EventConfig, EventError, StreamEvents
from emostream.edge.faces import FaceDetector
from emostream.edge.multistream import run_streams
from emostream.edge.pipeline import FrameAnalyzer
from emostream.edge.smoothing import SmoothedState
from emostream.engines.emotion import DEFAULT_MODEL, load_engine
from emostream.streams import open_source

LABELS = ("neutral", "happy", "sad")


def _state(label: str, conf: float = 0.8, va: tuple[float, float] | None = (0.1, 0.2)) -> SmoothedState:
    probs = np.full(3, (1 - conf) / 2, np.float32)
    probs[LABELS.index(label)] = conf
    return SmoothedState(label, probs, conf, va[0] if va else None, va[1] if va else None, False, None)


def _feed(ev: StreamEvents, track: int, labels: list[str], start: int = 0, fps: float = 10.0) -> list[dict]:
    out = []
    for k, label in enumerate(labels):
        i = start + k
        out += ev.observe(track, i, i / fps, [1, 2, 30, 30], _state(label).probs, _state(label))
    return out


@pytest.fixture(scope="module")
def analyzer():
    a = FrameAnalyzer(FaceDetector(), load_engine("onnxruntime", DEFAULT_MODEL))
    yield a
    a.close()


@pytest.mark.parametrize("clip, start, last, reason",
                         [("face_noface.mov", 0, 71, "lost"), ("noface_face.mov", 96, 167, "end_of_stream")])
def test_face_noface_clips_start_and_end_one_track_at_the_cut(data_file, analyzer, clip, start, last, reason):
    records: list[dict] = []
    [result] = run_streams(analyzer, [open_source(str(data_file(f"video/{clip}")), stream="clip")], records.append)
    events = [r for r in records if r["type"] == "event"]
    starts = [e for e in events if e["kind"] == "track_start"]
    ends = [e for e in events if e["kind"] == "track_end"]
    # The animation's 2-3 frame false detections never become a person (min_track_frames=3).
    assert len(starts) == 1 and len(ends) == 1, events
    s, e = starts[0], ends[0]
    assert s["track"] == e["track"] and s["stream"] == "clip"
    assert s["frame"] - start in (0, 1)  # ByteTrack confirms a mid-stream face on its second sighting
    assert e["frame"] == last and e["reason"] == reason
    assert e["start_frame"] == s["frame"] and e["frames"] >= last - start - 2
    t = {r["frame"]: r["t"] for r in records if r["type"] == "frame"}
    assert (s["t"], e["t"]) == (t[s["frame"]], t[last])
    assert e["duration"] == pytest.approx(t[last] - t[s["frame"]], abs=0.002)
    assert e["dominant"] in e["summary"]["labels"]
    assert sum(e["summary"]["labels"].values()) == pytest.approx(1.0, abs=0.01)
    assert sum(e["summary"]["mean_probs"].values()) == pytest.approx(1.0, abs=0.01)
    assert -1 <= e["summary"]["valence"] <= 1 and -1 <= e["summary"]["arousal"] <= 1
    # Every event comes after the frame record of the frame that caused it, and records are in order.
    frames = [r["frame"] for r in records if r["type"] == "frame"]
    assert frames == list(range(169)) and result.frames == 169
    assert records.index(s) > next(i for i, r in enumerate(records) if r.get("frame") == s["frame"])


def test_track_is_announced_after_min_frames_with_its_first_frame():
    ev = StreamEvents("cam", LABELS, EventConfig(min_track_frames=3))
    assert _feed(ev, 7, ["happy", "happy"]) == []
    [start] = _feed(ev, 7, ["happy"], start=2)
    assert start["kind"] == "track_start" and start["frame"] == 0 and start["t"] == 0.0
    assert start["label"] == "happy" and start["track"] == 7 and start["stream"] == "cam"
    assert start["valence"] == 0.1 and start["arousal"] == 0.2


def test_emotion_changes_and_end_summary():
    ev = StreamEvents("cam", LABELS, EventConfig(min_track_frames=1))
    events = _feed(ev, 1, ["sad"] * 6 + ["happy"] * 3 + ["sad"])
    kinds = [e["kind"] for e in events]
    assert kinds == ["track_start", "emotion_change", "emotion_change"]
    change = events[1]
    assert (change["from"], change["to"], change["frame"]) == ("sad", "happy", 6)
    assert change["dominant"] == "sad" and change["duration"] == pytest.approx(0.6)
    [end] = ev.end(1, "lost")
    assert end["kind"] == "track_end" and end["frame"] == 9 and end["start_frame"] == 0
    assert end["frames"] == 10 and end["duration"] == pytest.approx(0.9)
    assert end["dominant"] == "sad" and end["summary"]["changes"] == 2
    assert end["summary"]["labels"] == {"sad": 0.7, "happy": 0.3}
    assert ev.end(1) == []  # already ended: nothing twice
    assert ev.counts == {"track_start": 1, "emotion_change": 2, "track_end": 1}


def test_short_tracks_are_discarded_and_finish_ends_every_open_track():
    ev = StreamEvents("cam", LABELS, EventConfig(min_track_frames=3))
    _feed(ev, 1, ["happy"] * 5)
    _feed(ev, 2, ["sad"] * 2)  # a two-frame blip
    _feed(ev, 3, ["neutral"] * 4)
    assert ev.end(2) == [] and ev.discarded == 1
    ends = ev.finish()
    assert sorted(e["track"] for e in ends) == [1, 3]
    assert {e["reason"] for e in ends} == {"end_of_stream"}
    assert ev.open_tracks == ()


def test_bad_inputs_are_errors():
    ev = StreamEvents("cam", LABELS)
    with pytest.raises(EventError, match="probabilities"):
        ev.observe(1, 0, 0.0, [0, 0, 1, 1], np.ones(5) / 5, _state("happy"))
    with pytest.raises(EventError, match="end reason"):
        ev.end(1, "bored")
    with pytest.raises(EventError, match="min_track_frames"):
        EventConfig(min_track_frames=0)
