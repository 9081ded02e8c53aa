"""Which exceptions are the user's problem (one line, exit code 2) and which are bugs (a traceback).

Shared by the two entry points, ``emostream`` (``edge/cli.py``) and ``python -m emostream.reasoner``:
they must agree on the rule, and the reasoner may not import the edge (``make lint``), so the rule
lives below both.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or environment, reported as one line (exit code 2)."""


def is_user_error(exc: BaseException) -> bool:
    """Our own error classes (SourceError, EngineError, …) all mean bad input, not a bug."""
    if isinstance(exc, (UserError, FileNotFoundError)):
        return True
    return type(exc).__name__.endswith("Error") and type(exc).__module__.split(".")[0] == "emostream"


def positive_int(text: str) -> int:
    """An argparse type for counts: ``--limit 0`` or ``-3`` would quietly mean "all" or "all but 3"; refuse them."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
