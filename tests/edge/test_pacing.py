"""``--realtime``: a file's frames arrive at their native rate (24 fps for the Pexels clip), all of them, in order."""

from __future__ import annotations

import time

from emostream.edge.pacing import PacedSource
from emostream.streams import open_source


def test_paced_file_keeps_its_frame_rate_and_every_frame(data_file):
    clip = data_file("video/WolfgangLanger_Pexels.mp4")
    source = PacedSource(open_source(str(clip)))
    try:
        assert not source.is_live and source.fps and abs(source.fps - 24) < 1
        frames = []
        t0 = time.monotonic()
        while len(frames) < 36:
            frame = source.read()
            assert frame is not None
            frames.append(frame)
        elapsed = time.monotonic() - t0
    finally:
        source.close()
    assert [f.index for f in frames] == list(range(36))  # nothing dropped or reordered
    span = (frames[-1].pts_ns - frames[0].pts_ns) / 1e9  # 35 frame intervals = 1.46 s of video
    assert elapsed >= span - 0.05  # not faster than the clip's own clock
