"""Does an INT8 model agree with its FP32 original on other CPUs than this one?

ONNX Runtime picks its INT8 kernels by CPU feature (AVX2, AVX-512, AVX-512 VNNI, ...), and one of them
(u8 x s8 through ``vpmaddubsw`` on CPUs without VNNI) saturates when weights use their full int8 range.
A test can only check the CPU it runs on, so this script re-runs the same check under ``qemu-x86_64
-cpu MODEL`` (Debian's ``qemu-user``), which emulates an older CPU's instruction set on any x86 host:
ORT then really dispatches to that CPU's kernels. Emulation is slow (minutes per CPU), and it says
nothing about speed, only about numbers.

    .venv/bin/python benchmarks/int8_cpus.py [--faces 1000] [--cpus Haswell Skylake-Server Cascadelake-Server]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: qemu CPU model -> what it stands for.
CPUS = {
    "Haswell": "AVX2, no AVX-512, no VNNI (like AVX2-only AMD EPYC)",
    "Skylake-Server": "AVX-512, no VNNI",
    "Cascadelake-Server": "AVX-512 VNNI",
}


def _worker(faces: int, fp32: str, int8: str) -> None:
    from emostream.engines.emotion import load_engine
    from emostream.training.data import load_fer_cached

    val = load_fer_cached(REPO.parent / "shared" / "data" / "fer2013", "val", cache_dir=REPO / ".cache")
    idx = np.linspace(0, len(val) - 1, min(faces, len(val))).astype(int)
    preds = []
    for name in (fp32, int8):
        eng = load_engine("onnxruntime", name, threads=1)
        order = [eng.labels.index(n) for n in val.names]
        probs = np.concatenate([eng.run(val.images[idx[i:i + 256]]) for i in range(0, len(idx), 256)])
        preds.append(probs[:, order].argmax(1))
        eng.close()
    y = val.labels[idx]
    print(f"{np.mean(preds[0] == y):.4f} {np.mean(preds[1] == y):.4f} {np.mean(preds[0] == preds[1]):.4f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", type=int, default=1000, help="FER2013 val faces, evenly spaced (default 1000)")
    ap.add_argument("--fp32", default="student")
    ap.add_argument("--int8", default="student-int8")
    ap.add_argument("--cpus", nargs="+", default=list(CPUS), help="qemu -cpu models (default: %(default)s)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _worker(args.faces, args.fp32, args.int8)
        return 0
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        print("int8_cpus: qemu-x86_64 not found (apt-get install qemu-user)", file=sys.stderr)
        return 2
    me = [sys.executable, __file__, "--worker", "--faces", str(args.faces), "--fp32", args.fp32,
          "--int8", args.int8]
    print(f"{args.int8} vs {args.fp32}, {args.faces} FER2013 val faces")
    print("| CPU (qemu model) | features | FP32 acc | INT8 acc | top-1 agreement |")
    print("|---|---|---|---|---|")
    for cpu in ["host", *args.cpus]:
        cmd = me if cpu == "host" else [qemu, "-cpu", cpu, *me]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"| {cpu} | failed: {proc.stderr.strip().splitlines()[-1:]} | | | |")
            continue
        acc32, acc8, agree = proc.stdout.split()
        print(f"| {cpu} | {CPUS.get(cpu, 'this machine, native')} | {acc32} | {acc8} | {agree} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
