"""Where records go: JSON lines to a file or stdout, and human progress to stderr.

Records are the product, so they are never lost and never mangled:

* **Append by default.** ``--output`` is the long-lived log of a service that systemd restarts with
  the same path; opening it with ``"w"`` erased the previous session on every restart. A file whose
  last line was cut (a crash, SIGKILL, a full disk in an older version) is first ended with a
  newline, so the new session's first record is never glued onto the broken line. ``overwrite=True``
  (``--overwrite``) truncates instead.
* **Whole lines, written as they happen.** Each record goes to the file with one ``os.write`` of the
  complete line (no user-space buffer), so a crash loses at most the record being written, and a
  consumer tailing the file sees frames live.
* **A failed write leaves only complete lines.** On ENOSPC (or EIO, EDQUOT, EFBIG) the file is cut
  back to the end of the last complete line and :class:`OutputError` says so in one line; later
  writes raise the same error without touching the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
import time
from pathlib import Path
from typing import TextIO


class OutputError(Exception):
    """The output cannot be written (missing folder, permissions, a full disk)."""


class JsonLinesWriter:
    """Writes one compact JSON object per line to ``path`` (appending) or to stdout (``None``)."""

    def __init__(self, path: str | Path | None, *, overwrite: bool = False) -> None:
        self.path = Path(path) if path else None
        self.count = 0
        self.repaired = False  # the existing file ended in a cut line and got its newline
        self._error: OutputError | None = None
        self._fd: int | None = None
        self._regular = False
        if self.path is None:
            return
        if not self.path.parent.is_dir():
            raise OutputError(f"cannot write {self.path}: folder {self.path.parent} does not exist")
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_APPEND)
        try:
            self._fd = os.open(self.path, flags | getattr(os, "O_CLOEXEC", 0), 0o666)
            info = os.fstat(self._fd)
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc.strerror}") from None
        if stat.S_ISDIR(info.st_mode):  # pragma: no cover - os.open refuses directories for writing
            raise OutputError(f"cannot write {self.path}: it is a directory")
        self._regular = stat.S_ISREG(info.st_mode)
        if self._regular and info.st_size and not self._ends_with_newline(info.st_size):
            self.repaired = True
            self._write_bytes(b"\n")

    def _ends_with_newline(self, size: int) -> bool:
        """Whether the existing file's last byte is a newline (read through a separate handle: ours is
        write-only)."""
        try:
            with open(self.path, "rb") as fh:  # type: ignore[arg-type]
                fh.seek(size - 1)
                return fh.read(1) == b"\n"
        except OSError:
            return True  # cannot tell (not readable): appending is still better than guessing

    @property
    def where(self) -> str:
        return str(self.path) if self.path is not None else "stdout"

    def write(self, record: dict) -> None:
        """Write one record as one complete line; raise OutputError if it cannot be written."""
        if self._error is not None:
            raise self._error
        line = json.dumps(record, separators=(",", ":")) + "\n"
        if self._fd is None:
            self._write_stdout(line)
        else:
            self._write_bytes(line.encode("utf-8"))
        self.count += 1

    def _write_bytes(self, data: bytes) -> None:
        view = memoryview(data)
        written = 0
        try:
            while written < len(view):
                written += os.write(self._fd, view[written:])  # type: ignore[arg-type]
        except BrokenPipeError:
            raise  # `-o /dev/stdout | head`: the reader is gone; the CLI stops quietly
        except OSError as exc:
            self._fail(exc, partial=written)

    def _fail(self, exc: OSError, partial: int = 0) -> None:
        """Cut the ``partial`` bytes of a half-written line off a regular file, remember the error,
        raise it. Measured from the file's actual end, not from a count of our own: the file may have
        been truncated meanwhile (logrotate's copytruncate), and cutting to a stale length would pad
        it with zeros instead."""
        if self._regular and partial:
            with contextlib.suppress(OSError):
                size = os.fstat(self._fd).st_size  # type: ignore[arg-type]
                os.ftruncate(self._fd, max(0, size - partial))  # type: ignore[arg-type]
        detail = exc.strerror or str(exc)
        self._error = OutputError(f"cannot write {self.where}: {detail} ({self.count} records written"
                                  + (", the file ends with the last complete one)" if self._regular else ")"))
        raise self._error from None

    def _write_stdout(self, line: str) -> None:
        try:
            sys.stdout.write(line)
            sys.stdout.flush()  # per record: a consumer piping `emostream run` sees frames as they happen
        except BrokenPipeError:
            raise  # `| head`: the CLI stops quietly
        except OSError as exc:
            # stdout on a full disk: sys.stdout still holds the failed bytes and would retry (and
            # print "Exception ignored") at exit; point the descriptor at /dev/null so it cannot.
            with contextlib.suppress(OSError, ValueError, AttributeError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)
            self._fail(exc)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        elif self.path is None and self._error is None:
            sys.stdout.flush()

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
