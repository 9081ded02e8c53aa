"""``emostream run SOURCE``: the main job — per-frame, per-face emotions as JSON lines."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

from emostream.edge import shutdown
from emostream.edge.escalation import EscalationHook, open_escalator
from emostream.edge.events import EventConfig
from emostream.edge.faces import FaceDetector
from emostream.edge.metrics import Metrics
from emostream.edge.multistream import StreamConfigError, run_streams
from emostream.edge.output import JsonLinesWriter, OutputError, Progress
from emostream.edge.pipeline import FrameAnalyzer
from emostream.edge.smoothing import SmoothingConfig
from emostream.edge.timing import StageTimer
from emostream.edge.tracking import TrackerConfig
from emostream.engines.emotion import DEFAULT_MODEL, load_engine
from emostream.streams import SourceError, open_source
from emostream.streams.sink import parse_sink_uri
from emostream.streams.uri import parse_uri

ENGINES = ("auto", "onnxruntime", "torch", "tensorrt")


def add_engine_args(p: argparse.ArgumentParser) -> None:
    """Model and runtime flags shared by run, eval and bench."""
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="emotion network runtime (auto: TensorRT where available, else ONNX Runtime)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"registered model name or path to a model card/.onnx (default: {DEFAULT_MODEL})")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the engine (default: runtime's)")
    p.add_argument("--tta", action="store_true",
                   help="horizontal-flip test-time augmentation: each face and its mirror in one batch "
                        "(student: +1.3 points on FER2013 val, about 1.5x the inference time)")


def add_detector_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--detector", choices=("short", "full"), default="short",
                   help="BlazeFace model: short range (faces within ~2 m, default) or full range")
    p.add_argument("--min-score", type=float, default=0.5, help="face detection threshold (default 0.5)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="analyse video files, cameras or streams; JSON lines out",
                       description="Run GStreamer -> MediaPipe faces -> emotion network on one or more SOURCEs "
                                   "(one process, shared detector and engine, batched across streams) and write "
                                   "one JSON object per frame, plus track events.")
    p.add_argument("sources", metavar="SOURCE", nargs="+",
                   help="file path or file://, /dev/videoN or v4l2://, csi://N, rtsp://..., test://, or an image")
    p.add_argument("--output", "-o", metavar="FILE.jsonl",
                   help="append records to this file (default: stdout); a restart adds to it")
    p.add_argument("--overwrite", action="store_true",
                   help="truncate --output first instead of appending to it")
    p.add_argument("--stream-id", action="append", default=None, metavar="NAME",
                   help="name of a stream in the records (repeat once per SOURCE, in order; default: the URI)")
    add_engine_args(p)
    add_detector_args(p)
    p.add_argument("--max-frames", type=int, default=None, help="stop each stream after this many frames")
    p.add_argument("--overlay", action="append", default=None, metavar="URI",
                   help="annotated video out: out.mp4/.mkv, rtp://HOST:PORT or rtsp://@:PORT/PATH (repeat once "
                        "per SOURCE; with one URI and several sources, {i} in it becomes the source number)")
    p.add_argument("--smooth-seconds", type=float, default=0.5,
                   help="time constant of the per-track label smoothing (default 0.5 s; 0 = off)")
    p.add_argument("--track-timeout", type=float, default=1.0,
                   help="seconds a face may go undetected and keep its track id (default 1.0)")
    p.add_argument("--metrics-port", type=int, default=None, metavar="N",
                   help="serve Prometheus metrics at http://HOST:N/metrics while running")
    p.add_argument("--metrics-host", default="127.0.0.1",
                   help="address for --metrics-port (default 127.0.0.1; 0.0.0.0 for all interfaces)")
    p.add_argument("--reasoner", default="inproc", metavar="SPEC",
                   help="keyframe escalation: inproc (knowledge engine in this process, default), "
                        "tcp://HOST:PORT (a `emostream reasoner` service) or none")
    p.add_argument("--keys", metavar="DIR", help="CURVE keys from `emostream keys DIR` for a tcp:// reasoner")
    p.add_argument("--insecure", action="store_true", help="allow a plain-TCP reasoner off loopback")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress or summary on stderr")
    p.set_defaults(handler=run, handles_stop_signals=True)


def _overlay_uris(args: argparse.Namespace) -> list[str | None]:
    """One overlay URI (or None) per source, checked before anything is opened."""
    n = len(args.sources)
    given = args.overlay or []
    if not given:
        return [None] * n
    if len(given) == 1 and n > 1:
        if "{i}" not in given[0]:
            raise StreamConfigError(f"one --overlay for {n} sources: put {{i}} in it (e.g. out{{i}}.mp4) "
                                    "or give one --overlay per source")
        given = [given[0].replace("{i}", str(i)) for i in range(n)]
    if len(given) != n:
        raise StreamConfigError(f"{len(given)} --overlay outputs for {n} sources (give one per source)")
    for uri in given:
        parse_sink_uri(uri)
    if len(set(given)) != len(given):
        raise StreamConfigError("each --overlay output must be different")
    return list(given)


def _same_file(a: Path, b: Path) -> bool:
    """Whether two spellings name one file: same resolved path (symlinks, ``..``), or the same inode
    (hard links, bind mounts)."""
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _refuse_overwriting_inputs(args: argparse.Namespace, overlays: list[str | None]) -> None:
    """Refuse an output that is an input (``run x.mp4 -o x.mp4``) or another output, before anything is
    opened: opening it for writing would destroy the video the user asked to analyse."""
    inputs: list[tuple[str, Path]] = []
    for uri in args.sources:
        try:
            spec = parse_uri(uri)
        except SourceError:
            continue  # open_source reports it, in the usual words
        if spec.kind == "file" and spec.path is not None:
            inputs.append((uri, spec.path))
    outputs: list[tuple[str, Path]] = []
    if args.output:
        outputs.append((f"--output {args.output}", Path(args.output).expanduser()))
    for uri in overlays:
        if uri is not None:
            spec = parse_sink_uri(uri)
            if spec.kind == "file" and spec.path is not None:
                outputs.append((f"--overlay {uri}", spec.path))
    for n, (what, path) in enumerate(outputs):
        for uri, source in inputs:
            if _same_file(path, source):
                raise OutputError(f"{what} is the input SOURCE {uri}; refusing to overwrite it "
                                  "(choose another output file)")
        for other, other_path in outputs[:n]:
            if _same_file(path, other_path):
                raise OutputError(f"{what} and {other} are the same file (give each output its own file)")


def _stream_ids(args: argparse.Namespace) -> list[str]:
    ids = args.stream_id or list(args.sources)
    if args.stream_id and len(args.stream_id) != len(args.sources):
        raise StreamConfigError(f"{len(args.stream_id)} --stream-id names for {len(args.sources)} sources")
    if len(set(ids)) != len(ids):
        raise StreamConfigError("stream ids must be unique (a source given twice needs --stream-id names)")
    return ids


def run(args: argparse.Namespace) -> int:
    """Open the sources, load the models, analyse until the sources end or a stop signal arrives.

    Start-up touches no output, so a failure or a signal there leaves an existing ``--output`` as it
    was. Once the output is open, SIGINT/SIGTERM (see :mod:`edge.shutdown`) stop the loop between
    steps, and the normal shutdown runs: open tracks end (``interrupted``), overlays are finished,
    late reasoner answers are written, and the CLI then exits with 128 + signal.
    """
    if args.max_frames is not None and args.max_frames < 1:
        raise SourceError("--max-frames must be at least 1")
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        raise StreamConfigError(f"--metrics-port must be within 0..65535, got {args.metrics_port}")
    ids = _stream_ids(args)
    overlays = _overlay_uris(args)
    _refuse_overwriting_inputs(args, overlays)
    stop = shutdown.current()
    tracker = TrackerConfig(lost_seconds=args.track_timeout)
    smoothing = SmoothingConfig(time_constant_s=args.smooth_seconds)
    sources = []
    try:
        for uri, sid in zip(args.sources, ids):
            sources.append(open_source(uri, stream=sid))  # waits for a first frame: a signal raises
    except BaseException:
        for src in sources:
            src.close()
        raise
    timer = StageTimer()
    try:
        with stop.deferred():  # native model loading: a signal is honoured when it is done
            analyzer = FrameAnalyzer(
                FaceDetector(model=args.detector, min_score=args.min_score),
                load_engine(args.engine, args.model, threads=args.threads, tta=args.tta),
                timer,
            )
    except BaseException:
        for src in sources:
            src.close()
        raise
    try:
        with stop.deferred():
            escalator = open_escalator(args.reasoner, keys_dir=args.keys, insecure=args.insecure,
                                       labels=analyzer.labels)
    except BaseException:
        analyzer.close()
        for src in sources:
            src.close()
        raise
    metrics = Metrics()
    server = None
    hook = None
    progress = Progress(enabled=not args.quiet)
    start = time.perf_counter()
    try:
        if args.metrics_port is not None:
            server = metrics.serve(args.metrics_port, args.metrics_host)
            if not args.quiet:
                print(f"emostream: metrics at {server.url}", file=sys.stderr)
        stop.check()
        with JsonLinesWriter(args.output, overwrite=args.overwrite) as out:
            stop.hold()  # from here a signal asks for the orderly stop below; it never cuts it short
            if out.repaired and not args.quiet:
                print(f"emostream: note: {out.where} ended in a cut line (an earlier crash?); "
                      "appending on a fresh line", file=sys.stderr)
            hook = EscalationHook(escalator, out.write, metrics=metrics) if escalator is not None else None
            try:
                results = run_streams(analyzer, sources, out.write, metrics=metrics, overlays=overlays,
                                      max_frames=args.max_frames, tracker=tracker, smoothing=smoothing,
                                      events=EventConfig(), progress=progress.update, on_step=hook,
                                      should_stop=lambda: stop.requested)
            except BaseException:
                progress.done()
                if hook is not None:
                    # Late answers still go out if the output works; if it is what failed, the
                    # error already on its way is the one to report.
                    with contextlib.suppress(OutputError):
                        hook.close()
                raise
            progress.done()
            if hook is not None:
                summary = hook.close()  # late answers still reach the output before it closes
                if not args.quiet:
                    print(f"emostream: {summary}", file=sys.stderr)
    finally:
        if escalator is not None:
            escalator.close(drain_s=0)
        analyzer.close()
        for src in sources:
            src.close()
        if server is not None:
            server.close()
    elapsed = time.perf_counter() - start
    frames = sum(r.frames for r in results)
    faces = sum(r.faces for r in results)
    with_faces = sum(r.frames_with_faces for r in results)
    if not args.quiet:
        if len(results) > 1:
            for r in results:
                ev = ", ".join(f"{v} {k}" for k, v in r.events.items()) or "no events"
                print(f"emostream: [{r.stream}] {r.frames} frames ({r.frames / elapsed if elapsed else 0:.1f} fps), "
                      f"{r.faces} faces, {ev}" + (f", overlay {r.overlay}" if r.overlay else ""), file=sys.stderr)
        elif results[0].overlay:
            print(f"emostream: overlay -> {results[0].overlay} ({results[0].overlay_frames} frames)",
                  file=sys.stderr)
        stages = ", ".join(f"{s} {timer.ms_per(s, frames):.1f}" for s in ("detect", "align", "infer"))
        where = args.output or "stdout"
        streams = f"{len(results)} streams, " if len(results) > 1 else ""
        print(f"emostream: {frames} frames in {elapsed:.1f} s ({frames / elapsed if elapsed else 0:.1f} fps), "
              f"{streams}{with_faces} with faces, {faces} faces; ms/frame: {stages}; "
              f"engine {analyzer.engine.name}/{analyzer.engine.model.name}; records -> {where}",
              file=sys.stderr)
    status = 0
    for r in results:
        if r.error:
            print(f"emostream: error: {r.error} (after {r.frames} frames of {r.stream}; those records were "
                  "written)", file=sys.stderr)
            status = 1
        elif r.live and not r.interrupted and (args.max_frames is None or r.frames < args.max_frames):
            print(f"emostream: error: live source {r.uri} ended (end of stream)", file=sys.stderr)
            status = 1
    return status
