"""``python -m emostream.reasoner reasoner|keys …``: the reasoner's commands without the edge's imports.

A GPU host that only serves keyframes has no use for GStreamer, MediaPipe or the edge engines that
``emostream`` may import for its other subcommands; this entry point registers only the
reasoner's own (same flags, same one-line errors and exit codes as ``emostream reasoner``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from emostream.errors import is_user_error

from .commands import register


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="emostream", description="emostream reasoner commands")
    register(parser.add_subparsers(dest="command", metavar="COMMAND"))
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - bad input becomes one line, bugs still raise
        if is_user_error(exc):
            print(f"emostream: error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
