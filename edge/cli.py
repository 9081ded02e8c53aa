"""The `emostream` command line.

Each subcommand lives in the module that owns its job and registers itself through a
``register(subparsers)`` function; this file only assembles them and turns the project's own
errors into one clear line and a non-zero exit (never a traceback for bad input).
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Sequence

from emostream.edge import shutdown

#: Modules that contribute subcommands. A module that fails to import because an optional extra is
#: missing (e.g. the reasoner without pyzmq) simply does not register; its absence is reported
#: if the user asks for it.
COMMAND_MODULES: tuple[str, ...] = (
    "emostream.edge.commands.run",
    "emostream.edge.commands.eval",
    "emostream.edge.commands.bench",
    "emostream.reasoner.commands",
    "emostream.training.commands",
)


class UserError(Exception):
    """A problem with the user's input or environment, reported as one line (exit code 2)."""


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, str]]:
    parser = argparse.ArgumentParser(
        prog="emostream",
        description="Real-time streaming facial-emotion analysis: GStreamer -> MediaPipe -> emotion network.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    unavailable: dict[str, str] = {}
    for name in COMMAND_MODULES:
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
            parser, unavailable = build_parser()
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


def is_user_error(exc: BaseException) -> bool:
    """Our own error classes (SourceError, EngineError, …) all mean bad input, not a bug."""
    if isinstance(exc, (UserError, FileNotFoundError)):
        return True
    return type(exc).__name__.endswith("Error") and type(exc).__module__.split(".")[0] == "emostream"


if __name__ == "__main__":
    sys.exit(main())
