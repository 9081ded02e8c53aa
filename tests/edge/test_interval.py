"""edge/interval.py: full detection every N frames, region re-detection between, on real video."""

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
    assert every.full_detections == len(frames) and every.roi is None


def test_regions_follow_the_face_between_full_detections(detector, data_file) -> None:
    """Pexels (one face, moving): with N=4 a quarter of the frames get a full detection, the others a
    region pass; the face is found on every frame, its box within IoU 0.6 of every-frame detection."""
    frames = video_frames(data_file("video/WolfgangLanger_Pexels.mp4"), every=1, limit=120)
    sparse = IntervalDetector(detector, 4)
    ious = []
    try:
        for i, rgb in enumerate(frames):
            got, ref = sparse.detect(rgb, "clip", i), detector.detect(rgb)
            assert len(got) == 1, i
            if len(ref):
                ious.append(float(box_iou(ref.boxes, got.boxes).max()))
    finally:
        sparse.close()
    assert sparse.full_detections + sparse.roi_detections == len(frames)
    assert sparse.full_detections <= len(frames) // 4 + 1 + sparse.redetections
    assert sparse.roi_detections >= len(frames) // 2
    assert min(ious) > 0.6 and np.median(ious) > 0.8


def test_a_lost_face_forces_a_full_detection_and_streams_are_separate(detector, data_file) -> None:
    """face_noface.mov cuts from a face to an animation at frame 72: the region pass loses the face and
    the full detector runs on that same frame (so the face-free frames really are face-free). A second
    stream interleaved with it keeps its own state."""
    clip = video_frames(data_file("video/face_noface.mov"), every=1, limit=100)
    other = video_frames(data_file("video/WolfgangLanger_Pexels.mp4"), every=1, limit=100)
    sparse = IntervalDetector(detector, 5)
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
