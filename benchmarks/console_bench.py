"""What the operator console and MQTT events cost the analysis, against a baseline measured in the same run.

    .venv/bin/python benchmarks/console_bench.py [CLIP] [--rounds 3] [--threads 2]

Runs ``emostream run CLIP --reasoner none`` at full speed (no ``--realtime``) in three set-ups, interleaved
round by round so machine load hits all alike, and prints frames/s from each run's summary line:

* ``baseline``  -- no console, no events;
* ``console``   -- ``--console`` with three clients for the whole run: a live channel (SSE) reader, a frame
  puller asking for ``/api/frame/0.jpg`` as fast as it is answered, and a stalled client that opens the
  live channel and never reads (its TCP window fills);
* ``console+mqtt`` -- the same plus ``--events --events-frames`` to a local Debian mosquitto, and two alert rules.

The ratios are relative to the baseline medians of the same run: frames/s (wall clock, sensitive to whatever
else the machine runs) and CPU milliseconds per frame of the whole ``emostream`` process (user + system,
start-up included; less sensitive to other load).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO.parent / "shared" / "data" / "video" / "WolfgangLanger_Pexels.mp4"
SUMMARY = re.compile(r"emostream: (\d+) frames in ([\d.]+) s \(([\d.]+) fps\)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clients(url: str, stop: threading.Event, counts: dict) -> list[threading.Thread]:
    def sse() -> None:
        with urllib.request.urlopen(url + "api/live", timeout=30) as resp:
            while not stop.is_set():
                if not resp.read1(65536):
                    return
                counts["sse"] += 1

    def frames() -> None:
        while not stop.is_set():
            try:
                with urllib.request.urlopen(url + "api/frame/0.jpg", timeout=5) as resp:
                    resp.read()
                    counts["frames"] += 1
            except OSError:
                return

    def stalled() -> None:
        host, port = url.split("//")[1].rstrip("/").rsplit(":", 1)
        s = socket.create_connection((host, int(port)))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(f"GET /api/live HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        stop.wait()
        s.close()

    threads = [threading.Thread(target=f, daemon=True) for f in (sse, frames, stalled)]
    for t in threads:
        t.start()
    return threads


def one(clip: str, mode: str, threads: int, broker_port: int | None) -> tuple[float, dict]:
    args = [sys.executable, "-m", "emostream", "run", clip, "--reasoner", "none", "--threads", str(threads),
            "--output", os.devnull]
    if mode != "baseline":
        args += ["--console", "127.0.0.1:0"]
    if mode == "console+mqtt":
        args += ["--events", f"mqtt://127.0.0.1:{broker_port}/bench", "--events-frames",
                 "--alert", "sad>=0.3 for 1s", "--alert", "happy>=0.6"]
    env = {**os.environ, "GLOG_minloglevel": "2"}
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stop = threading.Event()
    counts = {"sse": 0, "frames": 0}
    fps = None
    frames = 0
    for line in proc.stderr:
        if line.startswith("emostream: console at "):
            clients(line.split()[3], stop, counts)
        m = SUMMARY.search(line)
        if m:
            frames, fps = int(m.group(1)), float(m.group(3))
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    stop.set()
    if fps is None or proc.returncode != 0:
        raise SystemExit(f"{mode}: run failed (exit {proc.returncode})")
    counts["cpu_ms_per_frame"] = (usage.ru_utime + usage.ru_stime) * 1000 / max(frames, 1)
    return fps, counts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("clip", nargs="?", default=str(CLIP))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    tmp = tempfile.mkdtemp()
    conf = Path(tmp) / "m.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    broker = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    modes = ("baseline", "console", "console+mqtt")
    results: dict[str, list[float]] = {m: [] for m in modes}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    try:
        for r in range(a.rounds):
            for mode in modes:
                fps, counts = one(a.clip, mode, a.threads, port)
                results[mode].append(fps)
                cpu[mode].append(counts["cpu_ms_per_frame"])
                print(f"round {r + 1} {mode:>13}: {fps:6.1f} frames/s, {counts['cpu_ms_per_frame']:5.2f} CPU ms/frame "
                      f"(whole process, start-up included; clients got {counts['sse']} live reads, "
                      f"{counts['frames']} frames)", flush=True)
    finally:
        broker.terminate()
        broker.wait(5)
    base = statistics.median(results["baseline"])
    base_cpu = statistics.median(cpu["baseline"])
    print(f"\n{'set-up':>13} | median fps | min..max      | fps ratio | CPU ms/frame (median) | CPU ratio")
    for mode in modes:
        v, c = results[mode], cpu[mode]
        print(f"{mode:>13} | {statistics.median(v):10.1f} | {min(v):5.1f}..{max(v):5.1f} | "
              f"{statistics.median(v) / base:9.3f} | {statistics.median(c):21.2f} | "
              f"{statistics.median(c) / base_cpu:.3f}")


if __name__ == "__main__":
    main()
