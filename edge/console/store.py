"""What the console shows, kept up to date from the loop thread at the cost of a few dict updates.

Why a snapshot store: the console must never slow the analysis. The loop thread (a
:class:`edge.sinks.Sink` ``step``) only stores a *reference* to the latest face batch of each stream
(frozen; its frame image is a fresh array per frame, never written again) and updates small per-track
numbers; records (events, alerts, the reasoner's answers, late ones included) arrive through
:meth:`SnapshotStore.record`, called by the run's record writer. The server thread takes
:meth:`snapshot` (a small JSON-able dict, copied under the lock) and :meth:`latest_batch` whenever a
browser asks, and does the drawing and JPEG encoding itself -- so a slow or absent browser skips
updates, never frames.

Bounded everywhere: ``history_s`` of valence/arousal samples per track (every ``sample_s``), the
last ``max_events`` events, the last ``max_ended`` ended tracks per stream.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Fields of a reasoning record the console shows.
_REASONING_FIELDS = ("expression", "valence", "arousal", "rationale", "verified", "engine", "frame", "late")


@dataclass
class _Track:
    id: int
    first_t: float
    last_t: float
    label: str | None = None
    confidence: float = 0.0
    valence: float | None = None
    arousal: float | None = None
    spark: collections.deque = field(default_factory=collections.deque)  # (t, valence, arousal)
    reasoning: dict | None = None
    alerts: dict[str, dict] = field(default_factory=dict)  # rule name -> raised alert record
    ended: str | None = None  # the track_end reason, once it ended

    def to_dict(self) -> dict:
        return {
            "id": self.id, "label": self.label, "confidence": round(self.confidence, 3),
            "valence": None if self.valence is None else round(self.valence, 3),
            "arousal": None if self.arousal is None else round(self.arousal, 3),
            "tracked_s": round(max(0.0, self.last_t - self.first_t), 1), "last_t": round(self.last_t, 2),
            "spark": [[round(t, 2), round(v, 3), round(a, 3)] for t, v, a in self.spark],
            "reasoning": self.reasoning, "alerts": sorted(self.alerts), "ended": self.ended,
        }


@dataclass
class _Stream:
    name: str
    uri: str
    frames: int = 0
    faces: int = 0
    t: float = 0.0
    batch: Any = None  # the latest FaceBatch (frozen)
    seq: int = 0  # increments with every new batch
    last_index: int = -1  # the source's index of the latest frame analysed
    times: collections.deque = field(default_factory=lambda: collections.deque(maxlen=60))
    tracks: dict[int, _Track] = field(default_factory=dict)
    ended_tracks: collections.deque = field(default_factory=lambda: collections.deque(maxlen=8))
    ended: str | None = None
    source: Any = None  # for its live frames_dropped counter


class SnapshotStore:
    """The console's :class:`edge.sinks.Sink` and record listener; thread-safe snapshots for the server."""

    def __init__(self, streams: Sequence[str], uris: Sequence[str] | None = None, *, rules: Sequence[dict] = (),
                 sources: Sequence[Any] = (), history_s: float = 60.0, sample_s: float = 0.25,
                 max_events: int = 200, max_ended: int = 8) -> None:
        self._lock = threading.Lock()
        uris = list(uris) if uris is not None else list(streams)
        self._streams = {s: _Stream(s, u) for s, u in zip(streams, uris)}
        self._order = list(streams)
        for s, src in zip(streams, sources):
            self._streams[s].source = src
        for st in self._streams.values():
            st.ended_tracks = collections.deque(maxlen=max_ended)
        self.rules = [dict(r) for r in rules]
        self.history_s = history_s
        self.sample_s = sample_s
        self._events: collections.deque[dict] = collections.deque(maxlen=max_events)
        self._event_seq = 0
        self.version = 0  # bumps on every change; the live channel sends only when it moved
        self.started = time.time()
        self.finished = False

    # ------------------------------------------------------------------ loop thread

    def step(self, step: Any) -> None:
        """Keep the batch reference and the tracked faces' smoothed numbers (no copies of pixels)."""
        batch = step.batch
        frame = batch.frame
        now = time.monotonic()
        with self._lock:
            st = self._streams.get(frame.stream)
            if st is None:
                return
            st.batch, st.seq, st.t = batch, st.seq + 1, float(frame.t)
            st.frames += 1
            st.last_index = frame.index
            st.faces += len(batch)
            st.times.append(now)
            for i in range(len(batch)):
                tid = int(batch.track_ids[i])
                tr = st.tracks.get(tid) if tid >= 0 else None
                if tr is None:
                    continue  # untracked, or not announced yet (track_start makes it a person)
                tr.last_t = float(frame.t)
                tr.label = batch.smoothed_labels[i]
                tr.confidence = float(batch.smoothed_confidence[i])
                va = batch.smoothed_va[i]
                if np.all(np.isfinite(va)):
                    tr.valence, tr.arousal = float(va[0]), float(va[1])
                    if not tr.spark or frame.t - tr.spark[-1][0] >= self.sample_s:
                        tr.spark.append((float(frame.t), tr.valence, tr.arousal))
                    while tr.spark and frame.t - tr.spark[0][0] > self.history_s:
                        tr.spark.popleft()
            self.version += 1

    def end(self, stream: str, reason: str, events: list[dict]) -> None:
        with self._lock:
            st = self._streams.get(stream)
            if st is not None:
                st.ended = reason
                self.version += 1

    def close(self) -> None:
        with self._lock:
            self.finished = True
            self.version += 1

    # ------------------------------------------------------------------ records (the run's writer)

    def record(self, rec: dict) -> None:
        """Events (track start/end, emotion changes, alerts) and reasoner answers from the output."""
        kind = rec.get("type")
        if kind not in ("event", "reasoning"):
            return
        with self._lock:
            st = self._streams.get(str(rec.get("stream")))
            if st is None:
                return
            track = rec.get("track")
            tr = st.tracks.get(track) if isinstance(track, int) else None
            if kind == "reasoning":
                if tr is None:
                    tr = next((t for t in st.ended_tracks if t.id == track), None)
                before = tr.reasoning if tr is not None else None
                if tr is not None:
                    tr.reasoning = {k: rec.get(k) for k in _REASONING_FIELDS}
                # The log gets an answer only when it says something new about the track (every keyframe's
                # answer would push the events an operator needs out of the bounded log).
                if before is None or (before.get("expression"), before.get("verified")) != (
                        rec.get("expression"), rec.get("verified")):
                    self._log({**rec, "t": st.t}, f"reasoner: {rec.get('expression')}"
                                                  f"{' (verified)' if rec.get('verified') else ' (not verified)'}")
                return
            ev = rec.get("kind")
            if ev == "track_start" and isinstance(track, int):
                t = float(rec.get("t", 0.0))
                st.tracks[track] = _Track(track, first_t=t, last_t=t, label=rec.get("label"),
                                          confidence=float(rec.get("confidence") or 0.0),
                                          valence=rec.get("valence"), arousal=rec.get("arousal"))
                text = f"appeared: {rec.get('label')}"
            elif ev == "track_end" and isinstance(track, int):
                tr = st.tracks.pop(track, None)
                if tr is not None:
                    tr.ended = str(rec.get("reason"))
                    tr.alerts.clear()
                    st.ended_tracks.appendleft(tr)
                text = f"left after {rec.get('duration')} s ({rec.get('reason')}), mostly {rec.get('dominant')}"
            elif ev == "emotion_change":
                text = f"{rec.get('from')} \u2192 {rec.get('to')}"
            elif ev == "alert":
                name = str(rec.get("name"))
                if tr is not None:
                    if rec.get("state") == "raised":
                        tr.alerts[name] = rec
                    else:
                        tr.alerts.pop(name, None)
                text = f"ALERT {rec.get('state')}: {name}" + (
                    f" (value {rec.get('value')})" if rec.get("value") is not None else "")
            else:
                text = str(ev)
            self._log(rec, text)

    def _log(self, rec: dict, text: str) -> None:
        self._event_seq += 1
        self._events.appendleft({
            "seq": self._event_seq, "kind": rec.get("kind") or rec.get("type"), "state": rec.get("state"),
            "stream": rec.get("stream"), "track": rec.get("track"), "t": rec.get("t"), "text": text,
            "wall": round(time.time(), 3),
        })
        self.version += 1

    # ------------------------------------------------------------------ server thread

    def streams(self) -> list[str]:
        return list(self._order)

    def latest_batch(self, index: int) -> tuple[Any, int]:
        """Stream ``index``'s latest face batch and its sequence number (``(None, 0)`` before the first)."""
        with self._lock:
            if not 0 <= index < len(self._order):
                raise IndexError(index)
            st = self._streams[self._order[index]]
            return st.batch, st.seq

    def snapshot(self) -> dict:
        """Everything the page shows, as a JSON-able dict (copied under the lock)."""
        with self._lock:
            streams = []
            for i, name in enumerate(self._order):
                st = self._streams[name]
                span = st.times[-1] - st.times[0] if len(st.times) > 1 else 0.0
                fps = (len(st.times) - 1) / span if span > 0 else 0.0
                # Drops so far: frames the source delivered that a live reader replaced before analysis (gaps
                # in the source's frame index) plus those GStreamer's leaky queue dropped.
                dropped = max(0, st.last_index + 1 - st.frames)
                dropped += int(getattr(st.source, "frames_dropped", 0) or 0) if st.source is not None else 0
                streams.append({
                    "index": i, "name": name, "uri": st.uri, "frames": st.frames, "faces": st.faces,
                    "t": round(st.t, 2), "fps": round(fps, 1), "dropped": dropped, "seq": st.seq, "ended": st.ended,
                    "tracks": [tr.to_dict() for tr in st.tracks.values()],
                    "ended_tracks": [tr.to_dict() for tr in st.ended_tracks],
                })
            return {"version": self.version, "streams": streams, "events": list(self._events),
                    "rules": self.rules, "finished": self.finished, "history_s": self.history_s}
