"""The reasoner service: a ZeroMQ ROUTER that batches keyframes, runs the engine and replies.

One thread owns the socket and the loop (zmq sockets are not thread-safe); batching is
"max batch or max wait, whichever first". Every message is size-checked, decoded with limits and
validated (``schema.py``); a bad one gets an error reply with a code and the loop goes on. Work
whose deadline has passed by the time a batch starts is answered ``expired`` instead of being run:
the edge has given up on it and the GPU time is better spent on fresh keyframes.

Security: with a keys directory the socket is a CURVE server and ``zmq.auth``'s ZAP handler admits
only the public keys in ``DIR/authorized``; without one, binding is allowed only on loopback unless
``insecure`` is set (``keys.require_secure``).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from emostream.contract import (
    HARD_MESSAGE_BYTES,
    MAX_MESSAGE_BYTES,
    REQUEST_TYPES,
    SCHEMA_VERSION,
    ProtocolError,
    error_reply,
    pack,
    unpack,
    validate,
)
from emostream.keys import load_pair, require_secure

from .core import Reasoner


class ReasonerError(RuntimeError):
    """The service cannot start (bad endpoint, port in use, missing keys)."""


@dataclass
class ServiceConfig:
    bind: str
    keys_dir: str | None = None
    insecure: bool = False
    max_batch: int = 8
    max_wait_ms: float = 20.0
    max_queue: int = 256
    max_message_bytes: int = MAX_MESSAGE_BYTES


@dataclass
class ServiceStats:
    """What the service did with every message, so that at stop

        received = replied + dropped_unroutable + dropped_full + pending

    ``replied`` counts only replies zmq accepted for a connected peer. A reply for a peer that
    has gone (``dropped_unroutable``) or that does not read and whose queue is at the high-water
    mark (``dropped_full``) is not a reply anyone got: the ROUTER socket would drop both silently,
    so it runs with ``ROUTER_MANDATORY`` and these are counted here instead. ``errors`` counts the
    error outcome of each request by code, whether or not its error reply could be delivered.
    """

    received: int = 0
    replied: int = 0
    dropped_unroutable: int = 0
    dropped_full: int = 0
    pending: int = 0  # accepted, still waiting for a batch when the service stopped
    batches: int = 0
    errors: Counter = field(default_factory=Counter)  # by error code (malformed, expired, …)

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "replied": self.replied,
            "dropped_unroutable": self.dropped_unroutable,
            "dropped_full": self.dropped_full,
            "pending": self.pending,
            "batches": self.batches,
            "errors": dict(self.errors),
        }


def open_router(ctx: zmq.Context, config: ServiceConfig) -> tuple[zmq.Socket, Any]:
    """Bind the ROUTER (CURVE server if keys are given); returns the socket and the authenticator."""
    try:
        require_secure(config.bind, config.keys_dir, config.insecure)
    except ValueError as exc:
        raise ReasonerError(str(exc)) from None
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    # Unroutable (peer gone) and full (peer not reading) replies raise instead of vanishing, so
    # they are counted as such and not as replied; every send is NOBLOCK, so this never blocks.
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.setsockopt(zmq.MAXMSGSIZE, HARD_MESSAGE_BYTES)
    sock.setsockopt(zmq.RCVHWM, 1000)
    sock.setsockopt(zmq.SNDHWM, 1000)
    auth = None
    if config.keys_dir is not None:
        from zmq.auth.thread import ThreadAuthenticator

        keys = Path(config.keys_dir)
        try:
            pair = load_pair(keys / "server.key_secret")
        except ValueError as exc:
            sock.close()
            raise ReasonerError(str(exc)) from None
        allowed = keys / "authorized"
        if not allowed.is_dir() or not any(allowed.glob("*.key")):
            sock.close()
            raise ReasonerError(f"no allow-listed client keys in {allowed} (run `emostream keys {keys}`)")
        auth = ThreadAuthenticator(ctx)
        auth.start()
        auth.configure_curve(domain="*", location=str(allowed))
        sock.curve_secretkey = pair.secret
        sock.curve_publickey = pair.public
        sock.curve_server = True
    try:
        sock.bind(config.bind)
    except zmq.ZMQError as exc:
        sock.close()
        if auth is not None:
            auth.stop()
        raise ReasonerError(f"cannot bind {config.bind}: {exc}") from None
    return sock, auth


def serve(
    reasoner: Reasoner,
    config: ServiceConfig,
    stop: threading.Event | None = None,
    log: Any = sys.stderr,
) -> ServiceStats:
    """Run until ``stop`` is set; returns the counters (also logged as one JSON line)."""
    stop = stop or threading.Event()
    ctx = zmq.Context()
    sock, auth = open_router(ctx, config)
    stats = ServiceStats()
    pending: deque[tuple[bytes, dict[str, Any], float]] = deque()
    print(
        f"reasoner: listening on {config.bind} (engine {reasoner.name}, "
        f"{'CURVE' if auth else 'plain'}, batch {config.max_batch}/{config.max_wait_ms:g} ms)",
        file=log,
        flush=True,
    )

    def send(ident: bytes, msg: dict[str, Any]) -> None:
        if msg.get("type") == "error":
            stats.errors[msg["code"]] += 1
        try:
            sock.send_multipart([ident, pack(msg)], flags=zmq.NOBLOCK)
        except zmq.Again:  # the peer's queue is at SNDHWM: it does not read; its deadline will expire it
            stats.dropped_full += 1
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            stats.dropped_unroutable += 1  # the peer disconnected before its reply was ready
        else:
            stats.replied += 1

    try:
        while not stop.is_set():
            now = time.monotonic()
            if pending:
                due = pending[0][2] + config.max_wait_ms / 1000.0
                timeout = max(0, int((due - now) * 1000))
            else:
                timeout = 100
            if sock.poll(timeout, zmq.POLLIN):
                for _ in range(4 * config.max_batch):  # drain what is there, bounded
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    _receive(frames, pending, config, stats, send, reasoner.name)
            now = time.monotonic()
            if pending and (
                len(pending) >= config.max_batch or now - pending[0][2] >= config.max_wait_ms / 1000.0
            ):
                batch = [pending.popleft() for _ in range(min(config.max_batch, len(pending)))]
                live = []
                for ident, kf, t_recv in batch:
                    if now - t_recv > kf["deadline_ms"] / 1000.0:
                        send(
                            ident,
                            error_reply(kf["id"], "expired", "deadline passed before the reasoner got to it"),
                        )
                    else:
                        live.append((ident, kf, t_recv))
                if live:
                    stats.batches += 1
                    try:
                        replies = reasoner.process([kf for _, kf, _ in live])
                    except Exception as exc:  # noqa: BLE001 - an engine bug must not take the service down
                        why = f"{exc.__class__.__name__}: {exc}"[:200]
                        print(f"reasoner: internal error: {why}", file=log, flush=True)
                        replies = [error_reply(kf["id"], "internal", why) for _, kf, _ in live]
                    done = time.monotonic()
                    for (ident, _, t_recv), reply in zip(live, replies, strict=True):
                        reply["service_ms"] = round((done - t_recv) * 1000.0, 2)
                        send(ident, reply)
    finally:
        stats.pending = len(pending)
        sock.close(linger=0)
        if auth is not None:
            auth.stop()
        ctx.term()
        print("reasoner: stopped " + json.dumps(stats.as_dict()), file=log, flush=True)
    return stats


def _receive(frames, pending, config, stats, send, engine_name) -> None:
    """Validate one incoming message: queue a keyframe, answer a ping, or reply with an error."""
    stats.received += 1
    if len(frames) != 2:  # DEALER sends exactly one frame; ROUTER prepends the identity
        if frames:
            send(frames[0], error_reply(None, "malformed", f"expected 1 frame, got {len(frames) - 1}"))
        return
    ident, data = frames
    rid = None
    try:
        msg = unpack(data, config.max_message_bytes)
        rid = msg.get("id")
        kf = validate(msg, accept=REQUEST_TYPES)  # the contract's one validator (the edge checks replies with it)
        if kf["type"] == "ping":
            send(ident, {"v": SCHEMA_VERSION, "type": "pong", "id": kf["id"], "engine": engine_name})
            return
    except ProtocolError as exc:
        send(ident, error_reply(rid, exc.code, str(exc)))
        return
    if len(pending) >= config.max_queue:
        send(ident, error_reply(kf["id"], "overloaded", f"reasoner queue full ({config.max_queue})"))
        return
    pending.append((ident, kf, time.monotonic()))
