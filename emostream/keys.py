"""CURVE key pairs and the plain-TCP rule.

Layout written by ``emostream keys DIR`` (zmq.auth's certificate files, Z85 text):

    DIR/server.key  DIR/server.key_secret    -- the reasoner's pair (public half goes to every edge)
    DIR/client.key  DIR/client.key_secret    -- an edge's pair
    DIR/authorized/client.key                -- the allow-list: public keys the reasoner accepts

The reasoner reads ``server.key_secret`` and ``authorized/``; an edge reads ``server.key`` and
``client.key_secret``. More edges: ``emostream keys DIR --client NAME`` adds ``NAME.key*`` and
allow-lists it. Unknown client keys are refused by the ZAP handler (``zmq.auth``).
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path


class KeysError(ValueError):
    """Missing or unreadable key files, or a plain-TCP endpoint that is not allowed."""


@dataclass(frozen=True)
class KeyPair:
    public: bytes
    secret: bytes


def make_keys(directory: str | Path, client: str = "client") -> list[Path]:
    """Create the server pair (once) and a client pair allow-listed for it; returns files written."""
    import zmq.auth

    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", client) or client == "server":
        raise KeysError(f"client name {client!r} must be 1-64 letters, digits, '-' or '_' (not 'server')")
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
        (d / "authorized").mkdir(exist_ok=True)
        written: list[Path] = []
        if not (d / "server.key_secret").exists():
            pub, sec = zmq.auth.create_certificates(d, "server")
            written += [Path(pub), Path(sec)]
        if (d / f"{client}.key_secret").exists():
            raise KeysError(f"{d / (client + '.key_secret')} exists; pick another --client name")
        pub, sec = zmq.auth.create_certificates(d, client)
        (d / "authorized" / f"{client}.key").write_bytes(Path(pub).read_bytes())
        written += [Path(pub), Path(sec), d / "authorized" / f"{client}.key"]
        for path in written:
            if path.name.endswith("_secret"):
                os.chmod(path, 0o600)
    except OSError as exc:
        raise KeysError(f"cannot write keys to {d}: {exc.strerror or exc}") from None
    return written


def load_pair(path: str | Path) -> KeyPair:
    """Read a ``*.key_secret`` file (holds both halves)."""
    import zmq.auth

    path = Path(path)
    if not path.is_file():
        raise KeysError(f"key file not found: {path} (create keys with `emostream keys DIR`)")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeysError(f"cannot read key file {path}: {exc}") from None
    if secret is None:
        raise KeysError(f"{path} holds no secret key")
    return KeyPair(public, secret)


def load_public(path: str | Path) -> bytes:
    import zmq.auth

    path = Path(path)
    if not path.is_file():
        raise KeysError(f"key file not found: {path} (create keys with `emostream keys DIR`)")
    try:
        public, _ = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeysError(f"cannot read key file {path}: {exc}") from None
    return public


def client_pair(keys_dir: str | Path) -> tuple[KeyPair, bytes]:
    """An edge's own pair and the server's public key from a keys directory."""
    d = Path(keys_dir)
    if not d.is_dir():
        raise KeysError(f"keys directory not found: {d}")
    secrets = sorted(p for p in d.glob("*.key_secret") if p.name != "server.key_secret")
    if not secrets:
        raise KeysError(f"no client key pair in {d} (create one with `emostream keys {d}`)")
    preferred = d / "client.key_secret"
    return load_pair(preferred if preferred in secrets else secrets[0]), load_public(d / "server.key")


def is_loopback(endpoint: str) -> bool:
    """True for ``ipc://``/``inproc://`` and ``tcp://`` on 127.0.0.0/8, ::1 or localhost."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    m = re.fullmatch(r"tcp://(\[[^\]]+\]|[^:]+):(\d+|\*)", endpoint)
    if not m:
        return False
    host = m.group(1).strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint(endpoint: str) -> None:
    if not re.fullmatch(r"(tcp://(\[[^\]]+\]|[^:/]+):(\d{1,5}|\*)|ipc://\S+|inproc://\S+)", endpoint):
        raise KeysError(f"bad ZeroMQ endpoint {endpoint!r}; expected tcp://HOST:PORT")


def require_secure(endpoint: str, keys_dir: str | None, insecure: bool) -> None:
    """Plain TCP only on loopback or with an explicit ``--insecure`` (the issue's security rule)."""
    check_endpoint(endpoint)
    if keys_dir is None and not insecure and not is_loopback(endpoint):
        raise KeysError(
            f"refusing unencrypted ZeroMQ on {endpoint}: pass --keys DIR (CURVE) or --insecure "
            "(plain TCP is allowed without either only on loopback)"
        )
