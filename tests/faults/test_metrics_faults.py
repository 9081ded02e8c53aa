"""The Prometheus endpoint against idle and half-open clients, over real sockets on 127.0.0.1.

Each connection used to get a thread that waited forever for a request: enough clients that
connect and say nothing (or half a request) held as many threads as they liked. Now each read has
a timeout and the threads are bounded; a scrape still gets its answer while they idle.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.request

import pytest

from emostream.edge.metrics import DEFAULT_MAX_CONNECTIONS, DEFAULT_TIMEOUT_S, Metrics

pytestmark = pytest.mark.faults


def scrape(url: str) -> str:
    """GET /metrics; the 5 s timeout is the "not stuck" bound."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        return resp.read().decode()


def closed_by_server(sock: socket.socket, limit_s: float) -> bool:
    """True once the server has closed its end (EOF or reset) within ``limit_s``."""
    sock.settimeout(limit_s)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def wait_for(predicate, limit_s: float) -> bool:
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_fifty_idle_and_half_open_connections_neither_exhaust_threads_nor_block_a_scrape():
    m = Metrics()
    m.frame("cam0", 1)
    limit = 8
    baseline = threading.active_count()
    server = m.serve(0, timeout_s=2.0, max_connections=limit)
    idle: list[socket.socket] = []
    try:
        for i in range(50):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            if i % 2:
                s.sendall(b"GET /metr")  # half a request line, never finished
            idle.append(s)
        time.sleep(0.3)  # let the server accept them all
        # baseline + the server's accept thread + at most `limit` connection threads (+2: a pushed-out
        # thread frees its slot a moment before it has finished); unbounded, this would be +50
        bound = baseline + 1 + limit + 2
        assert threading.active_count() <= bound, threading.active_count()
        text = scrape(server.url)
        assert 'emostream_frames_total{stream="cam0"} 1.0' in text
        assert threading.active_count() <= bound
        # Every idle client is closed: pushed out to make room, or timed out after 2 s.
        for s in idle:
            assert closed_by_server(s, limit_s=15.0)
        assert wait_for(lambda: threading.active_count() <= baseline + 1, 10.0), threading.active_count()
        assert server._httpd.pushed_out >= 50 - limit
        assert 'emostream_frames_total{stream="cam0"} 1.0' in scrape(server.url)
    finally:
        for s in idle:
            s.close()
        server.close()
    assert wait_for(lambda: threading.active_count() <= baseline, 10.0)


def test_an_idle_connection_is_closed_after_the_timeout_even_with_free_slots():
    """Fewer clients than slots, so nothing pushes them out: the read timeout alone closes them."""
    server = Metrics().serve(0, timeout_s=1.0, max_connections=8)
    try:
        silent = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        partial = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        partial.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # headers never end
        assert closed_by_server(silent, limit_s=15.0)
        assert closed_by_server(partial, limit_s=15.0)
        assert server._httpd.pushed_out == 0
        silent.close()
        partial.close()
        scrape(server.url)
    finally:
        server.close()


def test_defaults_bound_what_emostream_run_serves():
    """`emostream run --metrics-port` calls serve(port, host): the defaults are what protect it."""
    assert 0 < DEFAULT_TIMEOUT_S <= 10 and 1 <= DEFAULT_MAX_CONNECTIONS <= 64
    server = Metrics().serve(0)
    try:
        assert server._httpd.timeout_s == DEFAULT_TIMEOUT_S
        assert server._httpd.max_connections == DEFAULT_MAX_CONNECTIONS
        scrape(server.url)
    finally:
        server.close()
