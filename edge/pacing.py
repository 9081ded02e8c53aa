"""``--realtime``: deliver a file's frames at their native rate, as a camera would.

Why: a file is analysed as fast as the machine allows (every frame, seconds for a minute of video),
which is right for batch work but leaves nothing to watch on the operator console. Wrapping the source
makes its ``read`` wait until each frame's presentation time has come on the wall clock (relative to
the first frame), so a recorded clip plays like a live feed; analysis that falls behind is not made to
wait (no frame is ever dropped here).
"""

from __future__ import annotations

import time
from typing import Any

#: The longest single wait: a timestamp jump in a broken file must not stall the reader for minutes.
_MAX_WAIT_S = 1.0


class PacedSource:
    """A :class:`emostream.streams.VideoSource` whose ``read`` keeps to the frames' timestamps."""

    def __init__(self, source: Any) -> None:
        self._source = source
        self._origin: tuple[float, int] | None = None  # (monotonic wall time, pts_ns) of the first frame

    def read(self, timeout: float | None = None) -> Any:
        frame = self._source.read() if timeout is None else self._source.read(timeout)
        if frame is None:
            return None
        now = time.monotonic()
        if self._origin is None:
            self._origin = (now, frame.pts_ns)
            return frame
        due = self._origin[0] + (frame.pts_ns - self._origin[1]) / 1e9
        wait = due - now
        if wait > _MAX_WAIT_S:  # a jump: re-anchor instead of stalling
            self._origin = (now + _MAX_WAIT_S - (frame.pts_ns - self._origin[1]) / 1e9, self._origin[1])
            wait = _MAX_WAIT_S
        if wait > 0:
            time.sleep(wait)
        return frame

    def __iter__(self) -> Any:
        while (frame := self.read()) is not None:
            yield frame

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)
