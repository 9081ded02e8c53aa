"""What the fitted gate does with a real second opinion: ``fit-gate``'s numbers on all of FER2013 val.

No VLM can run here, so the "VLM" is a stand-in with real, partly independent errors: the v0 network (fer's
mini-Xception, 0.58 on val) answering one label per face, as a VLM answers one expression. Beside it a simulated
VLM (the true label on 75 % of faces, else a random one) shows the gain from a better opinion, and a useless one
(a random label) the shrinkage at work. The edge network is the shipped student (0.665).
For each of ``--seeds`` stratified half splits: held-out accuracy / macro-F1 of network, opinion, fixed weighting
and fitted gate (the code path of ``emostream fit-gate``: ``calibration.fusion.gate_report``).

    .venv/bin/python benchmarks/gate_bench.py [--seeds 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "fer2013" / "val")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from emostream.calibration.fusion import gate_report
    from emostream.datasets import load_labelled_images
    from emostream.engines.emotion import load_engine
    from emostream.training.instructions import read_face

    t0 = time.perf_counter()
    found = load_labelled_images(args.data)
    student = load_engine("onnxruntime", "student", threads=args.threads)
    v0 = load_engine("onnxruntime", "v0", threads=args.threads)
    labels = tuple(student.labels)
    crops = np.stack([read_face(f, student.input_size)[0] for f in found.files])
    truth = np.array([labels.index(label) for label in found.labels])
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    p_net = np.concatenate([student.run(crops[i : i + 256]) for i in range(0, len(crops), 256)])
    import cv2

    v0_crops = crops if v0.input_size == student.input_size else np.stack(
        [cv2.resize(c, (v0.input_size, v0.input_size)) for c in crops])
    p_v0 = np.concatenate([v0.run(v0_crops[i : i + 256]) for i in range(0, len(crops), 256)])
    v0_idx = np.array([labels.index(v0.labels[k]) for k in p_v0.argmax(1)])
    t_infer = time.perf_counter() - t0
    print(f"{len(truth)} faces; load {t_load * 1000:.0f} ms, both networks {t_infer * 1000:.0f} ms")
    rng = np.random.default_rng(0)
    # A simulated better-than-network VLM (right on 75 % of faces, else a random label): synthetic answers on real
    # network probabilities, to show the gate's gain when the second opinion is worth something.
    right = rng.random(len(truth)) < 0.75
    simulated = np.where(right, truth, rng.integers(0, len(labels), len(truth)))
    opinions = {"v0 (0.58)": v0_idx, "simulated 75% VLM": simulated,
                "random label": rng.integers(0, len(labels), len(truth))}
    for name, idx in opinions.items():
        rows: dict[str, list[float]] = {}
        fit_ms, l2s = [], []
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            _, report = gate_report(labels, idx, p_net, truth, seed=seed)
            fit_ms.append((time.perf_counter() - t0) * 1000)
            l2s.append(report["l2"])
            for k, v in report["held_out_scores"].items():
                rows.setdefault(f"{k} acc", []).append(v["accuracy"])
                rows.setdefault(f"{k} F1", []).append(v["macro_f1"])
        print(f"\nopinion: {name}; {args.seeds} splits of {report['fit']} fit / {report['held_out']} held out; "
              f"fit {np.median(fit_ms):.0f} ms (median); chosen l2 {sorted(set(l2s))}")
        base = np.array(rows["network acc"])
        for k, v in rows.items():
            v = np.array(v)
            extra = f"  vs network {np.mean(v - base):+.4f} [{np.min(v - base):+.4f}, {np.max(v - base):+.4f}]" \
                if k.endswith("acc") else ""
            print(f"  {k:16s} {v.mean():.4f} (min {v.min():.4f}, max {v.max():.4f}){extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
