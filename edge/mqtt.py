"""Events on MQTT (``--events mqtt://HOST:PORT/TOPIC``): the bus robots and IoT fleets already listen on.

Why our own buffer in front of paho-mqtt: the edge never waits for a broker. ``publish`` (on the loop
thread) only serialises the record and appends it to a bounded queue; a worker thread hands queued
messages to paho (QoS 1) while the broker is connected, at most ``max_inflight`` unacknowledged at a
time. paho keeps those in flight until the broker's PUBACK and sends them again after a reconnect, so
what the run holds is ``queued + in_flight <= buffer + max_inflight``; when the broker is away for
long, the *oldest* queued messages are dropped and counted (``dropped``, and the Prometheus counter
``emostream_mqtt_dropped_total{reason="buffer"}``). A run that ends while the broker is away waits
``drain_s`` and counts what is still unsent as ``dropped{reason="unsent"}``. Every request ends in
one counted state::

    accepted = published + dropped + queued + in_flight

Reconnects use paho's exponential backoff (``reconnect_delay_set``: 0.5 s doubling up to 30 s).
QoS 1 is at-least-once: each payload carries ``seq`` (a per-run counter) so a subscriber can drop
the duplicates a reconnect may cause and see any gap a buffer drop left.

Topics (``TOPIC`` is the URI's path, default ``emostream``; a stream id is one topic level with
``/``, ``+``, ``#`` and control characters replaced by ``_``)::

    TOPIC/STREAM/event/KIND     track_start, emotion_change, track_end, alert
    TOPIC/STREAM/reasoning      the reasoner's answers
    TOPIC/STREAM/frame          every frame record (only with --events-frames)
    TOPIC/status                {"online": true|false}, retained; false is also the last will

TLS and credentials as MQTT users expect: ``mqtts://`` (default port 8883) verifies the broker
against the system CAs or ``?ca=FILE``; ``mqtt://user:password@host`` or, to keep the password out
of process listings, ``MQTT_USERNAME`` / ``MQTT_PASSWORD`` in the environment (the URI wins).
"""

from __future__ import annotations

import json
import os
import re
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["MqttError", "MqttPublisher", "MqttTarget", "parse_events_uri", "topic_level"]

DEFAULT_BUFFER = 10_000
DEFAULT_INFLIGHT = 100
#: MQTT's own limit on a topic is 65535 bytes; a stream id longer than this is cut (the payload keeps it whole).
_MAX_LEVEL = 128
_BAD_LEVEL = re.compile(r"[/+#\x00-\x1f\x7f]")
_QUERY_KEYS = ("ca", "client_id", "buffer", "keepalive")


class MqttError(ValueError):
    """A bad ``--events`` URI (reported as one line before anything is opened, exit code 2)."""


@dataclass(frozen=True)
class MqttTarget:
    """Where events go: broker address, base topic, TLS and credentials (the password is never printed)."""

    host: str
    port: int
    topic: str
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    client_id: str = ""
    buffer: int = DEFAULT_BUFFER
    keepalive: int = 30

    @property
    def url(self) -> str:
        """The URI as it may be shown: no password."""
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}/{self.topic}"


def parse_events_uri(uri: str, environ: Mapping[str, str] | None = None) -> MqttTarget:
    """Parse ``mqtt[s]://[USER[:PASS]@]HOST[:PORT][/TOPIC][?ca=FILE&client_id=ID&buffer=N&keepalive=S]``."""
    env = os.environ if environ is None else environ
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise MqttError(f"--events {uri!r}: {exc}") from None
    if parts.scheme not in ("mqtt", "mqtts"):
        raise MqttError(f"--events {uri!r}: expected mqtt://HOST[:PORT]/TOPIC or mqtts://… "
                        f"(got scheme {parts.scheme or 'none'!r})")
    if not parts.hostname:
        raise MqttError(f"--events {uri!r}: no broker host (e.g. mqtt://localhost:1883/emostream)")
    topic = unquote(parts.path).strip("/") or "emostream"
    if "+" in topic or "\x00" in topic or "//" in topic:
        raise MqttError(f"--events {uri!r}: the topic {topic!r} may not hold wildcards (+ #) or empty levels")
    if "#" in uri:
        raise MqttError(f"--events {uri!r}: a topic may not hold '#' (a wildcard)")
    query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)
    unknown = sorted(set(query) - set(_QUERY_KEYS))
    if unknown:
        raise MqttError(f"--events {uri!r}: unknown option(s) {', '.join(unknown)} (known: {', '.join(_QUERY_KEYS)})")
    opts = {k: v[-1] for k, v in query.items()}
    ca = opts.get("ca") or None
    if ca is not None:
        if parts.scheme != "mqtts":
            raise MqttError(f"--events {uri!r}: ca= needs mqtts://")
        if not os.path.isfile(ca):
            raise MqttError(f"--events {uri!r}: CA file {ca} not found")
        try:  # checked here, before anything is opened, rather than when the publisher starts
            ssl.create_default_context(cafile=ca)
        except (ssl.SSLError, OSError) as exc:
            raise MqttError(f"--events {uri!r}: cannot use CA file {ca}: {exc}") from None
    try:
        buffer = int(opts.get("buffer", DEFAULT_BUFFER))
        keepalive = int(opts.get("keepalive", 30))
    except ValueError:
        raise MqttError(f"--events {uri!r}: buffer= and keepalive= take whole numbers") from None
    if not 1 <= buffer <= 1_000_000:
        raise MqttError(f"--events {uri!r}: buffer= must be within 1..1000000")
    if not 5 <= keepalive <= 3600:
        raise MqttError(f"--events {uri!r}: keepalive= must be within 5..3600 seconds")
    username = unquote(parts.username) if parts.username else env.get("MQTT_USERNAME") or None
    password = unquote(parts.password) if parts.password else env.get("MQTT_PASSWORD") or None
    if password is not None and username is None:
        raise MqttError(f"--events {uri!r}: a password without a user name (set MQTT_USERNAME or user@ in the URI)")
    client_id = opts.get("client_id") or f"emostream-{uuid.uuid4().hex[:12]}"
    return MqttTarget(host=parts.hostname, port=port or (8883 if parts.scheme == "mqtts" else 1883), topic=topic,
                      tls=parts.scheme == "mqtts", username=username, password=password, ca_file=ca,
                      client_id=client_id, buffer=buffer, keepalive=keepalive)


def topic_level(stream: str) -> str:
    """A stream id as one topic level: no separators, wildcards or control characters, bounded length."""
    level = _BAD_LEVEL.sub("_", str(stream))[:_MAX_LEVEL]
    return level or "_"


def topic_for(base: str, record: Mapping[str, Any]) -> str | None:
    """The topic a record goes to, or None for records that are not published."""
    kind = record.get("type")
    stream = topic_level(str(record.get("stream")))
    if kind == "event":
        return f"{base}/{stream}/event/{topic_level(str(record.get('kind')))}"
    if kind == "reasoning":
        return f"{base}/{stream}/reasoning"
    if kind == "frame":
        return f"{base}/{stream}/frame"
    return None


class MqttPublisher:
    """Publishes records to a broker through a bounded buffer; never blocks the caller on the network.

    ``frames``: also publish frame records (``--events-frames``); otherwise events and reasoning only.
    ``metrics``: an :class:`edge.metrics.Metrics` (published and dropped counters, queue depth).
    """

    def __init__(self, target: MqttTarget, *, frames: bool = False, metrics: Any = None,
                 max_inflight: int = DEFAULT_INFLIGHT) -> None:
        import paho.mqtt.client as mqtt

        self.target = target
        self.frames = frames
        self.metrics = metrics
        self.max_inflight = max_inflight
        self._cond = threading.Condition()
        self._queue: deque[tuple[str, bytes]] = deque()
        self._inflight: set[int] = set()
        self._early: set[int] = set()  # PUBACKs that arrived before their publish call returned
        self._handing = 0  # a message is being handed to paho (outside the lock)
        self._connected = False
        self._closing = False
        self._closed = False
        self.seq = 0
        self.counts = {"accepted": 0, "published": 0, "dropped_buffer": 0, "dropped_unsent": 0,
                       "connects": 0, "disconnects": 0, "refused": 0}
        self.last_error: str | None = None
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=target.client_id,
                             protocol=mqtt.MQTTv311, clean_session=True)
        if target.username is not None:
            client.username_pw_set(target.username, target.password)
        if target.tls:
            try:
                ctx = ssl.create_default_context(cafile=target.ca_file)
            except (ssl.SSLError, OSError) as exc:
                raise MqttError(f"--events: cannot use CA file {target.ca_file}: {exc}") from None
            client.tls_set_context(ctx)
        client.reconnect_delay_set(min_delay=0.5, max_delay=30)  # type: ignore[arg-type]
        client.will_set(f"{target.topic}/status", json.dumps({"online": False}), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_connect_fail = self._on_connect_fail
        self._client = client
        self._mqtt = mqtt
        client.connect_async(target.host, target.port, keepalive=target.keepalive)
        client.loop_start()
        self._worker = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)
        self._worker.start()

    # -- paho callbacks (paho's network thread) ---------------------------------------------------

    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any = None) -> None:
        if reason.is_failure:
            self.counts["refused"] += 1
            self.last_error = f"broker refused the connection: {reason}"
            return
        client.publish(f"{self.target.topic}/status", json.dumps({"online": True}), qos=1, retain=True)
        with self._cond:
            self.counts["connects"] += 1
            self._connected = True
            self.last_error = None
            self._cond.notify_all()

    def _on_connect_fail(self, _client: Any, _userdata: Any) -> None:
        # paho does not pass the cause on; name the usual ones (a refusal by the broker is reported by _on_connect)
        if not (self.last_error or "").startswith("broker refused"):
            self.last_error = (f"cannot connect to {self.target.host}:{self.target.port}: nothing listening, "
                               "unreachable" + (", or TLS verification failed" if self.target.tls else ""))

    def _on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any = None) -> None:
        with self._cond:
            if self._connected and not self._closing:
                self.counts["disconnects"] += 1
            self._connected = False
            if not self._closing and not (self.last_error or "").startswith("broker refused"):
                self.last_error = f"disconnected: {reason}"  # a refusal says more; keep that one

    def _on_publish(self, _client: Any, _userdata: Any, mid: int, _reason: Any = None, _props: Any = None) -> None:
        with self._cond:
            if mid in self._inflight:
                self._inflight.discard(mid)
                self._acked()
            elif self._handing:
                self._early.add(mid)

    # -- the caller's side ------------------------------------------------------------------------

    def record(self, record: Mapping[str, Any]) -> None:
        """Queue one output record for publishing (frame records only with ``frames``); never blocks."""
        if record.get("type") == "frame" and not self.frames:
            return
        topic = topic_for(self.target.topic, record)
        if topic is None:
            return
        with self._cond:
            if self._closing:
                return
            self.seq += 1
            payload = json.dumps({**record, "seq": self.seq}, separators=(",", ":")).encode()
            self._queue.append((topic, payload))
            self.counts["accepted"] += 1
            while len(self._queue) > self.target.buffer:
                self._queue.popleft()
                self._drop("buffer")
            self._cond.notify_all()

    __call__ = record

    def _drop(self, reason: str, n: int = 1) -> None:
        self.counts[f"dropped_{reason}"] += n
        if self.metrics is not None:
            self.metrics.mqtt_dropped(reason, n)

    def _run(self) -> None:
        """Hand queued messages to paho while connected and the in-flight window has room.

        ``publish`` is called outside our lock: paho calls ``_on_publish`` holding its own message lock,
        and ``publish`` takes that lock too, so holding ours across it could deadlock. A PUBACK that
        beats the bookkeeping below lands in ``_early``.
        """
        while True:
            with self._cond:
                while not (self._closing and not self._queue) and not (
                        self._connected and self._queue and len(self._inflight) < self.max_inflight):
                    self._cond.wait(0.5)
                    if self.metrics is not None:
                        self.metrics.set_queue_depth("mqtt", len(self._queue) + len(self._inflight))
                if self._closing and not self._queue:
                    return
                topic, payload = self._queue.popleft()
                self._handing = 1
            info = self._client.publish(topic, payload, qos=1)
            with self._cond:
                self._handing = 0
                if self._closing:
                    continue  # close() already counted it as unsent
                # NO_CONN: the connection dropped a moment ago; paho keeps the message and sends it after
                # the reconnect, so it is in flight all the same.
                if info.rc in (self._mqtt.MQTT_ERR_SUCCESS, self._mqtt.MQTT_ERR_NO_CONN):
                    if info.mid in self._early:
                        self._early.discard(info.mid)
                        self._acked()
                    else:
                        self._inflight.add(info.mid)
                else:
                    self._queue.appendleft((topic, payload))
                    self._cond.wait(0.1)

    def _acked(self) -> None:
        self.counts["published"] += 1
        if self.metrics is not None:
            self.metrics.mqtt_published()
        self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + len(self._inflight)

    @property
    def connected(self) -> bool:
        return self._connected

    def close(self, drain_s: float = 2.0) -> str:
        """Wait up to ``drain_s`` for everything queued to be acknowledged, then disconnect (an
        ``{"online": false}`` status first) and return a one-line summary for stderr."""
        if self._closed:
            return self.summary()
        self._closed = True
        deadline = time.monotonic() + drain_s
        with self._cond:
            while (self._queue or self._inflight or self._handing) and time.monotonic() < deadline:
                self._cond.wait(0.05)
            self._closing = True
            unsent = len(self._queue) + len(self._inflight) + self._handing
            self._queue.clear()
            self._inflight.clear()
            if unsent:
                self._drop("unsent", unsent)
            connected = self._connected
            self._cond.notify_all()
        self._worker.join(timeout=2.0)
        if connected:
            info = self._client.publish(f"{self.target.topic}/status", json.dumps({"online": False}), qos=1,
                                        retain=True)
            info.wait_for_publish(timeout=1.0)
        self._client.disconnect()
        self._client.loop_stop()
        if self.metrics is not None:
            self.metrics.set_queue_depth("mqtt", 0)
        return self.summary()

    def summary(self) -> str:
        c = self.counts
        text = f"mqtt {self.target.url}: "
        if not c["connects"]:
            text += f"UNREACHABLE ({self.last_error or 'no connection'}), "
        dropped = c["dropped_buffer"] + c["dropped_unsent"]
        text += f"{c['published']} published, {dropped} dropped"
        if dropped:
            text += f" ({c['dropped_buffer']} buffer full, {c['dropped_unsent']} unsent at exit)"
        if c["disconnects"]:
            text += f", {c['disconnects']} disconnects"
        return text
