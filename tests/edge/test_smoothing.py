"""Per-track smoothing: far fewer label changes on real video, real changes still followed, frame-rate free."""

from __future__ import annotations

from collections import Counter
from itertools import groupby

import numpy as np
import pytest

from emostream.edge.faces import FaceDetector
from emostream.edge.pipeline import FrameAnalyzer
from emostream.edge.smoothing import SmoothingConfig, SmoothingError, TrackSmoother, count_changes
from emostream.engines.emotion import DEFAULT_MODEL, load_engine
from emostream.engines.emotion.valence_arousal import valence_arousal
from emostream.streams import open_source

LABELS = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger")


def _p(**weights: float) -> np.ndarray:
    p = np.array([weights.get(k, 0.01) for k in LABELS], np.float64)
    return p / p.sum()


@pytest.fixture(scope="module")
def pexels(data_file):
    """Raw per-frame probabilities of the one face in every Pexels frame, with timestamps."""
    src = open_source(str(data_file("video/WolfgangLanger_Pexels.mp4")))
    analyzer = FrameAnalyzer(FaceDetector(), load_engine("onnxruntime", DEFAULT_MODEL))
    rows = []
    try:
        for frame in src:
            a = analyzer.analyze(frame)
            if len(a.faces):
                rows.append((frame.t, a.probs[0]))
    finally:
        analyzer.close()
    return analyzer.labels, rows


def test_pexels_smoothed_label_changes_far_less_often_than_raw(pexels):
    labels, rows = pexels
    assert len(rows) >= 460
    smoother = TrackSmoother(labels)
    raw, smooth = [], []
    for t, p in rows:
        raw.append(labels[int(np.argmax(p))])
        smooth.append(smoother.update(p, t).label)
    raw_changes, smooth_changes = count_changes(raw), count_changes(smooth)
    # Measured: v0 31 raw changes vs 3 smoothed (sad -> fear -> sad -> happy); the students of 2026-11-30 42 vs 3
    # (afternoon) and 9 vs 3 (evening: averaged weights flicker far less, sad -> fear -> neutral -> happy).
    assert raw_changes >= 5, "frame-by-frame labels flicker where the expression turns"
    assert smooth_changes >= 1, "the woman goes from crying to laughing: the label must change"
    assert 2 * smooth_changes <= raw_changes, (raw_changes, smooth_changes)
    # What the smoother removes: the raw labels' one- and two-frame blips. No smoothed label is that short.
    runs = lambda xs: [len(list(g)) for _, g in groupby(xs)]  # noqa: E731
    assert min(runs(raw)) <= 2 and min(runs(smooth)) >= 10, (runs(raw), runs(smooth))
    # Crying for the first seconds, laughing at the end (the very first frame may read neutral).
    assert Counter(smooth[:72]).most_common(1)[0][0] == "sad" and smooth[-1] == "happy"


def test_isolated_outlier_frames_do_not_flip_the_label():
    s = TrackSmoother(LABELS)
    states = [s.update(_p(surprise=1.0) if i % 4 == 3 else _p(happy=1.0), i / 30) for i in range(90)]
    assert {st.label for st in states} == {"happy"}
    assert not any(st.changed for st in states)


def test_sustained_change_is_followed_within_a_second_and_flagged_once():
    s = TrackSmoother(LABELS, SmoothingConfig(time_constant_s=0.5, min_dwell_s=0.5))
    states = [s.update(_p(neutral=1.0) if i < 60 else _p(anger=1.0), i / 30) for i in range(120)]
    switched = [i for i, st in enumerate(states) if st.changed]
    assert len(switched) == 1
    delay = (switched[0] - 60) / 30
    assert 0.0 < delay < 1.0
    assert states[switched[0]].previous == "neutral" and states[switched[0]].label == "anger"


def test_smoothing_is_in_seconds_not_frames():
    """The same one-second expression change is followed at the same time at 10 and at 60 fps."""

    def switch_time(fps: float) -> float:
        s = TrackSmoother(LABELS)
        for i in range(int(3 * fps)):
            t = i / fps
            st = s.update(_p(sad=1.0) if t < 1.0 else _p(happy=1.0), t)
            if st.changed:
                return t
        raise AssertionError("never switched")

    assert switch_time(10) == pytest.approx(switch_time(60), abs=0.12)


def test_hysteresis_holds_the_label_through_a_near_tie():
    s = TrackSmoother(LABELS, SmoothingConfig(time_constant_s=0.1))
    first = s.update(_p(neutral=0.55, sad=0.45), 0.0)
    states = [s.update(_p(neutral=0.45, sad=0.55) if i % 2 else _p(neutral=0.55, sad=0.45), i / 30)
              for i in range(1, 120)]
    assert first.label == "neutral"
    assert count_changes([st.label for st in states]) == 0


def test_valence_arousal_are_smoothed_and_probabilities_stay_a_distribution():
    s = TrackSmoother(LABELS)
    va_sad = valence_arousal(_p(sad=1.0), LABELS)[0]
    va_happy = valence_arousal(_p(happy=1.0), LABELS)[0]
    st = s.update(_p(sad=1.0), 0.0, va_sad)
    assert st.valence == pytest.approx(float(va_sad[0]))
    st = s.update(_p(happy=1.0), 1 / 30, va_happy)
    assert va_sad[0] < st.valence < va_happy[0]  # moved towards happy, not jumped
    assert st.valence - va_sad[0] < 0.2 * (va_happy[0] - va_sad[0])
    assert st.probs.sum() == pytest.approx(1.0, abs=1e-5) and st.label == "sad"
    assert TrackSmoother(LABELS).update(_p(sad=1.0), 0.0).valence is None


def test_repeated_timestamps_use_the_default_interval():
    """A still image repeated has t=0 on every frame; smoothing must still move."""
    s = TrackSmoother(LABELS, SmoothingConfig(default_dt_s=0.1, min_dwell_s=0.0))
    s.update(_p(neutral=1.0), 0.0)
    labels = [s.update(_p(fear=1.0), 0.0).label for _ in range(20)]
    assert labels[-1] == "fear"


def test_bad_inputs_are_errors():
    s = TrackSmoother(LABELS)
    with pytest.raises(SmoothingError, match="7 finite probabilities"):
        s.update(np.ones(3) / 3, 0.0)
    with pytest.raises(SmoothingError, match="finite"):
        s.update(np.full(7, np.nan), 0.0)
    with pytest.raises(SmoothingError, match="time_constant_s"):
        SmoothingConfig(time_constant_s=-1)
    with pytest.raises(SmoothingError, match="switch_margin"):
        SmoothingConfig(switch_margin=1.0)
    with pytest.raises(SmoothingError, match="two labels"):
        TrackSmoother(["happy"])
