"""``emostream run SOURCE``: the main job — per-frame, per-face emotions as JSON lines."""

from __future__ import annotations

import argparse
import sys
import time

from edge.faces import FaceDetector
from edge.output import JsonLinesWriter, Progress
from edge.pipeline import FrameAnalyzer
from edge.timing import StageTimer
from engines.emotion import DEFAULT_MODEL, load_engine
from streams import SourceError, open_source

ENGINES = ("auto", "onnxruntime", "torch", "tensorrt")


def add_engine_args(p: argparse.ArgumentParser) -> None:
    """Model and runtime flags shared by run, eval and bench."""
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="emotion network runtime (auto: TensorRT where available, else ONNX Runtime)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"registered model name or path to a model card/.onnx (default: {DEFAULT_MODEL})")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the engine (default: runtime's)")


def add_detector_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--detector", choices=("short", "full"), default="short",
                   help="BlazeFace model: short range (faces within ~2 m, default) or full range")
    p.add_argument("--min-score", type=float, default=0.5, help="face detection threshold (default 0.5)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="analyse a video file, camera or stream; JSON lines out",
                       description="Run GStreamer -> MediaPipe faces -> emotion network on SOURCE and write one "
                                   "JSON object per frame.")
    p.add_argument("source", metavar="SOURCE",
                   help="file path or file://, /dev/videoN or v4l2://, csi://N, rtsp://..., test://, or an image")
    p.add_argument("--output", "-o", metavar="FILE.jsonl", help="write records here (default: stdout)")
    add_engine_args(p)
    add_detector_args(p)
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress or summary on stderr")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.max_frames is not None and args.max_frames < 1:
        raise SourceError("--max-frames must be at least 1")
    source = open_source(args.source)
    timer = StageTimer()
    analyzer = FrameAnalyzer(
        FaceDetector(model=args.detector, min_score=args.min_score),
        load_engine(args.engine, args.model, threads=args.threads),
        timer,
    )
    progress = Progress(enabled=not args.quiet)
    frames = faces = frames_with_faces = 0
    failure: str | None = None
    start = time.perf_counter()
    with JsonLinesWriter(args.output) as out, source:
        try:
            it = iter(source)
            while args.max_frames is None or frames < args.max_frames:
                t0 = time.perf_counter()
                frame = next(it, None)
                timer.add("decode", time.perf_counter() - t0)
                if frame is None:
                    break
                result = analyzer.analyze(frame)
                out.write(result.record())
                frames += 1
                faces += len(result.faces)
                frames_with_faces += bool(len(result.faces))
                progress.update(frames, faces)
        except SourceError as exc:
            failure = str(exc)  # everything analysed so far is already written
        finally:
            progress.done()
            analyzer.close()
    elapsed = time.perf_counter() - start
    if not args.quiet:
        stages = ", ".join(f"{s} {timer.ms_per(s, frames):.1f}" for s in ("decode", "detect", "align", "infer"))
        where = args.output or "stdout"
        print(f"emostream: {frames} frames in {elapsed:.1f} s ({frames / elapsed if elapsed else 0:.1f} fps), "
              f"{frames_with_faces} with faces, {faces} faces; ms/frame: {stages}; "
              f"engine {analyzer.engine.name}/{analyzer.engine.model.name}; records -> {where}",
              file=sys.stderr)
    if failure:
        print(f"emostream: error: {failure} (after {frames} frames; those records were written)", file=sys.stderr)
        return 1
    if source.is_live and (args.max_frames is None or frames < args.max_frames):
        print(f"emostream: error: live source {args.source} ended (end of stream)", file=sys.stderr)
        return 1
    return 0
