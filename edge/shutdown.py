"""Stop signals (SIGINT, SIGTERM) turned into an orderly stop that loses nothing.

SIGTERM is how systemd, Docker, Kubernetes and every other supervisor ask a process to stop, so it
must do what Ctrl-C does: stop reading, write every record already analysed, end the open tracks,
finish the annotated video and exit with ``128 + signal`` (130 for SIGINT, 143 for SIGTERM).

Python's default -- raise KeyboardInterrupt wherever the main thread happens to be -- is not good
enough for that:

* raised between writing a frame record and the events of the same step, it leaves the output
  inconsistent (a ``track_end`` whose ``track_start`` was never written);
* raised while a C extension is importing or initialising (onnxruntime's and mediapipe's pybind11
  modules), it makes the C++ side call ``std::terminate``: the process dies with SIGABRT and no word;
* a second Ctrl-C during the shutdown aborts the very flush the first one asked for.

So :class:`StopSignals` has three modes:

``raise``
    start-up outside native code (e.g. waiting for a camera's first frame): nothing is written yet,
    so the signal raises :class:`Interrupted` at once.
``defer``
    start-up inside native code (imports, model loading): the signal only records a request, which
    is checked on leaving that code (:meth:`StopSignals.check`). A second signal leaves at once
    (nothing has been written, and the user means it).
``hold``
    the output is open (or the last line is being printed): a signal only records a request, and
    every further one is noted and ignored, so that the shutdown which the first one started can
    finish writing. SIGKILL remains for a hung process.

A signal whose disposition was inherited as ignored (``nohup``, background jobs of a non-interactive
shell ignore SIGINT) stays ignored, as Python itself does for SIGINT.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from types import FrameType
from typing import Any

#: The signals that mean "stop": Ctrl-C and the supervisors' stop signal.
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A stop signal ended the command; ``exit_code`` is the shell convention ``128 + signal``.

    A KeyboardInterrupt subclass so that every ``except KeyboardInterrupt`` cleanup path written for
    Ctrl-C also runs for SIGTERM.
    """

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(signal_name(signum))

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _say(text: str) -> None:
    """Write to stderr from a signal handler: os.write, because the interrupted code may be inside
    sys.stderr's own buffered write, which is not reentrant."""
    with contextlib.suppress(OSError):
        os.write(2, text.encode())


class StopSignals:
    """Handlers for :data:`STOP_SIGNALS`; see the module docstring for the modes."""

    def __init__(self) -> None:
        self.signum: int | None = None  # the first stop signal received
        self.mode = "raise"
        self._previous: dict[int, Any] = {}
        self._noted = False

    # -- installation -------------------------------------------------------------------------------

    def install(self) -> StopSignals:
        for sig in STOP_SIGNALS:
            previous = signal.getsignal(sig)
            if previous is signal.SIG_IGN:
                continue  # inherited "ignore" (nohup, background job): respect it
            self._previous[sig] = previous
            signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    # -- state --------------------------------------------------------------------------------------

    @property
    def requested(self) -> bool:
        """A stop signal has arrived (the analysis loop polls this between steps)."""
        return self.signum is not None

    @property
    def exit_code(self) -> int | None:
        return None if self.signum is None else 128 + self.signum

    def check(self) -> None:
        """Raise :class:`Interrupted` if a stop was requested: the safe points of start-up."""
        if self.signum is not None:
            raise Interrupted(self.signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Within: a signal is only recorded (native code must not see a Python exception), and
        :meth:`check` runs on the way out."""
        before = self.mode
        self.mode = "defer"
        try:
            yield
        finally:
            self.mode = before
        self.check()

    def hold(self) -> None:
        """From now on records are being written: signals ask for an orderly stop, never abort it."""
        self.mode = "hold"

    def done(self) -> None:
        """The command has finished after a stop signal: ignore any more, at the OS level.

        A Python handler is not enough: interpreter finalisation puts back SIG_DFL for every signal
        with a Python handler (not for ignored ones), and a signal in that window would kill the
        process that has just finished its work cleanly (exit by signal instead of 128+N).
        """
        self.mode = "done"
        for sig in self._previous:
            signal.signal(sig, signal.SIG_IGN)
        self._previous.clear()

    # -- the handler --------------------------------------------------------------------------------

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.mode == "done":
            return
        if self.signum is None:
            self.signum = signum
            if self.mode == "raise":
                raise Interrupted(signum)
            return
        if self.mode == "hold":
            if not self._noted:
                self._noted = True
                _say(f"emostream: {signal_name(signum)} again: still writing the output "
                     "(SIGKILL aborts and may lose records)\n")
            return
        # A second signal before any output exists: nothing to lose by leaving now. os._exit,
        # because raising inside native start-up code could abort the process instead.
        _say(f"emostream: interrupted ({signal_name(self.signum)})\n")
        os._exit(128 + self.signum)


_current: StopSignals | None = None


def install() -> StopSignals:
    """Install the process-wide handlers (the CLI does this first thing) and return them."""
    global _current
    if _current is not None:
        _current.uninstall()
    _current = StopSignals().install()
    return _current


def uninstall() -> None:
    global _current
    if _current is not None:
        _current.uninstall()
    _current = None


def current() -> StopSignals:
    """The installed handlers, or an inert stand-in (never requested) when the CLI did not install
    any, e.g. when ``run`` is called from Python: Ctrl-C then behaves as Python's default."""
    return _current if _current is not None else StopSignals()
