"""Reasoner throughput and round-trip latency: knowledge engine and tiny VLM, batched vs unbatched.

Everything is real: the reasoner runs as its own process (``python -m reasoner reasoner``), the
client is a ZeroMQ DEALER on 127.0.0.1 sending msgpack keyframes built from a real face photo, with
``--concurrency`` requests outstanding (a closed loop, like several edges or several faces).
"Unbatched" is ``--max-batch 1``; "batched" is ``--max-batch 8 --max-wait-ms 10``.

    nice -n 10 .venv/bin/python benchmarks/reasoner_bench.py [--n 300] [--n-vlm 48] [--concurrency 16]

The tiny VLM is the random 1-layer LLaVA the tests build (``engines/vlm/tiny.py``): its numbers
measure the service, batching and constrained-decoding machinery, not a real model's speed.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from emostream.engines.labels import CANONICAL_LABELS  # noqa: E402
from emostream.reasoner.schema import SCHEMA_VERSION, pack, unpack  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def crop_jpeg() -> bytes:
    data = Path(os.environ.get("EMOSTREAM_DATA", REPO.parent / "shared" / "data"))
    img = cv2.imread(str(data / "multiface" / "single_face.jpg"))
    if img is None:  # no shared data: a synthetic crop keeps the benchmark runnable
        img = (np.random.default_rng(0).random((96, 96, 3)) * 255).astype(np.uint8)
    h, w = img.shape[:2]
    s = min(h, w) // 2
    crop = cv2.resize(img[(h - s) // 2 : (h + s) // 2, (w - s) // 2 : (w + s) // 2], (64, 64))
    return cv2.imencode(".jpg", crop)[1].tobytes()


def start(args: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "emostream.reasoner", "reasoner", "--bind", endpoint, *args],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=dict(os.environ, HF_HUB_OFFLINE="1"),
        )
    end = time.monotonic() + 120
    while "listening on" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            raise SystemExit(f"reasoner did not start: {log.read_text()[-1000:]}")
        time.sleep(0.05)
    return proc, endpoint


def measure(endpoint: str, n: int, concurrency: int, crop: bytes, warmup: int) -> dict:
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    rng = np.random.default_rng(1)

    def msg() -> tuple[str, bytes]:
        rid = uuid.uuid4().hex
        probs = rng.dirichlet(np.ones(len(CANONICAL_LABELS))).tolist()
        return rid, pack(
            {
                "v": SCHEMA_VERSION,
                "type": "keyframe",
                "id": rid,
                "stream": "bench",
                "track": 1,
                "frame": 0,
                "t_ns": 0,
                "crop": crop,
                "labels": list(CANONICAL_LABELS),
                "probs": probs,
                "reason": "heartbeat",
                "deadline_ms": 60_000,
            }
        )

    def run(count: int) -> tuple[list[float], float, int]:
        sent: dict[str, float] = {}
        lat: list[float] = []
        errors = 0
        todo = count
        t0 = time.perf_counter()
        while todo or sent:
            while todo and len(sent) < concurrency:
                rid, data = msg()
                sent[rid] = time.perf_counter()
                sock.send(data)
                todo -= 1
            if not sock.poll(120_000):
                raise SystemExit("no reply within 120 s")
            reply = unpack(sock.recv())
            t = sent.pop(reply["id"], None)
            if t is not None:
                lat.append(time.perf_counter() - t)
                errors += reply.get("type") != "reply"
        return lat, time.perf_counter() - t0, errors

    run(warmup)
    lat, wall, errors = run(n)
    sock.close()
    ctx.term()
    ms = np.array(lat) * 1000
    return {
        "n": n,
        "kf_s": n / wall,
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
        "errors": errors,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=300, help="keyframes per knowledge-engine run")
    ap.add_argument("--n-vlm", type=int, default=48, help="keyframes per tiny-VLM run")
    ap.add_argument("--concurrency", type=int, default=16, help="requests outstanding at once")
    ap.add_argument("--resample", type=int, default=1, help="SEKE K for the VLM runs (1: no resampling)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads for the tiny VLM")
    args = ap.parse_args()
    crop = crop_jpeg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        vlm_dir = None
        if args.n_vlm > 0:
            from emostream.engines.vlm.tiny import build_tiny_vlm

            vlm_dir = build_tiny_vlm(tmp / "tiny-vlm")
        configs = [("knowledge", [], args.n)]
        if vlm_dir is not None:
            vlm = [
                "--vlm",
                str(vlm_dir),
                "--threads",
                str(args.threads),
                "--resample",
                str(args.resample),
                "--max-new-tokens",
                "400",
            ]
            configs.append(("tiny VLM", vlm, args.n_vlm))
        for name, extra, n in configs:
            for mode, batch in (
                ("unbatched", ["--max-batch", "1", "--max-wait-ms", "0"]),
                ("batched", ["--max-batch", "8", "--max-wait-ms", "10"]),
            ):
                proc, endpoint = start([*extra, *batch], tmp / f"{name}-{mode}.log")
                try:
                    r = measure(endpoint, n, args.concurrency, crop, warmup=min(8, n))
                finally:
                    proc.terminate()
                    proc.wait(timeout=20)
                rows.append((name, mode, r))
                print(f"  {name:10s} {mode:9s} done", file=sys.stderr, flush=True)
    print(
        f"\nreasoner benchmark: concurrency {args.concurrency}, {os.cpu_count()} CPUs, VLM resample K={args.resample}"
    )
    print(f"{'engine':10s} | {'mode':9s} | {'keyframes':>9s} | {'kf/s':>8s} | {'p50 ms':>8s} | {'p99 ms':>8s} | errors")
    print("-" * 76)
    for name, mode, r in rows:
        print(
            f"{name:10s} | {mode:9s} | {r['n']:9d} | {r['kf_s']:8.1f} | {r['p50']:8.1f} | {r['p99']:8.1f} | "
            f"{r['errors']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
