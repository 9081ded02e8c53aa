"""Alert rules (``--alert "anger>=0.6 for 5s"``): a small grammar, and a sink that evaluates it per track.

Why rules on the command line: an operator watching many cameras wants to be told when a person
needs a human (angry for five seconds, strongly negative for ten), not to read per-frame records.
A rule is one condition on one tracked face, held for a while::

    RULE     := [NAME ":"] METRIC OP NUMBER ["for" DURATION]
    METRIC   := an emotion label (neutral, happy, sad, surprise, fear, disgust, anger, contempt)
              | "valence" | "arousal"
    OP       := ">=" | "<=" | ">" | "<"
    DURATION := NUMBER ("ms" | "s" | "m" | "min")        (default 0: the first frame that matches)

A label's value is the track's *smoothed* probability of that label (the same EMA over
log-probabilities, with the same ``--smooth-seconds``, that gives the records their
``smoothed_label``); ``valence``/``arousal`` are the track's ``smoothed_va``. Evaluating on smoothed
values and requiring the condition to hold for ``DURATION`` of stream time means one odd frame
neither raises nor clears an alert.

Each rule raises at most once per stretch: ``{"type":"event","kind":"alert","state":"raised",…}``
when the condition has held for the duration, then ``"state":"cleared"`` on the first frame it
no longer holds, or when the track ends (``"reason":"track_end"``). Untracked faces are never alerted
on (there is no one to name). Everything here runs on the loop thread and costs a few numpy
operations per tracked face.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from emostream.contract import CANONICAL_LABELS
from emostream.edge.smoothing import SmoothingConfig, TrackSmoother

__all__ = ["AlertError", "AlertRule", "AlertSink", "parse_rule", "parse_rules"]

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
}
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0}
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)"
_RULE = re.compile(
    rf"^\s*(?:(?P<name>[A-Za-z0-9_. -]{{1,40}}?)\s*:\s*)?(?P<metric>[A-Za-z_]+)\s*(?P<op>>=|<=|>|<)\s*(?P<value>{_NUM})"
    rf"(?:\s+for\s+(?P<dur>{_NUM})\s*(?P<unit>ms|s|min|m)?)?\s*$")
#: The longest hold a rule may ask for (an hour): longer is surely a typo (``5000s`` for ``5s``?).
MAX_DURATION_S = 3600.0
#: Stream seconds after which a track that was never announced (so never gets a ``track_end``) is forgotten.
_FORGET_S = 60.0
#: Rules per run: each is evaluated for every tracked face of every frame.
MAX_RULES = 32


class AlertError(ValueError):
    """A rule that does not parse or cannot apply (reported as one line, exit code 2)."""


@dataclass(frozen=True)
class AlertRule:
    """One parsed rule: ``metric op threshold`` held for ``duration_s``; ``text`` is how it was written."""

    text: str
    name: str
    metric: str
    op: str
    threshold: float
    duration_s: float

    def holds(self, value: float) -> bool:
        return _OPS[self.op](value, self.threshold)

    def to_dict(self) -> dict:
        return {"name": self.name, "rule": self.text, "metric": self.metric, "op": self.op,
                "threshold": self.threshold, "for_s": self.duration_s}


def parse_rule(text: str) -> AlertRule:
    """Parse one ``--alert`` rule; an :class:`AlertError` says what is wrong with it, in the user's words."""
    if not isinstance(text, str) or not text.strip():
        raise AlertError("empty --alert rule (e.g. --alert \"anger>=0.6 for 5s\")")
    m = _RULE.match(text)
    if m is None:
        raise AlertError(f"cannot parse --alert {text!r}: expected [NAME:] METRIC OP NUMBER [for DURATION], "
                         "e.g. \"anger>=0.6 for 5s\" or \"valence<=-0.5 for 10s\" (OP: >= <= > <)")
    metric = m["metric"].lower()
    if metric not in CANONICAL_LABELS and metric not in ("valence", "arousal"):
        raise AlertError(f"--alert {text!r}: unknown metric {m['metric']!r} "
                         f"(known: {', '.join(CANONICAL_LABELS)}, valence, arousal)")
    value = float(m["value"])
    lo, hi = (-1.0, 1.0) if metric in ("valence", "arousal") else (0.0, 1.0)
    if not lo <= value <= hi:
        raise AlertError(f"--alert {text!r}: threshold {value:g} is outside {metric}'s range [{lo:g}, {hi:g}]")
    duration = 0.0
    if m["dur"] is not None:
        if m["unit"] is None:
            raise AlertError(f"--alert {text!r}: give the duration a unit (ms, s, m), e.g. \"for 5s\"")
        duration = float(m["dur"]) * _UNITS[m["unit"]]
        if not 0.0 <= duration <= MAX_DURATION_S:
            raise AlertError(f"--alert {text!r}: duration must be within 0..{MAX_DURATION_S:g} s")
    body = text.split(":", 1)[1] if m["name"] else text
    canonical = " ".join(body.split())
    return AlertRule(text=canonical, name=(m["name"] or canonical).strip(), metric=metric, op=m["op"],
                     threshold=value, duration_s=duration)


def parse_rules(texts: Sequence[str] | None) -> list[AlertRule]:
    """All ``--alert`` rules, checked together (count, unique names) before anything is opened."""
    rules = [parse_rule(t) for t in texts or ()]
    if len(rules) > MAX_RULES:
        raise AlertError(f"{len(rules)} --alert rules; at most {MAX_RULES}")
    names = [r.name for r in rules]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise AlertError(f"--alert rules must differ; repeated: {', '.join(dup)}")
    return rules


@dataclass
class _Hold:
    """One rule on one track: since when it holds (stream time) and whether it was raised."""

    since_t: float | None = None
    raised: bool = False
    peak: float = 0.0


class _TrackAlerts:
    def __init__(self, labels: Sequence[str], smoothing: SmoothingConfig, n_rules: int) -> None:
        self.smoother = TrackSmoother(labels, smoothing)
        self.holds = [_Hold() for _ in range(n_rules)]
        self.last_t = 0.0


class AlertSink:
    """Evaluates the rules on every tracked face; alert records go to ``emit`` (the run's record writer).

    A :class:`edge.sinks.Sink`: ``step`` on the loop thread, ``end`` when a stream ends (its raised
    alerts are cleared). ``counts`` holds raised/cleared totals for the summary.
    """

    def __init__(self, rules: Sequence[AlertRule], labels: Sequence[str], emit: Callable[[dict], None], *,
                 smoothing: SmoothingConfig | None = None, metrics: object = None) -> None:
        missing = [r.metric for r in rules if r.metric not in ("valence", "arousal") and r.metric not in labels]
        if missing:
            raise AlertError(f"--alert on {', '.join(sorted(set(missing)))}: the model has no such label "
                             f"(its labels: {', '.join(labels)})")
        self.rules = list(rules)
        self.labels = tuple(labels)
        self.emit = emit
        self.smoothing = smoothing or SmoothingConfig()
        self.metrics = metrics
        self._index = {r.metric: self.labels.index(r.metric) for r in self.rules if r.metric in self.labels}
        self._tracks: dict[tuple[str, int], _TrackAlerts] = {}
        self.counts = {"raised": 0, "cleared": 0}

    def _value(self, rule: AlertRule, probs: np.ndarray, va: tuple[float, float] | None) -> float | None:
        if rule.metric == "valence":
            return None if va is None else va[0]
        if rule.metric == "arousal":
            return None if va is None else va[1]
        return float(probs[self._index[rule.metric]])

    def _record(self, rule: AlertRule, state: str, stream: str, track: int, frame: int, t: float,
                hold: _Hold, value: float | None, **extra: object) -> None:
        self.counts[state] += 1
        rec = {"type": "event", "kind": "alert", "stream": stream, "track": track, "frame": frame,
               "t": round(float(t), 4), "state": state, "name": rule.name, "rule": rule.text,
               "value": None if value is None else round(float(value), 3),
               "since_t": None if hold.since_t is None else round(hold.since_t, 4), **extra}
        if self.metrics is not None and state == "raised":
            self.metrics.event(stream, "alert")
        self.emit(rec)

    def step(self, step) -> None:  # noqa: ANN001 - edge.track.StreamStep (not imported: the edge's heavy runtimes)
        batch = step.batch
        frame = batch.frame
        stream = frame.stream
        seen: set[int] = set()
        for i in range(len(batch)):
            tid = int(batch.track_ids[i])
            if tid < 0:
                continue
            seen.add(tid)
            key = (stream, tid)
            ta = self._tracks.get(key)
            if ta is None:
                ta = self._tracks[key] = _TrackAlerts(self.labels, self.smoothing, len(self.rules))
            ta.last_t = frame.t
            state = ta.smoother.update(batch.probs[i], frame.t, batch.valence_arousal[i])
            va = None if state.valence is None else (state.valence, state.arousal or 0.0)
            for rule, hold in zip(self.rules, ta.holds):
                value = self._value(rule, state.probs, va)
                if value is not None and rule.holds(value):
                    if hold.since_t is None:
                        hold.since_t, hold.peak = frame.t, value
                    hold.peak = max(hold.peak, value) if rule.op in (">=", ">") else min(hold.peak, value)
                    if not hold.raised and frame.t - hold.since_t >= rule.duration_s - 1e-9:
                        hold.raised = True
                        self._record(rule, "raised", stream, tid, frame.index, frame.t, hold, value,
                                     held_s=round(frame.t - hold.since_t, 3), label=batch.smoothed_labels[i])
                elif hold.since_t is not None:
                    if hold.raised:
                        self._record(rule, "cleared", stream, tid, frame.index, frame.t, hold, value,
                                     held_s=round(frame.t - hold.since_t, 3), peak=round(hold.peak, 3),
                                     reason="below_threshold")
                    hold.since_t, hold.raised = None, False
        for event in step.events:
            if event.get("kind") == "track_end":
                self._end_track(stream, int(event["track"]), int(event["frame"]), float(event["t"]))
        if frame.index % 256 == 0:  # tracks dropped before they were announced get no track_end
            for key in [k for k, ta in self._tracks.items() if k[0] == stream and frame.t - ta.last_t > _FORGET_S]:
                self._end_track(stream, key[1], frame.index, frame.t)

    def _end_track(self, stream: str, tid: int, frame: int, t: float) -> None:
        ta = self._tracks.pop((stream, tid), None)
        if ta is None:
            return
        for rule, hold in zip(self.rules, ta.holds):
            if hold.raised:
                self._record(rule, "cleared", stream, tid, frame, t, hold, None,
                             held_s=round(t - (hold.since_t or t), 3), peak=round(hold.peak, 3), reason="track_end")

    def end(self, stream: str, reason: str, events: list[dict]) -> None:
        for event in events:
            if event.get("kind") == "track_end":
                self._end_track(stream, int(event["track"]), int(event["frame"]), float(event["t"]))
        for key in [k for k in self._tracks if k[0] == stream]:  # tracks never announced
            self._tracks.pop(key)

    def close(self) -> None:
        """Nothing to release: every stream's end already cleared its alerts."""
