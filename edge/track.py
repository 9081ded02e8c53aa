"""One face over time (:class:`Track`) and one stream's set of them (:class:`StreamProcessor`).

Why a track object: a face's temporal state -- its smoother, its event log, its keyframe bookkeeping
-- used to live in four dictionaries with four lifetimes (the tracker's, the smoothers', the events',
and a keyframe policy that forgot tracks on its own clock and smoothed the labels a second time, so
its "label changed" disagreed with the ``emotion_change`` events). A :class:`Track` owns all three;
it is created at a face's first tracked sighting and ended exactly once (``lost``, end of stream, a
failed source, a stop), and everything it knew ends with it. A ``label_change`` keyframe is, by
construction, the frame of an ``emotion_change`` event (subject to the keyframe budgets).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from emostream.edge.events import EVENT_KINDS, EventConfig, TrackEvents
from emostream.edge.face_batch import FaceBatch
from emostream.edge.keyframes import KeyframePolicy, KeyframeState
from emostream.edge.smoothing import SmoothedState, SmoothingConfig, TrackSmoother
from emostream.edge.tracking import FaceTracker, TrackerConfig


@dataclass(frozen=True)
class Sighting:
    """What one frame did to a track: its smoothed state, the events it caused, the keyframe reason."""

    state: SmoothedState
    events: list[dict]
    keyframe: str | None


class Track:
    """A tracked face: smoother + event state + keyframe state, one lifetime."""

    def __init__(self, stream: str, track_id: int, labels: Sequence[str], smoothing: SmoothingConfig,
                 events: EventConfig, counts: dict[str, int]) -> None:
        self.id = track_id
        self.smoother = TrackSmoother(labels, smoothing)
        self.events = TrackEvents(stream, track_id, labels, events, counts)
        self.keyframes = KeyframeState()

    def observe(self, frame: int, t: float, box: Sequence[float], probs: np.ndarray, va: np.ndarray,
                policy: KeyframePolicy | None = None) -> Sighting:
        """Fold one frame into the track; ``policy`` (if escalating) decides on a keyframe from the
        same smoothed state and events the records show."""
        state = self.smoother.update(probs, t, va)
        events = self.events.observe(frame, t, box, probs, state)
        reason = None
        if policy is not None:
            changed = any(e["kind"] == "emotion_change" for e in events)
            reason = policy.decide(self.keyframes, t, probs, label_changed=changed)
        return Sighting(state, events, reason)

    @property
    def announced(self) -> bool:
        return self.events.announced

    def end(self, reason: str) -> list[dict]:
        """The track is over: its ``track_end`` (if it was ever announced)."""
        return self.events.end(reason)


@dataclass(frozen=True)
class StreamStep:
    """What one frame of one stream produced: the face batch (with tracks, smoothed labels and keyframe
    decisions) and the events, in output order (the frame record, written from ``batch``, comes first)."""

    batch: FaceBatch
    events: list[dict]
    open_tracks: int = 0  # the stream's tracks that may still come back, after this frame

    @property
    def analysis(self) -> FaceBatch:
        """The older name of ``batch``."""
        return self.batch


class StreamProcessor:
    """Tracker + :class:`Track` objects for one stream. Feed face batches in frame order."""

    def __init__(self, stream: str, labels: Sequence[str], fps: float | None = None,
                 tracker: TrackerConfig | None = None, smoothing: SmoothingConfig | None = None,
                 events: EventConfig | None = None, keyframes: KeyframePolicy | None = None) -> None:
        self.stream = stream
        self.labels = tuple(labels)
        fps = fps if fps and 0 < fps <= 1000 else 30.0
        self.smoothing = smoothing or SmoothingConfig(default_dt_s=1.0 / fps)
        self.events_config = events or EventConfig()
        self.tracker = FaceTracker(fps=fps, config=tracker)
        self.keyframes = keyframes
        self.tracks: dict[int, Track] = {}
        self.counts: dict[str, int] = dict.fromkeys(EVENT_KINDS, 0)
        self.discarded = 0  # tracks that ended before being announced (too short: likely false faces)
        self.frames = 0
        self.faces = 0

    @property
    def open_tracks(self) -> int:
        return len(self.tracker.active)

    def process(self, batch: FaceBatch) -> StreamStep:
        frame = batch.frame
        update = self.tracker.update(batch.faces)
        n = len(batch)
        labels: list[str | None] = [None] * n
        conf = np.full(n, np.nan, np.float32)
        sva = np.full((n, 2), np.nan, np.float64)
        reasons: list[str | None] = [None] * n
        events: list[dict] = []
        for i in range(n):
            tid = int(update.ids[i])
            if tid < 0:
                continue
            track = self.tracks.get(tid)
            if track is None:
                track = self.tracks[tid] = Track(self.stream, tid, self.labels, self.smoothing,
                                                 self.events_config, self.counts)
            seen = track.observe(frame.index, frame.t, batch.boxes[i], batch.probs[i], batch.valence_arousal[i],
                                 self.keyframes)
            events.extend(seen.events)
            labels[i], conf[i], reasons[i] = seen.state.label, seen.state.confidence, seen.keyframe
            if seen.state.valence is not None:
                sva[i] = (seen.state.valence, seen.state.arousal or 0.0)
        for tid in update.ended:
            events.extend(self._end(tid, "lost"))
        self.frames += 1
        self.faces += n
        return StreamStep(batch.with_tracks(update.ids, labels, conf, sva, reasons), events, self.open_tracks)

    def _end(self, tid: int, reason: str) -> list[dict]:
        track = self.tracks.pop(tid, None)
        if track is None:
            return []
        if not track.announced:
            self.discarded += 1
        return track.end(reason)

    def finish(self, reason: str = "end_of_stream") -> list[dict]:
        """End every open track (with its summary); call once when the stream is over."""
        self.tracker.finish()
        events: list[dict] = []
        for tid in list(self.tracks):
            events.extend(self._end(tid, reason))
        return events
