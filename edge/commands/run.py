"""``emostream run SOURCE``: the main job — per-frame, per-face emotions as JSON lines."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from emostream.edge.config import (
    ENGINES,
    RUN_HEAD,
    DetectorOptions,
    EngineOptions,
    RunOptions,
    add_arguments,
    from_args,
)

__all__ = ["ENGINES", "add_detector_args", "add_engine_args", "register", "run"]


def add_engine_args(p: argparse.ArgumentParser) -> None:
    """Model and runtime flags shared by run, eval and bench (defaults: :class:`EngineOptions`)."""
    add_arguments(p, EngineOptions)


def add_detector_args(p: argparse.ArgumentParser, video: bool = True) -> None:
    """Detector flags shared by run, eval and bench (defaults: :class:`DetectorOptions`); without ``video`` (still
    images: ``eval``) the detection-interval flags, which only mean something from frame to frame, are left out."""
    add_arguments(p, DetectorOptions, None if video else ("detector", "min_score", "detector_runtime"))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="analyse video files, cameras or streams; JSON lines out",
                       description="Run GStreamer -> MediaPipe faces -> emotion network on one or more SOURCEs "
                                   "(one engine batched across streams; several streams decode and detect in a "
                                   "process each, see --front) and write "
                                   "one JSON object per frame, plus track events.")
    add_arguments(p, RunOptions, RUN_HEAD)
    add_engine_args(p)
    add_detector_args(p)
    add_arguments(p, RunOptions, tuple(n for n in RunOptions.__dataclass_fields__ if n not in RUN_HEAD))
    p.set_defaults(handler=run, handles_stop_signals=True)


def _overlay_uris(args: argparse.Namespace) -> list[str | None]:
    """One overlay URI (or None) per source, checked before anything is opened."""
    from emostream.edge.multistream import StreamConfigError
    from emostream.streams.sink import parse_sink_uri

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
    from emostream.edge.output import OutputError
    from emostream.streams import SourceError
    from emostream.streams.sink import parse_sink_uri
    from emostream.streams.uri import parse_uri

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
    from emostream.edge.multistream import StreamConfigError

    ids = args.stream_id or list(args.sources)
    if args.stream_id and len(args.stream_id) != len(args.sources):
        raise StreamConfigError(f"{len(args.stream_id)} --stream-id names for {len(args.sources)} sources")
    if len(set(ids)) != len(ids):
        raise StreamConfigError("stream ids must be unique (a source given twice needs --stream-id names)")
    return ids


def _on_error(fn: Callable[[], Any], *ignore: type[BaseException]) -> Callable[..., bool]:
    """An ExitStack exit callback that calls ``fn`` only when the block failed (``ignore``: errors of
    ``fn`` itself to swallow so that the block's own error is the one reported)."""

    def exit_(exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> bool:
        if exc_type is not None:
            with contextlib.suppress(*ignore):
                fn()
        return False

    return exit_


@dataclass(frozen=True)
class _Extras:
    """The console address and token, the alert rules and the MQTT target, parsed before anything opens."""

    console: tuple[str, int] | None = None
    token: str | None = None
    rules: tuple[Any, ...] = ()
    mqtt: Any = None


def _check_extras(opts: RunOptions) -> _Extras:
    """Parse ``--console``, ``--alert`` and ``--events`` (one clear error each, exit 2, nothing opened yet)."""
    from emostream.edge.alerts import parse_rules

    rules = tuple(parse_rules(opts.alert))
    console = token = mqtt = None
    if opts.console is not None:
        from emostream.edge.console.server import parse_console_addr, token_from_env

        token = token_from_env(opts.console_token)
        console = parse_console_addr(opts.console, token)
    elif opts.console_token or opts.console_linger:
        from emostream.edge.console.server import ConsoleError

        raise ConsoleError("--console-token and --console-linger need --console HOST:PORT")
    if opts.console_linger < 0 and opts.console_linger != -1:
        from emostream.edge.console.server import ConsoleError

        raise ConsoleError("--console-linger takes seconds >= 0, or -1 for 'until a signal'")
    if opts.events is not None:
        from emostream.edge.mqtt import parse_events_uri

        mqtt = parse_events_uri(opts.events)
    elif opts.events_frames:
        from emostream.edge.mqtt import MqttError

        raise MqttError("--events-frames needs --events mqtt://HOST:PORT/TOPIC")
    return _Extras(console, token, rules, mqtt)


def _open_extras(extras: _Extras, opts: RunOptions, ids: list[str], sources: list[Any], metrics: Any,
                 stack: contextlib.ExitStack) -> tuple[Any, Any, Any]:
    """Start the console (store + server) and the MQTT publisher when asked; registered on ``stack``."""
    store = console = publisher = None
    if extras.console is not None:
        from emostream.edge.console import ConsoleServer, SnapshotStore

        store = SnapshotStore(ids, opts.sources, rules=[r.to_dict() for r in extras.rules], sources=sources)
        console = ConsoleServer(store, *extras.console, token=extras.token, metrics=metrics)
        stack.callback(console.close)
        if not opts.quiet:
            how = " (open it with ?token=YOUR_TOKEN once)" if extras.token else ""
            print(f"emostream: console at {console.url}{how}", file=sys.stderr)
    if extras.mqtt is not None:
        from emostream.edge.mqtt import MqttPublisher

        publisher = MqttPublisher(extras.mqtt, frames=opts.events_frames, metrics=metrics)
        stack.callback(publisher.close, drain_s=0)  # no-op after the normal close below
        if not opts.quiet:
            print(f"emostream: events -> {extras.mqtt.url}", file=sys.stderr)
    return store, console, publisher


def _tee(write: Callable[[dict], None], listeners: list[Callable[[dict], None]]) -> Callable[[dict], None]:
    """The run's record writer, also telling the console and the MQTT publisher (after the output)."""
    if not listeners:
        return write

    def tee(record: dict) -> None:
        write(record)
        for listener in listeners:
            listener(record)

    return tee


def _linger(console: Any, opts: RunOptions, stop: Any) -> None:
    """``--console-linger``: keep the page up after the sources ended, until the time is up or a signal."""
    if not opts.console_linger:
        return
    forever = opts.console_linger < 0
    if not opts.quiet:
        print(f"emostream: sources ended; console stays at {console.url} "
              f"{'until Ctrl-C' if forever else f'for {opts.console_linger:g} s (Ctrl-C ends it sooner)'}",
              file=sys.stderr)
    end = time.monotonic() + (0 if forever else opts.console_linger)
    while not stop.requested and (forever or time.monotonic() < end):
        time.sleep(0.1)


def run(args: argparse.Namespace) -> int:
    """Open the sources, load the models, analyse until the sources end or a stop signal arrives.

    Start-up touches no output, so a failure or a signal there leaves an existing ``--output`` as it
    was. Once the output is open, SIGINT/SIGTERM (see :mod:`edge.shutdown`) stop the loop between
    steps, and the normal shutdown runs: open tracks end (``interrupted``), overlays are finished,
    late reasoner answers are written, and the CLI then exits with 128 + signal.

    Everything opened is registered on one :class:`contextlib.ExitStack` as it is opened, so a failure
    or a signal at any point closes exactly what exists, in reverse order.
    """
    # The heavy imports (mediapipe via edge.faces, onnxruntime, GStreamer) happen here, not
    # when the parser is built: `emostream keys` or `emostream run --help` never pay for them.
    from emostream.edge import shutdown
    from emostream.edge.escalation import EscalationHook, open_escalator
    from emostream.edge.events import EventConfig
    from emostream.edge.faces import FaceDetector
    from emostream.edge.metrics import Metrics
    from emostream.edge.multistream import StreamConfigError, run_streams
    from emostream.edge.output import JsonLinesWriter, OutputError, Progress
    from emostream.edge.pipeline import FrameAnalyzer
    from emostream.edge.timing import StageTimer
    from emostream.engines.emotion import load_engine
    from emostream.streams import SourceError, open_source

    opts = from_args(RunOptions, args)
    engine_opts = from_args(EngineOptions, args)
    detector_opts = from_args(DetectorOptions, args)
    if opts.max_frames is not None and opts.max_frames < 1:
        raise SourceError("--max-frames must be at least 1")
    if opts.metrics_port is not None and not 0 <= opts.metrics_port <= 65535:
        raise StreamConfigError(f"--metrics-port must be within 0..65535, got {opts.metrics_port}")
    if not 1 <= detector_opts.detect_interval <= 30:
        raise StreamConfigError(f"--detect-interval must be within 1..30, got {detector_opts.detect_interval}")
    ids = _stream_ids(args)
    overlays = _overlay_uris(args)
    _refuse_overwriting_inputs(args, overlays)
    extras = _check_extras(opts)  # --console, --alert, --events: checked before anything is opened
    stop = shutdown.current()
    tracker = opts.tracker()
    smoothing = opts.smoothing()
    timer = StageTimer()

    def paced(source: Any) -> Any:
        if opts.realtime and not source.is_live:
            from emostream.edge.pacing import PacedSource

            return PacedSource(source)
        return source

    from emostream.edge.front_process import resolve_front

    front = resolve_front(detector_opts.front, len(opts.sources))
    with contextlib.ExitStack() as stack:
        sources = []
        if front == "thread":
            for uri, sid in zip(opts.sources, ids):
                source = open_source(uri, stream=sid)  # waits for a first frame: a signal raises
                stack.callback(source.close)
                sources.append(paced(source))
        with stop.deferred():  # native model loading: a signal is honoured when it is done
            detector = FaceDetector(model=detector_opts.detector, min_score=detector_opts.min_score,
                                    runtime=detector_opts.detector_runtime)
            stack.callback(detector.close)
            engine = load_engine(engine_opts.engine, engine_opts.model, threads=engine_opts.threads,
                                 tta=engine_opts.tta)
            stack.callback(engine.close)
        analyzer = FrameAnalyzer(detector, engine, timer, detect_interval=detector_opts.detect_interval,
                                 interval_tracker=detector_opts.interval_tracker)
        stack.callback(analyzer.interval.close)
        if front == "process":  # the children detect as this analyzer would
            from emostream.edge.front_process import FrontSpec, open_process_sources

            note = None if opts.quiet else (lambda line: print(f"emostream: note: {line}", file=sys.stderr))
            opened = open_process_sources(zip(opts.sources, ids), FrontSpec.of(analyzer), notify=note)
            for source in opened:
                stack.callback(source.close)
            sources = [paced(source) for source in opened]
        if not opts.quiet:
            # Which runtime runs the network, and why: on a Jetson a silent CPU fallback costs 10x.
            print(f"emostream: engine {getattr(engine, 'selection', engine.name)}", file=sys.stderr)
            if front == "process":
                print(f"emostream: front: a process per stream ({len(sources)}) decodes, detects and aligns",
                      file=sys.stderr)
        with stop.deferred():
            escalator = open_escalator(opts.reasoner, keys_dir=opts.keys, insecure=opts.insecure,
                                       labels=analyzer.labels)
        if escalator is not None:
            stack.callback(escalator.close, drain_s=0)
        metrics = Metrics()
        progress = Progress(enabled=not opts.quiet)
        start = time.perf_counter()
        if opts.metrics_port is not None:
            server = metrics.serve(opts.metrics_port, opts.metrics_host)
            stack.callback(server.close)
            if not opts.quiet:
                print(f"emostream: metrics at {server.url}", file=sys.stderr)
        store, console, publisher = _open_extras(extras, opts, ids, sources, metrics, stack)
        stop.check()
        out = stack.enter_context(JsonLinesWriter(opts.output, overwrite=opts.overwrite))
        stop.hold()  # from here a signal asks for the orderly stop below; it never cuts it short
        if out.repaired and not opts.quiet:
            print(f"emostream: note: {out.where} ended in a cut line (an earlier crash?); "
                  "appending on a fresh line", file=sys.stderr)
        write = _tee(out.write, [f.record for f in (store, publisher) if f is not None])
        hook = EscalationHook(escalator, write, metrics=metrics) if escalator is not None else None
        sinks: list[Any] = []
        alerts = None
        if extras.rules:
            from emostream.edge.alerts import AlertSink

            alerts = AlertSink(extras.rules, analyzer.labels, write, smoothing=smoothing, metrics=metrics)
            sinks.append(alerts)
        if hook is not None:
            sinks.append(hook)
        if store is not None:
            sinks.append(store)
        with contextlib.ExitStack() as loop:
            if hook is not None:
                # Late answers still go out if the output works; if it is what failed, the error
                # already on its way is the one to report.
                loop.push(_on_error(hook.close, OutputError))
            loop.callback(progress.done)
            results = run_streams(analyzer, sources, write, metrics=metrics, overlays=overlays,
                                  max_frames=opts.max_frames, tracker=tracker, smoothing=smoothing,
                                  events=EventConfig(), progress=progress.update, sinks=sinks,
                                  should_stop=lambda: stop.requested)
        analysed = time.perf_counter()  # the summary's fps leave out --console-linger
        if hook is not None:
            summary = hook.close()  # late answers still reach the output before it closes
            if not opts.quiet:
                print(f"emostream: {summary}", file=sys.stderr)
        if alerts is not None and not opts.quiet:
            print(f"emostream: alerts: {alerts.counts['raised']} raised, {alerts.counts['cleared']} cleared "
                  f"({len(extras.rules)} rules)", file=sys.stderr)
        if store is not None:
            store.close()
        if console is not None:
            _linger(console, opts, stop)
        if publisher is not None:
            line = publisher.close()  # what is still queued gets its chance before the summary
            if not opts.quiet:
                print(f"emostream: {line}", file=sys.stderr)
    elapsed = analysed - start
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
        where = opts.output or "stdout"
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
