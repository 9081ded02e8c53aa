"""Overlay drawing and annotated video out: what is drawn, where, and that the file decodes again."""

from __future__ import annotations

import numpy as np
import pytest

from emostream.edge.faces import FaceDetector
from emostream.edge.multistream import run_streams
from emostream.edge.overlay import OverlayError, OverlayFace, draw_overlay, track_color
from emostream.edge.pipeline import FrameAnalyzer
from emostream.engines.emotion import DEFAULT_MODEL, load_engine
from emostream.streams import open_source


def test_box_is_drawn_in_the_track_colour_and_the_input_is_untouched():
    frame = np.zeros((360, 640, 3), np.uint8)
    face = OverlayFace((100, 80, 120, 120), 3, "happy", 0.9, 0.5, 0.3)
    out = draw_overlay(frame, [face], caption="cam0 #12")
    assert frame.max() == 0 and out.shape == frame.shape and out.dtype == np.uint8
    colour = np.array(track_color(3))
    left_edge = out[150, 99:102].astype(int)  # the box's left side, between label and V/A text
    assert np.abs(left_edge - colour).sum(axis=1).min() < 60
    assert out[140, 160].max() == 0  # inside the box: the face is not covered
    assert out[:40, :200].max() > 200  # caption drawn top-left
    assert out[80:120, 222:262].any()  # the valence/arousal square beside the box


def test_colours_differ_per_track_and_untracked_faces_are_grey():
    colours = {track_color(t) for t in range(1, 9)}
    assert len(colours) == 8
    assert track_color(None) == track_color(-1) == (160, 160, 160)


def test_faces_at_the_frame_edge_and_without_va_are_drawn_without_error():
    frame = np.full((120, 160, 3), 90, np.uint8)
    faces = [OverlayFace((-20, -10, 60, 60), 1, "sad", 0.6), OverlayFace((140, 100, 50, 50), None, "anger", 0.4)]
    out = draw_overlay(frame, faces)
    assert (out != 90).any()


@pytest.mark.parametrize("bad", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32), "frame"])
def test_bad_frames_are_an_overlay_error(bad):
    with pytest.raises(OverlayError, match="HxWx3 uint8"):
        draw_overlay(bad, [])


def test_overlay_file_decodes_with_every_frame_and_shows_the_track(data_file, tmp_path):
    out = tmp_path / "annotated.mp4"
    src = open_source(str(data_file("video/single_face.mp4")), stream="one")
    analyzer = FrameAnalyzer(FaceDetector(), load_engine("onnxruntime", DEFAULT_MODEL))
    records: list[dict] = []
    try:
        [result] = run_streams(analyzer, [src], records.append, overlays=[str(out)])
    finally:
        analyzer.close()
    assert result.overlay_frames == result.frames == 72 and result.error is None
    decoded = open_source(str(out))
    frames = list(decoded)
    assert len(frames) == 72
    assert (decoded.width, decoded.height) == (640, 360)
    assert decoded.fps == pytest.approx(src.fps, abs=0.01)
    # The annotated frame differs from the source exactly around the tracked face's box.
    original = [f.image for f in open_source(str(data_file("video/single_face.mp4")))]
    rec = next(r for r in records if r["type"] == "frame" and r["frame"] == 40)
    x, y, w, h = (int(v) for v in rec["faces"][0]["box"])
    diff = np.abs(frames[40].image.astype(int) - original[40].astype(int)).sum(axis=2)
    on_box = diff[y + h // 4: y + 3 * h // 4, max(x - 2, 0): x + 3].mean()
    inside = diff[y + h // 3: y + 2 * h // 3, x + w // 3: x + 2 * w // 3].mean()
    assert on_box > 100 > inside + 50  # box line drawn; the face inside only carries coding noise
