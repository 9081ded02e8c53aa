"""edge/interval.py and edge/flow.py: full detection every N frames, faces carried between, on real video."""

from __future__ import annotations

import numpy as np
import pytest
from test_faces import video_frames

from emostream.edge.faces import FaceDetector, FaceDetectorError, box_iou
from emostream.edge.interval import IntervalDetector


@pytest.fixture(scope="module")
def detector():
    with FaceDetector() as det:
        yield det


def test_interval_one_is_plain_detection(detector, data_file) -> None:
    frames = video_frames(data_file("video/WolfgangLanger_Pexels.mp4"), every=60)
    every = IntervalDetector(detector, 1)
    for i, rgb in enumerate(frames):
        a, b = detector.detect(rgb), every.detect(rgb, "s", i)
        assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.keypoints, b.keypoints)
    assert every.full_detections == len(frames) and every.roi is None and every.roi_detections == 0


@pytest.mark.parametrize("tracker", ["flow", "region"])
def test_faces_are_carried_between_full_detections(detector, data_file, tracker) -> None:
    """Pexels (one face, moving): with N=4 about a quarter of the frames get a full detection, the others
    are carried (flow or a region pass); the face is found on every frame, its box within IoU 0.6 of
    every-frame detection, and the eyes -- what the alignment uses -- within a few pixels."""
    frames = video_frames(data_file("video/WolfgangLanger_Pexels.mp4"), every=1, limit=120)
    sparse = IntervalDetector(detector, 4, tracker)
    ious, eye_err, side = [], [], []
    try:
        for i, rgb in enumerate(frames):
            got, ref = sparse.detect(rgb, "clip", i), detector.detect(rgb)
            assert len(got) == 1, i
            if len(ref):
                ious.append(float(box_iou(ref.boxes, got.boxes).max()))
                eye_err.append(float(np.abs(ref.keypoints[0, :2] - got.keypoints[0, :2]).max()))
                side.append(float(ref.boxes[0, 2]))
    finally:
        sparse.close()
    assert sparse.full_detections + sparse.roi_detections == len(frames)
    # Faces scored below MIN_CARRY_SCORE are detected again on the next frame, hence the slack.
    assert sparse.full_detections <= len(frames) // 2
    assert sparse.roi_detections >= len(frames) // 2
    assert min(ious) > 0.6 and np.median(ious) > 0.8
    # Eyes within 5 % of the face's side on a typical frame (the face is ~250 px here).
    assert np.median(np.array(eye_err) / np.array(side)) < 0.05


@pytest.mark.parametrize("tracker", ["flow", "region"])
def test_a_lost_face_forces_a_full_detection_and_streams_are_separate(detector, data_file, tracker) -> None:
    """face_noface.mov cuts from a face to an animation at frame 72: the carried face is lost and the
    full detector runs on that same frame (so the face-free frames really are face-free). A second
    stream interleaved with it keeps its own state."""
    clip = video_frames(data_file("video/face_noface.mov"), every=1, limit=100)
    other = video_frames(data_file("video/WolfgangLanger_Pexels.mp4"), every=1, limit=100)
    sparse = IntervalDetector(detector, 5, tracker)
    counts = []
    try:
        for i, (a, b) in enumerate(zip(clip, other)):
            counts.append(len(sparse.detect(a, "cut", i)))
            assert len(sparse.detect(b, "pexels", i)) == 1
    finally:
        sparse.close()
    assert all(c == 1 for c in counts[:70]) and not any(counts[74:100])
    assert sparse.redetections >= 1


@pytest.mark.parametrize("bad", [0, 31, 2.5, True])
def test_bad_interval_is_a_clear_error(detector, bad) -> None:
    with pytest.raises(FaceDetectorError, match="detect interval"):
        IntervalDetector(detector, bad)


def test_doubtful_faces_are_carried_only_once_found_again_in_place(detector, data_file) -> None:
    """A face scored below ``min_carry_score`` is detected again on the next frame, not copied forward; found
    again where it was, it is a persistent face and carried from then on. False positives (they score just
    above the detection threshold, one frame each, elsewhere each time) stay single-frame blips."""
    frames = video_frames(data_file("video/WolfgangLanger_Pexels.mp4"), every=1, limit=30)
    strict = IntervalDetector(detector, 5, min_carry_score=1.01)  # no score is sure enough to carry
    for i, rgb in enumerate(frames):
        assert len(strict.detect(rgb, "s", i)) == 1
    # Frame 0: seen once; frame 1: forced re-detection finds it in place; then the usual interval (6, 11, ...).
    assert strict.doubtful_detections == 1
    assert strict.full_detections == 7 and strict.roi_detections == 23

    blips = video_frames(data_file("video/no_face.mp4"), every=1)
    every, sparse = IntervalDetector(detector, 1), IntervalDetector(detector, 5)
    want = [i for i, rgb in enumerate(blips) if len(every.detect(rgb, "s", i))]
    got = [i for i, rgb in enumerate(blips) if len(sparse.detect(rgb, "s", i))]
    assert 1 <= len(want) <= 5 and got == want  # the blips are where the detector saw them, never copied on
    assert sparse.doubtful_detections >= 1


def test_flow_tracks_from_its_own_copy_of_the_frame(detector, data_file) -> None:
    """A caller that reuses one buffer (the Python API passes the user's array through) must not make flow
    compare a frame with itself: the carried face still follows the motion."""
    frames = video_frames(data_file("video/WolfgangLanger_Pexels.mp4"), every=1, limit=60)
    base = frames[0]
    shifted = [np.ascontiguousarray(np.roll(base, 4 * k, axis=1)) for k in range(5)]  # 4 px a frame
    buf = np.empty_like(base)
    sparse = IntervalDetector(detector, 5)
    xs = []
    for k, img in enumerate(shifted):
        buf[:] = img
        xs.append(float(sparse.detect(buf, "reused", k).boxes[0, 0]))
    assert sparse.full_detections == 1
    assert np.allclose(np.diff(xs), 4.0, atol=0.5), xs


def test_unknown_tracker_is_a_clear_error(detector) -> None:
    with pytest.raises(FaceDetectorError, match="unknown interval tracker 'kalman'"):
        IntervalDetector(detector, 4, "kalman")


def test_cli_choices_mirror_the_trackers() -> None:
    from emostream.edge.config import INTERVAL_TRACKERS
    from emostream.edge.interval import TRACKERS

    assert INTERVAL_TRACKERS == TRACKERS


def test_flow_carries_every_face_of_a_group(detector, data_file) -> None:
    """Two people: each Pexels frame beside the mirror image of a frame 40 later (two faces moving
    differently). Flow carries both between full detections; each stays within IoU 0.6 of what
    every-frame detection finds, and they never swap or merge."""
    clip = video_frames(data_file("video/WolfgangLanger_Pexels.mp4"), every=1, limit=100)
    frames = [np.ascontiguousarray(np.hstack([clip[i], clip[i + 40][:, ::-1]])) for i in range(60)]
    sparse = IntervalDetector(detector, 5)
    carried = 0
    for i, rgb in enumerate(frames):
        ref = detector.detect(rgb)
        before = sparse.full_detections
        got = sparse.detect(rgb, "pair", i)
        if len(ref) != 2:
            continue
        carried += sparse.full_detections == before
        assert len(got) == 2, i
        iou = box_iou(ref.boxes, got.boxes)
        assert iou.max(axis=1).min() > 0.6, (i, iou)
        # Left face stays left: the two carried boxes are each matched to a different detection.
        assert sorted(iou.argmax(axis=1).tolist()) == [0, 1]
    assert carried >= len(frames) // 2
