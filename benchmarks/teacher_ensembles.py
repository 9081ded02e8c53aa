"""Which checkpoints make the best KD target: val accuracy of each, and of every combination, with and without
their mirror images (``distill --teacher-flip``, ``teacher-views --teacher-flip``).

Why: an ensemble teaches only what its members disagree on. Students of one lineage average to barely more than
the best of them (README: 0.6654 and 0.6682 gave 0.6734, 0.681 mirrored), while a different architecture or seed
adds more. This prints the table to choose from (val is the project's model-selection split; the targets are
measured, never trained on it).

    .venv/bin/python benchmarks/teacher_ensembles.py runs/a/best.pt runs/b/best.pt student [--max-size 4]
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path

import numpy as np
import torch

from emostream.training.data import load_fer_data
from emostream.training.loop import normalize
from emostream.training.teachers import load_teacher

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("teachers", nargs="+", help="checkpoints (best.pt) or registered model names")
    ap.add_argument("--max-size", type=int, default=4, help="largest combination to try (default 4)")
    ap.add_argument("--top", type=int, default=15, help="combinations to print, best first (default 15)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", default=str(Path(os.environ.get("EMOSTREAM_DATA", REPO.parent / "shared" / "data"))
                                          / "fer2013"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    val = load_fer_data(args.data, "val", cache_dir=REPO / ".cache")
    x = normalize(val.images, 0.5, 4.0)
    logits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for spec in args.teachers:
        net = load_teacher(spec, val.names).eval()
        with torch.no_grad():
            plain = torch.cat([net(x[i:i + 512]) for i in range(0, len(x), 512)]).float().numpy()
            mirror = torch.cat([net(x[i:i + 512].flip(-1)) for i in range(0, len(x), 512)]).float().numpy()
        logits[spec] = (plain, mirror)

    def acc(z: np.ndarray) -> float:
        return float(np.mean(z.argmax(1) == val.labels))

    rows = []
    for k in range(1, min(args.max_size, len(args.teachers)) + 1):
        for combo in itertools.combinations(args.teachers, k):
            plain = sum(logits[c][0] for c in combo) / k
            both = sum(logits[c][0] + logits[c][1] for c in combo) / (2 * k)
            rows.append((acc(both), acc(plain), combo))
    print(f"{len(val):,} FER2013 val faces; mean logits of the members (and of their mirrors)\n")
    print("| members | accuracy | with mirrors |")
    print("|---|---:|---:|")
    singles = [r for r in rows if len(r[2]) == 1]
    for both, plain, combo in singles + sorted((r for r in rows if len(r[2]) > 1), reverse=True)[: args.top]:
        print(f"| {' + '.join(combo)} | {plain:.4f} | {both:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
