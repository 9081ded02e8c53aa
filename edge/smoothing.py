"""Per-track temporal smoothing: an EMA over log-probabilities with a hysteresis on the reported label.

Why this shape:

* Per-frame expression labels flicker: one blink, a motion-blurred frame or a half-turned head flips
  the arg-max for a frame or two. Averaging **log**-probabilities (a geometric mean of the per-frame
  distributions) lets a class win only when it is consistently likely; one confident outlier frame
  moves the state far less than a linear average of probabilities would let it.
* The EMA weight comes from a **time constant** in seconds, ``alpha = 1 - exp(-dt / tau)``, using the
  frames' own timestamps, so the smoothing means the same at 10 fps on a Jetson and at 60 fps on a
  desktop, and a live source that skips frames is not smoothed less.
* On top, **hysteresis**: the reported label changes only when another class beats it by
  ``switch_margin`` in smoothed probability *and* the current label has been held for
  ``min_dwell_s``. Two classes near a tie (common between neutral and sad) would otherwise still
  alternate.
* Valence/arousal get the same EMA (in linear space; they are already averages).

The raw per-frame probabilities are never changed; the caller keeps both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Probabilities are clipped to this before the log so a hard 0 from the network cannot pin a class
#: at -inf forever (it must be able to recover when the face changes).
_PROB_FLOOR = 1e-4


class SmoothingError(Exception):
    """Bad smoothing settings or inputs that do not match the label set."""


@dataclass(frozen=True)
class SmoothingConfig:
    """``time_constant_s``: how quickly the smoothed distribution follows the frames (63 % of a step
    change after this long). ``switch_margin``: how much more probable a new label must be than the
    current one. ``min_dwell_s``: the least time a reported label is held. ``default_dt_s``: the frame
    interval assumed where timestamps do not advance (a still image repeated, a source without clock).
    """

    time_constant_s: float = 0.5
    switch_margin: float = 0.15
    min_dwell_s: float = 0.5
    default_dt_s: float = 1 / 30

    def __post_init__(self) -> None:
        if not 0.0 <= self.time_constant_s <= 600.0:
            raise SmoothingError(f"time_constant_s must be within [0, 600], got {self.time_constant_s}")
        if not 0.0 <= self.switch_margin < 1.0:
            raise SmoothingError(f"switch_margin must be within [0, 1), got {self.switch_margin}")
        if not 0.0 <= self.min_dwell_s <= 600.0:
            raise SmoothingError(f"min_dwell_s must be within [0, 600], got {self.min_dwell_s}")
        if not 0.0 < self.default_dt_s <= 10.0:
            raise SmoothingError(f"default_dt_s must be within (0, 10], got {self.default_dt_s}")


@dataclass(frozen=True)
class SmoothedState:
    """A track's smoothed view after one frame.

    ``label`` is the reported (hysteresis) label, ``probs`` the smoothed distribution, ``confidence``
    its probability of ``label``; ``changed`` is True on the frame where ``label`` switched away from
    ``previous`` (never on a track's first frame).
    """

    label: str
    probs: np.ndarray
    confidence: float
    valence: float | None
    arousal: float | None
    changed: bool
    previous: str | None


class TrackSmoother:
    """EMA + hysteresis state of one track. Feed it that track's frames in time order."""

    def __init__(self, labels: Sequence[str], config: SmoothingConfig | None = None) -> None:
        if len(labels) < 2:
            raise SmoothingError(f"need at least two labels to smooth, got {list(labels)}")
        self.labels = tuple(labels)
        self.config = config or SmoothingConfig()
        self._log: np.ndarray | None = None
        self._va: np.ndarray | None = None
        self._label: int | None = None
        self._held_s = 0.0
        self._last_t: float | None = None

    @property
    def label(self) -> str | None:
        return None if self._label is None else self.labels[self._label]

    def update(self, probs: np.ndarray, t: float | None = None, va: Sequence[float] | None = None) -> SmoothedState:
        """Fold one frame's raw probabilities (and optionally its [valence, arousal]) into the state."""
        p = np.asarray(probs, np.float64).reshape(-1)
        if p.shape != (len(self.labels),) or not np.all(np.isfinite(p)):
            raise SmoothingError(f"expected {len(self.labels)} finite probabilities, got shape {p.shape}")
        logp = np.log(np.clip(p, _PROB_FLOOR, 1.0))
        vav = None if va is None else np.asarray(va, np.float64).reshape(2)
        dt = self._dt(t)
        if self._log is None:
            self._log = logp
            self._va = vav
        else:
            alpha = 1.0 - math.exp(-dt / self.config.time_constant_s) if self.config.time_constant_s > 0 else 1.0
            self._log = self._log + alpha * (logp - self._log)
            if vav is not None:
                self._va = vav if self._va is None else self._va + alpha * (vav - self._va)
        smoothed = np.exp(self._log - self._log.max())
        smoothed /= smoothed.sum()
        best = int(np.argmax(smoothed))
        previous = self.label
        changed = False
        if self._label is None:
            self._label, self._held_s = best, 0.0
        else:
            self._held_s += dt
            if (best != self._label and smoothed[best] - smoothed[self._label] >= self.config.switch_margin
                    and self._held_s >= self.config.min_dwell_s):
                self._label, self._held_s, changed = best, 0.0, True
        va_out = (None, None) if self._va is None else (float(self._va[0]), float(self._va[1]))
        return SmoothedState(
            label=self.labels[self._label], probs=smoothed.astype(np.float32),
            confidence=float(smoothed[self._label]), valence=va_out[0], arousal=va_out[1],
            changed=changed, previous=previous if changed else None,
        )

    def _dt(self, t: float | None) -> float:
        """Seconds since this track's previous frame; the default interval where time does not advance."""
        dt = self.config.default_dt_s
        if t is not None and self._last_t is not None and t > self._last_t:
            dt = t - self._last_t
        if t is not None:
            self._last_t = t if self._last_t is None else max(self._last_t, t)
        return dt


def count_changes(labels: Sequence[str]) -> int:
    """How often a label sequence switches value (the flicker measure tests and benchmarks report)."""
    return sum(1 for a, b in zip(labels, labels[1:]) if a != b)
