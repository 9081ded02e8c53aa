"""Where records go: JSON lines to a file or stdout, and human progress to stderr.

Records are the product, so they are never lost: a file is flushed on every close path, and stdout
is flushed per record so a consumer piping ``emostream run`` sees frames as they happen.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import IO, TextIO


class OutputError(Exception):
    """The output path cannot be written (missing folder, permissions)."""


class JsonLinesWriter:
    """Writes one compact JSON object per line."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self.count = 0
        if self.path is None:
            self._fh: IO[str] = sys.stdout
            self._flush_each = True
        else:
            if not self.path.parent.is_dir():
                raise OutputError(f"cannot write {self.path}: folder {self.path.parent} does not exist")
            try:
                self._fh = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
            except OSError as exc:
                raise OutputError(f"cannot write {self.path}: {exc.strerror}") from exc
            self._flush_each = False

    def write(self, record: dict) -> None:
        self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.count += 1
        if self._flush_each:
            self._fh.flush()

    def close(self) -> None:
        if self.path is not None:
            self._fh.close()
        else:
            self._fh.flush()

    def __enter__(self) -> JsonLinesWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Progress:
    """Frames/s and face counts on stderr for long work.

    On a terminal it rewrites one line a few times a second; into a log (CI, systemd) it prints a
    plain line every ``log_every`` seconds so the log stays readable.
    """

    def __init__(self, enabled: bool = True, stream: TextIO | None = None, log_every: float = 5.0,
                 unit: str = "frames", per: str = "fps") -> None:
        self.unit, self.per = unit, per
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self.every = 0.25 if self.tty else log_every
        self.start = time.monotonic()
        self._last = self.start
        self._wrote = False

    def update(self, frames: int, faces: int, extra: str = "") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < self.every:
            return
        self._last = now
        elapsed = now - self.start
        fps = frames / elapsed if elapsed > 0 else 0.0
        line = f"{frames} {self.unit}  {fps:.1f} {self.per}  {faces} faces{('  ' + extra) if extra else ''}"
        if self.tty:
            self.stream.write("\r" + line.ljust(70))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self._wrote = True

    def done(self) -> None:
        if self.enabled and self.tty and self._wrote:
            self.stream.write("\r" + " " * 70 + "\r")
            self.stream.flush()
