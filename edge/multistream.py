"""Several streams in one process: shared detector and engine, per-stream tracks, smoothing and events.

Shape of the loop, and why:

* One **reader thread per source** pulls frames (GStreamer decodes in its own threads; the reader does
  the copy into numpy) into a tiny per-stream buffer. A live source keeps only its *newest* frame
  (older ones are dropped and counted), so a slow step never builds lag; a file blocks its reader
  until the frame is taken, so every frame of a file is analysed.
* The main thread takes **one frame from every stream that has one** and hands them to
  :meth:`FrameAnalyzer.analyze_many`, which runs the emotion engine once for all faces of all
  streams -- the engine's per-call overhead is paid once per step, not once per stream.
* Each stream then has its own :class:`StreamProcessor`: its own ByteTrack tracker (ids are per
  stream), per-track smoothers and event bookkeeping. Streams never share state, so a stream's
  results are the same whether it runs alone or beside others (files: frame for frame).
* A stream that ends or fails ends alone: its open tracks get their ``track_end`` (reason
  ``end_of_stream`` or ``source_error``), the others go on, and the failure is reported at the end.
* A stop request (``should_stop``: SIGINT/SIGTERM, see :mod:`edge.shutdown`) is honoured between
  steps, never inside one: every frame already taken is analysed and written with its events, then
  all streams end with reason ``interrupted`` and their overlays are finished. Stopping mid-step
  would leave e.g. a frame record without the events it caused.

Nothing here imports torch; the engine behind the analyzer is whatever ``load_engine`` returned.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from emostream.edge.events import EventConfig, StreamEvents
from emostream.edge.metrics import Metrics
from emostream.edge.overlay import OverlayFace, draw_overlay
from emostream.edge.pipeline import FrameAnalysis, FrameAnalyzer
from emostream.edge.smoothing import SmoothedState, SmoothingConfig, TrackSmoother
from emostream.edge.tracking import FaceTracker, TrackerConfig
from emostream.engines.emotion.valence_arousal import valence_arousal
from emostream.streams import Frame, SourceError, VideoSource
from emostream.streams.sink import SinkError, VideoSink, open_sink

#: Frames a file reader may decode ahead of the analyzer (bounded memory, overlapped decoding).
_FILE_AHEAD = 2


class StreamConfigError(Exception):
    """Inconsistent multi-stream settings (duplicate stream ids, wrong number of ids or overlays)."""


# ----------------------------------------------------------------------------------------------------
# one stream's state


@dataclass(frozen=True)
class StreamStep:
    """What one frame of one stream produced: the analysis, per-face track ids and smoothed states,
    the frame record (with ``track``/``smoothed_label``) and the events, in output order."""

    analysis: FrameAnalysis
    track_ids: np.ndarray
    states: list[SmoothedState | None]
    valence_arousal: np.ndarray  # (N, 2) raw per-face [valence, arousal]
    record: dict
    events: list[dict]

    def overlay_faces(self) -> list[OverlayFace]:
        """What the overlay draws: smoothed label and V/A for tracked faces, raw for the rest."""
        faces = []
        analysis = self.analysis
        for i, state in enumerate(self.states):
            box = tuple(float(v) for v in analysis.faces.boxes[i])
            if state is None:
                k = int(np.argmax(analysis.probs[i]))
                faces.append(OverlayFace(box, None, analysis.labels[k], float(analysis.probs[i, k]),
                                         float(self.valence_arousal[i, 0]), float(self.valence_arousal[i, 1])))
            else:
                faces.append(OverlayFace(box, int(self.track_ids[i]), state.label, state.confidence,
                                         state.valence, state.arousal))
        return faces


class StreamProcessor:
    """Tracker + per-track smoothers + events for one stream. Feed analyses in frame order."""

    def __init__(self, stream: str, labels: Sequence[str], fps: float | None = None,
                 tracker: TrackerConfig | None = None, smoothing: SmoothingConfig | None = None,
                 events: EventConfig | None = None) -> None:
        self.stream = stream
        self.labels = tuple(labels)
        fps = fps if fps and 0 < fps <= 1000 else 30.0
        self.smoothing = smoothing or SmoothingConfig(default_dt_s=1.0 / fps)
        self.tracker = FaceTracker(fps=fps, config=tracker)
        self.events = StreamEvents(stream, self.labels, events)
        self._smoothers: dict[int, TrackSmoother] = {}
        self.frames = 0
        self.faces = 0

    @property
    def open_tracks(self) -> int:
        return len(self.tracker.active)

    def process(self, analysis: FrameAnalysis) -> StreamStep:
        frame = analysis.frame
        update = self.tracker.update(analysis.faces)
        n = len(analysis.faces)
        va = (valence_arousal(analysis.probs, self.labels) if n
              else np.zeros((0, 2), np.float32))
        states: list[SmoothedState | None] = []
        events: list[dict] = []
        record = analysis.record()
        for i, face in enumerate(record["faces"]):
            track = int(update.ids[i])
            state = None
            if track >= 0:
                smoother = self._smoothers.get(track)
                if smoother is None:
                    smoother = self._smoothers[track] = TrackSmoother(self.labels, self.smoothing)
                state = smoother.update(analysis.probs[i], frame.t, va[i])
                events.extend(self.events.observe(track, frame.index, frame.t, analysis.faces.boxes[i],
                                                  analysis.probs[i], state))
            states.append(state)
            face["track"] = track if track >= 0 else None
            face["smoothed_label"] = state.label if state else None
            face["valence"] = round(float(va[i, 0]), 3)
            face["arousal"] = round(float(va[i, 1]), 3)
            if state is not None and state.valence is not None:
                face["smoothed_va"] = [round(state.valence, 3), round(state.arousal or 0.0, 3)]
        for track in update.ended:
            self._smoothers.pop(track, None)
            events.extend(self.events.end(track, "lost"))
        self.frames += 1
        self.faces += n
        return StreamStep(analysis, update.ids, states, va, record, events)

    def finish(self, reason: str = "end_of_stream") -> list[dict]:
        """End every open track (with its summary); call once when the stream is over."""
        self.tracker.finish()
        self._smoothers.clear()
        return self.events.finish(reason)


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
        self.buf: collections.deque[Frame] = collections.deque()
        self.done = False  # no more frames will come (end, error, stop or max_frames reached)
        self.error: str | None = None
        self.dropped = 0  # live frames replaced in the buffer before the main loop took them
        self.stop = threading.Event()

    def run(self) -> None:
        read = 0
        try:
            while not self.stop.is_set() and (self.max_frames is None or read < self.max_frames):
                frame = self.source.read()
                if frame is None:
                    break
                read += 1
                with self.cond:
                    if self.latest_only:
                        self.dropped += len(self.buf)
                        self.buf.clear()
                    else:
                        while len(self.buf) >= _FILE_AHEAD and not self.stop.is_set():
                            self.cond.wait(0.5)
                    self.buf.append(frame)
                    self.cond.notify_all()
        except SourceError as exc:
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - a reader must always report, never die silently
            self.error = f"{self.source.stream}: {type(exc).__name__}: {exc}"
        finally:
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


class _Overlay:
    """Annotated output of one stream, opened lazily at the first frame (its size is known then)."""

    def __init__(self, uri: str, fps: float | None) -> None:
        self.uri = uri
        self.fps = fps if fps and 0 < fps <= 1000 else 30.0
        self.sink: VideoSink | None = None

    def write(self, step: StreamStep, caption: str) -> None:
        image = step.analysis.frame.image
        h, w = image.shape[:2]
        h2, w2 = h - h % 2, w - w % 2  # H.264 wants even sizes: drop the odd last row/column
        if self.sink is None:
            self.sink = open_sink(self.uri, w2, h2, self.fps)
        drawn = draw_overlay(image[:h2, :w2], step.overlay_faces(), caption)
        if drawn.shape[:2] != (self.sink.height, self.sink.width):  # the source changed resolution
            drawn = cv2.resize(drawn, (self.sink.width, self.sink.height), interpolation=cv2.INTER_AREA)
        self.sink.write(drawn, pts_ns=step.analysis.frame.pts_ns)

    def close(self) -> int:
        if self.sink is None:
            return 0
        frames = self.sink.frames
        self.sink.close()
        return frames


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
    on_step: Callable[[StreamStep], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[StreamResult]:
    """Analyse ``sources`` together until all have ended; return one :class:`StreamResult` each.

    ``write`` receives every record (frame records and events, interleaved in the order they happen).
    ``overlays[i]`` is an output URI for stream ``i``'s annotated video (None: no overlay).
    ``max_frames`` caps frames per stream. ``on_step`` sees each :class:`StreamStep` (the keyframe
    policy hooks in there). Sources are closed on return.

    ``should_stop`` is polled between steps (and while waiting for frames); once it says True, the
    streams still running end with reason ``interrupted`` and the results are returned normally
    (``StreamResult.interrupted``). A KeyboardInterrupt raised inside the loop (Ctrl-C without
    :mod:`edge.shutdown`) ends them the same way and is re-raised. Any other exception (e.g. the
    output cannot be written) still tries to end the tracks and finish the overlays, then propagates
    unchanged: a failure while cleaning up never hides the error that caused it.
    """
    ids = [s.stream for s in sources]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise StreamConfigError(f"stream ids must be unique; repeated: {', '.join(dup)} (use --stream-id)")
    overlays = list(overlays) if overlays is not None else [None] * len(sources)
    if len(overlays) != len(sources):
        raise StreamConfigError(f"{len(overlays)} overlay outputs for {len(sources)} streams")
    metrics = metrics or Metrics()
    labels = analyzer.labels
    cond = threading.Condition()
    # Files stop reading at max_frames; a live reader replaces unread frames, so the cap is applied
    # to frames analysed, below.
    readers = [_Reader(s, cond, None if s.latest_only else max_frames) for s in sources]
    procs = [StreamProcessor(s.stream, labels, s.fps, tracker, smoothing, events) for s in sources]
    outs = [_Overlay(o, s.fps) if o else None for o, s in zip(overlays, sources)]
    results = [StreamResult(s.stream, s.uri, overlay=o, live=s.is_live) for s, o in zip(sources, overlays)]
    finished = [False] * len(sources)
    timer = analyzer.timer
    total_frames = total_faces = 0

    def emit(i: int, records: list[dict]) -> None:
        for rec in records:
            write(rec)
            if rec.get("type") == "event":
                metrics.event(rec["stream"], rec["kind"])
                results[i].events[rec["kind"]] = results[i].events.get(rec["kind"], 0) + 1

    def stopping() -> bool:
        return should_stop is not None and should_stop()

    def end_stream(i: int, reason: str) -> None:
        finished[i] = True
        results[i].interrupted = reason == "interrupted"
        try:
            emit(i, procs[i].finish(reason))
        finally:  # the overlay is finished even when the records cannot be written
            metrics.tracks(procs[i].stream, 0)
            metrics.stream_ended(procs[i].stream, failed=reason == "source_error")
            if outs[i] is not None:
                try:
                    results[i].overlay_frames = outs[i].close()
                except SinkError as exc:
                    results[i].error = results[i].error or str(exc)
                outs[i] = None

    def record_drops(i: int) -> None:
        dropped = readers[i].dropped + sources[i].frames_dropped
        results[i].dropped = dropped
        metrics.dropped_frames(procs[i].stream, dropped)

    for s in sources:
        metrics.stream_started(s.stream)
    for r in readers:
        r.start()
    try:
        while not all(finished):
            t_wait = time.perf_counter()
            if stopping():
                for i in range(len(sources)):
                    if not finished[i]:
                        record_drops(i)
                        end_stream(i, "interrupted")
                break
            with cond:
                while not any(r.buf for r, f in zip(readers, finished) if not f) and not any(
                        r.drained for r, f in zip(readers, finished) if not f) and not stopping():
                    cond.wait(0.5)
                taken = [(i, r.buf.popleft()) for i, r in enumerate(readers) if not finished[i] and r.buf]
                drained = [i for i, r in enumerate(readers) if not finished[i] and r.drained]
                cond.notify_all()
            metrics.stage("wait", time.perf_counter() - t_wait)
            if taken:
                before = dict(timer.totals)
                analyses = analyzer.analyze_many([frame for _, frame in taken])
                for stage, total in timer.totals.items():
                    metrics.stage(stage, total - before.get(stage, 0.0))
                t_track = t_overlay = 0.0
                for (i, _frame), analysis in zip(taken, analyses):
                    t0 = time.perf_counter()
                    step = procs[i].process(analysis)
                    t_track += time.perf_counter() - t0
                    emit(i, [step.record, *step.events])
                    if on_step is not None:
                        on_step(step)
                    n_faces = len(analysis.faces)
                    results[i].frames += 1
                    results[i].faces += n_faces
                    results[i].frames_with_faces += bool(n_faces)
                    total_frames += 1
                    total_faces += n_faces
                    metrics.frame(procs[i].stream, n_faces)
                    metrics.tracks(procs[i].stream, procs[i].open_tracks)
                    if outs[i] is not None:
                        t0 = time.perf_counter()
                        try:
                            outs[i].write(step, f"{procs[i].stream}  #{analysis.frame.index}")
                        except SinkError as exc:
                            results[i].error = results[i].error or str(exc)
                            outs[i] = None  # stop annotating this stream; records go on
                        t_overlay += time.perf_counter() - t0
                metrics.stage("track", t_track)
                if any(o is not None for o in outs):
                    metrics.stage("overlay", t_overlay)
                if progress is not None:
                    progress(total_frames, total_faces)
            if max_frames is not None:
                for i, r in enumerate(readers):
                    if not finished[i] and results[i].frames >= max_frames and i not in drained:
                        r.stop.set()
                        drained.append(i)
            for i in drained:
                r = readers[i]
                record_drops(i)
                if r.error:
                    results[i].error = r.error
                end_stream(i, "source_error" if r.error else "end_of_stream")
    except BaseException as exc:
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else "end_of_stream"
        for i in range(len(sources)):
            if not finished[i]:
                with contextlib.suppress(Exception):  # keep the first error; the rest is best effort
                    end_stream(i, reason)
        raise
    finally:
        for r in readers:
            r.stop.set()
        with cond:
            cond.notify_all()
        for r, s in zip(readers, sources):
            r.join(timeout=2.0)
            s.close()
    return results
