"""Frames/s with 1, 2 and 4 concurrent streams in one process (the ``emostream run SRC1 SRC2 …`` path).

Everything is the product's own code path: GStreamer decoding in one reader thread per stream,
BlazeFace (the default detector: full range on the TFLite interpreter) on a front thread, one batched
ONNX Runtime call per step for all streams' faces, ByteTrack + smoothing + events per stream, records
serialised to JSON (into /dev/null). Files are read as fast as the analyzer takes them (no real-time
pacing); each stream is the same clip under its own stream id, so every stream has the same work.

    nice -n 10 .venv/bin/python benchmarks/multistream_bench.py [--streams 1 2 4] [--frames 240]
        [--clip PATH] [--overlay] [--sequential] [--detect-interval N] [--front thread process]

Reports aggregate fps (all streams' frames / wall time) and per-stream fps (frames of one stream / wall
time), detector / inference ms per frame, whether any frame was lost, and whether each stream's
records mean the same as the 1-stream run's (box to 1 px, label, track, smoothed label).
``--sequential`` adds rows with the detection half on the main thread (no overlap), the baseline.
``--front thread process`` adds rows where each stream decodes, detects and aligns in a process of its own
(``emostream run --front process``, :mod:`edge.front_process`); its start-up is not timed, as for files.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from emostream.edge.faces import FaceDetector  # noqa: E402
from emostream.edge.front_process import FRONTS, FrontSpec, open_process_sources  # noqa: E402
from emostream.edge.multistream import run_streams  # noqa: E402
from emostream.edge.pipeline import FrameAnalyzer  # noqa: E402
from emostream.edge.timing import StageTimer  # noqa: E402
from emostream.engines.emotion import DEFAULT_MODEL, load_engine  # noqa: E402
from emostream.streams import open_source  # noqa: E402


def default_clip() -> Path:
    data = Path(os.environ.get("EMOSTREAM_DATA", REPO.parent / "shared" / "data"))
    return data / "video" / "WolfgangLanger_Pexels.mp4"


def bench(clip: str, n_streams: int, frames: int, overlay: bool, threads: int | None, overlap: bool = True,
          interval: int = 1, front: str = "thread") -> dict:
    timer = StageTimer()
    analyzer = FrameAnalyzer(FaceDetector(), load_engine("onnxruntime", DEFAULT_MODEL, threads=threads), timer,
                             detect_interval=interval)
    sink = open(os.devnull, "w")  # noqa: SIM115 - closed below
    meanings: dict[str, list] = {f"s{i}": [] for i in range(n_streams)}

    def write(rec: dict) -> None:
        sink.write(json.dumps(rec) + "\n")
        if rec.get("type") == "frame":
            meanings[rec["stream"]].append((rec["frame"], tuple(
                (tuple(round(v) for v in f["box"]), f["label"], f["track"], f["smoothed_label"])
                for f in rec["faces"])))

    with tempfile.TemporaryDirectory() as tmp:
        overlays = [str(Path(tmp) / f"ov{i}.mp4") for i in range(n_streams)] if overlay else None
        if front == "process":
            sources = open_process_sources([(clip, f"s{i}") for i in range(n_streams)], FrontSpec.of(analyzer))
        else:
            sources = [open_source(clip, stream=f"s{i}") for i in range(n_streams)]
        start = time.perf_counter()
        results = run_streams(analyzer, sources, write, overlays=overlays, max_frames=frames, overlap=overlap)
        wall = time.perf_counter() - start
    sink.close()
    analyzer.close()
    total = sum(r.frames for r in results)
    return {
        "streams": n_streams,
        "overlap": overlap,
        "front": front,
        "meanings": meanings,
        "complete": all(m and [f for f, _ in m] == list(range(len(m))) and len(m) == min(frames, r.frames)
                        for m, r in zip(meanings.values(), results)),
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
    ap.add_argument("--sequential", action="store_true", help="also run without the overlapped front thread")
    ap.add_argument("--detect-interval", type=int, default=5,
                    help="full detection every N frames (default 5, as `emostream run`)")
    ap.add_argument("--rounds", type=int, default=1, help="repeat every configuration; median and range")
    ap.add_argument("--front", nargs="+", choices=FRONTS, default=["thread"],
                    help="where the front half runs: thread (default) and/or process (one per stream)")
    args = ap.parse_args()
    if not Path(args.clip).is_file():
        print(f"multistream_bench: clip not found: {args.clip} (set EMOSTREAM_DATA)", file=sys.stderr)
        return 2
    configs = [(front, overlap) for front in args.front
               for overlap in ((True, False) if args.sequential else (True,))]
    rows = []
    for rnd in range(args.rounds):  # rounds interleave the configurations: a load change hits them all
        for front, overlap in configs:
            for n in args.streams:
                print(f"  round {rnd + 1}: {n} stream(s), front {front}, overlap {overlap}...", file=sys.stderr,
                      flush=True)
                rows.append(bench(args.clip, n, args.frames, args.overlay, args.threads, overlap,
                                  args.detect_interval, front))
    alone = next((r["meanings"]["s0"] for r in rows if r["streams"] == 1 and r["overlap"]), None)
    print(f"\nclip {Path(args.clip).name}, {args.frames} frames/stream, {args.rounds} round(s), cpus "
          f"{os.cpu_count()}, load avg {os.getloadavg()[0]:.1f}, overlay {'on' if args.overlay else 'off'}, "
          f"detect interval {args.detect_interval}\n")
    print("| front | streams | overlap | frames | aggregate fps median (range) | vs 1 stream (thread) | "
          "per-stream fps | detect ms/frame | infer ms/frame | infer calls | all frames | same as alone |")
    print("|:--|---:|:--|---:|---:|---:|---:|---:|---:|---:|:--|:--|")
    # One reference for every row: the first configuration's smallest stream count (the thread front,
    # overlapped, when it is run), so rows of both fronts compare against the same figure.
    ref_front, ref_overlap = configs[0]
    one = statistics.median(x["aggregate_fps"] for x in rows if x["streams"] == min(args.streams)
                            and x["overlap"] == ref_overlap and x["front"] == ref_front)
    for front, overlap in configs:
        for n in args.streams:
            rs = [r for r in rows if r["streams"] == n and r["overlap"] == overlap and r["front"] == front]
            agg = [r["aggregate_fps"] for r in rs]
            med = statistics.median(agg)
            same = "n/a" if alone is None else "yes" if all(
                m == alone for r in rs for m in r["meanings"].values()) else "NO"
            print(f"| {front} | {n} | {'yes' if overlap else 'no'} | {rs[0]['frames']} | "
                  f"{med:.1f} ({min(agg):.1f}-{max(agg):.1f}) | {med / one:.2f}x | {med / n:.1f} | "
                  f"{statistics.median(r['detect_ms'] for r in rs):.1f} | "
                  f"{statistics.median(r['infer_ms'] for r in rs):.2f} | {rs[0]['infer_calls']} | "
                  f"{'yes' if all(r['complete'] for r in rs) else 'NO'} | {same} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
