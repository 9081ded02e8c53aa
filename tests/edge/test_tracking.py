"""ByteTrack face tracking on real detections: stable ids, several faces, occlusions, clean expiry."""

from __future__ import annotations

import numpy as np
import pytest

from emostream.edge.faces import FaceDetector, Faces
from emostream.edge.tracking import FaceTracker, TrackerConfig, TrackingError
from emostream.streams import open_source


def _detect_all(path, model: str = "short") -> tuple[list[Faces], float]:
    src = open_source(str(path))
    with FaceDetector(model=model) as det:
        faces = [det.detect(f.image) for f in src]
    return faces, src.fps or 30.0


@pytest.fixture(scope="module")
def pexels(data_file) -> tuple[list[Faces], float]:
    return _detect_all(data_file("video/WolfgangLanger_Pexels.mp4"))


def test_pexels_keeps_one_track_id_on_nearly_every_frame(pexels):
    faces, fps = pexels
    tracker = FaceTracker(fps=fps)
    ids, ended = [], []
    for f in faces:
        update = tracker.update(f)
        ids.extend(int(i) for i in update.ids)
        ended.extend(update.ended)
    assert len(faces) == 472
    tracked = [i for i in ids if i >= 0]
    assert len(set(tracked)) == 1, f"identity switches: ids {sorted(set(tracked))}"
    assert len(tracked) / len(faces) >= 0.99  # measured: 472/472
    assert ended == []  # the woman never leaves
    assert tracker.finish() == (tracked[0],)


def test_short_detector_misses_keep_the_id_and_long_ones_end_the_track(pexels):
    faces, fps = pexels
    tracker = FaceTracker(fps=fps, config=TrackerConfig(lost_seconds=1.0))
    gap = range(100, 112)  # half a second of misses (occlusion, motion blur)
    ids = [tracker.update(Faces.empty() if i in gap else f).ids for i, f in enumerate(faces[:200])]
    assert {int(x) for i, row in enumerate(ids) for x in row if i not in gap} == {1}

    tracker = FaceTracker(fps=fps, config=TrackerConfig(lost_seconds=1.0))
    ended_at = None
    for i, f in enumerate(faces[:200]):
        update = tracker.update(Faces.empty() if 50 <= i < 100 else f)  # two seconds without a face
        if update.ended:
            assert update.ended == (1,) and ended_at is None
            ended_at = i
    # Ended exactly when the lost buffer (1 s = int(23.976) frames) ran out after the last sighting (49).
    assert ended_at == 49 + tracker.max_lost_frames + 1
    assert tracker.active == (2,)  # the face came back as a new person: a new id, never a reused one


def test_multi_face_photo_gives_one_stable_track_per_face(data_file):
    image = next(iter(open_source(str(data_file("multiface/multi_face.jpg"))))).image
    with FaceDetector(model="full") as det:
        faces = det.detect(image)
    assert len(faces) == 5
    tracker = FaceTracker(fps=10)
    rows = []
    for _ in range(10):  # the still photo as a 1 s clip
        rows.append(tracker.update(faces).ids.tolist())
    assert all(-1 not in r for r in rows)
    assert len({i for r in rows for i in r}) == 5
    assert all(r == rows[0] for r in rows)  # each face keeps its id on every frame


@pytest.mark.parametrize("clip, first, last", [("face_noface.mov", 0, 71), ("noface_face.mov", 96, 167)])
def test_face_noface_clips_track_the_real_face_from_appearance_to_cut(data_file, clip, first, last):
    faces, fps = _detect_all(data_file(f"video/{clip}"))
    tracker = FaceTracker(fps=fps)
    seen: dict[int, list[int]] = {}
    ended: dict[int, int] = {}
    for i, f in enumerate(faces):
        update = tracker.update(f)
        for t in update.ids[update.ids >= 0]:
            seen.setdefault(int(t), []).append(i)
        for t in update.ended:
            ended[t] = i
    for t in tracker.finish():
        ended[t] = len(faces)
    longest = max(seen, key=lambda t: len(seen[t]))
    frames = seen[longest]
    # ByteTrack confirms a new track on its second sighting (except on a stream's first frame).
    assert frames[0] - first in (0, 1)
    assert frames[-1] == last
    assert len(frames) >= (last - first + 1) - 2
    # Any other track is a short detector blip on the animation (2-3 frames), never the person.
    assert all(len(v) <= 3 for t, v in seen.items() if t != longest)
    expiry = last + tracker.max_lost_frames + 1  # the face left: the track ends once its buffer runs out
    assert ended[longest] == (expiry if expiry < len(faces) else len(faces))  # else: at end of stream


def test_empty_frames_and_bad_settings():
    tracker = FaceTracker()
    assert tracker.update(Faces.empty()).ids.shape == (0,)
    with pytest.raises(TrackingError, match="fps"):
        FaceTracker(fps=0)
    with pytest.raises(TrackingError, match="match_iou"):
        TrackerConfig(match_iou=1.5)
    with pytest.raises(TrackingError, match="lost_seconds"):
        TrackerConfig(lost_seconds=-1)


def test_two_trackers_are_independent():
    """Per-stream trackers share nothing: both number their first face 1."""
    box = Faces(np.array([[10, 10, 50, 50]], np.float32), np.array([0.9], np.float32),
                np.zeros((1, 6, 2), np.float32))
    a, b = FaceTracker(), FaceTracker()
    assert a.update(box).ids.tolist() == [1] and b.update(box).ids.tolist() == [1]
