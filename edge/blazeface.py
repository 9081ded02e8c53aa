"""BlazeFace's own ``.tflite`` weights run directly on the TFLite interpreter, decoded as MediaPipe does.

Why: MediaPipe's graphs cost far more than the networks inside them. On the 2-core AMD EPYC of the
README (other processes on both cores, load ~4.5), full range through ``solutions.face_detection`` took
11.6 ms per 640x360 frame and short range through the Tasks API 2.3 ms, while the same ``.tflite``
files here took 6.8 and 2.1 ms (medians of 5 alternating passes; the invoke alone is ~3.4 and ~1.0 ms
with one XNNPACK thread on a quieter machine). The graph also forbids full range in the
Tasks API (its decoder is fixed to 896 anchors), so running the weights ourselves is what makes full
range -- the detector that also finds the faces of a room -- affordable as the default.

What is reproduced from MediaPipe's ``face_detection.pbtxt`` (0.10.21), so results match its graphs
(tests/edge/test_blazeface.py compares both routes on the shared photos and video):

* input: the frame letterboxed (aspect kept, centred, zero border) to 128x128 (short) or 192x192
  (full), RGB scaled to [-1, 1];
* SSD anchors: short = strides 8/16/16/16 with two anchors per cell (896), full = stride 4, one
  anchor per cell (2304); fixed anchor size, offset 0.5;
* decoding: ``reverse_output_order`` (x, y, w, h), coordinates divided by the input size and scaled by
  the anchor, six keypoints; score = sigmoid of the logit clipped to +-100;
* weighted non-maximum suppression at IoU 0.3: each cluster's box and keypoints are the score-weighted
  mean of its members, its score the best member's;
* letterbox removal back to frame pixels.

``tflite_runtime`` is imported lazily: ``FaceDetector(runtime="mediapipe")`` works without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

_NMS_IOU = 0.3
_SCORE_CLIP = 100.0


@dataclass(frozen=True)
class ModelSpec:
    """The per-model settings of MediaPipe's graph (input side, anchor strides, anchors per cell)."""

    size: int
    strides: tuple[int, ...]
    anchors_per_cell: int


SPECS = {
    "short": ModelSpec(128, (8, 16, 16, 16), 2),
    "full": ModelSpec(192, (4,), 1),
}


def ssd_anchors(spec: ModelSpec) -> np.ndarray:
    """(A, 2) anchor centres in [0, 1] (x, y); layers of equal stride share one grid, as in MediaPipe."""
    centres: list[np.ndarray] = []
    i = 0
    strides = spec.strides
    while i < len(strides):
        stride = strides[i]
        layers = 0
        while i < len(strides) and strides[i] == stride:
            layers += 1
            i += 1
        n = -(-spec.size // stride)  # ceil
        ys, xs = np.meshgrid((np.arange(n) + 0.5) / n, (np.arange(n) + 0.5) / n, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(grid, layers * spec.anchors_per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


def letterbox(rgb: np.ndarray, size: int, out: np.ndarray | None = None) -> tuple[np.ndarray, float, float, float]:
    """``size`` x ``size`` float32 input in [-1, 1], plus (scale, pad_x, pad_y) to map back to pixels.

    Bilinear, as MediaPipe's own image-to-tensor warp: INTER_AREA was tried and costs 1.4-2 ms for
    640x360 -> 192x108 (a non-integer factor) against 0.1 ms, for no better agreement with MediaPipe's
    results. The padding is zero in the model's range, as MediaPipe's BORDER_ZERO tensor border.
    ``out`` (a reused buffer) saves allocating and zeroing 432 KB per call: it is written in place.
    """
    h, w = rgb.shape[:2]
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    small = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
    if out is None or out.shape != (size, size, 3):
        out = np.zeros((size, size, 3), np.float32)
    else:
        out.fill(0.0)
    px, py = (size - nw) // 2, (size - nh) // 2
    view = out[py:py + nh, px:px + nw]
    np.multiply(small, np.float32(2.0 / 255.0), out=view, casting="unsafe")
    view -= np.float32(1.0)
    # Map from input pixels back to frame pixels: frame = (input - pad) / scale (x and y share scale
    # up to the rounding of nw/nh, which is below half a frame pixel).
    return out, scale, float(px), float(py)


def decode(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, size: int,
           min_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw outputs -> (boxes [x, y, w, h], scores, keypoints (N, 6, 2)) in model-input pixels, pre-NMS."""
    logits = np.clip(raw_scores.reshape(-1), -_SCORE_CLIP, _SCORE_CLIP)
    scores = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    keep = np.flatnonzero(scores >= min_score)
    raw = raw_boxes.reshape(-1, 16)[keep]
    anc = anchors[keep] * size  # anchor centres in input pixels; fixed anchor size 1 -> scale = size/size
    cx = raw[:, 0] + anc[:, 0]
    cy = raw[:, 1] + anc[:, 1]
    w, h = raw[:, 2], raw[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, w, h], axis=1)
    kps = raw[:, 4:16].reshape(-1, 6, 2) + anc[:, None, :]
    return boxes.astype(np.float32), scores[keep].astype(np.float32), kps.astype(np.float32)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, kps: np.ndarray,
                 iou: float = _NMS_IOU) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's WEIGHTED non-max suppression: one detection per cluster of overlapping candidates."""
    if len(boxes) == 0:
        return boxes, scores, kps
    order = np.argsort(-scores, kind="stable")
    x0, y0 = boxes[:, 0], boxes[:, 1]
    x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
    area = np.clip(boxes[:, 2], 0, None) * np.clip(boxes[:, 3], 0, None)
    out_b, out_s, out_k = [], [], []
    remaining = order
    while len(remaining):
        top = remaining[0]
        ix = np.clip(np.minimum(x1[top], x1[remaining]) - np.maximum(x0[top], x0[remaining]), 0, None)
        iy = np.clip(np.minimum(y1[top], y1[remaining]) - np.maximum(y0[top], y0[remaining]), 0, None)
        inter = ix * iy
        union = area[top] + area[remaining] - inter
        overlap = np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)
        member = overlap > iou
        member[0] = True  # the top candidate always founds its cluster (even a zero-area box)
        cluster = remaining[member]
        wts = scores[cluster][:, None]
        out_b.append((boxes[cluster] * wts).sum(0) / wts.sum())
        out_k.append((kps[cluster] * wts[:, :, None]).sum(0) / wts.sum())
        out_s.append(scores[top])
        remaining = remaining[~member]
    return (np.array(out_b, np.float32).reshape(-1, 4), np.array(out_s, np.float32),
            np.array(out_k, np.float32).reshape(-1, 6, 2))


class TFLiteBlazeFace:
    """One BlazeFace model on one TFLite interpreter (one XNNPACK thread by default; not re-entrant).

    One thread because on a small, shared CPU a second interpreter thread fights the other stages
    for cores: measured 1.0 ms (1 thread) vs 24 ms (2 threads) per short-range invoke on the 2-core
    EPYC while another process held one core.
    """

    def __init__(self, model: str, path: Path, min_score: float, threads: int = 1) -> None:
        from tflite_runtime.interpreter import Interpreter

        self.spec = SPECS[model]
        self.input_size = self.spec.size  # what FaceDetector.detect_frame scales a frame down to
        self.min_score = float(min_score)
        self._it = Interpreter(model_path=str(path), num_threads=threads)
        self._it.allocate_tensors()
        inp = self._it.get_input_details()[0]
        want = [1, self.spec.size, self.spec.size, 3]
        if list(inp["shape"]) != want:
            raise ValueError(f"{path.name}: input shape {list(inp['shape'])}, expected {want}")
        self._in = inp["index"]
        outs = self._it.get_output_details()
        # The regressors tensor is the one with 16 values per anchor, the classificator the one with 1.
        self._box_out = next(o["index"] for o in outs if o["shape"][-1] == 16)
        self._score_out = next(o["index"] for o in outs if o["shape"][-1] == 1)
        self.anchors = ssd_anchors(self.spec)
        self._buf = np.zeros((self.spec.size, self.spec.size, 3), np.float32)

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(boxes [x, y, w, h], scores, keypoints) in ``rgb``'s pixels, after weighted NMS."""
        tensor, scale, px, py = letterbox(rgb, self.spec.size, self._buf)
        self._it.set_tensor(self._in, tensor[None])
        self._it.invoke()
        raw_boxes = self._it.get_tensor(self._box_out)
        raw_scores = self._it.get_tensor(self._score_out)
        boxes, scores, kps = decode(raw_boxes, raw_scores, self.anchors, self.spec.size, self.min_score)
        boxes, scores, kps = weighted_nms(boxes, scores, kps)
        offset = np.array([px, py], np.float32)
        boxes[:, :2] = (boxes[:, :2] - offset) / scale
        boxes[:, 2:] /= scale
        kps = (kps - offset) / scale
        return boxes, scores, kps

    def close(self) -> None:
        self._it = None  # type: ignore[assignment]
