"""Frames kept as the decoder's I420 planes: layout, colour matrices and ranges, laziness, immutability."""

from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest

from emostream.streams import Colour, Frame, open_source
from emostream.streams.frame import LIMITED_TO_FULL, i420_to_rgb, pack_i420, yuv_to_rgb_matrix


def flat_i420(width: int, height: int, y: int, u: int, v: int) -> np.ndarray:
    h2, w2 = height + height % 2, width + width % 2
    out = np.empty((h2 * 3 // 2, w2), np.uint8)
    out[:h2] = y
    chroma = out[h2:].reshape(-1)
    quarter = chroma.size // 2
    chroma[:quarter], chroma[quarter:] = u, v
    return out


@pytest.mark.parametrize(
    ("colour", "yuv", "rgb"),
    [
        # Red, green and blue through each standard's own encoding (ITU-R BT.601/709 tables, rounded).
        (Colour("bt601"), (81, 90, 240), (255, 0, 0)),
        (Colour("bt601"), (145, 54, 34), (0, 255, 0)),
        (Colour("bt601"), (41, 240, 110), (0, 0, 255)),
        (Colour("bt709"), (63, 102, 240), (255, 0, 0)),
        (Colour("bt709"), (173, 42, 26), (0, 255, 0)),
        (Colour("bt709"), (32, 240, 118), (0, 0, 255)),
        (Colour("bt601", full_range=True), (76, 85, 255), (255, 0, 0)),  # JPEG / MJPEG webcams
        (Colour("bt601"), (16, 128, 128), (0, 0, 0)),
        (Colour("bt601"), (235, 128, 128), (255, 255, 255)),
        (Colour("bt709", full_range=True), (255, 128, 128), (255, 255, 255)),
    ],
)
def test_primaries_convert_under_each_matrix_and_range(colour, yuv, rgb):
    frame = Frame.from_i420(flat_i420(6, 4, *yuv), 6, 4, 0, 0, "s", colour)
    assert frame.image.shape == (4, 6, 3)
    assert np.abs(frame.image.astype(int) - rgb).max() <= 3, (frame.image[0, 0], rgb)


def test_the_matrix_path_agrees_with_opencvs_own_bt601_conversion():
    rng = np.random.default_rng(0)
    i420 = rng.integers(16, 236, (48 * 3 // 2, 64), dtype=np.uint8)
    fast = cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420)
    h2 = 48
    quarter = (h2 // 2) * 32
    chroma = i420[h2:].reshape(-1)
    up = [cv2.resize(p.reshape(24, 32), (64, 48), interpolation=cv2.INTER_NEAREST)
          for p in (chroma[:quarter], chroma[quarter:])]
    general = cv2.transform(cv2.merge([i420[:h2], *up]), yuv_to_rgb_matrix(Colour()))
    assert np.abs(fast.astype(int) - general).max() <= 2


def test_gray_is_the_luma_stretched_to_full_range_and_luma_is_free():
    i420 = flat_i420(8, 6, 0, 128, 128)
    i420[:6, :8] = np.arange(16, 64, dtype=np.uint8).reshape(6, 8)
    frame = Frame.from_i420(i420, 8, 6, 3, 1_000_000, "cam")
    luma, lut = frame.luma
    assert np.shares_memory(luma, i420) and lut is LIMITED_TO_FULL
    assert np.array_equal(frame.gray, LIMITED_TO_FULL[i420[:6, :8]])
    assert LIMITED_TO_FULL[16] == 0 and LIMITED_TO_FULL[235] == 255 and LIMITED_TO_FULL[126] == 128
    full = Frame.from_i420(i420, 8, 6, 3, 0, "cam", Colour("bt601", full_range=True))
    assert full.luma[1] is None and np.array_equal(full.gray, i420[:6, :8])
    # An RGB frame's luma is its gray picture, made once and kept.
    rgb = Frame(np.full((4, 4, 3), 200, np.uint8), 0, 0, "api")
    assert rgb.luma[1] is None and rgb.gray is rgb.luma[0] and int(rgb.gray[0, 0]) == 200


def test_rgb_is_made_once_on_first_use():
    frame = Frame.from_i420(flat_i420(4, 2, 81, 90, 240), 4, 2, 0, 0, "s")
    assert frame.planar and frame._rgb is None
    first = frame.image
    assert frame.image is first and first.flags["C_CONTIGUOUS"] and first.dtype == np.uint8


def test_odd_sizes_are_cropped_back_after_conversion():
    frame = Frame.from_i420(flat_i420(5, 3, 235, 128, 128), 5, 3, 0, 0, "s")
    assert frame.image.shape == (3, 5, 3) and frame.gray.shape == (3, 5) and frame.shape == (3, 5, 3)
    assert (frame.image >= 253).all()


def test_frames_are_immutable_compare_by_identity_and_pickle():
    frame = Frame.from_i420(flat_i420(4, 2, 81, 90, 240), 4, 2, 7, 123, "s", Colour("bt709"))
    with pytest.raises(AttributeError, match="immutable"):
        frame.index = 8
    twin = pickle.loads(pickle.dumps(frame))
    assert twin is not frame and twin != frame  # identity, as before (frames are not values)
    assert (twin.index, twin.pts_ns, twin.stream, twin.planar) == (7, 123, "s", True)
    assert np.array_equal(twin.image, frame.image)
    rgb = Frame(np.zeros((2, 2, 3), np.uint8), 1, 2, "api")
    assert np.array_equal(pickle.loads(pickle.dumps(rgb)).image, rgb.image)
    # What another process needs to rebuild the frame without pickling it (edge.front_process).
    rebuilt = Frame.from_i420(frame.i420.copy(), 4, 2, 7, 123, "s", frame.colour)
    assert frame.colour == Colour("bt709") and np.array_equal(rebuilt.image, frame.image)
    assert rgb.i420 is None and rgb.colour is None


def test_a_small_rgb_is_scaled_from_the_planes_without_making_the_full_one(data_file):
    """rgb_scaled (a detector's input): close to scaling the full RGB (the chroma is scaled before the
    conversion instead of after), exact for a frame that has RGB already, and the full RGB is not made."""
    with open_source(str(data_file("video/WolfgangLanger_Pexels.mp4"))) as src:
        frame = src.read()
    small = frame.rgb_scaled(192, 108)
    assert small.shape == (108, 192, 3) and small.dtype == np.uint8 and frame._rgb is None
    ref = cv2.resize(frame.image, (192, 108), interpolation=cv2.INTER_LINEAR)
    assert np.abs(small.astype(int) - ref).mean() < 2.0
    assert np.array_equal(frame.rgb_scaled(192, 108), ref)  # with RGB made, it is what scaling it gives
    rgb = Frame(ref, 0, 0, "still")
    assert np.array_equal(rgb.rgb_scaled(96, 54), cv2.resize(ref, (96, 54), interpolation=cv2.INTER_LINEAR))


def test_bad_pixels_are_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="HxWx3 uint8 RGB"):
        Frame(np.zeros((4, 4), np.uint8), 0, 0, "s")
    with pytest.raises(ValueError, match=r"must be a \(6, 4\) uint8 array"):
        Frame.from_i420(np.zeros((5, 4), np.uint8), 4, 4, 0, 0, "s")
    with pytest.raises(ValueError, match="unknown colour matrix"):
        Colour("srgb")


def test_pack_is_zero_copy_when_tight_and_unpads_otherwise():
    w, h = 8, 4
    tight = np.arange(w * h * 3 // 2, dtype=np.uint8)
    packed = pack_i420(tight, w, h, (0, 32, 40), (8, 4, 4))
    assert np.shares_memory(packed, tight) and packed.shape == (6, 8)
    # The same planes with 16-byte rows and a gap between planes.
    padded = np.zeros(200, np.uint8)
    y, u, v = tight[:32].reshape(4, 8), tight[32:40].reshape(2, 4), tight[40:48].reshape(2, 4)
    for plane, off, stride in ((y, 0, 16), (u, 80, 16), (v, 120, 16)):
        for r, row in enumerate(plane):
            padded[off + r * stride: off + r * stride + row.size] = row
    assert np.array_equal(pack_i420(padded, w, h, (0, 80, 120), (16, 16, 16)), packed)
    with pytest.raises(ValueError, match="too small"):
        pack_i420(padded[:100], w, h, (0, 80, 120), (16, 16, 16))


def test_a_bt709_video_converts_as_gstreamer_does(data_file):
    """face_noface.mov is HEVC tagged BT.709: the colours made here from its planes are GStreamer's own."""
    clip = str(data_file("video/face_noface.mov"))
    with open_source(clip) as src:
        frame = src.read()
    with open_source(clip, rgb=True) as src:
        ref = src.read()
    assert frame.planar and not ref.planar and frame.image.shape == ref.image.shape == (540, 960, 3)
    assert frame._colour == Colour("bt709")
    assert np.abs(frame.image.astype(int) - ref.image).mean() < 3.0


@pytest.mark.parametrize(("caps", "colour"), [("bt709", Colour("bt709")), ("bt601", Colour("bt601")),
                                              ("1:4:0:0", Colour("bt601", True)), ("bt2020", Colour("bt2020"))])
def test_the_caps_colorimetry_picks_the_conversion_gstreamer_uses(caps, colour):
    """SMPTE bars (saturated colours, where the matrices differ most) tagged with each colorimetry: the planes
    converted here match GStreamer's own RGB; converted as plain BT.601 limited range they would not."""
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstVideo", "1.0")
    from gi.repository import Gst, GstVideo

    from emostream.streams.source import _colour_of

    Gst.init(None)

    def grab(desc: str) -> tuple:
        pipe = Gst.parse_launch(f"{desc} ! appsink name=s")
        pipe.set_state(Gst.State.PLAYING)
        sample = pipe.get_by_name("s").emit("pull-sample")
        info = GstVideo.VideoInfo.new_from_caps(sample.get_caps())
        buf = sample.get_buffer()
        data = buf.extract_dup(0, buf.get_size())
        pipe.set_state(Gst.State.NULL)
        return info, data

    src = f"videotestsrc num-buffers=1 pattern=smpte ! video/x-raw,width=320,height=240,format=I420,colorimetry={caps}"
    info, data = grab(src)
    assert _colour_of(info.colorimetry) == colour
    planes = pack_i420(data, 320, 240, tuple(info.offset[:3]), tuple(info.stride[:3]))
    _, rgb = grab(f"{src} ! videoconvert ! video/x-raw,format=RGB")
    ref = np.frombuffer(rgb, np.uint8)[: 320 * 240 * 3].reshape(240, 320, 3)
    ours = np.abs(i420_to_rgb(planes, 320, 240, colour).astype(int) - ref).mean()
    assert ours < 2.5
    if colour != Colour():
        assert np.abs(i420_to_rgb(planes, 320, 240, Colour()).astype(int) - ref).mean() > ours + 2
