"""The emotion network on a GPU: faces/s at batch 1 / 32 / 256, torch CUDA (FP16 and FP32) and ONNX Runtime's
CUDA provider where installed -- the figures issue 11 asks for when a session is lent a GPU.

Why a script and not a test: CI has no GPU, and a speed figure is a measurement, not an assertion. It runs in
one short device call (~30 s) and writes JSON for the README; ``--device cpu`` rehearses it here.

    .venv/bin/python benchmarks/gpu_engine_bench.py [--models student v0] [--batches 1 32 256]
        [--device auto|cuda|cpu] [--seconds 2] [--json OUT.json]

Each row: the model, the runtime and precision, the batch, the median milliseconds per batch over ``--seconds``
of timed calls (after warm-up, with ``torch.cuda.synchronize``: the GPU's time, not the launch's) and
faces/s. Inputs are real FER2013 val faces when ``../shared/data`` is there, random pixels otherwise (speed does
not depend on them).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from emostream.engines.emotion import load_model_info
from emostream.engines.emotion.archs import build_arch

REPO = Path(__file__).resolve().parents[1]


@functools.cache
def _val(size: int) -> np.ndarray:
    """FER2013 val at ``size`` px, read once per run (every row and model reuses it); noise without the data."""
    root = Path(os.environ.get("EMOSTREAM_DATA", REPO.parent / "shared" / "data")) / "fer2013"
    try:
        from emostream.training.data import load_fer_cached

        return load_fer_cached(root, "val", size=size).images
    except Exception:  # noqa: BLE001 - no data here: speed does not depend on the pixels
        return np.random.default_rng(0).integers(0, 256, (256, size, size), dtype=np.uint8)


def faces(n: int, size: int) -> np.ndarray:
    """``n`` uint8 faces of ``size`` pixels: FER2013 val when present (repeated as needed), else noise."""
    return np.resize(_val(size), (n, size, size))


def timed(call, sync, seconds: float) -> float:
    """Median ms per call over ``seconds`` of calls, after a warm-up of a tenth of that."""
    end = time.perf_counter() + seconds / 10
    while time.perf_counter() < end:
        call()
    sync()
    ms: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(ms) < 5:
        t = time.perf_counter()
        call()
        sync()
        ms.append(1000 * (time.perf_counter() - t))
    return statistics.median(ms)


def torch_rows(name: str, device: str, batches: list[int], seconds: float) -> list[dict]:
    import torch

    info = load_model_info(name)
    net = build_arch(info.arch, info.arch_kwargs)
    net.load_state_dict(torch.load(info.torch_state, map_location="cpu", weights_only=True))
    net.eval().to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    rows = []
    for half in ([True, False] if device.startswith("cuda") else [False]):
        model = net.half() if half else net.float()
        for b in batches:
            x = torch.from_numpy(faces(b, info.input_size)).to(device).unsqueeze(1)
            x = ((x.float() / 255 - info.mean) * info.scale).to(torch.float16 if half else torch.float32)

            def call(model=model, x=x) -> None:
                with torch.inference_mode():
                    model(x)

            ms = timed(call, sync, seconds)
            rows.append({"model": name, "runtime": f"torch {device}", "precision": "fp16" if half else "fp32",
                         "batch": b, "ms_per_batch": round(ms, 4), "faces_per_s": round(1000 * b / ms)})
    return rows


def ort_rows(name: str, batches: list[int], seconds: float, provider: str) -> list[dict]:
    import onnxruntime as ort

    if provider not in ort.get_available_providers():
        return []
    info = load_model_info(name)
    sess = ort.InferenceSession(str(info.onnx_path), providers=[provider])
    inp = sess.get_inputs()[0].name
    rows = []
    for b in batches:
        x = ((faces(b, info.input_size)[:, None].astype(np.float32) / 255 - info.mean) * info.scale).astype(np.float32)
        ms = timed(lambda x=x: sess.run(None, {inp: x}), lambda: None, seconds)  # run() returns host arrays: synced
        rows.append({"model": name, "runtime": f"onnxruntime {provider}", "precision": "fp32", "batch": b,
                     "ms_per_batch": round(ms, 4), "faces_per_s": round(1000 * b / ms)})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["student"])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32, 256])
    ap.add_argument("--device", default="auto", help="auto (cuda when present), cuda[:N] or cpu (a rehearsal)")
    ap.add_argument("--seconds", type=float, default=2.0, help="timed calls per row (default 2)")
    ap.add_argument("--json", default=None, help="also write the rows and the device's name here")
    args = ap.parse_args()
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_engine_bench: no CUDA device visible to torch (use --device cpu to rehearse)", file=sys.stderr)
        return 2
    where = torch.cuda.get_device_name(device) if device.startswith("cuda") else f"CPU ({os.cpu_count()} cores)"
    rows: list[dict] = []
    for name in args.models:
        rows += torch_rows(name, device, args.batches, args.seconds)
        if device.startswith("cuda"):
            rows += ort_rows(name, args.batches, args.seconds, "CUDAExecutionProvider")
    print(f"device: {where}; torch {torch.__version__}\n")
    print("| model | runtime | precision | batch | ms per batch | faces/s |")
    print("|---|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['runtime']} | {r['precision']} | {r['batch']} | {r['ms_per_batch']:.3f} | "
              f"{r['faces_per_s']:,} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": where, "torch": torch.__version__, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
