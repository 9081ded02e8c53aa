"""The `emostream` command line: the one composition point of the layers.

Each subcommand lives in the module that owns its job and registers itself through a
``register(subparsers)`` function; this file only assembles them and turns the project's own
errors into one clear line and a non-zero exit (never a traceback for bad input).

Why module *names* (``importlib``) rather than imports: the edge may not import the reasoner,
training or calibration layers (``make lint`` checks it with import-linter), yet one ``emostream``
command offers them all. Naming them here as strings is the single, deliberate place where the layers
are composed; import-linter does not see it, and nothing else in the edge may do the same.

Why lazily: a subcommand's module is imported only when that subcommand is asked for, so
``emostream keys DIR`` or ``emostream reasoner --help`` never pay for (or need) MediaPipe, torch or
GStreamer. Only a bare ``emostream``/``--help`` or an unknown command imports every module, to list
them all.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Sequence

from emostream.edge import shutdown
from emostream.errors import UserError, is_user_error

__all__ = ["COMMANDS", "COMMAND_MODULES", "UserError", "build_parser", "is_user_error", "main"]

#: Subcommand -> the module that registers it. A module that fails to import because an optional
#: extra is missing (e.g. training without torch) simply does not register; its absence is reported
#: if the user asks for it.
COMMANDS: dict[str, str] = {
    "run": "emostream.edge.commands.run",
    "eval": "emostream.edge.commands.eval",
    "bench": "emostream.edge.commands.bench",
    "reasoner": "emostream.reasoner.commands",
    "keys": "emostream.reasoner.commands",
    "train": "emostream.training.commands",
    "distill": "emostream.training.commands",
    "teacher-views": "emostream.training.commands",
    "pack-fer": "emostream.training.commands",
    "calibrate": "emostream.calibration.commands",
    "instructions": "emostream.training.commands",
    "tune-vlm": "emostream.training.commands",
    "fit-gate": "emostream.calibration.commands",
}
#: Every module that contributes subcommands, in help order.
COMMAND_MODULES: tuple[str, ...] = tuple(dict.fromkeys(COMMANDS.values()))


def build_parser(argv: Sequence[str] | None = None) -> tuple[argparse.ArgumentParser, dict[str, str]]:
    """The parser for ``argv``: with only the named subcommand's module imported when it is known."""
    parser = argparse.ArgumentParser(
        prog="emostream",
        description="Real-time streaming facial-emotion analysis: GStreamer -> MediaPipe -> emotion network.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    unavailable: dict[str, str] = {}
    words = list(sys.argv[1:] if argv is None else argv)
    command = words[0] if words and not words[0].startswith("-") else None
    modules = (COMMANDS[command],) if command in COMMANDS else COMMAND_MODULES
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # the module itself is not there (yet): nothing to register
            unavailable[name] = f"{exc.name} is not installed"
            continue
        module.register(sub)
    return parser, unavailable


def main(argv: Sequence[str] | None = None) -> int:
    # Stop signals are taken over before the heavy imports: SIGINT/SIGTERM while onnxruntime or
    # mediapipe initialise must become one line and 128+signal, not a traceback or a SIGABRT.
    stop = shutdown.install()
    try:
        with stop.deferred():
            parser, unavailable = build_parser(argv)
        args = parser.parse_args(argv)
        if not getattr(args, "handler", None):
            parser.print_help(sys.stderr)
            for name, why in unavailable.items():
                print(f"emostream: note: commands from {name} unavailable ({why})", file=sys.stderr)
            return 2
        if not getattr(args, "handles_stop_signals", False):
            shutdown.uninstall()  # commands that do not poll for a stop keep Python's defaults
        status = int(args.handler(args) or 0)
        stop.check()  # a signal that came while the output was being finished still counts
        return status
    except KeyboardInterrupt as exc:
        stop.hold()  # nothing may interrupt the goodbye line
        signum = exc.signum if isinstance(exc, shutdown.Interrupted) else int(signal.SIGINT)
        print(f"emostream: interrupted ({shutdown.signal_name(signum)})", file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:
        # Output piped into e.g. `head`: stop quietly like other Unix tools.
        sys.stderr.close()
        return 0
    except Exception as exc:  # noqa: BLE001 - the boundary where errors become one clear line
        stop.hold()
        if is_user_error(exc):
            print(f"emostream: error: {exc}", file=sys.stderr)
            return 2
        raise
    finally:
        if stop.requested:
            # Leaving because of a signal: a supervisor or an impatient user may send more while the
            # interpreter exits, and Python's defaults would turn them into a KeyboardInterrupt
            # traceback or a death by signal after the work was done. Ignore them from now on.
            stop.done()
        else:
            shutdown.uninstall()


if __name__ == "__main__":
    sys.exit(main())
