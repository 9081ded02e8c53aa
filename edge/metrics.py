"""Prometheus metrics for the edge runtime, served over HTTP with ``prometheus-client``.

One :class:`Metrics` object per process holds its *own* registry (no module-level globals), so tests
and several runtimes in one interpreter never see each other's numbers. Everything that runs in the
process -- the stream driver, the escalation client, the keyframe policy -- gets the same object and
updates it through the small methods below (they are cheap: a dict lookup and a lock).

Served only when asked (``emostream run --metrics-port N``), on 127.0.0.1 by default: the numbers
include stream names, which are URIs and may hold camera addresses, so exposing them on all
interfaces is an explicit choice (``--metrics-host 0.0.0.0``).

The endpoint must not become a way to starve the runtime (``_BoundedServer``): each connection
gets ``timeout_s`` (5 s) per read/write, so a client that connects and sends nothing, or half a
request, is closed after that; at most ``max_connections`` (16) are served at once, one thread
each, and when all are taken a new connection pushes out the oldest one still sending its request
-- so idle or trickling connections can neither pile up threads nor lock out a real scrape.

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
``mqtt_published_total``            counter   records the MQTT broker acknowledged (``--events``)
``mqtt_dropped_total{reason}``      counter   records not published: ``buffer`` full, ``unsent`` at exit
``console_clients``                 gauge     browsers on the operator console's live channel
=================================== ========= ======================================================
"""

from __future__ import annotations

import collections
import socket
import threading
import time
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, make_wsgi_app

#: Latency buckets (seconds) spanning a 1 ms detector call to a multi-second stall.
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


#: Per read/write on a metrics connection: a scrape sends its request at once, so a few seconds of
#: silence means a half-open or idle client, which is then closed.
DEFAULT_TIMEOUT_S = 5.0
#: Connections served at once (one thread each); Prometheus needs one per scrape.
DEFAULT_MAX_CONNECTIONS = 16


class MetricsError(Exception):
    """The metrics endpoint cannot be served (port in use, bad host or port)."""


class _Handler(WSGIRequestHandler):
    """prometheus-client's WSGI app behind a handler that times out, logs nothing and tells the
    server when a request has been read (from then on it is being answered, not idling)."""

    server: _BoundedServer

    def setup(self) -> None:
        self.timeout = self.server.timeout_s  # StreamRequestHandler.setup applies it to the socket
        super().setup()

    def parse_request(self) -> bool:
        ok = super().parse_request()
        if ok:
            self.server.request_read(self.connection)
        return ok

    def handle(self) -> None:
        try:
            super().handle()
        except OSError:  # timed out (idle, half a request), reset, or pushed out: just close it
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Scrapes are not worth a line on stderr each."""


class _BoundedServer(ThreadingMixIn, WSGIServer):
    """A threading WSGI server with a bounded number of connection threads (see module docstring)."""

    daemon_threads = True
    block_on_close = False  # close() must not wait out idle clients
    request_queue_size = 64

    def __init__(self, addr: tuple[str, int], timeout_s: float, max_connections: int) -> None:
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self.pushed_out = 0  # connections closed to make room (still sending their request)
        self.refused = 0  # connections closed because every slot was answering a request
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self._reading: collections.OrderedDict[socket.socket, float] = collections.OrderedDict()
        super().__init__(addr, _Handler)

    def request_read(self, conn: socket.socket) -> None:
        with self._lock:
            self._reading.pop(conn, None)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._push_out_oldest()
            if not self._slots.acquire(timeout=1.0):
                self.refused += 1
                self.shutdown_request(request)
                return
        with self._lock:
            self._reading[request] = time.monotonic()
        try:
            super().process_request(request, client_address)  # starts the connection's thread
        except BaseException:
            self._done(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._done(request)

    def _done(self, request: Any) -> None:
        with self._lock:
            self._reading.pop(request, None)
        self._slots.release()

    def _push_out_oldest(self) -> None:
        """Shut down the oldest connection that has not finished sending its request; its thread
        sees end-of-file, ends and frees its slot."""
        with self._lock:
            if not self._reading:
                return
            oldest, _ = self._reading.popitem(last=False)
            self.pushed_out += 1
        try:
            oldest.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already gone


def _family(host: str, port: int) -> tuple[socket.AddressFamily, str]:
    """IPv4 or IPv6 as the host asks (``::1`` must bind an IPv6 socket)."""
    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    return family, sockaddr[0]


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
        self.mqtt_published_total = Counter("emostream_mqtt_published", "Records the MQTT broker acknowledged",
                                            registry=r)
        self.mqtt_dropped_total = Counter("emostream_mqtt_dropped", "Records not published to MQTT", ["reason"],
                                          registry=r)
        self.console_clients = Gauge("emostream_console_clients", "Browsers on the console's live channel",
                                     registry=r)
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

    # -- updates used by the MQTT publisher and the operator console ------------------------------

    def mqtt_published(self, n: int = 1) -> None:
        self.mqtt_published_total.inc(n)

    def mqtt_dropped(self, reason: str, n: int = 1) -> None:
        self.mqtt_dropped_total.labels(reason).inc(n)

    def set_console_clients(self, n: int) -> None:
        self.console_clients.set(n)

    # -- exposition -----------------------------------------------------------------------------

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (what ``/metrics`` answers)."""
        return generate_latest(self.registry)

    def serve(
        self,
        port: int,
        host: str = "127.0.0.1",
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> MetricsServer:
        """Start ``http://host:port/metrics`` in a daemon thread (port 0 picks a free one).

        ``timeout_s`` and ``max_connections`` bound what idle or half-open clients can hold (see
        the module docstring); the defaults suit a Prometheus scraper.
        """
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise MetricsError(f"metrics port must be within 0..65535, got {port}")
        if not timeout_s > 0 or max_connections < 1:
            raise MetricsError("metrics timeout must be > 0 and max_connections >= 1")
        try:
            family, addr = _family(host, port)
            server_class = type("_Server", (_BoundedServer,), {"address_family": family})
            httpd = server_class((addr, port), timeout_s, max_connections)
        except OSError as exc:
            raise MetricsError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
        httpd.set_app(make_wsgi_app(self.registry))
        thread = threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True)
        thread.start()
        return MetricsServer(host=host, port=int(httpd.server_address[1]), _httpd=httpd, _thread=thread)
