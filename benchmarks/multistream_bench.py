"""Frames/s with 1, 2 and 4 concurrent streams in one process (the ``emostream run SRC1 SRC2 …`` path).

Everything is the product's own code path: GStreamer decoding in one reader thread per stream,
MediaPipe BlazeFace (short range) per frame, one batched ONNX Runtime call per step for all streams'
faces, ByteTrack + smoothing + events per stream, records serialised to JSON (into /dev/null). Files
are read as fast as the analyzer takes them (no real-time pacing); each stream is the same clip under
its own stream id, so every stream has the same work.

    nice -n 10 .venv/bin/python benchmarks/multistream_bench.py [--streams 1 2 4] [--frames 240]
        [--clip PATH] [--overlay]

Reports aggregate fps (all streams' frames / wall time) and per-stream fps (frames of one stream / wall
time), plus detector / inference ms per frame. On a small CPU box the detector dominates, so the
aggregate stays roughly flat and per-stream fps divides by the stream count; batching across streams
shows up as inference ms per frame falling with more streams.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from emostream.edge.faces import FaceDetector  # noqa: E402
from emostream.edge.multistream import run_streams  # noqa: E402
from emostream.edge.pipeline import FrameAnalyzer  # noqa: E402
from emostream.edge.timing import StageTimer  # noqa: E402
from emostream.engines.emotion import DEFAULT_MODEL, load_engine  # noqa: E402
from emostream.streams import open_source  # noqa: E402


def default_clip() -> Path:
    data = Path(os.environ.get("EMOSTREAM_DATA", REPO.parent / "shared" / "data"))
    return data / "video" / "WolfgangLanger_Pexels.mp4"


def bench(clip: str, n_streams: int, frames: int, overlay: bool, threads: int | None) -> dict:
    timer = StageTimer()
    analyzer = FrameAnalyzer(FaceDetector(), load_engine("onnxruntime", DEFAULT_MODEL, threads=threads), timer)
    sink = open(os.devnull, "w")  # noqa: SIM115 - closed below
    with tempfile.TemporaryDirectory() as tmp:
        overlays = [str(Path(tmp) / f"ov{i}.mp4") for i in range(n_streams)] if overlay else None
        sources = [open_source(clip, stream=f"s{i}") for i in range(n_streams)]
        start = time.perf_counter()
        results = run_streams(analyzer, sources, lambda r: sink.write(json.dumps(r) + "\n"),
                              overlays=overlays, max_frames=frames)
        wall = time.perf_counter() - start
    sink.close()
    analyzer.close()
    total = sum(r.frames for r in results)
    return {
        "streams": n_streams,
        "frames": total,
        "wall_s": wall,
        "aggregate_fps": total / wall,
        "per_stream_fps": [r.frames / wall for r in results],
        "detect_ms": timer.ms_per("detect", total),
        "infer_ms": timer.ms_per("infer", total),
        "infer_calls": timer.counts.get("infer", 0),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--frames", type=int, default=240, help="frames per stream (default 240; clip has 472)")
    ap.add_argument("--clip", default=str(default_clip()))
    ap.add_argument("--overlay", action="store_true", help="also encode an annotated mp4 per stream")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: runtime's)")
    args = ap.parse_args()
    if not Path(args.clip).is_file():
        print(f"multistream_bench: clip not found: {args.clip} (set EMOSTREAM_DATA)", file=sys.stderr)
        return 2
    rows = []
    for n in args.streams:
        print(f"  {n} stream(s)...", file=sys.stderr, flush=True)
        rows.append(bench(args.clip, n, args.frames, args.overlay, args.threads))
    print(f"\nclip {Path(args.clip).name}, {args.frames} frames/stream, cpus {os.cpu_count()}, "
          f"load avg {os.getloadavg()[0]:.1f}, overlay {'on' if args.overlay else 'off'}\n")
    print("| streams | frames | wall s | aggregate fps | per-stream fps | detect ms/frame | infer ms/frame "
          "| infer calls |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        per = " / ".join(f"{v:.1f}" for v in r["per_stream_fps"])
        print(f"| {r['streams']} | {r['frames']} | {r['wall_s']:.1f} | {r['aggregate_fps']:.1f} | {per} | "
              f"{r['detect_ms']:.1f} | {r['infer_ms']:.2f} | {r['infer_calls']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
