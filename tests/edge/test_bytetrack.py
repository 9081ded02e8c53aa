"""The lean ByteTrack gives the ids supervision's ``sv.ByteTrack`` gives, on real and synthetic face sequences.

supervision (a dev dependency, no longer a runtime one) is the reference implementation here, not a mock. One
deliberate difference: supervision drops an expired lost track from its lost list one update late, so for that
one update a face can come back under an id that :class:`FaceTracker` has already reported as ended. The
reference below removes it at once (``_Reference``), which is what ``edge.bytetrack`` does; the last test shows
the difference matters.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from emostream.edge.bytetrack import ByteTrack, assign, iou_matrix
from emostream.edge.faces import FaceDetector, Faces
from emostream.edge.tracking import FaceTracker, TrackerConfig
from emostream.streams import open_source

sv = pytest.importorskip("supervision", reason="supervision is the reference ByteTrack (pip install -e '.[dev]')")

CONFIGS = [(30.0, 1.0), (10.0, 0.5), (23.976, 2.0)]  # (fps, lost_seconds): different lost buffers


class _Reference:
    """sv.ByteTrack with FaceTracker's parameters, expired lost tracks dropped in the update that expires them."""

    def __init__(self, fps: float, config: TrackerConfig, drop_expired: bool = True) -> None:
        self.drop_expired = drop_expired
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # sv.ByteTrack is deprecated upstream
            self.bt = sv.ByteTrack(track_activation_threshold=config.activation_score,
                                   lost_track_buffer=max(0, round(config.lost_seconds * 30)),
                                   minimum_matching_threshold=1.0 - config.match_iou, frame_rate=fps,
                                   minimum_consecutive_frames=1)

    def update(self, xyxy: np.ndarray, scores: np.ndarray) -> np.ndarray:
        n = len(xyxy)
        det = sv.Detections(xyxy=xyxy.astype(np.float32), confidence=scores.astype(np.float32),
                            data={"face": np.arange(n)})
        out = self.bt.update_with_detections(det)
        if self.drop_expired:
            self.bt.lost_tracks = [t for t in self.bt.lost_tracks if t.state.name != "Removed"]
        ids = np.full(n, -1, np.int64)
        if len(out):
            ids[out.data["face"]] = out.tracker_id
        return ids


def _synthetic(rng: np.random.Generator, frames: int = 300, people: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
    """Faces that wander, cross, grow and shrink, leave and come back, are missed, scored weakly (ByteTrack's
    second round), and false positives; detections in random order."""
    pos = rng.uniform(50, 550, (people, 2))
    size = rng.uniform(30, 150, people)
    vel = rng.normal(0, 3, (people, 2))
    present = rng.random(people) < 0.7
    seq = []
    for _ in range(frames):
        vel += rng.normal(0, 0.8, (people, 2))
        pos = np.clip(pos + vel, 0, 640)
        size *= np.exp(rng.normal(0, 0.03, people))
        present ^= rng.random(people) < 0.02
        boxes, scores = [], []
        for k in range(people):
            if present[k] and rng.random() > 0.1:
                x, y = pos[k]
                boxes.append(np.array([x, y, x + size[k], y + size[k]]) + rng.normal(0, 2, 4))
                scores.append(rng.uniform(0.5, 1.0) if rng.random() < 0.85 else rng.uniform(0.1, 0.3))
        if rng.random() < 0.1:
            x, y, s = *rng.uniform(0, 600, 2), rng.uniform(10, 80)
            boxes.append([x, y, x + s, y + s])
            scores.append(rng.uniform(0.2, 0.6))
        order = rng.permutation(len(boxes))
        seq.append((np.array(boxes, np.float32).reshape(-1, 4)[order], np.array(scores, np.float32)[order]))
    return seq


def _lean(fps: float, config: TrackerConfig) -> ByteTrack:
    return FaceTracker(fps=fps, config=config)._bt


@pytest.mark.parametrize("fps, lost", CONFIGS)
def test_same_ids_as_supervision_on_synthetic_crowds(fps, lost):
    config = TrackerConfig(lost_seconds=lost)
    frames = differ = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        ref, lean = _Reference(fps, config), _lean(fps, config)
        for xyxy, scores in _synthetic(rng):
            frames += 1
            differ += not np.array_equal(ref.update(xyxy, scores), lean.update(xyxy, scores))
    assert frames == 6000 and differ == 0


@pytest.mark.parametrize("clip", ["WolfgangLanger_Pexels.mp4", "face_noface.mov", "noface_face.mov"])
def test_same_ids_as_supervision_on_real_detections(data_file, clip):
    """BlazeFace (short range: it also scores weak false positives) on real clips; every face also jittered and
    re-ordered as a second crowd beside it, so several tracks compete."""
    src = open_source(str(data_file(f"video/{clip}")))
    with FaceDetector(model="short", min_score=0.3) as det:
        faces = [det.detect(f.image) for f in src]
    rng = np.random.default_rng(0)
    ref, lean = _Reference(24.0, TrackerConfig()), _lean(24.0, TrackerConfig())
    tracked = 0
    for f in faces:
        xyxy = np.concatenate([f.boxes[:, :2], f.boxes[:, :2] + f.boxes[:, 2:]], axis=1)
        twin = xyxy + np.array([200, 0, 200, 0], np.float32) + rng.normal(0, 3, xyxy.shape).astype(np.float32)
        both = np.concatenate([xyxy, twin])
        scores = np.concatenate([f.scores, np.clip(f.scores - rng.uniform(0, 0.6, len(f)), 0.05, 1)]).astype(np.float32)
        order = rng.permutation(len(both))
        a, b = ref.update(both[order], scores[order]), lean.update(both[order], scores[order])
        assert np.array_equal(a, b), (a, b)
        tracked += int((b >= 0).sum())
    assert tracked > len(faces) // 2  # the comparison ran on real tracks, not on empty frames


def test_an_ended_track_never_comes_back():
    """A face gone for exactly the lost buffer plus one frame: FaceTracker reports its track ended, and when it
    returns it is a new id. (supervision would have re-found the old id on that very frame.)"""
    fps = 10.0
    tracker = FaceTracker(fps=fps, config=TrackerConfig(lost_seconds=0.5))
    face = Faces(np.array([[100, 100, 80, 80]], np.float32), np.array([0.9], np.float32),
                 np.zeros((1, 6, 2), np.float32))
    ended, ids = [], []
    for i in range(40):
        gone = 10 <= i < 10 + tracker.max_lost_frames + 1
        update = tracker.update(Faces.empty() if gone else face)
        ended.extend(update.ended)
        ids.extend(int(x) for x in update.ids if x >= 0)
    assert ended == [1]
    assert set(ids) == {1, 2} and ids.index(2) > ids.index(1)

    raw = _Reference(fps, TrackerConfig(lost_seconds=0.5), drop_expired=False)
    raw_ids = []
    for i in range(40):
        gone = 10 <= i < 10 + tracker.max_lost_frames + 1
        xyxy = np.zeros((0, 4), np.float32) if gone else np.array([[100, 100, 180, 180]], np.float32)
        raw_ids.extend(int(x) for x in raw.update(xyxy, np.full(len(xyxy), 0.9, np.float32)) if x >= 0)
    assert set(raw_ids) == {1}  # supervision as it is: the ended id 1 is back


def test_assignment_and_iou_helpers():
    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    b = np.array([[20, 20, 30, 30], [0, 0, 10, 5], [5, 5, 5, 5]], np.float32)  # the last one is empty
    iou = iou_matrix(a, b)
    assert iou.shape == (2, 3) and iou[1, 0] == 1.0 and iou[0, 1] == pytest.approx(0.5) and iou[:, 2].tolist() == [0, 0]
    pairs, rows, cols = assign(1.0 - iou, 0.6)
    assert sorted(pairs) == [(0, 1), (1, 0)] and rows == [] and cols == [2]
    assert assign(np.zeros((0, 2)), 0.5) == ([], [], [0, 1])
    # Invalid boxes (non-finite, empty) are ignored rather than tracked.
    bt = ByteTrack(0.25, 0.8, 30)
    ids = bt.update(np.array([[0, 0, np.nan, 10], [5, 5, 5, 9], [0, 0, 10, 10]], np.float32),
                    np.array([0.9, 0.9, 0.9], np.float32))
    assert ids.tolist() == [-1, -1, 1]
