"""The one place for ``emostream run``'s settings and their defaults; the CLI flags are generated here.

Why: the defaults used to be written twice -- once in the config dataclasses the code reads, once in
the argparse flags users type -- and the two could drift (a test would pass with one default while
users got the other). Each setting is a dataclass field whose metadata carries its flag and help
(:func:`option`); :func:`add_arguments` turns a dataclass into argparse arguments, with the field's
default as the flag's default, and help strings say ``%(default)s`` instead of repeating it.

Light on purpose (argparse, dataclasses, numpy at most): building the ``emostream`` parser imports
this module, and must not load mediapipe, supervision, onnxruntime or GStreamer.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import MISSING, dataclass, field
from typing import Any, TypeVar

from emostream.edge.events import EventConfig
from emostream.edge.smoothing import SmoothingConfig
from emostream.engines.emotion import DEFAULT_MODEL

__all__ = [
    "DetectorOptions", "EngineOptions", "EventConfig", "RunOptions", "SmoothingConfig", "TrackerConfig",
    "TrackingError", "add_arguments", "from_args", "option",
]

ENGINES = ("auto", "onnxruntime", "torch", "tensorrt")
DETECTORS = ("full", "short")
DETECTOR_RUNTIMES = ("litert", "mediapipe")
#: Mirrors ``edge.interval.TRACKERS`` (not imported: ``--help`` must not load OpenCV; a test keeps them equal).
INTERVAL_TRACKERS = ("flow", "region")

T = TypeVar("T")


class TrackingError(Exception):
    """Bad tracker settings (non-positive frame rate, thresholds outside their range)."""


@dataclass(frozen=True)
class TrackerConfig:
    """Tracker knobs, in units an operator can reason about (seconds, IoU), not ByteTrack's internals.

    ``lost_seconds``: how long a face may go undetected (occluded, turned away, missed) and come back
    under the same id. ``match_iou``: the least overlap between a track's predicted box and a
    detection that may be associated. ``activation_score``: detections at or above it start and feed
    tracks; those between 0.1 and it only keep existing tracks alive (ByteTrack's second round).
    (Here rather than in :mod:`edge.tracking` so the CLI can read its default without numpy or the tracker.)
    """

    lost_seconds: float = 1.0
    match_iou: float = 0.2
    activation_score: float = 0.25

    def __post_init__(self) -> None:
        if not 0.0 <= self.lost_seconds <= 3600.0:
            raise TrackingError(f"lost_seconds must be within [0, 3600], got {self.lost_seconds}")
        if not 0.0 < self.match_iou < 1.0:
            raise TrackingError(f"match_iou must be within (0, 1), got {self.match_iou}")
        if not 0.0 < self.activation_score < 1.0:
            raise TrackingError(f"activation_score must be within (0, 1), got {self.activation_score}")


def option(*flags: str, help: str, default: Any = MISSING, **argparse_kw: Any) -> Any:  # noqa: A002
    """A dataclass field that is also a CLI argument: ``flags`` (none: positional), ``help``, and any
    other ``add_argument`` keywords (``type``, ``choices``, ``action``, ``metavar``, ``nargs``)."""
    return field(default=default, metadata={"flags": flags, "help": help, "argparse": argparse_kw})


def add_arguments(parser: argparse.ArgumentParser, cls: type, names: tuple[str, ...] | None = None) -> None:
    """Add ``cls``'s :func:`option` fields (or only ``names``, in that order) to ``parser``."""
    fields = {f.name: f for f in dataclasses.fields(cls) if "flags" in f.metadata}
    for name in names or tuple(fields):
        f = fields[name]
        kw = dict(f.metadata["argparse"])
        flags = f.metadata["flags"]
        if flags:
            if f.default is not MISSING:
                kw.setdefault("default", f.default)
            parser.add_argument(*flags, dest=f.name, help=f.metadata["help"], **kw)
        else:
            parser.add_argument(f.name, help=f.metadata["help"], **kw)


def from_args(cls: type[T], args: argparse.Namespace) -> T:
    """The dataclass ``cls`` filled from parsed ``args`` (fields the parser did not define keep defaults)."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}  # type: ignore[arg-type]
    return cls(**given)


@dataclass(frozen=True)
class EngineOptions:
    """Model and runtime flags shared by run, eval and bench."""

    engine: str = option("--engine", default="auto", choices=ENGINES,
                         help="emotion network runtime (auto: TensorRT where available, else ONNX Runtime)")
    model: str = option("--model", default=DEFAULT_MODEL,
                        help="registered model name or path to a model card/.onnx (default: %(default)s)")
    # One thread by default: the network is a fraction of a millisecond per face at batch 1, and with the stages
    # overlapped the other cores detect faces and decode (ONNX Runtime's default, all cores, oversubscribes them:
    # 139 -> 211 frames/s overlapped on the Pexels clip, 2-core EPYC, README "Performance").
    threads: int | None = option("--threads", default=1, type=int,
                                 help="CPU threads for the engine (default %(default)s; raise it for batches of "
                                      "many faces, e.g. `eval` or many streams on a many-core CPU)")
    tta: bool = option("--tta", default=False, action="store_true",
                       help="horizontal-flip test-time augmentation: each face and its mirror in one batch "
                            "(student: +0.4 points on FER2013 val, 1.5x the inference time at batch 1)")


@dataclass(frozen=True)
class DetectorOptions:
    """Face detector flags shared by run, eval and bench. The default is ``full`` range on the TFLite
    interpreter: it finds the faces of a room as well as the one at a kiosk (see edge/faces.py). The
    defaults are literals (checked against edge/faces.py by tests) so the parser never imports mediapipe."""

    detector: str = option("--detector", default="full", choices=DETECTORS,
                           help="BlazeFace model: full range (faces near and far, default) or short range "
                                "(faces within ~2 m only, cheaper)")
    min_score: float = option("--min-score", default=0.55, type=float,
                              help="face detection threshold (default %(default)s)")
    detector_runtime: str = option(
        "--detector-runtime", default="litert", choices=DETECTOR_RUNTIMES,
        help="how BlazeFace runs: litert (its .tflite on the TFLite interpreter, default) or mediapipe "
             "(MediaPipe's own graphs, ~1.7x slower here)")
    detect_interval: int = option(
        "--detect-interval", default=5, type=int, metavar="N",
        help="full-frame face detection every N frames per stream (1..30); in between, known faces are "
             "carried by optical flow. A lost or doubtful face, or a frame with no known face, gets a full "
             "detection at once; a face joining others is found up to N-1 frames late. Default %(default)s: "
             "~1.7x the frames/s of 1 (every frame), labels within the noise of a 1-px crop shift; "
             "`emostream bench` measures both")
    interval_tracker: str = option(
        "--interval-tracker", default="flow", choices=INTERVAL_TRACKERS,
        help="how faces are carried between full detections: flow (optical flow of the face, default) or "
             "region (a short-range BlazeFace pass around each face: fresh keypoints, ~3x the cost)")
    front: str = option(
        "--front", default="auto", choices=("auto", "thread", "process"),
        help="where each stream's decoding, detection and alignment run: a thread of this process, or a "
             "process per stream (no GIL shared with the engine and sinks; frames come back through shared "
             "memory; ~+10%% frames/s on 2 cores; ~150 MB each). Default auto: process for two or more streams "
             "on a multi-core CPU, else thread (`emostream bench --front process` compares the two)")


@dataclass(frozen=True)
class RunOptions:
    """Everything ``emostream run`` takes besides the engine and detector flags."""

    sources: tuple[str, ...] = option(
        default=(), metavar="SOURCE", nargs="+",
        help="file path or file://, /dev/videoN or v4l2://, csi://N, rtsp://..., test://, or an image")
    output: str | None = option("--output", "-o", default=None, metavar="FILE.jsonl",
                                help="append records to this file (default: stdout); a restart adds to it")
    overwrite: bool = option("--overwrite", default=False, action="store_true",
                             help="truncate --output first instead of appending to it")
    stream_id: list[str] | None = option(
        "--stream-id", default=None, action="append", metavar="NAME",
        help="name of a stream in the records (repeat once per SOURCE, in order; default: the URI)")
    max_frames: int | None = option("--max-frames", default=None, type=int,
                                    help="stop each stream after this many frames")
    overlay: list[str] | None = option(
        "--overlay", default=None, action="append", metavar="URI",
        help="annotated video out: out.mp4/.mkv, rtp://HOST:PORT or rtsp://@:PORT/PATH (repeat once "
             "per SOURCE; with one URI and several sources, {i} in it becomes the source number)")
    smooth_seconds: float = option(
        "--smooth-seconds", default=SmoothingConfig.time_constant_s, type=float,
        help="time constant of the per-track label smoothing (default %(default)s s; 0 = off)")
    track_timeout: float = option(
        "--track-timeout", default=TrackerConfig.lost_seconds, type=float,
        help="seconds a face may go undetected and keep its track id (default %(default)s)")
    metrics_port: int | None = option("--metrics-port", default=None, type=int, metavar="N",
                                      help="serve Prometheus metrics at http://HOST:N/metrics while running")
    metrics_host: str = option("--metrics-host", default="127.0.0.1",
                               help="address for --metrics-port (default %(default)s; 0.0.0.0 for all interfaces)")
    reasoner: str = option("--reasoner", default="inproc", metavar="SPEC",
                           help="keyframe escalation: inproc (knowledge engine in this process, default), "
                                "tcp://HOST:PORT (a `emostream reasoner` service) or none")
    keys: str | None = option("--keys", default=None, metavar="DIR",
                              help="CURVE keys from `emostream keys DIR` for a tcp:// reasoner")
    insecure: bool = option("--insecure", default=False, action="store_true",
                            help="allow a plain-TCP reasoner off loopback")
    quiet: bool = option("--quiet", "-q", default=False, action="store_true",
                         help="no progress or summary on stderr")
    # -- operator console, alerts, MQTT events (README, "Operator console") --------------------------------
    console: str | None = option("--console", default=None, metavar="HOST:PORT",
                                 help="serve the live operator console (a web page) on HOST:PORT; a bare PORT "
                                      "is loopback; any other host needs --console-token")
    console_token: str | None = option("--console-token", default=None, metavar="TOKEN",
                                       help="token the console asks of every request and of the live channel "
                                            "(?token=... once, then a cookie; or Authorization: Bearer); "
                                            "default: $EMOSTREAM_CONSOLE_TOKEN")
    console_linger: float = option("--console-linger", default=0.0, type=float, metavar="SECONDS",
                                   help="keep the console up this long after the sources end (Ctrl-C ends it "
                                        "sooner; -1: until a signal; default %(default)s)")
    realtime: bool = option("--realtime", default=False, action="store_true",
                            help="deliver file frames at their native rate, as a camera would (for watching "
                                 "a recorded clip on the console)")
    alert: list[str] | None = option("--alert", default=None, action="append", metavar="RULE",
                                     help="alert rule, e.g. \"anger>=0.6 for 5s\" or \"valence<=-0.5 for 10s\" "
                                          "(repeatable; writes {\"type\":\"event\",\"kind\":\"alert\"} records)")
    events: str | None = option("--events", default=None, metavar="mqtt://HOST:PORT/TOPIC",
                                help="publish events and reasoner answers to an MQTT broker (QoS 1; mqtts:// for "
                                     "TLS; credentials in the URI or $MQTT_USERNAME/$MQTT_PASSWORD)")
    events_frames: bool = option("--events-frames", default=False, action="store_true",
                                 help="with --events: publish every frame record too")

    def smoothing(self) -> SmoothingConfig:
        return SmoothingConfig(time_constant_s=self.smooth_seconds)

    def tracker(self) -> TrackerConfig:
        return TrackerConfig(lost_seconds=self.track_timeout)


#: Flags that come before the engine and detector flags in ``run --help`` (the rest follow them).
RUN_HEAD = ("sources", "output", "overwrite", "stream_id")
