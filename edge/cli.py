"""The `emostream` command line.

Each subcommand lives in the module that owns its job and registers itself through a
``register(subparsers)`` function; this file only assembles them and turns the project's own
errors into one clear line and a non-zero exit (never a traceback for bad input).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: Modules that contribute subcommands. A module that fails to import because an optional extra is
#: missing (e.g. the reasoner without pyzmq) simply does not register; its absence is reported
#: if the user asks for it.
COMMAND_MODULES: tuple[str, ...] = (
    "edge.commands.run",
    "edge.commands.eval",
    "edge.commands.bench",
    "reasoner.commands",
    "training.commands",
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
    parser, unavailable = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        for name, why in unavailable.items():
            print(f"emostream: note: commands from {name} unavailable ({why})", file=sys.stderr)
        return 2
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("emostream: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into e.g. `head`: stop quietly like other Unix tools.
        sys.stderr.close()
        return 0
    except Exception as exc:  # noqa: BLE001 - the boundary where errors become one clear line
        if is_user_error(exc):
            print(f"emostream: error: {exc}", file=sys.stderr)
            return 2
        raise


def is_user_error(exc: BaseException) -> bool:
    """Our own error classes (SourceError, EngineError, …) all mean bad input, not a bug."""
    if isinstance(exc, (UserError, FileNotFoundError)):
        return True
    return type(exc).__name__.endswith("Error") and type(exc).__module__.split(".")[0] in {
        "streams", "edge", "engines", "calibration", "reasoner", "training",
    }


if __name__ == "__main__":
    sys.exit(main())
