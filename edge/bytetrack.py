"""ByteTrack (Zhang et al., 2022) for the few faces of a camera frame, lean enough for every frame.

The algorithm and its constants are those of supervision 0.30's ``sv.ByteTrack``, which emostream used until
this module, and the tests check that both give the same ids on real and synthetic face sequences. What is
different is the cost: supervision builds a ``Detections`` and a Python ``STrack`` object per detection per
frame and runs a general 8x8 Kalman filter (matrix products, a Cholesky solve) per track. Here:

* the Kalman filter is solved per coordinate. ByteTrack's model (constant velocity, position measured,
  diagonal noise, diagonal initial covariance) never couples x, y, aspect and height, so the 8x8 covariance
  stays four independent 2x2 blocks; each predict/update is a handful of element-wise operations on
  (4,)-vectors, with the same numbers up to float rounding;
* detections stay arrays; a track object is made only when a face starts a track.

On the README's CPU this is ~0.1 ms per one-face frame instead of ~0.36 ms (the Pexels clip's detections
replayed), and ~0.2 instead of ~0.6 when another Python thread of the process is busy, as in the overlapped
pipeline.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from emostream.edge.faces import box_iou

#: Kalman noise, as a fraction of the box height (position, velocity), and the aspect ratio's own noise.
_W_POS, _W_VEL = 1.0 / 20, 1.0 / 160
_SCALED = np.array([1.0, 1.0, 0.0, 1.0])  # the coordinates whose noise scales with the box height
_ASPECT_ONLY = 1.0 - _SCALED

_TRACKED, _LOST, _REMOVED = 1, 2, 3


class _Track:
    """One face's track: Kalman state per coordinate of (cx, cy, aspect, height)."""

    __slots__ = ("pos", "vel", "p_pp", "p_pv", "p_vv", "score", "state", "activated", "uid", "track_id",
                 "frame", "start", "length")

    def __init__(self, xyah: np.ndarray, score: float, uid: int, frame: int) -> None:
        h = float(xyah[3])
        self.pos = xyah.astype(np.float64)
        self.vel = np.zeros(4)
        p = _SCALED * (2 * _W_POS * h) + _ASPECT_ONLY * 1e-2
        v = _SCALED * (10 * _W_VEL * h) + _ASPECT_ONLY * 1e-5
        self.p_pp, self.p_pv, self.p_vv = p * p, np.zeros(4), v * v
        self.score = score
        self.state = _TRACKED
        self.activated = False
        self.uid = uid  # internal: every started track, for de-duplication
        self.track_id = -1  # what users see: given once the track is confirmed
        self.frame = self.start = frame
        self.length = 1

    def predict(self) -> None:
        if self.state != _TRACKED:
            self.vel[3] = 0.0  # a lost face's box stops growing or shrinking
        h = self.pos[3]
        q_p = _SCALED * (_W_POS * h) ** 2 + _ASPECT_ONLY * 1e-4
        q_v = _SCALED * (_W_VEL * h) ** 2 + _ASPECT_ONLY * 1e-10
        self.pos = self.pos + self.vel
        self.p_pp = self.p_pp + 2 * self.p_pv + self.p_vv + q_p
        self.p_pv = self.p_pv + self.p_vv
        self.p_vv = self.p_vv + q_v

    def correct(self, xyah: np.ndarray) -> None:
        s = self.p_pp + (_SCALED * (_W_POS * self.pos[3]) ** 2 + _ASPECT_ONLY * 1e-2)
        k_p, k_v = self.p_pp / s, self.p_pv / s
        innovation = xyah - self.pos
        self.pos = self.pos + k_p * innovation
        self.vel = self.vel + k_v * innovation
        self.p_pp, self.p_pv, self.p_vv = (self.p_pp - k_p * self.p_pp, self.p_pv - k_p * self.p_pv,
                                           self.p_vv - k_v * self.p_pv)

    def tlbr(self) -> np.ndarray:
        cx, cy, a, h = self.pos
        w = a * h
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every (x0, y0, x1, y1) box of ``a`` with every box of ``b`` (the detector's ``box_iou``, which
    takes (x, y, w, h)); 0 where a union is empty."""
    def xywh(boxes: np.ndarray) -> np.ndarray:
        c = np.asarray(boxes, np.float64).reshape(-1, 4)
        return np.concatenate([c[:, :2], c[:, 2:] - c[:, :2]], axis=1)

    return box_iou(xywh(a), xywh(b))


def assign(cost: np.ndarray, thresh: float) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Minimum-cost one-to-one matching keeping pairs of cost <= ``thresh``; unmatched rows, columns ascending.

    Costs above ``thresh`` are flattened to just above it first, so the solver never trades a valid pair for
    a cheaper invalid one (ByteTrack's rule)."""
    n, m = cost.shape
    if n == 0 or m == 0:
        return [], list(range(n)), list(range(m))
    if n == 1 and m == 1:
        pairs = [(0, 0)] if cost[0, 0] <= thresh else []
    else:
        rows, cols = linear_sum_assignment(np.where(cost > thresh, thresh + 1e-4, cost))
        pairs = [(int(r), int(c)) for r, c in zip(rows, cols) if cost[r, c] <= thresh]
    used_r, used_c = {r for r, _ in pairs}, {c for _, c in pairs}
    return pairs, [r for r in range(n) if r not in used_r], [c for c in range(m) if c not in used_c]


class ByteTrack:
    """Tracks across frames; :meth:`update` gives each detection its track id (-1: none, or not yet confirmed).

    ``activation_score``: detections at or above it start and feed tracks; those in (0.1, it) only keep
    confirmed tracks alive (the second association round). ``match_cost``: the highest 1 - IoU (weighted by
    the detection's score in the first round) at which a track and a detection are associated.
    ``max_lost``: updates a lost track is kept for, to come back under its id.
    """

    def __init__(self, activation_score: float, match_cost: float, max_lost: int) -> None:
        self.activation_score = activation_score
        self.new_track_score = activation_score + 0.1 if activation_score + 0.1 <= 1.0 else activation_score
        self.match_cost = match_cost
        self.max_lost = max_lost
        self.frame = 0
        self.tracked: list[_Track] = []
        self.lost: list[_Track] = []
        self._uids = 0
        self._ids = 1

    def reset_tracks(self) -> None:
        """Forget every track (the id counter keeps counting: ids are never reused)."""
        self.tracked, self.lost = [], []

    def update(self, xyxy: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """One frame's (N, 4) corner boxes and (N,) scores in, (N,) track ids out."""
        self.frame += 1
        frame = self.frame
        xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
        scores = np.asarray(scores, np.float32).reshape(-1)
        valid = (np.isfinite(xyxy).all(1) & np.isfinite(scores) & (xyxy[:, 2] > xyxy[:, 0])
                 & (xyxy[:, 3] > xyxy[:, 1]))
        boxes, sc = xyxy[valid], scores[valid]
        high = sc >= self.activation_score
        low = (sc > 0.1) & ~high
        det_boxes, det_scores = boxes[high], sc[high]
        det_xyah = _xyah(det_boxes)

        unconfirmed = [t for t in self.tracked if not t.activated]
        confirmed = [t for t in self.tracked if t.activated]
        pool = _join(confirmed, self.lost)
        for t in pool:
            t.predict()
        activated: list[_Track] = []
        refound: list[_Track] = []
        now_lost: list[_Track] = []
        removed: list[_Track] = []

        # 1. Confirmed and lost tracks against confident detections (IoU weighted by the detection's score).
        pairs, free_tracks, free_dets = [], list(range(len(pool))), list(range(len(det_boxes)))
        if pool and len(det_boxes):
            cost = 1.0 - iou_matrix(_tlbrs(pool), det_boxes) * det_scores[None, :]
            pairs, free_tracks, free_dets = assign(cost, self.match_cost)
        for i, j in pairs:
            t = pool[i]
            if t.state == _TRACKED:
                self._feed(t, det_xyah[j], float(det_scores[j]), frame)
                activated.append(t)
            else:
                t.correct(det_xyah[j])
                t.length, t.state, t.frame, t.score = 0, _TRACKED, frame, float(det_scores[j])
                refound.append(t)
        # 2. Tracks still unmatched against the weak detections, plain IoU; what stays unmatched is lost.
        rest = [pool[i] for i in free_tracks if pool[i].state == _TRACKED]
        weak_boxes, weak_scores = boxes[low], sc[low]
        pairs, still_free = [], list(range(len(rest)))
        if rest and len(weak_boxes):
            pairs, still_free, _ = assign(1.0 - iou_matrix(_tlbrs(rest), weak_boxes), 0.5)
            weak_xyah = _xyah(weak_boxes)
        for i, j in pairs:
            self._feed(rest[i], weak_xyah[j], float(weak_scores[j]), frame)
            activated.append(rest[i])
        for i in still_free:
            rest[i].state = _LOST
            now_lost.append(rest[i])
        # 3. Tracks seen once so far against the confident detections left; unmatched ones are dropped.
        left = free_dets
        pairs, free_unconfirmed, free_left = [], list(range(len(unconfirmed))), list(range(len(left)))
        if unconfirmed and left:
            cost = 1.0 - iou_matrix(_tlbrs(unconfirmed), det_boxes[left]) * det_scores[left][None, :]
            pairs, free_unconfirmed, free_left = assign(cost, 0.7)
        for i, j in pairs:
            self._feed(unconfirmed[i], det_xyah[left[j]], float(det_scores[left[j]]), frame)
            activated.append(unconfirmed[i])
        for i in free_unconfirmed:
            unconfirmed[i].state = _REMOVED
            removed.append(unconfirmed[i])
        # 4. New tracks from confident detections nobody claimed (confirmed at once only on the first frame).
        for j in free_left:
            d = left[j]
            if det_scores[d] < self.new_track_score:
                continue
            t = _Track(det_xyah[d], float(det_scores[d]), self._uids, frame)
            self._uids += 1
            if frame == 1:
                t.activated, t.track_id = True, self._next_id()
            activated.append(t)
        # 5. Expire lost tracks, then rebuild the lists in ByteTrack's order.
        for t in self.lost:
            if frame - t.frame > self.max_lost:
                t.state = _REMOVED
                removed.append(t)
        tracked = _join(_join([t for t in self.tracked if t.state == _TRACKED], activated), refound)
        tracked_uids, removed_uids = {t.uid for t in tracked}, {t.uid for t in removed}
        lost = [t for t in self.lost + now_lost if t.uid not in tracked_uids and t.uid not in removed_uids]
        self.tracked, self.lost = _drop_duplicates(tracked, lost)
        return self._ids_of(xyxy, [t for t in self.tracked if t.activated])

    def _feed(self, t: _Track, xyah: np.ndarray, score: float, frame: int) -> None:
        t.correct(xyah)
        t.frame, t.length, t.state, t.score = frame, t.length + 1, _TRACKED, score
        t.activated = True
        if t.track_id < 0:
            t.track_id = self._next_id()

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids - 1

    @staticmethod
    def _ids_of(xyxy: np.ndarray, out: list[_Track]) -> np.ndarray:
        """Each input box gets the id of the output track it overlaps best (IoU >= 0.5), as ByteTrack reports."""
        ids = np.full(len(xyxy), -1, np.int64)
        if out and len(xyxy):
            pairs, _, _ = assign(1.0 - iou_matrix(xyxy, _tlbrs(out)), 0.5)
            for i, j in pairs:
                ids[i] = out[j].track_id
        return ids


def _xyah(tlbr: np.ndarray) -> np.ndarray:
    """(x0, y0, x1, y1) -> (cx, cy, w / h, h), the Kalman filter's measurement."""
    out = np.empty(tlbr.shape, np.float64)
    wh = tlbr[:, 2:] - tlbr[:, :2]
    out[:, :2] = tlbr[:, :2] + wh / 2
    out[:, 2] = wh[:, 0] / wh[:, 1]
    out[:, 3] = wh[:, 1]
    return out


def _tlbrs(tracks: list[_Track]) -> np.ndarray:
    return np.array([t.tlbr() for t in tracks]).reshape(-1, 4)


def _join(a: list[_Track], b: list[_Track]) -> list[_Track]:
    """``a`` then ``b``, each track once (first place kept)."""
    seen: set[int] = set()
    out = []
    for t in a + b:
        if t.uid not in seen:
            seen.add(t.uid)
            out.append(t)
    return out


def _drop_duplicates(tracked: list[_Track], lost: list[_Track]) -> tuple[list[_Track], list[_Track]]:
    """A tracked and a lost track on the same box (IoU > 0.95): the one followed for longer survives."""
    if not tracked or not lost:
        return tracked, lost
    iou = iou_matrix(_tlbrs(tracked), _tlbrs(lost))
    drop_t, drop_l = set(), set()
    for i, j in zip(*np.nonzero(1.0 - iou < 0.05)):
        if tracked[i].frame - tracked[i].start > lost[j].frame - lost[j].start:
            drop_l.add(int(j))
        else:
            drop_t.add(int(i))
    return ([t for i, t in enumerate(tracked) if i not in drop_t], [t for j, t in enumerate(lost) if j not in drop_l])
