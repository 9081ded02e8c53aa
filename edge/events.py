"""Track events: ``track_start``, ``emotion_change`` and ``track_end`` records with a per-track summary.

Operators and the keyframe policy want "person 3 appeared", "person 3 went from neutral to anger",
"person 3 left after 42 s, mostly happy" -- not 30 frame records a second. This module turns a
stream's per-frame, per-track observations (track id, box, smoothed state) into those records:

``{"type": "event", "kind": "track_start", "stream", "track", "frame", "t", "label", "box", ...}``
``{"type": "event", "kind": "emotion_change", ..., "from", "to", "confidence", "dominant", "duration"}``
``{"type": "event", "kind": "track_end", ..., "reason", "summary": {...}}``

Every event carries the track's ``dominant`` emotion so far (the smoothed label it showed in most
frames) and its ``duration`` in seconds. ``frame``/``t`` of ``track_start`` are the track's *first*
frame; of ``track_end`` its *last* frame (the end is only known ``lost_seconds`` later, or at end of
stream -- :meth:`StreamEvents.finish` ends every open track then, so no summary is ever lost).

A track must be seen in ``min_track_frames`` frames before it is announced: detector false positives
on non-faces (measured on the shared face/no-face clips: 2-3 frame blips on an animation) then never
become "a person", while a real face is announced within a tenth of a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from emostream.edge.smoothing import SmoothedState

EVENT_KINDS = ("track_start", "emotion_change", "track_end")
#: Why a track ended: not seen for ``lost_seconds``, its stream ended, its stream failed, or the run
#: was stopped (SIGINT/SIGTERM) while the face was still in view.
END_REASONS = ("lost", "end_of_stream", "source_error", "interrupted")


class EventError(Exception):
    """Bad event settings or an observation that does not fit the stream's label set."""


@dataclass(frozen=True)
class EventConfig:
    """``min_track_frames``: sightings before a track is announced (and summarised at its end)."""

    min_track_frames: int = 3

    def __post_init__(self) -> None:
        if not 1 <= self.min_track_frames <= 10_000:
            raise EventError(f"min_track_frames must be within 1..10000, got {self.min_track_frames}")


@dataclass
class _TrackLog:
    """Running tallies of one track: enough for the end-of-track summary without storing frames."""

    first_frame: int
    first_t: float
    last_frame: int
    last_t: float
    box: list[float]
    label: str
    frames: int = 0
    label_frames: dict[str, int] = field(default_factory=dict)
    prob_sum: np.ndarray | None = None
    va_sum: np.ndarray = field(default_factory=lambda: np.zeros(2))
    va_frames: int = 0
    changes: int = 0
    announced: bool = False

    @property
    def duration(self) -> float:
        return round(max(0.0, self.last_t - self.first_t), 3)

    def dominant(self) -> str:
        # Most frames wins; ties go to the label seen first (dict order) so the answer is stable.
        return max(self.label_frames, key=self.label_frames.__getitem__)


def _box(box: Sequence[float]) -> list[float]:
    return [round(float(v), 1) for v in box]


class TrackEvents:
    """One track's event state (its :class:`_TrackLog`), owned by that track (:class:`edge.track.Track`).

    ``counts`` is the stream's tally, shared by all its tracks, so the stream can report totals.
    """

    def __init__(self, stream: str, track: int, labels: Sequence[str], config: EventConfig,
                 counts: dict[str, int]) -> None:
        self.stream = stream
        self.track = track
        self.labels = tuple(labels)
        self.config = config
        self.counts = counts
        self.log: _TrackLog | None = None

    def _event(self, kind: str, frame: int, t: float, **fields: object) -> dict:
        self.counts[kind] += 1
        return {"type": "event", "kind": kind, "stream": self.stream, "track": self.track, "frame": frame,
                "t": round(float(t), 4), **fields}

    def observe(self, frame: int, t: float, box: Sequence[float], raw_probs: np.ndarray,
                state: SmoothedState) -> list[dict]:
        """One sighting; returns the events it causes (start once confirmed, label changes)."""
        probs = np.asarray(raw_probs, np.float64).reshape(-1)
        if probs.shape != (len(self.labels),):
            raise EventError(f"expected {len(self.labels)} probabilities for track {self.track}, got {probs.shape}")
        log = self.log
        if log is None:
            log = self.log = _TrackLog(first_frame=frame, first_t=t, last_frame=frame, last_t=t,
                                       box=_box(box), label=state.label)
        log.last_frame, log.last_t, log.box = frame, t, _box(box)
        log.frames += 1
        log.label_frames[state.label] = log.label_frames.get(state.label, 0) + 1
        log.prob_sum = probs.copy() if log.prob_sum is None else log.prob_sum + probs
        if state.valence is not None and state.arousal is not None:
            log.va_sum += (state.valence, state.arousal)
            log.va_frames += 1
        events: list[dict] = []
        if not log.announced:
            if log.frames >= self.config.min_track_frames:
                log.announced = True
                log.label = state.label
                events.append(self._event(
                    "track_start", log.first_frame, log.first_t, label=state.label,
                    confidence=round(state.confidence, 4), box=log.box, **_va(state),
                ))
            else:
                log.label = state.label  # not announced yet: its label may still settle silently
        elif state.label != log.label:
            log.changes += 1
            events.append(self._event(
                "emotion_change", frame, t, **{"from": log.label, "to": state.label},
                confidence=round(state.confidence, 4), **_va(state), dominant=log.dominant(),
                duration=log.duration,
            ))
            log.label = state.label
        return events

    @property
    def announced(self) -> bool:
        return self.log is not None and self.log.announced

    def end(self, reason: str = "lost") -> list[dict]:
        """The track is over: its ``track_end`` with summary (nothing if it was never announced)."""
        if reason not in END_REASONS:
            raise EventError(f"unknown end reason {reason!r} (known: {', '.join(END_REASONS)})")
        log, self.log = self.log, None
        if log is None or not log.announced:
            return []
        mean = log.prob_sum / max(log.frames, 1)
        summary: dict[str, object] = {
            "labels": {k: round(v / log.frames, 3) for k, v in
                       sorted(log.label_frames.items(), key=lambda kv: -kv[1])},
            "mean_probs": {name: round(float(p), 4) for name, p in zip(self.labels, mean)},
            "changes": log.changes,
        }
        if log.va_frames:
            summary["valence"] = round(float(log.va_sum[0] / log.va_frames), 3)
            summary["arousal"] = round(float(log.va_sum[1] / log.va_frames), 3)
        return [self._event(
            "track_end", log.last_frame, log.last_t, reason=reason, start_frame=log.first_frame,
            start_t=round(float(log.first_t), 4), duration=log.duration, frames=log.frames,
            dominant=log.dominant(), label=log.label, box=log.box, summary=summary,
        )]


def _va(state: SmoothedState) -> dict:
    if state.valence is None or state.arousal is None:
        return {}
    return {"valence": round(state.valence, 3), "arousal": round(state.arousal, 3)}


class StreamEvents:
    """Event bookkeeping for a stream's tracks by id, for callers without :class:`edge.track.Track`
    objects (tests, tools). Call :meth:`observe` for every tracked face of every frame, :meth:`end` for
    tracks the tracker expired, and :meth:`finish` once at end of stream."""

    def __init__(self, stream: str, labels: Sequence[str], config: EventConfig | None = None) -> None:
        self.stream = stream
        self.labels = tuple(labels)
        self.config = config or EventConfig()
        self._tracks: dict[int, TrackEvents] = {}
        self.counts: dict[str, int] = dict.fromkeys(EVENT_KINDS, 0)
        self.discarded = 0  # tracks that ended before being announced (too short: likely false faces)

    @property
    def open_tracks(self) -> tuple[int, ...]:
        return tuple(self._tracks)

    def observe(self, track: int, frame: int, t: float, box: Sequence[float], raw_probs: np.ndarray,
                state: SmoothedState) -> list[dict]:
        """One sighting of ``track``; returns the events it causes (start once confirmed, label changes)."""
        ev = self._tracks.get(track)
        if ev is None:
            ev = self._tracks[track] = TrackEvents(self.stream, track, self.labels, self.config, self.counts)
        return ev.observe(frame, t, box, raw_probs, state)

    def end(self, track: int, reason: str = "lost") -> list[dict]:
        """The tracker dropped ``track``: its ``track_end`` with summary (nothing if never announced)."""
        if reason not in END_REASONS:
            raise EventError(f"unknown end reason {reason!r} (known: {', '.join(END_REASONS)})")
        ev = self._tracks.pop(track, None)
        if ev is None:
            return []
        if not ev.announced:
            self.discarded += 1
        return ev.end(reason)

    def finish(self, reason: str = "end_of_stream") -> list[dict]:
        """End every open track (end of stream or a failed source) so no summary is lost."""
        events: list[dict] = []
        for track in list(self._tracks):
            events.extend(self.end(track, reason))
        return events
