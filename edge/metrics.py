"""Prometheus metrics for the edge runtime, served over HTTP with ``prometheus-client``.

One :class:`Metrics` object per process holds its *own* registry (no module-level globals), so tests
and several runtimes in one interpreter never see each other's numbers. Everything that runs in the
process -- the stream driver, the escalation client, the keyframe policy -- gets the same object and
updates it through the small methods below (they are cheap: a dict lookup and a lock).

Served only when asked (``emostream run --metrics-port N``), on 127.0.0.1 by default: the numbers
include stream names, which are URIs and may hold camera addresses, so exposing them on all
interfaces is an explicit choice (``--metrics-host 0.0.0.0``).

Metric names (all prefixed ``emostream_``):

=================================== ========= ======================================================
``frames_total{stream}``            counter   frames analysed
``stream_fps{stream}``              gauge     frames/s analysed over the last ``fps_window_s``
``frames_dropped_total{stream}``    counter   frames a latest-frame source skipped (consumer too slow)
``stage_seconds{stage}``            histogram per batch step: ``wait`` (for frames), ``detect``,
                                              ``align``, ``infer`` (one call for all streams), ``track``
                                              (tracking, smoothing, events), ``overlay`` (draw + encode)
``faces_total{stream}``             counter   faces detected
``faces_in_frame{stream}``          gauge     faces in the stream's latest frame
``tracks_active{stream}``           gauge     tracks currently open
``tracks_started_total{stream}``    counter   tracks announced (``track_start`` events)
``events_total{stream,kind}``       counter   events written, by kind
``escalations_sent_total{stream}``  counter   keyframes sent to the reasoner
``escalations_dropped_total{stream,reason}`` counter keyframes dropped (queue full, deadline, error)
``escalations_answered_total{stream}`` counter replies merged back
``queue_depth{queue}``              gauge     depth of a named bounded queue
``stream_up{stream}``               gauge     1 while the stream delivers, 0 once it ended or failed
``stream_errors_total{stream}``     counter   source failures
=================================== ========= ======================================================
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

#: Latency buckets (seconds) spanning a 1 ms detector call to a multi-second stall.
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class MetricsError(Exception):
    """The metrics endpoint cannot be served (port in use, bad host or port)."""


@dataclass
class MetricsServer:
    """A running ``/metrics`` endpoint; ``close()`` stops it and frees the port."""

    host: str
    port: int
    _httpd: Any
    _thread: threading.Thread

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


class Metrics:
    """The runtime's counters, gauges and histograms in one private registry."""

    def __init__(self, fps_window_s: float = 5.0) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.frames = Counter("emostream_frames", "Frames analysed", ["stream"], registry=r)
        self.fps = Gauge("emostream_stream_fps", "Frames per second analysed, recent window", ["stream"],
                         registry=r)
        self.frames_dropped = Counter("emostream_frames_dropped",
                                      "Frames a latest-frame source skipped because the consumer was busy",
                                      ["stream"], registry=r)
        self.stage_seconds = Histogram("emostream_stage_seconds", "Latency of one pipeline stage per step",
                                       ["stage"], buckets=STAGE_BUCKETS, registry=r)
        self.faces = Counter("emostream_faces", "Faces detected", ["stream"], registry=r)
        self.faces_in_frame = Gauge("emostream_faces_in_frame", "Faces in the latest frame", ["stream"],
                                    registry=r)
        self.tracks_active = Gauge("emostream_tracks_active", "Open tracks", ["stream"], registry=r)
        self.tracks_started = Counter("emostream_tracks_started", "Tracks announced", ["stream"], registry=r)
        self.events = Counter("emostream_events", "Events written", ["stream", "kind"], registry=r)
        self.escalations_sent = Counter("emostream_escalations_sent", "Keyframes sent to the reasoner",
                                        ["stream"], registry=r)
        self.escalations_dropped = Counter("emostream_escalations_dropped", "Keyframes dropped",
                                           ["stream", "reason"], registry=r)
        self.escalations_answered = Counter("emostream_escalations_answered", "Reasoner replies merged",
                                            ["stream"], registry=r)
        self.queue_depth = Gauge("emostream_queue_depth", "Items waiting in a bounded queue", ["queue"],
                                 registry=r)
        self.stream_up = Gauge("emostream_stream_up", "1 while the stream delivers frames", ["stream"],
                               registry=r)
        self.stream_errors = Counter("emostream_stream_errors", "Source failures", ["stream"], registry=r)
        self._window = fps_window_s
        self._times: dict[str, collections.deque[float]] = {}
        self._lock = threading.Lock()

    # -- updates used by the stream driver ------------------------------------------------------

    def stream_started(self, stream: str) -> None:
        self.stream_up.labels(stream).set(1)
        # Touch the per-stream series so they exist (at 0) before the first frame: dashboards and
        # alert rules see a stream that never delivers, not an absent one.
        self.frames.labels(stream)
        self.faces.labels(stream)
        self.frames_dropped.labels(stream)
        self.tracks_active.labels(stream).set(0)

    def stream_ended(self, stream: str, failed: bool = False) -> None:
        self.stream_up.labels(stream).set(0)
        self.fps.labels(stream).set(0)
        if failed:
            self.stream_errors.labels(stream).inc()

    def frame(self, stream: str, faces: int, now: float | None = None) -> None:
        """One analysed frame of ``stream`` with ``faces`` faces; updates the fps gauge."""
        now = time.monotonic() if now is None else now
        self.frames.labels(stream).inc()
        self.faces.labels(stream).inc(faces)
        self.faces_in_frame.labels(stream).set(faces)
        with self._lock:
            times = self._times.setdefault(stream, collections.deque())
            times.append(now)
            while times and now - times[0] > self._window:
                times.popleft()
            span = times[-1] - times[0]
            fps = (len(times) - 1) / span if span > 0 else 0.0
        self.fps.labels(stream).set(fps)

    def dropped_frames(self, stream: str, n: int) -> None:
        if n > 0:
            self.frames_dropped.labels(stream).inc(n)

    def stage(self, stage: str, seconds: float) -> None:
        self.stage_seconds.labels(stage).observe(max(0.0, seconds))

    def tracks(self, stream: str, active: int) -> None:
        self.tracks_active.labels(stream).set(active)

    def event(self, stream: str, kind: str) -> None:
        self.events.labels(stream, kind).inc()
        if kind == "track_start":
            self.tracks_started.labels(stream).inc()

    # -- updates used by the escalation client and keyframe policy --------------------------------

    def escalation_sent(self, stream: str) -> None:
        self.escalations_sent.labels(stream).inc()

    def escalation_dropped(self, stream: str, reason: str) -> None:
        self.escalations_dropped.labels(stream, reason).inc()

    def escalation_answered(self, stream: str) -> None:
        self.escalations_answered.labels(stream).inc()

    def set_queue_depth(self, queue: str, depth: int) -> None:
        self.queue_depth.labels(queue).set(depth)

    # -- exposition -----------------------------------------------------------------------------

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (what ``/metrics`` answers)."""
        return generate_latest(self.registry)

    def serve(self, port: int, host: str = "127.0.0.1") -> MetricsServer:
        """Start ``http://host:port/metrics`` in a daemon thread (port 0 picks a free one)."""
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise MetricsError(f"metrics port must be within 0..65535, got {port}")
        try:
            httpd, thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise MetricsError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
        return MetricsServer(host=host, port=int(httpd.server_address[1]), _httpd=httpd, _thread=thread)
