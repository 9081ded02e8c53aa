"""How the emotion models hold up when the face is not a clean FER2013 crop: blur, JPEG, low resolution,
noise, dim or flat light, a small rotation.

    .venv/bin/python benchmarks/robustness.py [--models v0 student] [--json FILE]

Users point cameras at people under other light and at other distances than FER2013's web photos, and
no labelled data of that kind is available here. What *can* be measured is how much accuracy each model
loses on FER2013 val (PublicTest, never trained on) when the same faces are degraded the way a camera
degrades them. Every degradation is deterministic (seeded noise), applied to the 48x48 uint8 crops, and
the models run through the engine the edge uses (ONNX Runtime, CPU). A model with another input size gets
the degraded crop resized, as ``compare_models.py`` does.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark's helpers

from compare_models import resize_all  # noqa: E402

from emostream.engines.emotion import EmotionModelInfo, load_engine, load_model_info  # noqa: E402
from emostream.training.data import load_fer_cached  # noqa: E402
from emostream.training.loop import macro_f1  # noqa: E402


def _jpeg(q: int) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    def f(im: np.ndarray, _rng: np.random.Generator) -> np.ndarray:
        ok, buf = cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, q])
        return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return f


def _lowres(side: int) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    def f(im: np.ndarray, _rng: np.random.Generator) -> np.ndarray:
        small = cv2.resize(im, (side, side), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, im.shape[::-1], interpolation=cv2.INTER_LINEAR)
    return f


def _noise(sigma: float) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    def f(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.clip(im + rng.normal(0, sigma, im.shape), 0, 255).astype(np.uint8)
    return f


def _light(gain: float, offset: float, contrast: float = 1.0) -> Callable[[np.ndarray, np.random.Generator],
                                                                        np.ndarray]:
    def f(im: np.ndarray, _rng: np.random.Generator) -> np.ndarray:
        x = im.astype(np.float32)
        x = (x - x.mean()) * contrast + x.mean()
        return np.clip(x * gain + offset, 0, 255).astype(np.uint8)
    return f


def _rotate(deg: float) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    def f(im: np.ndarray, _rng: np.random.Generator) -> np.ndarray:
        h, w = im.shape
        m = cv2.getRotationMatrix2D((w / 2, h / 2), deg, 1.0)
        return cv2.warpAffine(im, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return f


#: name -> per-image degradation. Sized like what an edge camera does to a face: a 1-2 px blur (focus,
#: motion), heavy stream compression, a face 16-24 px across, sensor noise at night, dim or flat light.
DEGRADATIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "clean": lambda im, _rng: im,
    "blur sigma 1": lambda im, _rng: cv2.GaussianBlur(im, (0, 0), 1.0),
    "blur sigma 2": lambda im, _rng: cv2.GaussianBlur(im, (0, 0), 2.0),
    "jpeg q20": _jpeg(20),
    "jpeg q10": _jpeg(10),
    "low-res 24 px": _lowres(24),
    "low-res 16 px": _lowres(16),
    "noise sigma 10": _noise(10.0),
    "noise sigma 20": _noise(20.0),
    "dim (x0.4)": _light(0.4, 0.0),
    "flat (contrast x0.5)": _light(1.0, 0.0, 0.5),
    "rotated 20 deg": _rotate(20.0),
}


def degrade(images: np.ndarray, name: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    f = DEGRADATIONS[name]
    return np.stack([f(im, rng) for im in images]).astype(np.uint8)


def accuracy(info: EmotionModelInfo, images: np.ndarray, labels: np.ndarray, names: tuple[str, ...],
             threads: int) -> tuple[float, float]:
    engine = load_engine("onnxruntime", info, threads=threads)
    crops = resize_all(images, info.input_size)
    probs = np.concatenate([engine.run(crops[i:i + 256]) for i in range(0, len(crops), 256)])
    engine.close()
    pred = probs[:, [engine.labels.index(n) for n in names]].argmax(1)
    return float(np.mean(pred == labels)), macro_f1(pred, labels, len(names))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["v0", "student"])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "fer2013")
    ap.add_argument("--cache", type=Path, default=REPO / ".cache")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    from emostream.datasets import DatasetError
    from emostream.engines.emotion import EngineError

    try:
        val = load_fer_cached(args.data, "val", 48, args.cache)
        infos = {m: load_model_info(m) for m in args.models}
    except (DatasetError, EngineError) as exc:  # missing data or an unknown model: one line, exit 2
        print(f"robustness: error: {exc}", file=sys.stderr)
        return 2
    results: dict[str, dict[str, list[float]]] = {}
    for name in DEGRADATIONS:
        images = degrade(val.images, name, args.seed)
        results[name] = {m: list(accuracy(infos[m], images, val.labels, val.names, args.threads))
                         for m in args.models}
        print(f"{name}: " + ", ".join(f"{m} {a:.4f}" for m, (a, _) in results[name].items()), file=sys.stderr)
    clean = results["clean"]
    print("| degradation | " + " | ".join(f"{m} accuracy (Δ vs clean)" for m in args.models) + " |")
    print("|---|" + "---:|" * len(args.models))
    for name, row in results.items():
        cells = [f"{row[m][0]:.4f}" + ("" if name == "clean" else f" ({row[m][0] - clean[m][0]:+.4f})")
                 for m in args.models]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\nFER2013 val (PublicTest, {len(val.labels):,} faces), each degradation applied to the 48x48 crop "
          f"(seed {args.seed}); ONNX Runtime CPU, {args.threads} threads.")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
