"""``--front process``: each stream's front half (decode, detect, carry, align) in a process of its own.

Why: in one process the front thread (detection, flow, alignment) and the main thread (engine, trackers,
sinks) take turns holding the GIL, so four streams run no faster than one and never keep two cores busy
(README, "What limits four streams"). A child process per stream has its own interpreter: it opens the
source, detects and aligns as the thread front would, and hands the parent each frame's faces, crops and
pixels. The parent keeps what must be shared: one engine batched over all streams, the trackers, the sinks.

How the pixels travel: the frame's I420 planes go through a ring of shared-memory slots (pickling them
through the pipe cost more than the split gained: ``benchmarks/front_process_probe.py --planes pipe``); the
parent copies a slot out on arrival and hands the slot back at once, so nothing downstream (keyframes,
overlays, the console) holds shared memory and the child is never blocked by a slow consumer of an old
frame. The slots are also the flow control: a file's child decodes at most ``slots`` frames ahead; a
live child with no free slot does not read, and its source drops the frames it could not take (counted, as
in one process). Frames that do not fit a slot (stills, a stream that changed size) are pickled instead, as are
all of a stream's frames when /dev/shm has no room for its ring.

Records are the same as with the thread front: the child runs the same :class:`~edge.interval.IntervalDetector`
and :func:`~edge.pipeline.gray_crops` on the same frames, in order (``FrontSpec.of`` copies the analyzer's
settings). The child ignores SIGINT and SIGTERM: a Ctrl-C reaches the whole process group, systemd signals every
process of a service, and stopping is the parent's job (it finishes the frames it has, then closes the children).

Pipe protocol (one duplex pipe per stream; the child speaks first):

* child -> parent: ``("open", info)`` or ``("error", message)``; ``("ring?", nbytes)`` when it first needs
  slots; ``("frame", slot, meta, pixels, faces, crops, seconds, arrival, dropped)`` per frame (``arrival``: when
  the frame left the source, on the machine-wide monotonic clock); ``("end", error, dropped, cpu_s)`` last.
* parent -> child: ``("ring", name, slot_bytes, slots)`` once; a slot number each time a slot is free
  again; ``("stop",)``.
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from multiprocessing import shared_memory
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from emostream.edge.faces import Faces
from emostream.edge.pipeline import AnalysedFrame, gray_crops
from emostream.streams import Frame, SourceError

#: Slots in a stream's ring: the reader's buffer plus one being filled plus one in flight.
SLOTS = 4
#: Seconds a child may take to start (imports, GStreamer, the detector model) beyond the source's own timeout.
START_S = 60.0
#: Seconds ``close`` waits for a child to finish before it is killed.
CLOSE_S = 3.0
#: ``--front`` choices (edge/config.py spells them as literals, so the parser imports nothing heavy).
FRONTS: tuple[str, ...] = ("thread", "process")


@dataclass(frozen=True)
class FrontSpec:
    """What a child needs to detect and align exactly as the parent's analyzer would."""

    detector: str = "full"
    min_score: float = 0.55
    runtime: str = "litert"
    interval: int = 5
    tracker: str = "flow"
    crop_size: int = 48

    @classmethod
    def of(cls, analyzer: Any) -> FrontSpec:
        """The settings of a live :class:`~edge.pipeline.FrameAnalyzer` (so the two fronts cannot drift)."""
        det, iv = analyzer.detector, analyzer.interval
        return cls(detector=det.model, min_score=det.min_score, runtime=det.runtime, interval=iv.interval,
                   tracker=iv.tracker, crop_size=analyzer.engine.input_size)


#: Sources not closed yet: closed at interpreter exit (a program that forgot to), before multiprocessing's own
#: exit handler, which would otherwise wait for children that ignore its SIGTERM.
_OPEN: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_forgotten() -> None:
    for source in list(_OPEN):
        source.close()


class ProcessSource:
    """A source whose frames arrive analysed from a child process; reads like a :class:`VideoSource`.

    Opening waits until the child has opened the source and loaded the detector, so a wrong URI or a
    missing model is one :class:`SourceError` here, as with :func:`emostream.streams.open_source`. The child is
    *spawned* (a fresh interpreter that imports the caller's main module), so a script that opens one needs
    the usual ``if __name__ == "__main__":`` guard; without it the child dies at start and this says so.
    """

    def __init__(self, uri: str, spec: FrontSpec, *, stream: str | None = None, timeout: float = 10.0,
                 slots: int = SLOTS, wait: bool = True, notify: Callable[[str], None] | None = None) -> None:
        self.uri = uri
        self.stream = stream or uri
        self.slots = int(slots)
        self.frames_dropped = 0
        self.cpu_s = 0.0  # the child's CPU time, known once it has ended
        self.error: str | None = None
        #: Why frames come pickled instead of through shared memory (None while they do not).
        self.ring_note: str | None = None
        self._notify = notify
        self._shm: shared_memory.SharedMemory | None = None
        self._slot_bytes = 0
        self._send_lock = threading.Lock()
        self._recv_lock = threading.Lock()  # close() drains the pipe; a reader thread may still be in read()
        self._ended = False
        self._closed = False
        ctx = mp.get_context("spawn")  # GStreamer's and ONNX Runtime's threads do not survive a fork
        self._conn, child = ctx.Pipe(duplex=True)
        self._proc = ctx.Process(target=_child, args=(child, uri, self.stream, spec, timeout),
                                 name=f"front:{self.stream}", daemon=True)
        try:
            self._proc.start()
        except OSError as exc:  # out of processes or memory: one line, like any source that cannot open
            raise SourceError(f"{uri}: cannot start a front process: {exc}") from None
        _OPEN.add(self)
        child.close()  # the parent's copy of the child's end: without closing it, a dead child is no EOF
        self._timeout = timeout
        self.is_live = self.latest_only = False
        self.fps = 0.0
        if wait:
            self.wait_open()

    def wait_open(self) -> ProcessSource:
        """Wait for the child to have opened the source and loaded the detector (``wait=False`` lets several
        children start together); a failure closes the child and raises :class:`SourceError`."""
        limit = self._timeout + START_S
        try:
            msg = self._recv(limit)
        except BaseException:
            self.close()
            raise
        if msg is None or msg[0] != "open":
            if msg is None:
                self._proc.join(0.5)  # EOF: let it be reaped, so the message can say how it ended
            how = "" if self._proc.exitcode is None else _how(self._proc)
            self.close()
            raise SourceError(msg[1] if msg is not None and msg[0] == "error" else
                              f"{self.uri}: the front process died while starting{how}" if how
                              else f"{self.uri}: the front process did not start within {limit:.0f} s")
        info = msg[1]
        self.is_live, self.latest_only, self.fps = info["is_live"], info["latest_only"], info["fps"]
        return self

    # ------------------------------------------------------------------ reading

    def read(self) -> AnalysedFrame | None:
        """The next analysed frame; None at the end. A child that failed raises :class:`SourceError`."""
        while not self._ended:
            msg = self._recv(None)
            if msg is None:
                self._ended = True
                self._proc.join(CLOSE_S)  # its pipe closes a moment before it can be reaped
                self.error = self.error or f"{self.stream}: the front process ended unexpectedly{_how(self._proc)}"
                raise SourceError(self.error)
            kind = msg[0]
            if kind == "ring?":
                self._make_ring(int(msg[1]))
            elif kind == "frame":
                return self._frame(msg)
            elif kind == "end":
                self._ended = True
                _, error, self.frames_dropped, self.cpu_s = msg
                if error:
                    self.error = error
                    raise SourceError(error)
        return None

    def __iter__(self) -> Any:
        while (item := self.read()) is not None:
            yield item

    def _frame(self, msg: tuple) -> AnalysedFrame:
        _, slot, meta, pixels, faces, crops, seconds, arrival, self.frames_dropped = msg
        if slot is None:
            frame = pixels  # pickled whole: a still, or a frame larger than a slot
        else:
            assert self._shm is not None
            shape, (width, height, index, pts_ns, colour) = pixels, meta
            i420 = np.ndarray(shape, np.uint8, self._shm.buf, slot * self._slot_bytes).copy()
            self._send(slot)  # copied out: the child may refill it
            frame = Frame.from_i420(i420, width, height, index, pts_ns, self.stream, colour)
        return AnalysedFrame(frame, Faces(*faces), crops, seconds, arrival)

    def _make_ring(self, nbytes: int) -> None:
        """Create the ring the child asked for, its pages reserved now; or answer "no ring" (frames then travel
        pickled through the pipe: slower, same records) when ``slots`` is 0 or shared memory is short. A
        container's /dev/shm is 64 MiB by default and four 4K rings need ~200: writing to pages a full tmpfs
        cannot back would kill the child with SIGBUS, so the space is claimed up front (ENOSPC is an answer)."""
        size = nbytes * self.slots
        shm = None
        try:
            if size <= 0:
                raise OSError("shared memory not wanted (slots=0)")
            shm = shared_memory.SharedMemory(create=True, size=size)
            fd = getattr(shm, "_fd", -1)
            if fd >= 0 and hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            if shm is not None:
                shm.close()
                shm.unlink()
            self.ring_note = (f"{self.stream}: no shared memory for {self.slots} frames of {nbytes / 2**20:.1f} MiB "
                              f"({exc.strerror or exc}); frames come through the pipe (slower)")
            self._send(("ring", None, 0, 0))
            if self._notify is not None:
                self._notify(self.ring_note)
            return
        self._shm, self._slot_bytes = shm, nbytes
        self._send(("ring", shm.name, nbytes, self.slots))

    # ------------------------------------------------------------------ plumbing

    def _recv(self, timeout: float | None) -> tuple | None:
        """The child's next message; None when it is gone (EOF) or ``timeout`` passed."""
        with self._recv_lock:
            try:
                if timeout is not None and not self._conn.poll(timeout):
                    return None
                return self._conn.recv()
            except (EOFError, OSError):
                return None

    def _send(self, msg: object) -> None:
        with self._send_lock:
            try:
                self._conn.send(msg)
            except (BrokenPipeError, OSError):
                pass  # the child is gone; read() reports it

    def close(self) -> None:
        """Stop the child (it ends at its next frame), wait for it briefly, then make sure it is gone (SIGKILL)."""
        if self._closed:
            return
        self._closed = True
        self._send(("stop",))
        deadline = time.monotonic() + CLOSE_S
        # Read what the child still sends up to its "end" (which carries its CPU time and drop count). A
        # reader thread that is still inside read() holds the pipe: then the child is simply stopped.
        if not self._ended and self._recv_lock.acquire(timeout=CLOSE_S):
            self._recv_lock.release()
            while (left := deadline - time.monotonic()) > 0:
                msg = self._recv(left)
                if msg is None:
                    break
                if msg[0] == "end":
                    self._ended = True
                    _, _, self.frames_dropped, self.cpu_s = msg
                    break
        self._proc.join(max(0.1, deadline - time.monotonic()))
        if self._proc.is_alive():
            self._proc.kill()  # it ignores SIGTERM (see _child)
            self._proc.join()
        _OPEN.discard(self)
        self._conn.close()
        if self._shm is not None:
            self._shm.close()
            self._shm.unlink()
            self._shm = None

    def __enter__(self) -> ProcessSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_process_sources(uris: Iterable[tuple[str, str]], spec: FrontSpec, **kwargs: Any) -> list[ProcessSource]:
    """A :class:`ProcessSource` per (URI, stream id). Every child starts at once (their start-ups overlap), then
    each is awaited; if one fails, or a signal interrupts the wait, every child started is closed first."""
    started: list[ProcessSource] = []
    try:
        for uri, stream in uris:
            started.append(ProcessSource(uri, spec, stream=stream, wait=False, **kwargs))
        return [s.wait_open() for s in started]
    except BaseException:
        for s in started:
            s.close()
        raise


# ---------------------------------------------------------------------------------------------------- the child


def _child(conn: Connection, uri: str, stream: str, spec: FrontSpec, timeout: float) -> None:
    """Open, detect, align, send; until the source ends, the parent says stop, or the parent is gone."""
    # Ctrl-C reaches the whole process group, and systemd's `stop` sends SIGTERM to every process of the
    # service: stopping in order is the parent's job (it finishes the frames it has, then closes this child
    # with a "stop" message, or SIGKILL if that is not heeded).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        _serve(conn, uri, stream, spec, timeout)
    except (BrokenPipeError, EOFError, ConnectionResetError):
        pass  # the parent is gone: nobody to tell
    finally:
        conn.close()


def _serve(conn: Connection, uri: str, stream: str, spec: FrontSpec, timeout: float) -> None:
    from emostream.edge.faces import FaceDetector, FaceDetectorError
    from emostream.edge.interval import IntervalDetector
    from emostream.streams import open_source

    # The detector first: a live source opened before it would drop the frames of the model's loading time.
    try:
        interval = IntervalDetector(FaceDetector(spec.detector, spec.min_score, runtime=spec.runtime),
                                    spec.interval, spec.tracker)
    except (FaceDetectorError, ValueError) as exc:
        conn.send(("error", f"{stream}: {exc}"))
        return
    try:
        source = open_source(uri, stream=stream, timeout=timeout)
    except SourceError as exc:
        conn.send(("error", str(exc)))
        return
    ring: shared_memory.SharedMemory | None = None
    asked = False  # the parent has answered the one request for a ring
    free: list[int] = []
    stopped = False

    def handle(msg: Any) -> None:
        nonlocal stopped
        if isinstance(msg, int):
            free.append(msg)
        elif msg[0] == "stop":
            stopped = True

    error: str | None = None
    try:
        conn.send(("open", {"is_live": source.is_live, "latest_only": source.latest_only, "fps": source.fps}))
        slot_bytes = 0
        while not stopped:
            while conn.poll():
                handle(conn.recv())
            if stopped:
                break
            if ring is not None:
                while not free and not stopped:  # every slot is with the parent: wait for one back
                    handle(conn.recv())
                if stopped:
                    break
            try:
                frame = source.read()
            except SourceError as exc:
                error = str(exc)
                break
            if frame is None:
                break
            t0 = arrival = time.perf_counter()
            faces = interval.detect_frame(frame)
            t1 = time.perf_counter()
            crops = gray_crops(frame, faces, spec.crop_size)
            seconds = {"detect": t1 - t0, "align": time.perf_counter() - t1}
            planes = frame.i420
            if planes is not None and not asked:
                conn.send(("ring?", planes.nbytes))
                while not asked and not stopped:
                    msg = conn.recv()
                    if isinstance(msg, tuple) and msg[0] == "ring":
                        asked = True
                        if msg[1] is not None:  # None: no shared memory to be had; pickle every frame
                            ring, slot_bytes = _attach(msg[1]), int(msg[2])
                            free = list(range(int(msg[3])))
                    else:
                        handle(msg)
                if stopped:
                    break
            faces_t = (faces.boxes, faces.scores, faces.keypoints)
            if planes is not None and planes.nbytes <= slot_bytes and free and ring is not None:
                slot = free.pop()
                np.ndarray(planes.shape, np.uint8, ring.buf, slot * slot_bytes)[...] = planes
                meta = (frame.width, frame.height, frame.index, frame.pts_ns, frame.colour)
                conn.send(("frame", slot, meta, planes.shape, faces_t, crops, seconds, arrival,
                           source.frames_dropped))
            else:
                conn.send(("frame", None, None, frame, faces_t, crops, seconds, arrival, source.frames_dropped))
    except Exception as exc:  # noqa: BLE001 - one line to the parent, which ends this stream with it
        error = f"{stream}: front process: {type(exc).__name__}: {exc}"
    finally:
        source.close()
        if ring is not None:
            ring.close()
    conn.send(("end", error, source.frames_dropped, time.process_time()))


def _how(proc: Any) -> str:
    """`` (killed by SIGKILL)`` / `` (exit code 3)`` for an ended process; empty while it runs."""
    code = proc.exitcode
    if code is None:
        return ""
    if code < 0:
        try:
            return f" (killed by {signal.Signals(-code).name})"
        except ValueError:
            return f" (killed by signal {-code})"
    return f" (exit code {code})"


def _attach(name: str) -> shared_memory.SharedMemory:
    """Map the parent's ring. The parent owns it (creates and unlinks it). A spawned child shares the
    parent's resource tracker, so attaching registers nothing new and the child must not unregister it."""
    return shared_memory.SharedMemory(name=name)


def resolve_front(front: str, streams: int) -> str:
    """``auto`` -> ``process`` for two or more streams on a multi-core CPU (measured: +8-11 % frames/s for
    1-4 streams of the Pexels clip on 2 cores, same records), else ``thread`` (one stream: no extra process,
    no second start-up)."""
    if front not in ("auto", *FRONTS):
        raise ValueError(f"unknown front {front!r}; choose auto, {', '.join(FRONTS)}")
    if front != "auto":
        return front
    return "process" if streams > 1 and (os.cpu_count() or 1) > 1 else "thread"
