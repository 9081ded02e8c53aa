"""Stable face identities across frames: ByteTrack (supervision's implementation) on detector boxes.

Why ByteTrack, and why this one: faces move little between frames and the detector is good, so an
IoU tracker with a Kalman motion model is enough -- no appearance (re-id) network on the hot path.
ByteTrack adds a second association round for low-confidence detections, which is what keeps a
track alive through a partly covered face or motion blur, and a lost-track buffer that survives a
few missed detections. We use ``supervision``'s ByteTrack rather than hand-written matching. Its
successor, ``trackers.ByteTrackTracker``, requires numpy >= 2, which mediapipe 0.10.21 (pinned for
its BlazeFace models) cannot load, so the project pins ``supervision>=0.30,<0.31`` -- the last line
that ships ``sv.ByteTrack`` and no longer drags in ``opencv-python`` beside our opencv-contrib.
Once mediapipe allows numpy 2, this module is the one place to switch.

What this module adds on top: face indices in, one id per face out (``-1`` while a new face waits
for its second sighting, ByteTrack's guard against one-frame false positives, except on a stream's
first frame), and explicit *expiry*: a track not seen for ``lost_seconds`` is reported as ended
exactly when ByteTrack forgets it, and :meth:`FaceTracker.finish` ends every open track at end of
stream, so downstream summaries are never lost.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import supervision as sv  # at import time, like mediapipe: matplotlib must load before GStreamer runs

from emostream.edge.config import TrackerConfig, TrackingError
from emostream.edge.faces import Faces

__all__ = ["FaceTracker", "TrackUpdate", "TrackerConfig", "TrackingError"]


@dataclass(frozen=True)
class TrackUpdate:
    """Result of one tracker step: ``ids[i]`` is face ``i``'s track id (-1: not yet confirmed);
    ``ended`` lists tracks that expired at this step (last seen more than ``lost_seconds`` ago)."""

    ids: np.ndarray
    ended: tuple[int, ...]


class FaceTracker:
    """One stream's tracker. Call :meth:`update` once per analysed frame, in order.

    ``fps`` converts ``lost_seconds`` into frames (ByteTrack counts updates). For a live source that
    skips frames, pass the rate at which frames are actually analysed.
    """

    def __init__(self, fps: float = 30.0, config: TrackerConfig | None = None) -> None:
        if not (isinstance(fps, (int, float)) and 0 < fps <= 1000):
            raise TrackingError(f"tracker fps must be within (0, 1000], got {fps}")
        self.config = config or TrackerConfig()
        self.fps = float(fps)
        with warnings.catch_warnings():
            # sv.ByteTrack is marked deprecated in favour of `trackers`, which cannot run here (numpy 2).
            warnings.simplefilter("ignore", FutureWarning)
            self._bt = sv.ByteTrack(
                track_activation_threshold=self.config.activation_score,
                # ByteTrack keeps a lost track for int(frame_rate / 30 * buffer) updates.
                lost_track_buffer=max(0, round(self.config.lost_seconds * 30)),
                minimum_matching_threshold=1.0 - self.config.match_iou,
                frame_rate=self.fps,
                minimum_consecutive_frames=1,
            )
        self.max_lost_frames: int = self._bt.max_time_lost
        self._step = 0
        self._last_seen: dict[int, int] = {}

    @property
    def active(self) -> tuple[int, ...]:
        """Tracks seen recently enough to come back (includes ones missed in the last few frames)."""
        return tuple(self._last_seen)

    def update(self, faces: Faces) -> TrackUpdate:
        """Associate this frame's faces with tracks; report tracks that just expired."""
        self._step += 1
        n = len(faces)
        ids = np.full(n, -1, np.int64)
        boxes = np.asarray(faces.boxes, np.float32).reshape(-1, 4)
        xyxy = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
        detections = sv.Detections(
            xyxy=xyxy, confidence=np.asarray(faces.scores, np.float32).reshape(-1),
            data={"face": np.arange(n)},
        )
        tracked = self._bt.update_with_detections(detections)
        if len(tracked):
            ids[tracked.data["face"]] = tracked.tracker_id
        for track_id in ids[ids >= 0]:
            self._last_seen[int(track_id)] = self._step
        limit = self.max_lost_frames
        ended = tuple(tid for tid, seen in self._last_seen.items() if self._step - seen > limit)
        for tid in ended:
            del self._last_seen[tid]
        return TrackUpdate(ids=ids, ended=ended)

    def finish(self) -> tuple[int, ...]:
        """End of stream: every open track ends now. Ids are never reused within one tracker."""
        ended = tuple(self._last_seen)
        self._last_seen.clear()
        self._bt.tracked_tracks, self._bt.lost_tracks = [], []
        return ended
