"""The README's "Performance" table: every edge configuration side by side, in one process, several rounds.

Each round runs, on the same clip, back to back: GStreamer decode-only (the ceiling), the landed main's
configuration (short-range BlazeFace through MediaPipe's Tasks graph, stages one after another), the new
default (full range on the TFLite interpreter) sequential and overlapped, and the detection interval
at 2 and 4. Rounds interleave the configurations so a load change on a shared machine hits all of them;
the table gives the median and the range over the rounds. What each configuration changes for users is
measured against the new default with detection on every frame: frames with exactly one face, and the
per-face label agreement where both found a face.

    nice -n 10 .venv/bin/python benchmarks/edge_bench.py [--rounds 3] [--clip PATH] [--threads N]

Everything runs the product's loop (:func:`emostream.edge.multistream.run_streams`, records serialised
to /dev/null), through ``emostream.edge.commands.bench``'s helpers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from emostream.edge.commands.bench import _agreement, _decode_only, _haar_ms, _run_once  # noqa: E402
from emostream.edge.faces import FaceDetector  # noqa: E402
from emostream.edge.interval import IntervalDetector  # noqa: E402
from emostream.edge.pipeline import FrameAnalyzer  # noqa: E402
from emostream.engines.emotion import DEFAULT_MODEL, load_engine  # noqa: E402
from emostream.streams import Frame  # noqa: E402

#: (name, detector model, detector runtime, overlap, detect interval)
CONFIGS = [
    ("main: short/mediapipe, sequential", "short", "mediapipe", False, 1),
    ("short/litert, overlapped", "short", "litert", True, 1),
    ("default: full/litert, sequential", "full", "litert", False, 1),
    ("default: full/litert, overlapped", "full", "litert", True, 1),
    ("full/litert, overlapped, interval 2", "full", "litert", True, 2),
    ("full/litert, overlapped, interval 4", "full", "litert", True, 4),
]
REFERENCE = "default: full/litert, overlapped"


def default_clip() -> Path:
    data = Path(os.environ.get("EMOSTREAM_DATA", REPO.parent / "shared" / "data"))
    return data / "video" / "WolfgangLanger_Pexels.mp4"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clip", default=str(default_clip()))
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: runtime's)")
    args = ap.parse_args()
    if not Path(args.clip).is_file():
        print(f"edge_bench: clip not found: {args.clip} (set EMOSTREAM_DATA)", file=sys.stderr)
        return 2
    engine = load_engine("onnxruntime", DEFAULT_MODEL, threads=args.threads)
    detectors = {(m, rt): FaceDetector(m, runtime=rt) for _, m, rt, _, _ in CONFIGS}
    fps: dict[str, list[float]] = {name: [] for name, *_ in CONFIGS}
    stage_ms: dict[str, dict[str, float]] = {}
    decode: list[float] = []
    runs: dict[str, dict] = {}
    sample = []
    for rnd in range(args.rounds):
        n, t, sample = _decode_only(args.clip, None)
        decode.append(n / t)
        for name, model, runtime, overlap, interval in CONFIGS:
            print(f"  round {rnd + 1}: {name}", file=sys.stderr, flush=True)
            analyzer = FrameAnalyzer(detectors[(model, runtime)], engine)
            analyzer.interval = IntervalDetector(analyzer.detector, interval)
            for k, image in enumerate(sample[:5]):
                analyzer.analyze(Frame(image, k, 0, "warmup"))
            r = _run_once(analyzer, args.clip, None, overlap)
            analyzer.interval.close()
            fps[name].append(r["fps"])
            stage_ms[name] = r["ms_per_frame"]
            runs[name] = r
    haar = _haar_ms(sample)
    ref = runs[REFERENCE]
    dec = statistics.median(decode)
    print(f"\nclip {Path(args.clip).name} ({ref['frames']} frames, 640x360), {args.rounds} rounds, "
          f"{os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f}; ONNX Runtime threads "
          f"{args.threads or 'default'}")
    print(f"decode only: median {dec:.0f} frames/s (range {min(decode):.0f}-{max(decode):.0f}); "
          f"Haar cascade (fer's detector) {haar:.1f} ms/frame\n")
    print("| configuration | frames/s median (range) | / decode-only | vs main | detect / align / infer ms/frame "
          "| frames with one face | label agreement vs default |")
    print("|:--|---:|---:|---:|---:|---:|---:|")
    base = statistics.median(fps[CONFIGS[0][0]])
    for name, *_ in CONFIGS:
        med = statistics.median(fps[name])
        ms = stage_ms[name]
        agr = _agreement(ref["meanings"], runs[name]["meanings"])["label_agreement"]
        print(f"| {name} | {med:.0f} ({min(fps[name]):.0f}-{max(fps[name]):.0f}) | {med / dec:.2f} | "
              f"{med / base:.2f}x | {ms['detect']:.2f} / {ms['align']:.2f} / {ms['infer']:.2f} | "
              f"{runs[name]['frames_one_face']}/{runs[name]['frames']} | {agr:.1%} |")
    best = max(statistics.median(v) for v in fps.values())
    print(f"\nHaar detection alone costs {haar:.1f} ms/frame: the default overlapped pipeline end to end is "
          f"{haar * statistics.median(fps[REFERENCE]) / 1000:.1f}x cheaper, the fastest row "
          f"{haar * best / 1000:.1f}x")
    for d in detectors.values():
        d.close()
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
