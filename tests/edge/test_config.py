"""Settings: the config dataclasses are the one place for defaults, and the run flags come from them."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys

import pytest

from emostream.edge.commands import run as run_cmd
from emostream.edge.config import (
    DetectorOptions,
    EngineOptions,
    RunOptions,
    SmoothingConfig,
    TrackerConfig,
    add_arguments,
    from_args,
    option,
)


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    run_cmd.register(parser.add_subparsers())
    return parser


def test_every_flag_default_is_its_dataclass_default():
    args = _run_parser().parse_args(["run", "clip.mp4"])
    for cls in (RunOptions, EngineOptions, DetectorOptions):
        for f in dataclasses.fields(cls):
            if f.name != "sources":
                assert getattr(args, f.name) == f.default, f.name
    opts = from_args(RunOptions, args)
    assert opts.sources == ["clip.mp4"]
    assert opts.smoothing() == SmoothingConfig() and opts.tracker() == TrackerConfig()
    assert from_args(DetectorOptions, args).detector == "full"


def test_detector_flag_defaults_are_the_detectors_own():
    """config.py spells the detector defaults as literals (the parser must not import mediapipe); they must
    be the ones FaceDetector uses when constructed without arguments."""
    import inspect

    from emostream.edge import faces

    params = inspect.signature(faces.FaceDetector).parameters
    assert DetectorOptions.detector == params["model"].default == faces.DEFAULT_MODEL
    assert DetectorOptions.min_score == params["min_score"].default == faces.DEFAULT_MIN_SCORE
    assert DetectorOptions.detector_runtime == params["runtime"].default == faces.DEFAULT_RUNTIME


def test_flags_parse_into_the_dataclasses():
    args = _run_parser().parse_args([
        "run", "a.mp4", "b.mp4", "-o", "out.jsonl", "--stream-id", "a", "--stream-id", "b", "--engine", "onnxruntime",
        "--min-score", "0.7", "--smooth-seconds", "0", "--track-timeout", "2.5", "--tta", "-q",
    ])
    opts = from_args(RunOptions, args)
    assert opts.output == "out.jsonl" and opts.stream_id == ["a", "b"] and opts.quiet
    assert opts.smoothing().time_constant_s == 0.0 and opts.tracker().lost_seconds == 2.5
    assert from_args(EngineOptions, args).tta and from_args(EngineOptions, args).engine == "onnxruntime"
    assert from_args(DetectorOptions, args).min_score == 0.7
    with pytest.raises(SystemExit):
        _run_parser().parse_args(["run", "a.mp4", "--detector", "medium"])


def test_help_shows_the_dataclass_default_not_a_copy(capsys):
    @dataclasses.dataclass(frozen=True)
    class Demo:
        rate: float = option("--rate", default=2.5, type=float, help="how often (default %(default)s)")

    parser = argparse.ArgumentParser()
    add_arguments(parser, Demo)
    parser.print_help()
    assert "how often (default 2.5)" in capsys.readouterr().out
    assert from_args(Demo, parser.parse_args([])) == Demo()


def test_building_the_run_parser_imports_no_heavy_runtime():
    code = ("import argparse, sys\n"
            "from emostream.edge.commands import run\n"
            "run.register(argparse.ArgumentParser().add_subparsers())\n"
            "names = ('mediapipe', 'onnxruntime', 'torch', 'supervision', 'gi', 'cv2')\n"
            "print([m for m in names if m in sys.modules])\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
