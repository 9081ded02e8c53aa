"""Where a stream step goes: JSON lines, metrics, the overlay video, escalation -- one small interface.

Why an interface: the run loop used to write records, count metrics, draw overlays and call the
keyframe hook inline, so each new output meant editing the scheduler. A :class:`Sink` sees every
:class:`~emostream.edge.track.StreamStep` (in stream order, on the loop's thread: no locking) and
every stream's end, and is closed once. The scheduler (:mod:`edge.multistream`) calls the sinks in
the order it is given them; records come first so a frame record always precedes what it caused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import cv2

from emostream.edge.face_batch import frame_record
from emostream.edge.metrics import Metrics
from emostream.edge.overlay import OverlayFace, draw_overlay
from emostream.edge.track import StreamStep
from emostream.streams.sink import SinkError, VideoSink, open_sink


@runtime_checkable
class Sink(Protocol):
    """Receives each step and each stream's end; ``close`` once when the run is over.

    Optional attributes the scheduler reads: ``stage`` (a name: the time spent in this sink per loop
    step is reported as that pipeline stage while ``active`` is true) and ``keyframe_policy`` (a sink
    that escalates keyframes asks the stream processors to decide them, see :mod:`edge.track`).
    """

    def step(self, step: StreamStep) -> None: ...

    def end(self, stream: str, reason: str, events: list[dict]) -> None: ...

    def close(self) -> None: ...


class RecordSink:
    """JSON records: the frame record (built from the batch, :func:`frame_record`) then its events."""

    def __init__(self, write: Callable[[dict], None]) -> None:
        self.write = write

    def step(self, step: StreamStep) -> None:
        self.write(frame_record(step.batch))
        for event in step.events:
            self.write(event)

    def end(self, stream: str, reason: str, events: list[dict]) -> None:
        for event in events:
            self.write(event)

    def close(self) -> None:
        """The writer belongs to the caller (it may outlive the run to take late reasoner answers)."""


class MetricsSink:
    """Prometheus counters and gauges per stream (frames, faces, events, open tracks)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def step(self, step: StreamStep) -> None:
        stream = step.batch.frame.stream
        for event in step.events:
            self.metrics.event(stream, event["kind"])
        self.metrics.frame(stream, len(step.batch))
        self.metrics.tracks(stream, step.open_tracks)

    def end(self, stream: str, reason: str, events: list[dict]) -> None:
        for event in events:
            self.metrics.event(stream, event["kind"])
        self.metrics.tracks(stream, 0)
        self.metrics.stream_ended(stream, failed=reason == "source_error")

    def close(self) -> None:
        """Metrics outlive the run (the server may still be scraped)."""


class _Overlay:
    """Annotated output of one stream, opened lazily at the first frame (its size is known then)."""

    def __init__(self, uri: str, fps: float | None) -> None:
        self.uri = uri
        self.fps = fps if fps and 0 < fps <= 1000 else 30.0
        self.sink: VideoSink | None = None

    def write(self, step: StreamStep, caption: str) -> None:
        frame = step.batch.frame
        image = frame.image
        h, w = image.shape[:2]
        h2, w2 = h - h % 2, w - w % 2  # H.264 wants even sizes: drop the odd last row/column
        if self.sink is None:
            self.sink = open_sink(self.uri, w2, h2, self.fps)
        drawn = draw_overlay(image[:h2, :w2], OverlayFace.from_batch(step.batch), caption)
        if drawn.shape[:2] != (self.sink.height, self.sink.width):  # the source changed resolution
            drawn = cv2.resize(drawn, (self.sink.width, self.sink.height), interpolation=cv2.INTER_AREA)
        self.sink.write(drawn, pts_ns=frame.pts_ns)

    def close(self) -> int:
        if self.sink is None:
            return 0
        frames = self.sink.frames
        self.sink.close()
        return frames


class OverlaySink:
    """Annotated videos, one per stream that asked for one. A failing output stops annotating its
    stream (``errors``) while the records go on; ``frames`` says how many frames each output got."""

    stage = "overlay"

    def __init__(self, outputs: dict[str, tuple[str, float | None]]) -> None:
        self._outs = {stream: _Overlay(uri, fps) for stream, (uri, fps) in outputs.items()}
        self.errors: dict[str, str] = {}
        self.frames: dict[str, int] = {}

    def step(self, step: StreamStep) -> None:
        frame = step.batch.frame
        out = self._outs.get(frame.stream)
        if out is None:
            return
        try:
            out.write(step, f"{frame.stream}  #{frame.index}")
        except SinkError as exc:
            self.errors.setdefault(frame.stream, str(exc))
            self._outs.pop(frame.stream)

    @property
    def active(self) -> bool:
        return bool(self._outs)

    def end(self, stream: str, reason: str, events: list[dict]) -> None:
        out = self._outs.pop(stream, None)
        if out is None:
            return
        try:
            self.frames[stream] = out.close()
        except SinkError as exc:
            self.errors.setdefault(stream, str(exc))

    def close(self) -> None:
        for stream in list(self._outs):
            self.end(stream, "end_of_stream", [])


class CallbackSink:
    """Adapts a plain ``on_step(step)`` callable to the interface."""

    def __init__(self, fn: Callable[[StreamStep], None]) -> None:
        self.fn = fn

    def step(self, step: StreamStep) -> None:
        self.fn(step)

    def end(self, stream: str, reason: str, events: list[dict]) -> None:
        pass

    def close(self) -> None:
        pass
