"""The console's web server: Starlette on uvicorn, in a daemon thread, reading the snapshot store.

Routes (all behind the token check when a token is set):

* ``GET /`` -- the page (``static/index.html``; its JS and CSS under ``/static/``; no CDN, no build);
* ``GET /api/state`` -- the snapshot as JSON;
* ``GET /api/live`` -- server-sent events: the snapshot each time it changed, at most ``live_hz`` times a
  second. The message is built when the client can take it, so a slow browser gets fewer, newer
  snapshots -- never a backlog;
* ``GET /api/frame/{i}.jpg`` -- stream ``i``'s latest frame with the overlay (boxes, ids, labels), scaled to
  at most ``frame_width`` px and encoded here, at most ``frame_fps`` times a second per stream (cached
  between); the page asks for the next one only when the last one has loaded.

Auth: ``--console-token`` (or ``EMOSTREAM_CONSOLE_TOKEN``) is required when the host is not loopback.
A request carries it as ``Authorization: Bearer TOKEN``, a ``?token=`` query (the page then gets an
HttpOnly, SameSite=Strict cookie so its own requests and the live channel carry it) or that cookie;
anything else is answered 401. Without a token (loopback only), the ``Host`` header must name a
loopback address, so a web page elsewhere cannot read the cameras through DNS rebinding.

The listening socket is bound here before the server starts, so a port in use is one clear error line
before the analysis begins.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import os
import socket
import threading
import time
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import cv2

from emostream.edge.console.store import SnapshotStore
from emostream.edge.overlay import OverlayFace, draw_overlay

__all__ = ["ConsoleError", "ConsoleServer", "parse_console_addr"]

STATIC = Path(__file__).resolve().parent / "static"
_COOKIE = "emostream_console"
_LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")
MIN_TOKEN = 12


class ConsoleError(ValueError):
    """A bad ``--console`` address, a missing or weak token, or a port that cannot be bound."""


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_console_addr(spec: str, token: str | None = None) -> tuple[str, int]:
    """``PORT``, ``:PORT``, ``HOST:PORT`` or ``[V6]:PORT`` -> (host, port); loopback unless a host is named.

    A host that is not loopback needs a token of at least ``MIN_TOKEN`` characters.
    """
    text = str(spec).strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise ConsoleError(f"--console {spec!r}: expected HOST:PORT or PORT (e.g. --console 8080)") from None
    if not 0 <= port <= 65535:
        raise ConsoleError(f"--console {spec!r}: port must be within 0..65535")
    if token is not None and len(token) < MIN_TOKEN:
        raise ConsoleError(f"--console-token must be at least {MIN_TOKEN} characters")
    if not _is_loopback(host) and token is None:
        raise ConsoleError(f"--console {spec!r} is reachable from the network: give --console-token "
                           "(or EMOSTREAM_CONSOLE_TOKEN), or serve on loopback (--console 127.0.0.1:PORT)")
    return host, port


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConsoleError(f"--console {host}:{port}: cannot resolve {host!r} ({exc.strerror})") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(64)
    except OSError as exc:
        sock.close()
        raise ConsoleError(f"cannot serve the console on {host}:{port}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


class _Frames:
    """Per stream: the latest overlay JPEG, re-encoded at most ``fps`` times a second, only when new."""

    def __init__(self, store: SnapshotStore, width: int, fps: float, quality: int = 75) -> None:
        self.store, self.width, self.interval, self.quality = store, width, 1.0 / fps, quality
        self._cache: dict[int, tuple[int, float, bytes]] = {}
        self._lock = threading.Lock()
        self.encoded = 0

    def jpeg(self, index: int) -> bytes | None:
        with self._lock:  # one encoder at a time: the console never takes more than one core
            seq_cached, at, data = self._cache.get(index, (-1, 0.0, b""))
            batch, seq = self.store.latest_batch(index)
            if batch is None:
                return None
            if seq == seq_cached or time.monotonic() - at < self.interval:
                return data or None
            data = self._encode(batch)
            self._cache[index] = (seq, time.monotonic(), data)
            self.encoded += 1
            return data

    def _encode(self, batch: Any) -> bytes:
        frame = batch.frame
        image = frame.image
        h, w = image.shape[:2]
        scale = min(1.0, self.width / w)
        faces = OverlayFace.from_batch(batch)
        if scale < 1.0:
            image = cv2.resize(image, (int(round(w * scale)), int(round(h * scale))), interpolation=cv2.INTER_AREA)
            faces = [OverlayFace(tuple(v * scale for v in f.box), f.track, f.label, f.confidence,  # type: ignore[arg-type]
                                 f.valence, f.arousal) for f in faces]
        drawn = draw_overlay(image, faces, f"#{frame.index}  t {frame.t:.1f} s")
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        return buf.tobytes() if ok else b""


class _Auth:
    """ASGI middleware: the token (header, query or cookie) on every request, or a loopback Host header."""

    def __init__(self, app: Any, token: str | None) -> None:
        self.app, self.token = app, token

    def _given(self, scope: dict) -> tuple[str | None, bool]:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip(), False
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if "token" in query:
            return query["token"][-1], True
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie header is just no cookie
            return None, False
        return (cookie[_COOKIE].value if _COOKIE in cookie else None), False

    def _host_ok(self, scope: dict) -> bool:
        for k, v in scope.get("headers", []):
            if k == b"host":
                host = v.decode("latin-1").rsplit(":", 1)[0] if not v.startswith(b"[") else \
                    v.decode("latin-1").split("]")[0] + "]"
                return _is_loopback(host)
        return True  # HTTP/1.0 without Host: a local tool

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.token is None:
            if not self._host_ok(scope):
                await _plain(send, 403, "forbidden: this console serves loopback only (Host header)")
                return
            await self.app(scope, receive, send)
            return
        given, from_query = self._given(scope)
        if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
            await _plain(send, 401, "unauthorized: this console needs its token (?token=... or Bearer)",
                         [(b"www-authenticate", b"Bearer")])
            return
        if not from_query:
            await self.app(scope, receive, send)
            return
        cookie = f"{_COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/".encode()

        async def send_with_cookie(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


async def _plain(send: Any, status: int, text: str, headers: list | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), *(headers or [])]})
    await send({"type": "http.response.body", "body": (text + "\n").encode()})


class ConsoleServer:
    """Serves the console for ``store`` on ``host:port`` from a daemon thread until :meth:`close`."""

    def __init__(self, store: SnapshotStore, host: str, port: int, *, token: str | None = None,
                 metrics: Any = None, frame_fps: float = 5.0, frame_width: int = 640, live_hz: float = 5.0) -> None:
        import uvicorn

        self.store = store
        self.token = token
        self.metrics = metrics
        self.frames = _Frames(store, frame_width, frame_fps)
        self.live_interval = 1.0 / live_hz
        self.clients = 0
        self._served: dict[tuple[str, int], float] = {}  # (client, stream index) -> when a frame was answered
        self._closing = False
        self._sock = _bind(host, port)
        bound = self._sock.getsockname()
        self.host, self.port = host, int(bound[1])
        config = uvicorn.Config(_Auth(self._app(), token), log_level="error", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=1, timeout_keep_alive=5, limit_concurrency=64,
                                h11_max_incomplete_event_size=16 * 1024)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="console-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            raise ConsoleError(f"the console did not start on {host}:{self.port}")

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def _app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
        from starlette.routing import Mount, Route
        from starlette.staticfiles import StaticFiles

        store = self.store

        async def index(_request: Request) -> Response:
            return FileResponse(STATIC / "index.html", headers={"cache-control": "no-store"})

        async def state(_request: Request) -> Response:
            return JSONResponse(store.snapshot(), headers={"cache-control": "no-store"})

        async def frame(request: Request) -> Response:
            name = request.path_params["name"]
            if not name.endswith(".jpg") or not name[:-4].isdigit():
                return Response("not found\n", status_code=404, media_type="text/plain")
            # At most frame_fps answers a second per stream: a client asking in a tight loop is made to wait
            # here (costing nothing) instead of spending the analysis' CPU on HTTP round trips.
            # (Per client address and stream: two operators each get the full rate.)
            index = int(name[:-4])
            key = (request.client.host if request.client else "", index)
            wait = self.frames.interval - (time.monotonic() - self._served.get(key, 0.0))
            if wait > 0:
                await asyncio.sleep(wait)
            if len(self._served) > 4096:
                self._served.clear()
            self._served[key] = time.monotonic()
            try:
                data = await asyncio.to_thread(self.frames.jpeg, index)
            except IndexError:
                return Response("no such stream\n", status_code=404, media_type="text/plain")
            if not data:
                return Response(status_code=204)
            return Response(data, media_type="image/jpeg", headers={"cache-control": "no-store"})

        async def live(request: Request) -> Response:
            async def messages() -> Any:
                self._client(+1)
                try:
                    sent = -1
                    last = 0.0
                    yield "retry: 1000\n\n"
                    while not self._closing:
                        if store.version != sent:
                            sent = store.version
                            yield f"data: {json.dumps(store.snapshot(), separators=(',', ':'))}\n\n"
                            last = time.monotonic()
                        elif time.monotonic() - last > 15:
                            yield ": keep-alive\n\n"
                            last = time.monotonic()
                        await asyncio.sleep(self.live_interval)
                        if await request.is_disconnected():
                            break
                finally:
                    self._client(-1)

            return StreamingResponse(messages(), media_type="text/event-stream",
                                     headers={"cache-control": "no-store", "x-accel-buffering": "no"})

        routes = [
            Route("/", index), Route("/api/state", state), Route("/api/live", live),
            Route("/api/frame/{name}", frame), Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
        return Starlette(routes=routes)

    def _client(self, delta: int) -> None:
        self.clients += delta
        if self.metrics is not None:
            self.metrics.set_console_clients(self.clients)

    def close(self) -> None:
        """Stop serving (live channels end, open requests get a second) and release the port."""
        self._closing = True
        self._server.should_exit = True
        self._thread.join(timeout=5)
        self._sock.close()


def token_from_env(given: str | None) -> str | None:
    """``--console-token``, else ``EMOSTREAM_CONSOLE_TOKEN`` (keeps it out of ``ps``), else None."""
    return given if given else (os.environ.get("EMOSTREAM_CONSOLE_TOKEN") or None)
