"""Annotated frames for operators: boxes, track ids, smoothed label and valence/arousal, drawn with cv2.

What is drawn, and why:

* one colour per **track** (not per label), so a person keeps their colour while their label changes;
  untracked faces (not yet confirmed) are grey;
* ``#id label confidence`` above the box -- the *smoothed* label, the one that does not flicker;
* a small valence/arousal square beside the box (horizontal: valence, vertical: arousal, up is more
  aroused) with the track's point, plus the numbers, so a glance shows "unpleasant and agitated";
* an optional caption line (stream id, frame, fps) in the top-left corner.

Sizes scale with the frame height so the overlay reads the same at 360p and 1080p. The input frame
is never modified; :func:`draw_overlay` returns a new RGB array for the sink.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from emostream.edge.face_batch import FaceBatch


class OverlayError(Exception):
    """A frame the overlay cannot draw on (not an HxWx3 uint8 RGB array)."""


@dataclass(frozen=True)
class OverlayFace:
    """One face to draw: box ``[x, y, w, h]`` in frame pixels and what to say about it."""

    box: tuple[float, float, float, float]
    track: int | None
    label: str
    confidence: float
    valence: float | None = None
    arousal: float | None = None

    @classmethod
    def from_batch(cls, batch: FaceBatch) -> list[OverlayFace]:
        """What the overlay draws for a face batch: smoothed label and V/A for tracked faces, raw for the
        rest -- read from the same batch the frame record is written from."""
        faces = []
        for i in range(len(batch)):
            label, confidence, valence, arousal = batch.display(i)
            track = int(batch.track_ids[i])
            box = tuple(float(v) for v in batch.boxes[i])
            faces.append(cls(box, track if track >= 0 else None, label, confidence, valence, arousal))  # type: ignore[arg-type]
        return faces


_UNTRACKED = (160, 160, 160)


def track_color(track: int | None) -> tuple[int, int, int]:
    """A stable, saturated RGB colour per track id (golden-angle hue steps keep neighbours distinct)."""
    if track is None or track < 0:
        return _UNTRACKED
    hue = int((track * 137.508) % 360) // 2  # OpenCV hue is 0..179
    hsv = np.uint8([[[hue, 200, 255]]])
    r, g, b = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, color: tuple[int, int, int],
          thickness: int) -> None:
    """Text on a filled dark box, clamped into the frame so labels near an edge stay readable."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), base = cv2.getTextSize(text, font, scale, thickness)
    h, w = img.shape[:2]
    x = int(min(max(org[0], 0), max(w - tw - 4, 0)))
    y = int(min(max(org[1], th + 4), h - base - 2))
    cv2.rectangle(img, (x, y - th - 4), (x + tw + 4, y + base + 2), (20, 20, 20), cv2.FILLED)
    cv2.putText(img, text, (x + 2, y), font, scale, color, thickness, cv2.LINE_AA)


def _va_square(img: np.ndarray, x: int, y: int, size: int, valence: float, arousal: float,
               color: tuple[int, int, int]) -> None:
    """A ``size`` px square at (x, y): axes through the middle, the point at (valence, arousal)."""
    h, w = img.shape[:2]
    x = int(min(max(x, 0), max(w - size - 1, 0)))
    y = int(min(max(y, 0), max(h - size - 1, 0)))
    roi = img[y:y + size, x:x + size]
    roi[:] = (roi * 0.4).astype(np.uint8)  # darken for contrast
    mid = size // 2
    cv2.line(img, (x, y + mid), (x + size, y + mid), (120, 120, 120), 1)
    cv2.line(img, (x + mid, y), (x + mid, y + size), (120, 120, 120), 1)
    cv2.rectangle(img, (x, y), (x + size, y + size), (200, 200, 200), 1)
    px = x + int(round((np.clip(valence, -1, 1) + 1) / 2 * size))
    py = y + int(round((1 - np.clip(arousal, -1, 1)) / 2 * size))
    cv2.circle(img, (px, py), max(2, size // 10), color, cv2.FILLED, cv2.LINE_AA)


def draw_overlay(rgb: np.ndarray, faces: Sequence[OverlayFace], caption: str | None = None) -> np.ndarray:
    """A copy of ``rgb`` (HxWx3 uint8) with every face's box, id, smoothed label and V/A drawn on it."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        got = rgb.shape if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise OverlayError(f"overlay needs an HxWx3 uint8 RGB frame, got {got}")
    img = np.ascontiguousarray(rgb).copy()
    h = img.shape[0]
    scale = max(0.35, h / 900)
    thick = max(1, int(round(h / 360)))
    for face in faces:
        x, y, bw, bh = (int(round(v)) for v in face.box)
        color = track_color(face.track)
        cv2.rectangle(img, (x, y), (x + bw, y + bh), color, thick + 1, cv2.LINE_AA)
        who = f"#{face.track}" if face.track is not None and face.track >= 0 else "?"
        _text(img, f"{who} {face.label} {face.confidence:.2f}", (x, y - 6), scale, color, thick)
        if face.valence is not None and face.arousal is not None:
            size = max(24, min(80, bh // 3))
            _va_square(img, x + bw + 4, y, size, face.valence, face.arousal, color)
            _text(img, f"V {face.valence:+.2f} A {face.arousal:+.2f}", (x, y + bh + int(22 * scale) + 4),
                  scale * 0.85, color, thick)
    if caption:
        _text(img, caption, (6, int(24 * scale) + 4), scale, (255, 255, 255), thick)
    return img
