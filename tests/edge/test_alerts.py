"""Alert rules: the grammar's answers and errors, and evaluation over a track's smoothed values in stream time."""

from __future__ import annotations

import numpy as np
import pytest

from emostream.contract import FER7_LABELS
from emostream.edge.alerts import AlertError, AlertSink, parse_rule, parse_rules
from emostream.edge.face_batch import FaceBatch
from emostream.edge.track import StreamStep
from emostream.streams import Frame

LABELS = FER7_LABELS  # neutral, happy, sad, surprise, fear, disgust, anger


def test_grammar():
    r = parse_rule("anger>=0.6 for 5s")
    assert (r.metric, r.op, r.threshold, r.duration_s, r.name) == ("anger", ">=", 0.6, 5.0, "anger>=0.6 for 5s")
    r = parse_rule("  upset : valence <= -0.5 for 10 s")
    assert (r.name, r.metric, r.op, r.threshold, r.duration_s, r.text) == (
        "upset", "valence", "<=", -0.5, 10.0, "valence <= -0.5 for 10 s")
    assert parse_rule("arousal>0.7").duration_s == 0.0
    assert parse_rule("Happy<0.1 for 500ms").duration_s == pytest.approx(0.5)
    assert parse_rule("fear>=.5 for 2min").duration_s == 120.0


@pytest.mark.parametrize("text, why", [
    ("", "empty"),
    ("anger", "cannot parse"),
    ("anger=>0.6", "cannot parse"),
    ("anger>=0.6 during 5s", "cannot parse"),
    ("rage>=0.6", "unknown metric"),
    ("anger>=1.5", "outside"),
    ("valence<=-2", "outside"),
    ("anger>=0.6 for 5", "unit"),
    ("anger>=0.6 for 2h", "cannot parse"),
    ("anger>=0.6 for 9999s", "duration"),
])
def test_grammar_errors_say_why(text, why):
    with pytest.raises(AlertError, match=why):
        parse_rule(text)


def test_rules_must_differ_and_fit_the_model():
    with pytest.raises(AlertError, match="repeated"):
        parse_rules(["anger>=0.6", "anger>=0.6"])
    with pytest.raises(AlertError, match="no such label"):
        AlertSink(parse_rules(["contempt>=0.5"]), LABELS, lambda r: None)


def _step(index: int, t: float, probs: list[float] | None, track: int = 1) -> StreamStep:
    frame = Frame(np.zeros((4, 4, 3), np.uint8), index, int(t * 1e9), "cam")
    if probs is None:
        return StreamStep(FaceBatch.empty(LABELS, frame=frame), [])
    p = np.asarray([probs], np.float32)
    batch = FaceBatch(np.array([[0, 0, 2, 2]], np.float32), np.array([0.9], np.float32),
                      np.zeros((1, 6, 2), np.float32), np.zeros((1, 48, 48), np.uint8), p, LABELS,
                      np.array([[-0.6, 0.5]], np.float32), frame)
    return StreamStep(batch.with_tracks(np.array([track]), ["anger"], np.array([0.9]), np.array([[-0.6, 0.5]])), [])


def _probs(anger: float) -> list[float]:
    rest = (1 - anger) / 6
    return [rest, rest, rest, rest, rest, rest, anger]


def test_raised_once_after_holding_then_cleared():
    out: list[dict] = []
    sink = AlertSink(parse_rules(["angry: anger>=0.6 for 1s"]), LABELS, out.append)
    t = 0.0
    for i in range(60):  # 2 s of anger at 30 fps
        sink.step(_step(i, t, _probs(0.9)))
        t += 1 / 30
    raised = [r for r in out if r["state"] == "raised"]
    assert len(raised) == 1
    # smoothing: the first frame already holds (0.9 > 0.6), so it raises 1 s of stream time later
    assert raised[0]["since_t"] == 0.0 and raised[0]["held_s"] == pytest.approx(1.0, abs=0.04)
    assert raised[0] | {"value": None} == raised[0] | {
        "type": "event", "kind": "alert", "stream": "cam", "track": 1, "name": "angry", "rule": "anger>=0.6 for 1s",
        "value": None}
    for i in range(60, 120):  # calm again: cleared once the smoothed value drops below
        sink.step(_step(i, t, _probs(0.05)))
        t += 1 / 30
    cleared = [r for r in out if r["state"] == "cleared"]
    assert len(cleared) == 1 and cleared[0]["reason"] == "below_threshold" and cleared[0]["peak"] >= 0.85
    assert 2.0 < cleared[0]["t"] < 2.5  # the EMA (0.5 s) takes a few frames to fall below 0.6


def test_one_odd_frame_neither_raises_nor_resets():
    out: list[dict] = []
    sink = AlertSink(parse_rules(["anger>=0.6 for 2s"]), LABELS, out.append)
    t = 0.0
    for i in range(45):
        sink.step(_step(i, t, _probs(0.05 if i != 10 else 0.99)))  # one spike: smoothed, never >= 0.6
        t += 1 / 30
    assert out == []
    for i in range(45, 180):  # one dip (a blink, a blurred frame) at 3 s, inside 4.5 s of anger
        sink.step(_step(i, t, _probs(0.9 if i != 90 else 0.3)))
        t += 1 / 30
    assert [r["state"] for r in out] == ["raised"]
    assert out[0]["since_t"] < 3.0 < out[0]["t"]  # it held through the dip: counted from before it


def test_valence_rule_and_track_end_clears():
    out: list[dict] = []
    sink = AlertSink(parse_rules(["valence<=-0.5 for 0.5s"]), LABELS, out.append)
    for i in range(30):
        sink.step(_step(i, i / 30, _probs(0.5)))
    assert [r["state"] for r in out] == ["raised"] and out[0]["value"] <= -0.5
    sink.end("cam", "end_of_stream", [{"type": "event", "kind": "track_end", "stream": "cam", "track": 1,
                                       "frame": 29, "t": 29 / 30}])
    assert out[-1]["state"] == "cleared" and out[-1]["reason"] == "track_end"


def test_untracked_faces_are_never_alerted_on():
    out: list[dict] = []
    sink = AlertSink(parse_rules(["anger>=0.1"]), LABELS, out.append)
    for i in range(10):
        sink.step(_step(i, i / 30, _probs(0.9), track=-1))
        sink.step(_step(i, i / 30, None))
    assert out == []
