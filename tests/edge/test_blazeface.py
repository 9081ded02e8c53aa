"""edge/blazeface.py: BlazeFace's .tflite on the TFLite interpreter against MediaPipe's own graphs.

Real models, real photos: the re-done decoding (anchors, letterbox, weighted NMS) must find the same
faces MediaPipe finds, at the same places, or the default detector would quietly differ from the model
family the design names.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_faces import read_rgb, video_frames

from emostream.edge.blazeface import SPECS, letterbox, ssd_anchors, weighted_nms
from emostream.edge.faces import FaceDetector, box_iou


def test_anchor_grids_match_the_models_outputs() -> None:
    """896 anchors for short range (16x16x2 + 8x8x6), 2304 for full range (48x48x1), centres in (0, 1)."""
    short, full = ssd_anchors(SPECS["short"]), ssd_anchors(SPECS["full"])
    assert short.shape == (896, 2) and full.shape == (2304, 2)
    assert short.min() > 0 and short.max() < 1 and full.min() > 0 and full.max() < 1
    assert np.allclose(short[0], [0.5 / 16, 0.5 / 16]) and np.allclose(short[512], [0.5 / 8, 0.5 / 8])
    assert np.allclose(full[1], [1.5 / 48, 0.5 / 48])


def test_letterbox_keeps_the_aspect_and_maps_back() -> None:
    rgb = np.zeros((360, 640, 3), np.uint8)
    rgb[100:200, 300:400] = 255
    tensor, scale, px, py = letterbox(rgb, 192)
    assert tensor.shape == (192, 192, 3) and tensor.dtype == np.float32
    assert tensor.min() >= -1 and tensor.max() <= 1
    assert px == 0 and py == (192 - 108) // 2 and scale == pytest.approx(0.3)
    ys, xs = np.nonzero(tensor[..., 0] > 0.9)
    # The white square's corners, mapped back through (input - pad) / scale, land on the original ones.
    assert (xs.min() - px) / scale == pytest.approx(300, abs=4)
    assert (ys.max() + 1 - py) / scale == pytest.approx(200, abs=4)


def test_weighted_nms_merges_a_cluster_into_its_score_weighted_mean() -> None:
    boxes = np.array([[0, 0, 10, 10], [2, 0, 10, 10], [50, 50, 10, 10]], np.float32)
    scores = np.array([0.9, 0.3, 0.8], np.float32)
    kps = np.zeros((3, 6, 2), np.float32)
    kps[1] += 4
    b, s, k = weighted_nms(boxes, scores, kps)
    assert len(b) == 2 and list(s) == pytest.approx([0.9, 0.8])
    assert b[0, 0] == pytest.approx(2 * 0.3 / 1.2) and k[0, 0, 0] == pytest.approx(4 * 0.3 / 1.2)
    assert np.allclose(b[1], boxes[2])
    empty = weighted_nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 6, 2), np.float32))
    assert all(len(a) == 0 for a in empty)


@pytest.mark.parametrize("model", ["full", "short"])
def test_litert_finds_what_mediapipe_finds(data_file, model: str) -> None:
    """Same photos, both routes: same faces (IoU > 0.75), keypoints within a few pixels.

    Measured (640x360 Pexels frames, full range): mean keypoint difference ~3.5 px on a ~230 px face,
    scores ~0.04 apart on average (up to 0.18); on multi_face.jpg eyes/nose/mouth ~2-4 px apart on
    ~100 px faces (ears up to 11 px). The routes resize differently: cv2.resize here (pixel-centre
    aligned), MediaPipe's own affine warp, which puts its keypoints ~0.5/scale - 0.5 px further
    right/down (about 2 px on that photo).
    """
    with FaceDetector(model, runtime="litert", min_score=0.5) as ours, \
            FaceDetector(model, runtime="mediapipe", min_score=0.5) as theirs:
        frames = video_frames(data_file("video/WolfgangLanger_Pexels.mp4"), every=40)
        frames.append(read_rgb(data_file("multiface/single_face.jpg")))
        if model == "full":
            frames.append(read_rgb(data_file("multiface/multi_face.jpg")))
        for rgb in frames:
            a, b = theirs.detect(rgb), ours.detect(rgb)
            assert len(a) == len(b) and len(a) >= 1
            iou = box_iou(a.boxes, b.boxes)
            match = iou.argmax(axis=1)
            assert np.all(iou.max(axis=1) > 0.75)
            side = a.boxes[:, 2:].max(axis=1)
            diff = np.abs(a.keypoints - b.keypoints[match])
            centre = diff[:, :4].mean(axis=(1, 2))  # eyes, nose, mouth: what the alignment uses
            assert np.all(centre < 0.05 * side), (centre, side)
            assert np.all(diff.max(axis=(1, 2)) < 0.15 * side), (diff.max(axis=(1, 2)), side)
            # Full range scores this face 0.6-0.85, and resampling moves it: measured up to 0.18 apart.
            assert np.all(np.abs(a.scores - b.scores[match]) < 0.25)


def test_missing_runtime_and_bad_runtime_are_clear(monkeypatch) -> None:
    from emostream.edge.faces import FaceDetectorError

    with pytest.raises(FaceDetectorError, match="unknown detector runtime"):
        FaceDetector(runtime="tensorflow")
    import builtins

    real_import = builtins.__import__

    def no_tflite(name, *args, **kw):
        if name.startswith("tflite_runtime"):
            raise ImportError("No module named 'tflite_runtime'")
        return real_import(name, *args, **kw)

    # Only way to test the message without uninstalling a package other tests need.
    monkeypatch.setattr(builtins, "__import__", no_tflite)
    with pytest.raises(FaceDetectorError, match="tflite-runtime"):
        FaceDetector()
