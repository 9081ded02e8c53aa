"""The README's "Performance" table: every edge configuration side by side, in one process, several rounds.

Each round runs, on the same clip, back to back: GStreamer decode-only (the ceiling), the landed main's
configuration (short-range BlazeFace through MediaPipe's Tasks graph, stages one after another), full range on
the TFLite interpreter with detection on every frame (sequential and overlapped), and the detection interval:
N=5 with faces carried by a short-range region pass, and by optical flow at N=5 (the default of ``emostream
run``) and N=8; the default once more with GStreamer converting every frame to RGB (as sources delivered
frames before they stayed I420, :mod:`emostream.streams.frame`); and both decode-only baselines: frames as
delivered (I420) and converted to RGB by GStreamer. Rounds interleave the configurations so a load change on
a shared machine hits all of them; the table gives the median and the range over the rounds. What each
configuration changes for users is measured against full range with detection on every frame: frames with
exactly one face, and the per-face label agreement where both found a face. The same agreement for crops
shifted at random by up to 1 px (``--jitter``) gives the noise floor: how much the label moves when nothing
but the crop does.

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

#: (name, detector model, detector runtime, overlap, detect interval, interval tracker, RGB frames from GStreamer)
CONFIGS = [
    ("main: short/mediapipe, sequential", "short", "mediapipe", False, 1, "flow", True),
    ("full/litert, every frame, sequential", "full", "litert", False, 1, "flow", False),
    ("full/litert, every frame, overlapped", "full", "litert", True, 1, "flow", False),
    ("interval 5, region, overlapped", "full", "litert", True, 5, "region", False),
    ("interval 5, flow, overlapped, RGB frames", "full", "litert", True, 5, "flow", True),
    ("default: interval 5, flow, overlapped", "full", "litert", True, 5, "flow", False),
    ("interval 8, flow, overlapped", "full", "litert", True, 8, "flow", False),
]
REFERENCE = "full/litert, every frame, overlapped"
DEFAULT = "default: interval 5, flow, overlapped"


def default_clip() -> Path:
    data = Path(os.environ.get("EMOSTREAM_DATA", REPO.parent / "shared" / "data"))
    return data / "video" / "WolfgangLanger_Pexels.mp4"


def jitter_agreement(clip: str, engine, shift: float, seed: int = 0) -> float:
    """Label agreement between each one-face frame's crop and the same crop shifted by up to ``shift`` px."""
    import numpy as np

    from emostream.edge.faces import Faces, align_faces
    from emostream.streams import open_source

    rng = np.random.default_rng(seed)
    det = FaceDetector("full", runtime="litert")
    same = total = 0
    with open_source(clip) as src:
        for frame in src:
            faces = det.detect(frame.image)
            if len(faces) != 1:
                continue
            off = rng.uniform(-shift, shift, 2).astype(np.float32)
            moved = Faces(faces.boxes + np.r_[off, 0, 0].astype(np.float32), faces.scores, faces.keypoints + off)
            size = engine.input_size
            a = engine.run(align_faces(frame.image, faces, size)).argmax(1)
            b = engine.run(align_faces(frame.image, moved, size)).argmax(1)
            same += int(a[0] == b[0])
            total += 1
    det.close()
    return same / max(1, total)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clip", default=str(default_clip()))
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: runtime's)")
    ap.add_argument("--jitter", action="store_true", help="also measure the 1-px / 2-px crop-shift noise floor")
    args = ap.parse_args()
    if not Path(args.clip).is_file():
        print(f"edge_bench: clip not found: {args.clip} (set EMOSTREAM_DATA)", file=sys.stderr)
        return 2
    engine = load_engine("onnxruntime", DEFAULT_MODEL, threads=args.threads)
    detectors = {(m, rt): FaceDetector(m, runtime=rt) for _, m, rt, *_ in CONFIGS}
    fps: dict[str, list[float]] = {name: [] for name, *_ in CONFIGS}
    stage_ms: dict[str, dict[str, float]] = {}
    decode: list[float] = []
    decode_rgb: list[float] = []
    runs: dict[str, dict] = {}
    sample = []
    for rnd in range(args.rounds):
        n, t, sample = _decode_only(args.clip, None)
        decode.append(n / t)
        n, t, _ = _decode_only(args.clip, None, rgb=True)
        decode_rgb.append(n / t)
        for name, model, runtime, overlap, interval, tracker, rgb in CONFIGS:
            print(f"  round {rnd + 1}: {name}", file=sys.stderr, flush=True)
            analyzer = FrameAnalyzer(detectors[(model, runtime)], engine)
            analyzer.interval = IntervalDetector(analyzer.detector, interval, tracker)
            for k, image in enumerate(sample[:5]):
                analyzer.analyze(Frame(image, k, 0, "warmup"))
            r = _run_once(analyzer, args.clip, None, overlap, rgb=rgb)
            analyzer.interval.close()
            fps[name].append(r["fps"])
            stage_ms[name] = r["ms_per_frame"]
            runs[name] = r
    haar = _haar_ms(sample)
    ref = runs[REFERENCE]
    dec = statistics.median(decode)
    dec_rgb = statistics.median(decode_rgb)
    height, width = sample[0].shape[:2]
    print(f"\nclip {Path(args.clip).name} ({ref['frames']} frames, {width}x{height}), {args.rounds} rounds, "
          f"{os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f}; ONNX Runtime threads "
          f"{args.threads or 'default'}")
    print(f"decode only (I420 as delivered): median {dec:.0f} frames/s (range {min(decode):.0f}-{max(decode):.0f}); "
          f"decode to RGB (GStreamer converts): median {dec_rgb:.0f} ({min(decode_rgb):.0f}-{max(decode_rgb):.0f}); "
          f"Haar cascade (fer's detector) {haar:.1f} ms/frame\n")
    print("| configuration | frames/s median (range) | / decode-only (I420) | / decode to RGB | vs main "
          "| detect / align / infer ms/frame | frames with one face | label (smoothed) agreement vs every frame |")
    print("|:--|---:|---:|---:|---:|---:|---:|---:|")
    base = statistics.median(fps[CONFIGS[0][0]])
    for name, *_ in CONFIGS:
        med = statistics.median(fps[name])
        ms = stage_ms[name]
        agr = _agreement(ref["meanings"], runs[name]["meanings"])
        print(f"| {name} | {med:.0f} ({min(fps[name]):.0f}-{max(fps[name]):.0f}) | {med / dec:.2f} | "
              f"{med / dec_rgb:.2f} | "
              f"{med / base:.2f}x | {ms['detect']:.2f} / {ms['align']:.2f} / {ms['infer']:.2f} | "
              f"{runs[name]['frames_one_face']}/{runs[name]['frames']} | {agr['label_agreement']:.1%} "
              f"({agr['smoothed_label_agreement']:.1%}) |")
    if args.jitter:
        print(f"\nnoise floor: crops shifted at random by up to 1 px / 2 px change the per-frame label on "
              f"{1 - jitter_agreement(args.clip, engine, 1.0):.1%} / {1 - jitter_agreement(args.clip, engine, 2.0):.1%}"
              " of faces (full range, every frame)")
    best = max(statistics.median(v) for v in fps.values())
    print(f"\nHaar detection alone costs {haar:.1f} ms/frame: the default pipeline end to end is "
          f"{haar * statistics.median(fps[DEFAULT]) / 1000:.1f}x cheaper, the fastest row "
          f"{haar * best / 1000:.1f}x")
    for d in detectors.values():
        d.close()
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
