"""Several streams in one process: shared detector and engine, per-stream tracks, smoothing and events.

Shape of the loop, and why:

* One **reader thread per source** pulls frames (GStreamer decodes in its own threads; the reader does
  the copy into numpy) into a tiny per-stream buffer. A live source keeps only its *newest* frame
  (older ones are dropped and counted), so a slow step never builds lag; a file blocks its reader
  until the frame is taken, so every frame of a file is analysed.
* A **front thread** takes **one frame from every stream that has one** (a *step*), detects and aligns
  their faces (:meth:`FrameAnalyzer.prepare`) and queues the step (at most ``_PIPELINE_AHEAD`` deep);
  the main thread runs the emotion engine once for all faces of the step
  (:meth:`FrameAnalyzer.complete`: the engine's per-call overhead is paid once per step, not once per
  stream), then the trackers and sinks. The two halves overlap on two cores; ``overlap=False`` runs
  them one after the other on the main thread (the benchmark's baseline). Same records either way.
* Each stream then has its own :class:`~emostream.edge.track.StreamProcessor`: its own ByteTrack
  tracker (ids are per stream) and :class:`~emostream.edge.track.Track` objects (smoother, events,
  keyframe state). Streams share only the keyframe budget, so a stream's records are the same
  whether it runs alone or beside others (files: frame for frame).
* What a step produced (a :class:`~emostream.edge.face_batch.FaceBatch` and its events) goes to the
  **sinks** (:mod:`edge.sinks`): JSON records, metrics, overlays, escalation -- in that order.
* A stream that ends or fails ends alone: its open tracks get their ``track_end`` (reason
  ``end_of_stream`` or ``source_error``), the others go on, and the failure is reported at the end.
* A stop request (``should_stop``: SIGINT/SIGTERM, see :mod:`edge.shutdown`) is honoured between
  steps, never inside one: every frame already taken (queued steps included) is analysed and written
  with its events, then
  all streams end with reason ``interrupted`` and their overlays are finished. Stopping mid-step
  would leave e.g. a frame record without the events it caused.

Nothing here imports torch; the engine behind the analyzer is whatever ``load_engine`` returned.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from emostream.edge.events import EventConfig
from emostream.edge.keyframes import KeyframePolicy
from emostream.edge.metrics import Metrics
from emostream.edge.pipeline import FrameAnalyzer, Prepared
from emostream.edge.sinks import CallbackSink, MetricsSink, OverlaySink, RecordSink, Sink
from emostream.edge.smoothing import SmoothingConfig
from emostream.edge.track import StreamProcessor, StreamStep
from emostream.edge.tracking import TrackerConfig
from emostream.streams import Frame, SourceError, VideoSource

__all__ = ["StreamConfigError", "StreamProcessor", "StreamResult", "StreamStep", "run_streams"]

#: Frames a file reader may decode ahead of the analyzer (bounded memory, overlapped decoding).
_FILE_AHEAD = 2
#: Steps detected and aligned ahead of the engine/sinks thread (bounded: at most this many steps of
#: frames sit between the two halves, so memory and added latency stay small).
_PIPELINE_AHEAD = 2
#: Frame latencies kept per stream (StreamResult.latency_s).
LATENCY_WINDOW = 20000


class StreamConfigError(Exception):
    """Inconsistent multi-stream settings (duplicate stream ids, wrong number of ids or overlays)."""


# ----------------------------------------------------------------------------------------------------
# readers


class _Reader(threading.Thread):
    """Pulls frames from one source into a small buffer shared (under ``cond``) with the main loop."""

    def __init__(self, source: VideoSource, cond: threading.Condition, max_frames: int | None) -> None:
        super().__init__(name=f"reader:{source.stream}", daemon=True)
        self.source = source
        self.cond = cond
        self.latest_only = source.latest_only
        self.max_frames = max_frames
        #: (frame, arrival time on time.perf_counter()) -- the arrival is when the frame left the source.
        self.buf: collections.deque[tuple[Frame, float]] = collections.deque()
        self.done = False  # no more frames will come (end, error, stop or max_frames reached)
        self.error: str | None = None
        self.dropped = 0  # live frames replaced in the buffer before the main loop took them
        self.stop = threading.Event()
        self.cpu_s = 0.0  # this thread's CPU time, set when it ends

    def run(self) -> None:
        read = 0
        try:
            while not self.stop.is_set() and (self.max_frames is None or read < self.max_frames):
                frame = self.source.read()
                if frame is None:
                    break
                arrival = getattr(frame, "arrival", None) or time.perf_counter()  # a front process's own
                read += 1
                with self.cond:
                    if self.latest_only:
                        self.dropped += len(self.buf)
                        self.buf.clear()
                    else:
                        while len(self.buf) >= _FILE_AHEAD and not self.stop.is_set():
                            self.cond.wait(0.5)
                    self.buf.append((frame, arrival))
                    self.cond.notify_all()
        except SourceError as exc:
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - a reader must always report, never die silently
            self.error = f"{self.source.stream}: {type(exc).__name__}: {exc}"
        finally:
            self.cpu_s = time.thread_time()
            with self.cond:
                self.done = True
                self.cond.notify_all()

    @property
    def drained(self) -> bool:
        return self.done and not self.buf


# ----------------------------------------------------------------------------------------------------
# the driver


@dataclass
class StreamResult:
    """How one stream went: frames, faces, tracks and events, and the error that ended it, if any."""

    stream: str
    uri: str
    frames: int = 0
    faces: int = 0
    frames_with_faces: int = 0
    dropped: int = 0
    events: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    overlay: str | None = None
    overlay_frames: int = 0
    live: bool = False
    interrupted: bool = False  # ended by a stop request, not by its source
    #: Seconds from a frame leaving its source to its step having passed every sink (records written),
    #: for the last ``LATENCY_WINDOW`` frames (bounded: a run may last for days).
    latency_s: collections.deque = field(default_factory=lambda: collections.deque(maxlen=LATENCY_WINDOW))
    #: CPU seconds of the run's own Python threads, shared by all streams of a run: ``front`` (detection and
    #: alignment), ``main`` (engine, trackers, sinks), ``readers`` (all streams' frame copies). What the
    #: process used beyond them went to GStreamer's threads. Where the GIL is what limits a run, these add up
    #: to well under the cores while frames/s stops growing (see README, "What limits four streams").
    thread_cpu_s: dict[str, float] = field(default_factory=dict)


def run_streams(
    analyzer: FrameAnalyzer,
    sources: Sequence[VideoSource],
    write: Callable[[dict], None],
    *,
    metrics: Metrics | None = None,
    overlays: Sequence[str | None] | None = None,
    max_frames: int | None = None,
    tracker: TrackerConfig | None = None,
    smoothing: SmoothingConfig | None = None,
    events: EventConfig | None = None,
    on_step: Callable[[StreamStep], None] | Sink | None = None,
    sinks: Sequence[Sink] = (),
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    overlap: bool = True,
) -> list[StreamResult]:
    """Analyse ``sources`` together until all have ended; return one :class:`StreamResult` each.

    ``write`` receives every record (frame records and events, interleaved in the order they happen).
    ``overlays[i]`` is an output URI for stream ``i``'s annotated video (None: no overlay).
    ``max_frames`` caps frames per stream. ``sinks`` (and ``on_step``, a sink or a plain callable) see
    each :class:`StreamStep` after the records are written; a sink with a ``keyframe_policy`` (the
    escalation hook) gets its keyframes decided by the tracks. Sources are closed on return.

    ``should_stop`` is polled between steps (and while waiting for frames); once it says True, the
    streams still running end with reason ``interrupted`` and the results are returned normally
    (``StreamResult.interrupted``). A KeyboardInterrupt raised inside the loop (Ctrl-C without
    :mod:`edge.shutdown`) ends them the same way and is re-raised. Any other exception (e.g. the
    output cannot be written) still tries to end the tracks and finish the overlays, then propagates
    unchanged: a failure while cleaning up never hides the error that caused it.

    ``overlap`` (default) runs detection and alignment of the next step on a second thread while this
    thread runs the engine, the trackers and the sinks on the current one (TFLite, OpenCV and ONNX
    Runtime work outside the GIL); records are the same either way, and sinks still see every step on
    this thread, in stream order. ``overlap=False`` does both halves here, one after the other.
    """
    ids = [s.stream for s in sources]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise StreamConfigError(f"stream ids must be unique; repeated: {', '.join(dup)} (use --stream-id)")
    overlays = list(overlays) if overlays is not None else [None] * len(sources)
    if len(overlays) != len(sources):
        raise StreamConfigError(f"{len(overlays)} overlay outputs for {len(sources)} streams")
    metrics = metrics or Metrics()
    extra = list(sinks)
    if on_step is not None:
        extra.append(on_step if isinstance(on_step, Sink) else CallbackSink(on_step))
    overlay_sink = OverlaySink({s.stream: (o, s.fps) for s, o in zip(sources, overlays) if o})
    all_sinks: list[Sink] = [RecordSink(write), *extra, MetricsSink(metrics), overlay_sink]
    policies = [p for p in (getattr(s, "keyframe_policy", None) for s in all_sinks) if p is not None]
    policy: KeyframePolicy | None = policies[0] if policies else None
    return _Scheduler(analyzer, sources, all_sinks, overlay_sink, metrics, max_frames,
                      [StreamProcessor(s.stream, analyzer.labels, s.fps, tracker, smoothing, events, policy)
                       for s in sources],
                      [StreamResult(s.stream, s.uri, overlay=o, live=s.is_live) for s, o in zip(sources, overlays)],
                      progress, should_stop, overlap).run()


_STOP = "stop"  # the front saw a stop request: queued steps are done, the rest end "interrupted"
_END = "end"  # every stream is drained


@dataclass
class _Work:
    """One step from the front half: frames taken (with arrival times), their faces, streams now drained."""

    streams: list[int]
    arrivals: list[float]
    prepared: Prepared
    drained: list[int]


@dataclass
class _Failed:
    """The front half raised: the main thread re-raises it (after the steps queued before it)."""

    error: BaseException


class _Scheduler:
    """Readers in, a front half (detect + align) and a back half (engine, trackers, sinks); ends streams once."""

    def __init__(self, analyzer: FrameAnalyzer, sources: Sequence[VideoSource], sinks: list[Sink],
                 overlays: OverlaySink, metrics: Metrics, max_frames: int | None,
                 procs: list[StreamProcessor], results: list[StreamResult],
                 progress: Callable[[int, int], None] | None, should_stop: Callable[[], bool] | None,
                 overlap: bool = True) -> None:
        self.analyzer, self.sources, self.sinks, self.overlays = analyzer, sources, sinks, overlays
        self.metrics, self.max_frames, self.procs, self.results = metrics, max_frames, procs, results
        self.progress, self.should_stop, self.overlap = progress, should_stop, overlap
        self.cond = threading.Condition()
        # Files stop reading at max_frames; a live reader replaces unread frames, so the cap is applied
        # to frames taken, in the front half.
        self.readers = [_Reader(s, self.cond, None if s.latest_only else max_frames) for s in sources]
        self.finished = [False] * len(sources)  # ended in the sinks (main thread)
        self.taken_all = [False] * len(sources)  # no more frames will be taken (front half)
        self.taken_count = [0] * len(sources)
        self.total_frames = self.total_faces = 0
        self.queue: queue.Queue = queue.Queue(maxsize=_PIPELINE_AHEAD)
        self.abort = threading.Event()  # the main thread is leaving: the front stops at once
        self.front_cpu_s = 0.0

    def stopping(self) -> bool:
        return self.should_stop is not None and self.should_stop()

    def count_events(self, i: int, events: list[dict]) -> None:
        for rec in events:
            self.results[i].events[rec["kind"]] = self.results[i].events.get(rec["kind"], 0) + 1

    def end_stream(self, i: int, reason: str) -> None:
        """End stream ``i`` in every sink; each sink is ended even if an earlier one failed (the
        overlay is finished even when the records cannot be written), and the first error is raised."""
        self.finished[i] = True
        self.results[i].interrupted = reason == "interrupted"
        stream = self.procs[i].stream
        events = self.procs[i].finish(reason)
        self.count_events(i, events)
        first: BaseException | None = None
        for sink in self.sinks:
            try:
                sink.end(stream, reason, events)
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after the other sinks
                first = first or exc
        self.results[i].overlay_frames = self.overlays.frames.get(stream, 0)
        if stream in self.overlays.errors:
            self.results[i].error = self.results[i].error or self.overlays.errors[stream]
        if first is not None:
            raise first

    def record_drops(self, i: int) -> None:
        dropped = self.readers[i].dropped + self.sources[i].frames_dropped
        self.results[i].dropped = dropped
        self.metrics.dropped_frames(self.procs[i].stream, dropped)

    # ------------------------------------------------------------------ front half

    def take(self) -> tuple[list[tuple[int, Frame, float]], list[int]]:
        """Wait for frames; one from every stream that has one, and the streams that are drained."""
        readers, done = self.readers, self.taken_all
        with self.cond:
            while not any(r.buf for r, d in zip(readers, done) if not d) and not any(
                    r.drained for r, d in zip(readers, done) if not d) and not self.stopping() \
                    and not self.abort.is_set():
                self.cond.wait(0.5)
            taken = [(i, *r.buf.popleft()) for i, r in enumerate(readers) if not done[i] and r.buf]
            drained = [i for i, r in enumerate(readers) if not done[i] and r.drained]
            self.cond.notify_all()
        if self.max_frames is not None:
            for i, _frame, _t in taken:
                self.taken_count[i] += 1
                if self.taken_count[i] >= self.max_frames and i not in drained:
                    self.readers[i].stop.set()
                    drained.append(i)
        for i in drained:
            self.taken_all[i] = True
        return taken, drained

    def produce(self) -> _Work | str:
        """The next step of the front half: frames taken, detected and aligned; or _STOP / _END."""
        if all(self.taken_all):
            return _END
        if self.stopping():
            return _STOP
        taken, drained = self.take()
        prepared = self.analyzer.prepare([frame for _, frame, _ in taken])
        return _Work([i for i, _, _ in taken], [t for _, _, t in taken], prepared, drained)

    def front(self) -> None:
        """The front thread: produce steps into the bounded queue until the end, a stop or an error."""
        try:
            while not self.abort.is_set():
                item = self.produce()
                self.put(item)
                if not isinstance(item, _Work):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which raises it
            self.put(_Failed(exc))
        finally:
            self.front_cpu_s = time.thread_time()

    def put(self, item: object) -> None:
        while not self.abort.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    # ------------------------------------------------------------------ back half

    def step(self, work: _Work) -> None:
        """One batched engine call, then each stream's processor and the sinks, in stream order."""
        batches = self.analyzer.complete(work.prepared)
        for stage, seconds in work.prepared.seconds.items():
            self.metrics.stage(stage, seconds)
        t_track = 0.0
        t_sinks: dict[int, float] = {}
        for i, arrival, batch in zip(work.streams, work.arrivals, batches):
            t0 = time.perf_counter()
            step = self.procs[i].process(batch)
            t_track += time.perf_counter() - t0
            self.count_events(i, step.events)
            failure: BaseException | None = None
            for k, sink in enumerate(self.sinks):
                t0 = time.perf_counter()
                try:
                    sink.step(step)
                except Exception as exc:  # noqa: BLE001 - re-raised below, after the other sinks
                    # A sink that fails (a full disk while writing this step's events) must not keep the
                    # step from the sinks after it: the overlay still gets the frame whose record was written.
                    failure = failure or exc
                t_sinks[k] = t_sinks.get(k, 0.0) + time.perf_counter() - t0
            if failure is not None:
                raise failure
            latency = time.perf_counter() - arrival
            self.results[i].latency_s.append(latency)
            self.metrics.stage("frame_latency", latency)
            n_faces = len(batch)
            self.results[i].frames += 1
            self.results[i].faces += n_faces
            self.results[i].frames_with_faces += bool(n_faces)
            self.total_frames += 1
            self.total_faces += n_faces
        self.metrics.stage("track", t_track)
        for k, sink in enumerate(self.sinks):
            stage = getattr(sink, "stage", None)
            if stage and getattr(sink, "active", True):
                self.metrics.stage(stage, t_sinks.get(k, 0.0))
        for i in work.streams:
            if self.procs[i].stream in self.overlays.errors:
                self.results[i].error = self.results[i].error or self.overlays.errors[self.procs[i].stream]
        if self.progress is not None:
            self.progress(self.total_frames, self.total_faces)

    def next_item(self, front: threading.Thread | None) -> _Work | _Failed | str:
        if front is None:
            return self.produce()
        while True:
            try:
                return self.queue.get(timeout=0.5)
            except queue.Empty:
                if not front.is_alive() and self.queue.empty():  # cannot happen unless the thread died hard
                    return _Failed(RuntimeError("the detection thread ended without a result"))

    def run(self) -> list[StreamResult]:
        main_cpu0 = time.thread_time()
        n = len(self.sources)
        for s in self.sources:
            self.metrics.stream_started(s.stream)
        for r in self.readers:
            r.start()
        front = threading.Thread(target=self.front, name="detect", daemon=True) if self.overlap else None
        if front is not None:
            front.start()
        try:
            while not all(self.finished):
                t_wait = time.perf_counter()
                item = self.next_item(front)
                self.metrics.stage("wait", time.perf_counter() - t_wait)
                if isinstance(item, _Failed):
                    raise item.error
                if item == _STOP:
                    for i in range(n):
                        if not self.finished[i]:
                            self.record_drops(i)
                            self.end_stream(i, "interrupted")
                    break
                if item == _END:
                    break
                assert isinstance(item, _Work)
                if item.streams:
                    self.step(item)
                for i in item.drained:
                    r = self.readers[i]
                    self.record_drops(i)
                    if r.error:
                        self.results[i].error = r.error
                    self.end_stream(i, "source_error" if r.error else "end_of_stream")
        except BaseException as exc:
            reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else "end_of_stream"
            for i in range(n):
                if not self.finished[i]:
                    try:
                        self.end_stream(i, reason)
                    except Exception:  # noqa: BLE001, S112 - keep the first error; the rest is best effort
                        continue
            raise
        finally:
            self.abort.set()
            for r in self.readers:
                r.stop.set()
            with self.cond:
                self.cond.notify_all()
            if front is not None:
                front.join(timeout=5.0)
            for r, s in zip(self.readers, self.sources):
                r.join(timeout=2.0)
                s.close()
            cpu = {"front": self.front_cpu_s, "main": time.thread_time() - main_cpu0,
                   "readers": sum(r.cpu_s for r in self.readers)}
            children = [s.cpu_s for s in self.sources if hasattr(s, "cpu_s")]  # --front process
            if children:
                cpu["front_processes"] = sum(children)
            for result in self.results:
                result.thread_cpu_s = cpu
        return self.results
