"""Carry faces from one frame to the next by sparse optical flow (median flow), for the detection interval.

Why flow and not a second detector between full detections: the alignment needs *keypoints*, and
the cheapest way to keep the full-range detector's keypoints on a moving face is to move them with the
face. A grid of points inside each face box is tracked forward and backward by pyramidal Lucas-Kanade
(Kalal et al.'s median-flow check: points whose forward-backward error is above the median are
dropped), a similarity transform (shift, scale, roll) is fitted to the survivors, and the box and the
six keypoints follow it. On 640x360 video this costs ~0.2-0.5 ms a face (cut and shrunk to ~96 px
first) where a short-range BlazeFace pass on a region costs ~1-2 ms and full range on the frame ~4-5.
When the fit is poor (few points survive, the face jumped or changed size too much) the face counts
as lost and the caller runs the full detector on that frame.
"""

from __future__ import annotations

import cv2
import numpy as np

from emostream.edge.faces import Faces

#: Grid points per box side (the median-flow tracker uses 10x10; 6x6 keeps the fit and costs a third).
GRID = 6
#: Faces are tracked at about this side in pixels (shrunk when larger), inside a margin of this many
#: box sides for the motion between two frames.
TRACK_SIDE = 96
MARGIN = 0.25
#: Lucas-Kanade window and pyramid depth at that scale: a face moves a few pixels a frame at 30 fps.
_LK = {"winSize": (9, 9), "maxLevel": 2,
       "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 10, 0.03)}
#: A track is lost when fewer points survive, or forward-backward error / scale change exceed these.
MIN_POINTS = 8
MAX_FB_ERROR = 2.0
MAX_SCALE_STEP = 1.25
#: The tracked points in box units (x, y), row by row: GRID x GRID over the inner 80 % of the box.
_GRID_UNITS = np.stack(np.meshgrid(np.linspace(0.1, 0.9, GRID), np.linspace(0.1, 0.9, GRID)), axis=-1).reshape(-1, 2)


def track_faces(prev: np.ndarray, cur: np.ndarray, faces: Faces) -> Faces | None:
    """``faces`` of luma frame ``prev`` moved to luma frame ``cur`` (``Frame.luma``: a decoded video frame's Y
    plane as it is, shared by every face of the frame); None as soon as one face is lost."""
    h, w = cur.shape[:2]
    boxes = faces.boxes.copy()
    kps = faces.keypoints.copy()
    for i, (x, y, bw, bh) in enumerate(faces.boxes.astype(np.float64)):
        m = _face_motion(prev, cur, x, y, bw, bh, w, h)
        if m is None:
            return None
        scale = float(np.hypot(m[0, 0], m[1, 0]))
        kps[i] = kps[i] @ m[:, :2].T.astype(np.float32) + m[:, 2].astype(np.float32)
        ncx, ncy = m[:, :2] @ np.array([x + bw / 2, y + bh / 2]) + m[:, 2]
        nw, nh = bw * scale, bh * scale  # axis-aligned box: its size follows the face, roll does not
        boxes[i] = (ncx - nw / 2, ncy - nh / 2, nw, nh)
    return Faces(boxes.astype(np.float32), faces.scores.copy(), kps.astype(np.float32))


def _face_motion(prev: np.ndarray, cur: np.ndarray, x: float, y: float, bw: float, bh: float,
                 w: int, h: int) -> np.ndarray | None:
    """(2, 3) similarity from ``prev`` to ``cur`` pixels for the face in box (x, y, bw, bh), or None.

    Both gray frames are cut to the box plus a motion margin and shrunk so the face is ~``TRACK_SIDE`` px:
    the pyramids LK builds then cost a few hundredths of a millisecond instead of ~1 ms for whole 640x360
    frames.
    """
    side = max(bw, bh)
    if side < 8:
        return None
    pad = MARGIN * side
    x0, y0 = int(max(0, np.floor(x - pad))), int(max(0, np.floor(y - pad)))
    x1, y1 = int(min(w, np.ceil(x + bw + pad))), int(min(h, np.ceil(y + bh + pad)))
    if x1 - x0 < 16 or y1 - y0 < 16:  # (nearly) out of the frame
        return None
    f = min(1.0, TRACK_SIDE / side)
    size = (max(8, round((x1 - x0) * f)), max(8, round((y1 - y0) * f)))
    a = cv2.resize(prev[y0:y1, x0:x1], size, interpolation=cv2.INTER_LINEAR)
    b = cv2.resize(cur[y0:y1, x0:x1], size, interpolation=cv2.INTER_LINEAR)
    fx, fy = size[0] / (x1 - x0), size[1] / (y1 - y0)
    # Inner 80 % of the box (its border holds background that moves differently from the face), from the grid
    # in box units made once: building it per face (linspace, meshgrid) cost a third of the flow's time.
    p0 = ((_GRID_UNITS * (bw, bh) + (x - x0, y - y0)) * (fx, fy)).astype(np.float32).reshape(-1, 1, 2)
    p1, ok1, _ = cv2.calcOpticalFlowPyrLK(a, b, p0, None, **_LK)
    back, ok2, _ = cv2.calcOpticalFlowPyrLK(b, a, p1, None, **_LK)
    fb = np.linalg.norm((back - p0).reshape(-1, 2), axis=1)
    good = (ok1.ravel() == 1) & (ok2.ravel() == 1) & np.isfinite(fb)
    if good.sum() < MIN_POINTS:
        return None
    keep = good & (fb <= min(float(np.median(fb[good])), MAX_FB_ERROR))
    if keep.sum() < MIN_POINTS // 2:
        return None
    back_to_frame = np.array([1 / fx, 1 / fy], np.float32)
    src = p0[keep].reshape(-1, 2) * back_to_frame + (x0, y0)
    dst = p1[keep].reshape(-1, 2) * back_to_frame + (x0, y0)
    m, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    if m is None:
        return None
    scale = float(np.hypot(m[0, 0], m[1, 0]))
    return m if 1 / MAX_SCALE_STEP <= scale <= MAX_SCALE_STEP else None
