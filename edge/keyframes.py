"""Which frames of which face are worth a VLM's time (the keyframe policy), and the keyframe message.

The VLM is slow and shared by many edges, so the edge escalates only frames that carry new
information, per face (track):

* ``new_track``: the first confident look at a face;
* ``label_change``: the track's ``emotion_change`` event fired on this frame. The policy does not
  smooth labels itself: the track's smoother (:mod:`edge.smoothing`) and its event state
  (:mod:`edge.events`) already decided that the label changed, and a keyframe that disagreed with the
  event stream (as a second EMA here once did) would send the reasoner a "change" no record shows;
* ``uncertain``: the network hesitates -- normalised entropy above a threshold or the top-2 margin
  below one -- the cases where a second opinion helps most;
* ``heartbeat``: nothing happened for a while; one periodic look keeps the track's reasoning fresh.

Two budgets cap the traffic whatever the video does: a minimum interval per track and a global
token bucket (keyframes/s with a burst). A ``label_change`` is subject only to the global budget,
so every ``emotion_change`` event gets its keyframe unless the whole edge is over budget. The
per-track part of the state (:class:`KeyframeState`) belongs to the track
(:class:`edge.track.Track`) and ends with it; the policy keeps only the global budget. Time is the
caller's media time in seconds (``t``), not the wall clock, so the policy is deterministic for a file
and correct for a live camera.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from emostream.contract import CONTEXT_SIDE, DEFAULT_DEADLINE_MS, Keyframe

REASONS = ("new_track", "label_change", "uncertain", "heartbeat")


@dataclass(frozen=True)
class PolicyConfig:
    entropy: float = 0.8  # normalised entropy (0..1) at or above which a frame is "uncertain"
    margin: float = 0.15  # top-1 minus top-2 probability below which a frame is "uncertain"
    heartbeat_s: float = 5.0  # escalate at least this often per track
    track_interval_s: float = 1.0  # at most one keyframe per track per this many seconds
    rate: float = 4.0  # global budget: keyframes per second ...
    burst: float = 8.0  # ... with this burst


@dataclass
class KeyframeState:
    """One track's keyframe bookkeeping: whether it was looked at yet, and when it last was sent."""

    started: bool = False
    last_sent: float | None = None


@dataclass
class KeyframePolicy:
    """The global budget plus the rules; ``decide`` is O(labels) and never blocks."""

    config: PolicyConfig = field(default_factory=PolicyConfig)
    _tokens: float = -1.0
    _t_bucket: float | None = None
    counts: dict[str, int] = field(default_factory=lambda: {r: 0 for r in (*REASONS, "suppressed")})

    def decide(self, state: KeyframeState, t: float, probs: np.ndarray, *, label_changed: bool = False) -> str | None:
        """The reason to escalate this face of this track now, or None (updates ``state``).

        ``label_changed``: the track's ``emotion_change`` event fired on this frame.
        """
        c = self.config
        p = np.asarray(probs, dtype=np.float64).reshape(-1)
        if p.shape[0] < 2 or not np.all(np.isfinite(p)):
            return None  # not a probability vector: nothing sensible to escalate
        p = np.clip(p, 0.0, None)
        p = p / p.sum() if p.sum() > 0 else np.full(p.shape, 1.0 / p.shape[0])
        reason: str | None
        if not state.started:
            state.started = True
            reason = "new_track"
        elif label_changed:
            reason = "label_change"
        elif _uncertain(p, c):
            reason = "uncertain"
        elif state.last_sent is None or t - state.last_sent >= c.heartbeat_s:
            reason = "heartbeat"
        else:
            return None
        # A label change is exempt from the per-track interval (not from the global budget): the
        # smoother already holds a label for ``min_dwell_s``, so changes are rare, and a change
        # swallowed because an "uncertain" look went out a moment earlier is the one the reasoner
        # most needs -- with the interval, none of the Pexels clip's three changes was ever sent.
        if (reason != "label_change" and state.last_sent is not None
                and t - state.last_sent < c.track_interval_s):
            self.counts["suppressed"] += 1
            return None
        if not self._take_token(t):
            self.counts["suppressed"] += 1
            return None
        state.last_sent = t
        self.counts[reason] += 1
        return reason

    def _take_token(self, t: float) -> bool:
        c = self.config
        if self._t_bucket is None:
            self._tokens, self._t_bucket = c.burst, t
        self._tokens = min(c.burst, self._tokens + max(0.0, t - self._t_bucket) * c.rate)
        self._t_bucket = max(self._t_bucket, t)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


def _uncertain(p: np.ndarray, c: PolicyConfig) -> bool:
    """Normalised Shannon entropy or top-2 margin says the network is unsure."""
    nz = p[p > 0]
    entropy = float(-(nz * np.log(nz)).sum() / math.log(len(p)))
    top2 = np.sort(p)[-2:]
    return entropy >= c.entropy or float(top2[1] - top2[0]) < c.margin


def _jpeg(image: np.ndarray, quality: int) -> bytes:
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    elif img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    elif img.ndim != 2:
        raise ValueError(f"image must be HxW or HxWx3, got shape {img.shape}")
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def keyframe_for(batch: Any, i: int, reason: str, *, deadline_ms: int = DEFAULT_DEADLINE_MS) -> dict[str, Any]:
    """The keyframe message for face ``i`` of a tracked :class:`~emostream.edge.face_batch.FaceBatch`.

    Everything comes from the one batch (frame, track id, crop, box, probabilities, raw V/A), so a
    keyframe can never describe a different face than the frame record written from the same batch.
    """
    frame = batch.frame
    track = int(batch.track_ids[i])
    if track < 0:
        raise ValueError(f"face {i} has no track: only tracked faces are escalated")
    return make_keyframe(
        frame.stream, track, frame.index, frame.pts_ns, batch.crops[i], frame.image, batch.boxes[i],
        batch.probs[i], batch.labels, reason, va=batch.valence_arousal[i], deadline_ms=deadline_ms,
    )


def make_keyframe(
    stream: str,
    track: int,
    frame: int,
    t_ns: int,
    crop: np.ndarray,
    frame_rgb: np.ndarray | None,
    box: Sequence[float],
    probs: np.ndarray,
    labels: Sequence[str],
    reason: str,
    *,
    va: Sequence[float] | None = None,
    deadline_ms: int = DEFAULT_DEADLINE_MS,
    context_side: int = CONTEXT_SIDE,
    quality: int = 85,
) -> dict[str, Any]:
    """The msgpack-able keyframe message, built as the contract's typed :class:`~emostream.contract.Keyframe`
    (the reasoner validates it with the same module).

    The crop is the aligned face (gray or RGB); the context frame is downscaled so its longest side
    is ``context_side`` -- enough for posture and scene, ~15 KiB instead of a full frame.
    """
    context = None
    if frame_rgb is not None:
        h, w = frame_rgb.shape[:2]
        scale = min(1.0, context_side / max(h, w))
        small = (
            frame_rgb
            if scale >= 1.0
            else cv2.resize(
                np.ascontiguousarray(frame_rgb),
                (max(1, round(w * scale)), max(1, round(h * scale))),
                interpolation=cv2.INTER_AREA,
            )
        )
        context = _jpeg(small, 70)
    vx, vy = (float(min(1.0, max(-1.0, x))) for x in va) if va is not None else (None, None)
    bx = [float(x) for x in box]
    return Keyframe(
        id=uuid.uuid4().hex,
        stream=str(stream),
        track=int(track),
        frame=int(frame),
        t_ns=int(t_ns),
        crop=_jpeg(crop, quality),
        box=(bx[0], bx[1], bx[2], bx[3]),
        labels=tuple(str(x) for x in labels),
        probs=tuple(float(x) for x in np.asarray(probs, dtype=np.float64).reshape(-1)),
        reason=reason,
        deadline_ms=int(deadline_ms),
        context=context,
        va=None if vx is None or vy is None else (vx, vy),
    ).to_wire()
