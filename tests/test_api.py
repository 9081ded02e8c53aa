"""The Python API, tested like the CLI: real MediaPipe, the real model, real photos."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

import emostream
from emostream.edge.face_batch import frame_record


@pytest.fixture(scope="module")
def analyzer():
    with emostream.Analyzer() as a:
        yield a


def _bgr(data_file, name: str) -> np.ndarray:
    image = cv2.imread(str(data_file(f"multiface/{name}")))
    assert image is not None
    return image


def test_import_emostream_is_cheap():
    """`import emostream` loads none of the heavy runtimes; the API arrives on first use."""
    code = ("import sys, emostream\n"
            "names = ('mediapipe', 'onnxruntime', 'torch', 'supervision', 'gi', 'cv2')\n"
            "heavy = [m for m in names if m in sys.modules]\n"
            "assert heavy == [], heavy\n"
            "assert callable(emostream.open_source) and 'mediapipe' not in sys.modules\n"
            "print(emostream.Analyzer.__name__)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "Analyzer"


def test_single_face_photo_is_one_happy_face(analyzer, data_file):
    faces = analyzer.analyze(_bgr(data_file, "single_face.jpg"), color="bgr")
    assert isinstance(faces, emostream.FaceBatch) and len(faces) == 1
    assert faces.top_labels() == ["happy"]
    assert faces.probs.shape == (1, len(analyzer.labels)) and faces.probs[0].sum() == pytest.approx(1, abs=1e-4)
    assert faces.valence_arousal[0, 0] > 0.3  # happy is pleasant
    assert faces.crops.shape[0] == 1 and faces.keypoints.shape == (1, 6, 2)
    record = frame_record(faces)
    assert record["type"] == "frame" and record["faces"][0]["label"] == "happy"
    assert record["faces"][0]["track"] is None  # no tracking asked


def test_bgr_and_rgb_give_the_same_faces_and_rgb_is_the_default(analyzer, data_file):
    bgr = _bgr(data_file, "multi_face.jpg")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    a = analyzer.analyze(bgr, color="bgr")
    b = analyzer.analyze(rgb)
    assert len(a) >= 3
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-6)
    # The order matters (the gray crops weight the channels differently), so passing BGR as the
    # default RGB is not the same image: the option really converts.
    c = analyzer.analyze(bgr)
    assert len(c) != len(a) or not np.array_equal(c.crops, a.crops)


def test_faceless_frame_gives_an_empty_batch(analyzer):
    faces = analyzer.analyze(np.full((240, 320, 3), 127, np.uint8))
    assert len(faces) == 0 and faces.top_labels() == [] and faces.probs.shape == (0, len(analyzer.labels))
    assert frame_record(faces)["faces"] == []


@pytest.mark.parametrize(("image", "words"), [
    (None, "numpy array"),
    (np.zeros((64, 64, 3), np.float32), "uint8"),
    (np.zeros((64, 64, 4), np.uint8), "HxWx3"),
    (np.zeros((1, 1, 3), np.uint8), "too small"),
])
def test_bad_input_says_what_is_wrong(analyzer, image, words):
    with pytest.raises(emostream.AnalyzerError, match=words):
        analyzer.analyze(image)


def test_unknown_color_order_is_refused(analyzer):
    with pytest.raises(emostream.AnalyzerError, match="rgb"):
        analyzer.analyze(np.zeros((64, 64, 3), np.uint8), color="hsv")  # type: ignore[arg-type]


def test_tracking_over_video_frames_from_open_source(data_file):
    """open_source frames through a tracking Analyzer: the face keeps one id and gets a smoothed label,
    like the records of `emostream run` on the same clip."""
    src = emostream.open_source(str(data_file("video/WolfgangLanger_Pexels.mp4")))
    batches = []
    with emostream.Analyzer(track=True, fps=src.fps or 25.0) as a:
        try:
            for _ in range(30):
                frame = src.read()
                if frame is None:
                    break
                batches.append(a.analyze(frame.image, t=frame.t))
        finally:
            src.close()
    assert len(batches) == 30
    ids = {int(b.track_ids[0]) for b in batches[1:] if len(b)}
    assert len(ids) == 1 and ids != {-1}
    assert batches[-1].smoothed_labels[0] in a.labels
    # A video gets the CLI's detection interval (faces carried by flow between full detections) ...
    assert a._analyzer.interval.interval == 5 and a._analyzer.interval.full_detections < 30
    assert all(len(b) == 1 for b in batches)


def test_frames_from_open_source_are_taken_as_decoded(analyzer, data_file):
    """A video Frame passed as it is: the same faces and labels as its RGB image, its own timestamp, and no
    full-size RGB conversion at all (the YUV planes serve flow and crops, and the detector's small picture)."""
    clip = str(data_file("video/WolfgangLanger_Pexels.mp4"))
    with emostream.open_source(clip) as src:
        frames = [src.read() for _ in range(12)]
    as_rgb = [analyzer.analyze(f.image, t=f.t) for f in frames[:6]]
    with emostream.open_source(clip) as src:
        fresh = [src.read() for _ in range(12)]
    as_frames = [analyzer.analyze(f) for f in fresh[:6]]
    for a, b in zip(as_rgb, as_frames):
        assert len(a) == len(b) == 1
        assert np.abs(a.boxes - b.boxes).max() < 3.0
    agree = np.mean([a.top_labels()[0] == b.top_labels()[0] for a, b in zip(as_rgb, as_frames)])
    assert agree >= 5 / 6
    with emostream.Analyzer(track=True, fps=24.0) as tracking:
        interval = tracking._analyzer.interval
        batches, detected = [], []
        for f in fresh[6:]:
            before = interval.full_detections
            batches.append(tracking.analyze(f))
            detected.append(interval.full_detections > before)
    assert all(len(b) == 1 for b in batches)
    assert detected == [True, False, False, False, False, True]  # every 5 frames; flow carries the face between
    # No full-size RGB at all: flow and crops use the Y plane, the detector its 192-px picture made from the planes.
    assert not any(b.frame._rgb is not None for b in batches)
    assert batches[0].frame.t == pytest.approx(fresh[6].t)


def test_unrelated_images_are_each_searched_whole(analyzer):
    """Without tracking, calls are unrelated photos: every call gets a full detection."""
    assert analyzer._analyzer.interval.interval == 1
