"""The edge side of escalation: hand keyframes to a reasoner without ever waiting for it.

``submit`` only appends to a small bounded queue (drop-oldest when full, counted) and returns; a
background thread does all the I/O -- for a remote reasoner it owns the ZeroMQ DEALER socket
(zmq sockets are single-thread objects), for ``inproc`` it runs the knowledge engine. Answers come
back through ``poll()`` as ``{"type": "reasoning", …}`` records for the caller to merge into its
output whenever they arrive, late ones included (marked ``"late": true``).

Every request ends in exactly one counted state, so a run can prove nothing was silently lost::

    submitted = sent + dropped_queue + dropped_unreachable + dropped_stale + queued
    sent      = answered + errors + expired + abandoned + in_flight

(``abandoned``: still in flight when ``close`` gave up waiting). ZeroMQ reconnects by itself. While
no reasoner is connected (not yet, or no longer) keyframes wait in the bounded queue, each until its
deadline; those that leave it unsent -- pushed out, past their deadline, or still queued at
``close`` -- are counted ``dropped_unreachable``, so a reasoner that was never reached shows up as
such and not as a slow one. ``IMMEDIATE`` keeps zmq from buffering behind our back.

``close`` waits for answers only while they can come: with a connected reasoner up to ``drain_s``;
with none, only until ``connect_grace_s`` (1 s) after the escalator started, for the first
handshake of a very short run -- never the whole drain for a reasoner that is not there.

Replies are untrusted input: each is decoded with limits and checked against the contract
(``emostream.contract.validate_reply``, the validator the reasoner uses too); a malformed one is dropped and counted
(``malformed_replies``, and ``errors`` when it ended a request), never raised.

Imports only numpy, msgpack and (for the remote variant) pyzmq: no torch, no transformers.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from emostream.contract import (
    DEFAULT_DEADLINE_MS,
    MAX_MESSAGE_BYTES,
    MAX_TEXT,
    ProtocolError,
    error_reply,
    pack,
    unpack,
    validate_keyframe,
    validate_reply,
)

#: The in-process reasoner, named (not imported) so that the edge package never imports the reasoner
#: package (``make lint``): ``--reasoner inproc`` composes the two layers in one process at run time,
#: like the CLI's command table (``edge/cli.py``) -- the only two places that name another layer.
INPROC_REASONER = "emostream.reasoner.core"

COUNTERS = (
    "submitted",
    "sent",
    "answered",
    "errors",
    "expired",
    "abandoned",
    "late",
    "malformed_replies",
    "dropped_queue",
    "dropped_unreachable",
    "dropped_stale",
    "connects",
    "disconnects",
    "auth_failures",
)


class EscalationError(ValueError):
    """Bad ``--reasoner`` spec or keys (reported as one line by the CLI)."""


@dataclass(frozen=True)
class _Pending:
    msg: dict[str, Any]
    t_submit: float  # time.monotonic()
    deadline: float  # absolute, time.monotonic()


class Escalator:
    """Shared queue, counters and record delivery; subclasses supply the worker loop ``_run``."""

    engine = "unknown"

    def __init__(self, labels: Sequence[str], *, queue_size: int = 16, late_grace_s: float = 30.0) -> None:
        self.labels = tuple(labels)
        self._queue: deque[_Pending] = deque()
        self._queue_size = queue_size
        self._records: deque[dict[str, Any]] = deque(maxlen=4096)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._in_flight: dict[str, _Pending] = {}
        self._expired: OrderedDict[str, _Pending] = OrderedDict()  # recently expired: late replies
        self._late_grace_s = late_grace_s
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run_guarded, name=f"escalator-{self.engine}", daemon=True)

    # ------------------------------------------------------------------ caller side (never blocks)

    def submit(self, keyframe: dict[str, Any]) -> bool:
        """Queue a keyframe; returns False if it pushed out an older one (drop-oldest)."""
        now = time.monotonic()
        item = _Pending(keyframe, now, now + keyframe.get("deadline_ms", DEFAULT_DEADLINE_MS) / 1000.0)
        with self._lock:
            self._counts["submitted"] += 1
            dropped = len(self._queue) >= self._queue_size
            if dropped:
                self._queue.popleft()
                self._counts[self._unsent_reason() or "dropped_queue"] += 1
            self._queue.append(item)
        self._wake.set()
        return not dropped

    def poll(self) -> list[dict[str, Any]]:
        """All reasoning records that arrived since the last call."""
        with self._lock:
            out = list(self._records)
            self._records.clear()
        return out

    def counters(self) -> dict[str, int]:
        with self._lock:
            c = dict(self._counts)
            c["queued"] = len(self._queue)
            c["in_flight"] = len(self._in_flight)
        return c

    def close(self, drain_s: float = 0.5) -> None:
        """Wait up to ``drain_s`` for queued/in-flight answers, then stop; never hangs.

        The wait ends early when nothing is outstanding or when no answer can come any more
        (``_answers_possible``): a run against an unreachable reasoner ends without a needless pause.
        """
        end = time.monotonic() + max(0.0, drain_s)
        while time.monotonic() < end and self._thread.is_alive():
            with self._lock:
                busy = bool(self._queue or self._in_flight)
            if not busy or not self._answers_possible():
                break
            time.sleep(0.01)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=2.0)
        with self._lock:
            self._counts[self._unsent_reason() or "dropped_stale"] += len(self._queue)
            self._queue.clear()
            self._counts["abandoned"] += len(self._in_flight)
            self._in_flight.clear()

    def _answers_possible(self) -> bool:
        """Whether waiting can still bring answers (always, in process; see the remote variant)."""
        return True

    def _unsent_reason(self) -> str | None:
        """The counter for a keyframe that leaves the queue unsent right now, if it is not the
        queue's own fault (``dropped_queue``/``dropped_stale``); called with ``_lock`` held."""
        return None

    def unreachable(self) -> str | None:
        """Why the reasoner could not be reached (for the run summary), or None when it could."""
        return None

    def __enter__(self) -> Escalator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ worker side

    def start(self) -> Escalator:
        self._thread.start()
        return self

    def _run_guarded(self) -> None:
        try:
            self._run()
        except Exception as exc:  # noqa: BLE001 - the worker must not die silently: record why
            self.last_error = f"escalation worker stopped: {exc.__class__.__name__}: {exc}"

    def _run(self) -> None:
        raise NotImplementedError

    def _take(self) -> _Pending | None:
        with self._lock:
            return self._queue.popleft() if self._queue else None

    def _expire(self, now: float) -> None:
        with self._lock:
            for rid in [r for r, p in self._in_flight.items() if now > p.deadline]:
                self._expired[rid] = self._in_flight.pop(rid)
                self._counts["expired"] += 1
            while self._expired and (
                len(self._expired) > 1024 or now - next(iter(self._expired.values())).deadline > self._late_grace_s
            ):
                self._expired.popitem(last=False)

    def _receive(self, data: bytes, now: float) -> None:
        """One message off the wire: decode it with limits, then deliver it; never raises for bad bytes."""
        try:
            reply = unpack(data, MAX_MESSAGE_BYTES)
        except ProtocolError as exc:
            with self._lock:
                self._counts["malformed_replies"] += 1
                self.last_error = f"malformed reply ({exc.code}): {exc}"[:MAX_TEXT]
            return
        self._deliver(reply, now)

    def _deliver(self, reply: dict[str, Any], now: float) -> None:
        """Match a decoded reply to its request, check it against the contract, and turn it into
        an output record. A reply that cannot be matched or breaks the contract is counted
        ``malformed_replies``; one that ends a request also counts as that request's error."""
        rid = reply.get("id")
        with self._lock:
            known = isinstance(rid, str)
            pending = self._in_flight.pop(rid, None) if known else None
            late = False
            if pending is None and known and rid in self._expired:
                pending, late = self._expired.pop(rid), True
            if pending is None:
                self._counts["malformed_replies"] += 1  # no or unknown id: not ours or long forgotten
                return
            labels = pending.msg.get("labels")
            try:
                reply = validate_reply(reply, labels if isinstance(labels, list) else None)
                if reply["type"] == "pong":  # we never ping with a keyframe's id
                    raise ProtocolError("malformed", "a pong answered a keyframe")
            except ProtocolError as exc:
                self._counts["malformed_replies"] += 1
                if not late:
                    self._counts["errors"] += 1
                self.last_error = f"malformed reply ({exc.code}): {exc}"[:MAX_TEXT]
                return
            if reply["type"] == "error":
                if not late:
                    self._counts["errors"] += 1
                self.last_error = f"reasoner error {reply['code']}: {reply['message']}"[:MAX_TEXT]
                return
            record = _record(reply, pending, now)
            if late:
                record["late"] = True
                self._counts["late"] += 1
            else:
                self._counts["answered"] += 1
            self._records.append(record)


def _record(reply: dict[str, Any], pending: _Pending, now: float) -> dict[str, Any]:
    """The output record for a reply already checked by ``validate_reply``."""
    msg = pending.msg
    return {
        "type": "reasoning",
        "stream": msg.get("stream"),
        "frame": msg.get("frame"),
        "track": msg.get("track"),
        "reason": msg.get("reason"),
        "expression": reply["expression"],
        "valence": reply["valence"],
        "arousal": reply["arousal"],
        "aus": reply["aus"],
        "rationale": reply["rationale"],
        "verified": reply["verified"],
        "engine": reply["engine"],
        "latency_ms": round((now - pending.t_submit) * 1000.0, 1),
        "agreement": reply["agreement"],
        "fused": reply["fused"],
    }


class InprocEscalator(Escalator):
    """``--reasoner inproc``: the knowledge engine (or any reasoner core) on a worker thread."""

    def __init__(self, labels: Sequence[str], *, reasoner: Any = None, queue_size: int = 16) -> None:
        if reasoner is None:
            import importlib

            reasoner = importlib.import_module(INPROC_REASONER).Reasoner()
        self.reasoner = reasoner
        self.engine = f"inproc:{self.reasoner.name}"
        super().__init__(labels, queue_size=queue_size)

    def _run(self) -> None:
        while not self._stop.is_set():
            item = self._take()
            if item is None:
                self._wake.wait(0.05)
                self._wake.clear()
                continue
            now = time.monotonic()
            if now > item.deadline:
                with self._lock:
                    self._counts["dropped_stale"] += 1
                continue
            with self._lock:
                self._counts["sent"] += 1
                self._in_flight[item.msg["id"]] = item
            try:
                reply = self.reasoner.process([validate_keyframe(item.msg)])[0]
            except ProtocolError as exc:
                reply = error_reply(item.msg.get("id"), exc.code, str(exc))
            self._deliver(reply, time.monotonic())


class RemoteEscalator(Escalator):
    """DEALER to a reasoner's ROUTER, CURVE-encrypted when a keys directory is given."""

    def __init__(
        self,
        endpoint: str,
        labels: Sequence[str],
        *,
        keys_dir: str | None = None,
        insecure: bool = False,
        queue_size: int = 16,
        max_in_flight: int = 64,
        tick_ms: int = 5,
        connect_grace_s: float = 1.0,
    ) -> None:
        from emostream.keys import client_pair, require_secure

        try:
            require_secure(endpoint, keys_dir, insecure)
            self._keys = client_pair(keys_dir) if keys_dir else None
        except ValueError as exc:
            raise EscalationError(str(exc)) from None
        self.endpoint = endpoint
        self.engine = f"remote:{endpoint}"
        self._max_in_flight = max_in_flight
        self._tick_ms = tick_ms
        self._connect_grace_s = connect_grace_s
        self._t_start = time.monotonic()
        self.connected = False
        super().__init__(labels, queue_size=queue_size)

    def start(self) -> RemoteEscalator:
        self._t_start = time.monotonic()
        super().start()
        return self

    def _socket(self, ctx: Any) -> tuple[Any, Any]:
        import zmq

        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)  # no connection -> send fails now, not a silent backlog
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        sock.setsockopt(zmq.SNDHWM, self._max_in_flight)
        sock.setsockopt(zmq.MAXMSGSIZE, 4 * MAX_MESSAGE_BYTES)
        sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)  # notice a dead reasoner (kill -9, cable) quickly
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
        if self._keys is not None:
            pair, server_public = self._keys
            sock.curve_secretkey = pair.secret
            sock.curve_publickey = pair.public
            sock.curve_serverkey = server_public
        events = (
            zmq.EVENT_HANDSHAKE_SUCCEEDED
            | zmq.EVENT_DISCONNECTED
            | zmq.EVENT_HANDSHAKE_FAILED_AUTH
            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
        )
        monitor = sock.get_monitor_socket(events)
        sock.connect(self.endpoint)
        return sock, monitor

    def _run(self) -> None:
        import zmq
        from zmq.utils.monitor import recv_monitor_message

        ctx = zmq.Context()
        sock, monitor = self._socket(ctx)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                self._send_queued(sock, zmq)
                events = dict(poller.poll(self._tick_ms))
                now = time.monotonic()
                if monitor in events:
                    self._on_monitor(recv_monitor_message(monitor, zmq.NOBLOCK)["event"], zmq)
                if sock in events:
                    for _ in range(256):
                        try:
                            data = sock.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._receive(data, now)
                self._expire(now)
                if not self.connected:
                    self._drop_overdue(now)
        finally:
            sock.disable_monitor()
            monitor.close(linger=0)
            sock.close(linger=0)
            ctx.term()

    def _answers_possible(self) -> bool:
        """Connected, or still within the first-handshake grace of a run that never connected.

        Not connected after having been: the requests in flight went to a connection that is gone
        (a reconnect gets a new identity at the ROUTER), so none of them can be answered.
        """
        with self._lock:
            if self.connected:
                return True
            never = not self._counts["connects"]
        return never and time.monotonic() < self._t_start + self._connect_grace_s

    def _unsent_reason(self) -> str | None:
        return None if self.connected else "dropped_unreachable"

    def unreachable(self) -> str | None:
        with self._lock:
            if not self._counts["connects"]:  # ``last_error`` says why when the handshake was refused
                return f"never connected to {self.endpoint}"
            if not self.connected:
                return f"disconnected from {self.endpoint} at the end of the run"
        return None

    def _drop_overdue(self, now: float) -> None:
        """While no reasoner is connected, a queued keyframe whose deadline passed is dropped as
        unreachable now (live counters and metrics), not at the next connect or at ``close``."""
        with self._lock:
            if any(p.deadline < now for p in self._queue):  # at most queue_size items
                keep = deque(p for p in self._queue if p.deadline >= now)
                self._counts["dropped_unreachable"] += len(self._queue) - len(keep)
                self._queue = keep

    def _on_monitor(self, event: int, zmq: Any) -> None:
        with self._lock:
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.connected = True
                self._counts["connects"] += 1
            elif event == zmq.EVENT_DISCONNECTED:
                self.connected = False
                self._counts["disconnects"] += 1
            else:
                self._counts["auth_failures"] += 1
                self.last_error = f"reasoner at {self.endpoint} refused the CURVE handshake (key not allow-listed?)"

    def _send_queued(self, sock: Any, zmq: Any) -> None:
        if not self.connected:
            # Not yet (the first handshake takes a few ms to a few s) or not now (reconnecting): keep
            # keyframes queued -- bounded, drop-oldest, each until its deadline (``_drop_overdue``) --
            # instead of dropping them before the reasoner had a chance to answer.
            return
        while len(self._in_flight) < self._max_in_flight:
            item = self._take()
            if item is None:
                return
            now = time.monotonic()
            remaining_ms = int((item.deadline - now) * 1000)
            if remaining_ms <= 0:
                with self._lock:
                    self._counts["dropped_stale"] += 1
                continue
            msg = dict(item.msg)
            msg["deadline_ms"] = remaining_ms  # the reasoner sees only the time that is left
            try:
                data = pack(msg)
            except (TypeError, ValueError):
                with self._lock:
                    self._counts["dropped_stale"] += 1
                    self.last_error = "keyframe is not serialisable"
                continue
            with self._lock:
                try:
                    sock.send(data, zmq.NOBLOCK)
                except zmq.Again:
                    # zmq's send queue is full (its high-water mark is approximate: a burst can hit it
                    # below max_in_flight) or the connection just went and the monitor has not said so
                    # yet. Either way this is back-pressure, not a loss: the keyframe goes back to the
                    # head of the queue and is tried again next tick, until its deadline.
                    self._queue.appendleft(item)
                    return
                self._counts["sent"] += 1
                self._in_flight[msg["id"]] = item


def open_escalator(
    spec: str,
    *,
    keys_dir: str | None,
    insecure: bool,
    labels: tuple[str, ...],
    queue_size: int = 16,
) -> Escalator | None:
    """``none`` -> None; ``inproc`` -> knowledge engine on a thread; ``tcp://HOST:PORT`` -> remote."""
    spec = (spec or "none").strip()
    if spec == "none":
        return None
    if spec == "inproc":
        return InprocEscalator(labels, queue_size=queue_size).start()
    if spec.startswith(("tcp://", "ipc://")):
        return RemoteEscalator(spec, labels, keys_dir=keys_dir, insecure=insecure, queue_size=queue_size).start()
    raise EscalationError(f"--reasoner must be none, inproc or tcp://HOST:PORT, got {spec!r}")


class EscalationHook:
    """The escalation sink (:mod:`edge.sinks`): keyframes the tracks chose -> ``submit``; answers -> ``write``.

    The decision is not made here: the hook's ``keyframe_policy`` is handed to each stream's tracks
    (:class:`edge.track.Track`), which decide from the same smoothed state and events the records show
    and mark the face batch (``keyframe_reasons``); the hook only builds and submits those keyframes.
    Runs on the frame loop's thread, so records are written from the same thread as the frame
    records (no locking around the output) and it costs two JPEG encodes per keyframe -- never a
    wait for the reasoner.
    """

    #: Escalator counters reported as Prometheus drops, by reason.
    _DROP_COUNTERS = ("dropped_queue", "dropped_unreachable", "dropped_stale", "expired", "errors")

    def __init__(self, escalator: Escalator, write: Any, policy: Any = None, deadline_ms: int = DEFAULT_DEADLINE_MS,
                 metrics: Any = None) -> None:
        from emostream.edge.keyframes import KeyframePolicy

        self.escalator = escalator
        self.write = write
        self.policy = policy or KeyframePolicy()
        self.deadline_ms = deadline_ms
        self.metrics = metrics  # edge.metrics.Metrics or None
        self._reported = dict.fromkeys(self._DROP_COUNTERS, 0)

    @property
    def keyframe_policy(self) -> Any:
        """The policy the scheduler gives the stream processors (one global budget for all streams)."""
        return self.policy

    def step(self, step: Any) -> None:
        """Submit a keyframe for every face of the step's batch that its track chose to escalate."""
        from emostream.edge.keyframes import keyframe_for

        batch = step.batch
        for i, reason in enumerate(batch.keyframe_reasons):
            if reason is None:
                continue  # not chosen, or untracked (no identity to reason about)
            self.escalator.submit(keyframe_for(batch, i, str(reason), deadline_ms=self.deadline_ms))
            if self.metrics is not None:
                self.metrics.escalation_sent(batch.frame.stream)
        self.flush()

    __call__ = step

    def end(self, stream: str, reason: str, events: list[dict]) -> None:
        """Nothing per stream: the escalator serves every stream; :meth:`close` drains it at the end."""

    def flush(self) -> None:
        for record in self.escalator.poll():
            self.write(record)
            if self.metrics is not None and record.get("type") == "reasoning":
                self.metrics.escalation_answered(str(record.get("stream")))
        if self.metrics is not None:
            self._report_counters()

    def _report_counters(self) -> None:
        """Escalator-wide drops (its counters are not per stream) and the queue depth, as metric deltas."""
        c = self.escalator.counters()
        for name in self._DROP_COUNTERS:
            for _ in range(c.get(name, 0) - self._reported[name]):
                self.metrics.escalation_dropped("all", name.removeprefix("dropped_"))
            self._reported[name] = c.get(name, 0)
        self.metrics.set_queue_depth("escalation", c.get("queued", 0) + c.get("in_flight", 0))

    def close(self, drain_s: float = 2.0) -> str:
        """Wait briefly for outstanding answers, write them, and return a one-line summary.

        The summary says plainly when the reasoner could not be reached and how many keyframes
        were dropped for it (``unreachable``), next to the other reasons: the run itself still
        succeeds (the edge never depends on the reasoner), so this line is where an operator
        learns that no reasoning happened.
        """
        self.escalator.close(drain_s=drain_s)
        self.flush()
        c = self.escalator.counters()
        why = {"queue full": c["dropped_queue"], "unreachable": c["dropped_unreachable"], "stale": c["dropped_stale"]}
        dropped = sum(why.values())
        text = f"reasoner {self.escalator.engine}: "
        problem = self.escalator.unreachable()
        if problem:
            text += f"UNREACHABLE ({problem}), "
        text += (
            f"{c['submitted']} keyframes, {c['answered']} answered, "
            f"{c['late']} late, {c['expired']} expired, {c['errors']} errors, {dropped} dropped"
        )
        if dropped:
            text += " (" + ", ".join(f"{n} {reason}" for reason, n in why.items() if n) + ")"
        if c["malformed_replies"]:
            text += f", {c['malformed_replies']} malformed replies"
        if self.escalator.last_error:
            text += f" (last: {self.escalator.last_error})"
        return text
