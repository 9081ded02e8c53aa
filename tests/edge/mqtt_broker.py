"""A real Debian ``mosquitto`` on a free loopback port, and a real paho subscriber, for the MQTT tests.

Not a test module (no ``test_`` prefix): the MQTT tests import it. The broker keeps its state in a
persistence file (saved every second) so a subscriber's session survives a restart, as on a real
deployment; the tests kill and restart it with :meth:`Broker.kill` / :meth:`Broker.start`.
"""

from __future__ import annotations

import getpass
import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_mosquitto() -> str:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto; `make test` installs it)")
    return MOSQUITTO


class Broker:
    """One mosquitto process on 127.0.0.1:port; ``start``/``kill`` may be repeated (same port, same state)."""

    def __init__(self, workdir: Path, users: dict[str, str] | None = None, tls: dict[str, Path] | None = None) -> None:
        self.exe = require_mosquitto()
        self.port = free_port()
        self.dir = workdir
        self.proc: subprocess.Popen | None = None
        conf = [f"listener {self.port} 127.0.0.1", "persistence true", f"persistence_location {workdir}/",
                "autosave_interval 1",
                # run as whoever started it: as root mosquitto would switch to the `mosquitto` user, which
                # cannot write its state into the test's private temporary folder
                f"user {getpass.getuser()}", f"log_dest file {workdir}/mosquitto.log", "max_queued_messages 100000"]
        if tls:  # {"cafile": …, "certfile": …, "keyfile": …}
            conf += [f"{key} {path}" for key, path in tls.items()]
        if users:
            pwfile = workdir / "passwd"
            pwfile.write_text("")
            for user, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pwfile), user, password], check=True,
                               capture_output=True)
            conf += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            conf.append("allow_anonymous true")
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text("\n".join(conf) + "\n")

    def start(self) -> None:
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: {(self.dir / 'mosquitto.log').read_text()[-500:]}") from None
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def wait_saved(self, timeout: float = 10.0) -> None:
        """Wait for the broker's next autosave (so the sessions so far survive a SIGKILL)."""
        db = self.dir / "mosquitto.db"
        since = time.time()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if db.exists() and db.stat().st_mtime > since:
                return
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not save its state")

    def kill(self) -> None:
        """SIGKILL: the broker goes away without a goodbye (its last autosave is what survives)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class Subscriber:
    """A paho client with a persistent session (QoS 1), collecting ``(topic, payload)`` it receives."""

    def __init__(self, port: int, topic: str, client_id: str = "test-subscriber", ca: Path | None = None,
                 **auth: str) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, dict]] = []
        self.lock = threading.RLock()
        self.subscribed = threading.Event()
        self.topic = topic
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        if auth:
            self.client.username_pw_set(auth["username"], auth["password"])
        if ca is not None:
            self.client.tls_set(ca_certs=str(ca))
        self.client.reconnect_delay_set(0.2, 1)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: self.subscribed.set()
        self.client.connect("localhost" if ca is not None else "127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        assert self.subscribed.wait(10), "subscriber did not subscribe"

    def _on_connect(self, client, _u, _f, reason, _p=None) -> None:
        if not reason.is_failure:
            client.subscribe(self.topic, qos=1)

    def _on_message(self, _c, _u, msg) -> None:
        try:
            payload = json.loads(msg.payload)
        except ValueError:
            payload = {"raw": msg.payload.decode(errors="replace")}
        with self.lock:
            self.messages.append((msg.topic, payload))

    def seqs(self) -> set[int]:
        with self.lock:
            return {p["seq"] for _t, p in self.messages if "seq" in p}

    def wait_for(self, predicate, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate(list(self.messages)):
                    return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def make_certs(folder: Path) -> dict[str, Path]:
    """A throw-away CA and a server certificate for localhost/127.0.0.1, made with Debian's openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=folder, check=True, capture_output=True)

    (folder / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
        "-subj", "/CN=emostream-test-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
        "server.pem", "-days", "1", "-extfile", "san.ext")
    return {"cafile": folder / "ca.pem", "certfile": folder / "server.pem", "keyfile": folder / "server.key"}
