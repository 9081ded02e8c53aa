"""Keyframe policy: escalate on new/changed/uncertain faces and as a heartbeat, within budgets."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from emostream.edge.keyframes import KeyframePolicy, KeyframeState, PolicyConfig, make_keyframe
from emostream.engines.labels import CANONICAL_LABELS
from emostream.reasoner.schema import pack, unpack, validate_keyframe

L = CANONICAL_LABELS
FPS = 25.0


def onehotish(label: str, p: float = 0.9) -> np.ndarray:
    v = np.full(len(L), (1 - p) / (len(L) - 1))
    v[L.index(label)] = p
    return v


def run(policy, frames, changes=()):
    """Feed (t, probs) pairs of one track; ``changes``: indices where its emotion_change fired.
    Returns [(t, reason)] for escalated frames."""
    state = KeyframeState()
    out = []
    for i, (t, probs) in enumerate(frames):
        reason = policy.decide(state, t, probs, label_changed=i in changes)
        if reason:
            out.append((round(t, 2), reason))
    return out


def test_steady_confident_face_gets_new_track_then_heartbeats_only():
    policy = KeyframePolicy(PolicyConfig(heartbeat_s=5.0))
    frames = [(i / FPS, onehotish("happy")) for i in range(int(12 * FPS))]
    got = run(policy, frames)
    assert got == [(0.0, "new_track"), (5.0, "heartbeat"), (10.0, "heartbeat")]


def test_label_change_fires_exactly_on_the_event_and_not_on_probabilities_alone():
    """The policy does not smooth on its own: a sustained switch in the probabilities without an
    emotion_change event is no label_change; the event's frame is, even inside the track interval."""
    policy = KeyframePolicy(PolicyConfig(track_interval_s=1.0))
    frames = [(i / FPS, onehotish("sad")) for i in range(50)]
    frames += [((50 + i) / FPS, onehotish("happy")) for i in range(25)]
    assert [r for _, r in run(policy, frames)] == ["new_track"]
    policy = KeyframePolicy(PolicyConfig(track_interval_s=1.0))
    got = run(policy, frames, changes={10, 55})
    assert got == [(0.0, "new_track"), (0.4, "label_change"), (2.2, "label_change")]


def test_uncertain_frames_escalate_at_most_once_per_track_interval():
    policy = KeyframePolicy(PolicyConfig(track_interval_s=1.0))
    unsure = np.array([0.3, 0.28, 0.1, 0.1, 0.08, 0.06, 0.05, 0.03])  # margin 0.02
    frames = [(i / FPS, unsure) for i in range(int(3 * FPS))]
    got = run(policy, frames)
    assert got == [(0.0, "new_track"), (1.0, "uncertain"), (2.0, "uncertain")]
    assert policy.counts["suppressed"] > 0


def test_global_budget_caps_many_faces_and_label_changes():
    cfg = PolicyConfig(rate=4.0, burst=8.0, track_interval_s=0.5)
    policy = KeyframePolicy(cfg)
    unsure = np.full(len(L), 1 / len(L))
    states = [KeyframeState() for _ in range(20)]
    sent = 0
    seconds = 5
    for i in range(int(seconds * FPS)):
        for track in range(20):
            sent += policy.decide(states[track], i / FPS, unsure, label_changed=i % 5 == 0) is not None
    assert sent <= cfg.burst + cfg.rate * seconds + 1
    assert sent >= cfg.rate * seconds  # the budget is used, not wasted


def test_tracks_are_separate_and_bad_probs_are_ignored():
    policy = KeyframePolicy()
    a, b = KeyframeState(), KeyframeState()
    assert policy.decide(a, 0.0, onehotish("happy")) == "new_track"
    assert policy.decide(b, 0.0, onehotish("happy")) == "new_track"
    assert policy.decide(KeyframeState(), 0.0, np.ones(1)) is None
    assert policy.decide(KeyframeState(), 0.0, np.full(len(L), np.nan)) is None


def test_make_keyframe_builds_a_valid_message(data_file):
    rgb = cv2.cvtColor(cv2.imread(str(data_file("multiface/multi_face.jpg"))), cv2.COLOR_BGR2RGB)
    gray_crop = cv2.cvtColor(cv2.resize(rgb[:200, :200], (64, 64)), cv2.COLOR_RGB2GRAY)
    probs = onehotish("surprise", 0.7)
    msg = make_keyframe(
        "cam0", 3, 42, 1_750_000_000, gray_crop, rgb, [10, 20, 64.5, 64], probs, L, "uncertain", va=[0.2, 1.5]
    )
    wire = pack(msg)
    assert len(wire) < 64 * 1024
    out = validate_keyframe(unpack(wire))
    assert out["track"] == 3 and out["frame"] == 42 and out["reason"] == "uncertain"
    assert out["va"] == [0.2, 1.0]  # clipped into the contract's range
    ctx = cv2.imdecode(np.frombuffer(out["context"], np.uint8), cv2.IMREAD_COLOR)
    assert max(ctx.shape[:2]) == 320
    crop = cv2.imdecode(np.frombuffer(out["crop"], np.uint8), cv2.IMREAD_UNCHANGED)
    assert crop.shape == (64, 64)
    assert np.allclose(out["probs"], probs)
    with pytest.raises(ValueError):
        make_keyframe("c", 1, 1, 1, gray_crop.astype(np.float32), None, [0, 0, 1, 1], probs, L, "x")


def test_keyframe_for_a_batch_row_carries_that_face(data_file):
    """The hook builds keyframes from the face batch the frame record is written from."""
    import emostream
    from emostream.edge.keyframes import keyframe_for

    bgr = cv2.imread(str(data_file("multiface/single_face.jpg")))
    with emostream.Analyzer(track=True) as analyzer:
        batch = analyzer.analyze(bgr, color="bgr")
    assert len(batch) == 1 and batch.track_ids[0] >= 0
    msg = validate_keyframe(unpack(pack(keyframe_for(batch, 0, "new_track"))))
    assert msg["track"] == int(batch.track_ids[0]) and msg["frame"] == batch.frame.index
    assert msg["box"] == [float(v) for v in batch.boxes[0]] and np.allclose(msg["probs"], batch.probs[0])
    assert msg["labels"] == list(batch.labels) and msg["reason"] == "new_track"
    with pytest.raises(ValueError, match="no track"):
        keyframe_for(batch.with_tracks([-1], [None], [np.nan], [[np.nan, np.nan]]), 0, "new_track")
