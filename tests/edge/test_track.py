"""One face batch from the analyzer to every output; one Track per face with one lifetime; keyframes
on the events the records show."""

from __future__ import annotations

import numpy as np
import pytest

from emostream.edge.face_batch import FaceBatch, FaceBatchError, frame_record
from emostream.edge.faces import FaceDetector
from emostream.edge.keyframes import KeyframePolicy, PolicyConfig
from emostream.edge.multistream import run_streams
from emostream.edge.overlay import OverlayFace
from emostream.edge.pipeline import FrameAnalyzer
from emostream.edge.track import StreamStep
from emostream.engines.emotion import DEFAULT_MODEL, load_engine
from emostream.streams import open_source

PEXELS = "video/WolfgangLanger_Pexels.mp4"


@pytest.fixture(scope="module")
def analyzer():
    a = FrameAnalyzer(FaceDetector(), load_engine("onnxruntime", DEFAULT_MODEL))
    yield a
    a.close()


class _Collect:
    """A sink that keeps every step (and asks the tracks for keyframe decisions, like escalation)."""

    def __init__(self, policy: KeyframePolicy | None = None) -> None:
        self.keyframe_policy = policy
        self.steps: list[StreamStep] = []
        self.ended: list[tuple[str, str, int]] = []

    def step(self, step: StreamStep) -> None:
        self.steps.append(step)

    def end(self, stream: str, reason: str, events: list[dict]) -> None:
        self.ended.append((stream, reason, len(events)))

    def close(self) -> None:
        pass


def _run(analyzer, data_file, policy=None, max_frames=None):
    records: list[dict] = []
    sink = _Collect(policy)
    run_streams(analyzer, [open_source(str(data_file(PEXELS)), stream="clip")], records.append, sinks=[sink],
                max_frames=max_frames)
    return records, sink


def test_label_change_keyframes_fire_exactly_on_emotion_change_events(analyzer, data_file):
    """Pexels clip, one face drifting neutral -> sad -> fear -> happy: with the default budgets every
    emotion_change event's frame carries a label_change keyframe for that track and no other frame
    does. (The global budget could in principle suppress one; at one face it never runs dry here, so
    the sets are equal -- asserting equality, not only a subset, keeps a second smoother from
    creeping back.)"""
    policy = KeyframePolicy()
    records, sink = _run(analyzer, data_file, policy)
    changes = {(r["track"], r["frame"]) for r in records if r["type"] == "event" and r["kind"] == "emotion_change"}
    keyframes = {
        (int(step.batch.track_ids[i]), step.batch.frame.index)
        for step in sink.steps for i, reason in enumerate(step.batch.keyframe_reasons) if reason == "label_change"
    }
    assert len(changes) >= 2, changes  # the clip really changes expression
    assert keyframes == changes
    assert policy.counts["label_change"] == len(changes)
    reasons = [r for s in sink.steps for r in s.batch.keyframe_reasons if r is not None]
    assert reasons[0] == "new_track" and "uncertain" in reasons  # the other reasons still fire


def test_tight_global_budget_keeps_label_changes_a_subset(analyzer, data_file):
    """A budget of one keyframe per 20 s: the tokens run out, some changes go unsent, but a label_change
    keyframe is still only ever sent on an emotion_change frame."""
    policy = KeyframePolicy(PolicyConfig(rate=0.05, burst=1.0))
    records, sink = _run(analyzer, data_file, policy)
    changes = {(r["track"], r["frame"]) for r in records if r["type"] == "event" and r["kind"] == "emotion_change"}
    keyframes = {
        (int(step.batch.track_ids[i]), step.batch.frame.index)
        for step in sink.steps for i, reason in enumerate(step.batch.keyframe_reasons) if reason == "label_change"
    }
    assert keyframes < changes
    assert policy.counts["suppressed"] > 0


def test_one_batch_feeds_records_overlay_and_track_state(analyzer, data_file):
    """The frame record, the overlay and the keyframe columns are read from the same batch object."""
    records, sink = _run(analyzer, data_file, max_frames=40)
    frames = [r for r in records if r["type"] == "frame"]
    assert [frame_record(s.batch) for s in sink.steps] == frames
    assert sink.ended == [("clip", "end_of_stream", 1)]  # the track_end of the one face
    last = sink.steps[-1].batch
    assert len(last) == 1 and last.track_ids[0] >= 0 and last.smoothed_labels[0] in last.labels
    [face] = OverlayFace.from_batch(last)
    assert face.track == last.track_ids[0] and face.label == last.smoothed_labels[0]
    assert face.valence == pytest.approx(frames[-1]["faces"][0]["smoothed_va"][0], abs=1e-3)
    assert np.all(last.keyframe_reasons == None)  # noqa: E711 - no escalation asked: no decisions


def test_face_batch_checks_shapes_and_selects_rows(analyzer, data_file):
    import cv2

    rgb = cv2.cvtColor(cv2.imread(str(data_file("multiface/multi_face.jpg"))), cv2.COLOR_BGR2RGB)
    batch = analyzer.detector.detect(rgb)
    assert len(batch) >= 3
    empty = FaceBatch.empty(("a", "b"))
    assert len(empty) == 0 and empty.top_labels() == []
    with pytest.raises(FaceBatchError, match="probs"):
        FaceBatch(batch.boxes, batch.scores, batch.keypoints, np.zeros((len(batch), 8, 8), np.uint8),
                  np.zeros((len(batch), 3), np.float32), ("a", "b"), np.zeros((len(batch), 2), np.float32))


class _FailAtEnd(_Collect):
    def end(self, stream: str, reason: str, events: list[dict]) -> None:
        super().end(stream, reason, events)
        raise OSError("sink gone")


def test_every_sink_ends_each_stream_once_even_when_one_fails(analyzer, data_file):
    """A sink that fails at a stream's end does not keep the later sinks from ending it (an overlay
    must still be finished when the records cannot be written); its error is the one raised."""
    failing, after = _FailAtEnd(), _Collect()
    clip = str(data_file("video/single_face.mp4"))
    with pytest.raises(OSError, match="sink gone"):
        run_streams(analyzer, [open_source(clip, stream="a"), open_source(clip, stream="b")], lambda r: None,
                    sinks=[failing, after], max_frames=5)
    # Both streams end (in either order: their readers race), each once, in every sink, although the
    # first sink fails at the first end.
    assert sorted(s for s, _, _ in failing.ended) == ["a", "b"]
    assert sorted(s for s, _, _ in after.ended) == ["a", "b"]
    assert {s.batch.frame.stream for s in after.steps} == {"a", "b"}
