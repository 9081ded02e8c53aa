"""``emostream calibrate``: turn a training checkpoint into a shipped, calibrated edge model.

One command does every step after training, so the shipped files are reproducible from a checkpoint:

1. export FP32 ONNX (checked against torch) and the torch state dict;
2. fit temperature scaling on FER2013 val (NLL), report ECE before/after (plus a 2-fold cross-fit on val
   so the "after" number is not only in-sample);
3. ONNX Runtime static INT8 (QDQ) with a class-stratified calibration sample from *train*;
4. evaluate FP32 and INT8 through the engine interface (the same code path the edge uses) and write the
   JSON cards, a metrics report and the markdown model card.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FER = REPO.parent / "shared" / "data" / "fer2013"
MODELS_DIR = REPO / "engines" / "models"


def register(subparsers: argparse._SubParsersAction) -> None:
    """``emostream calibrate`` (named in ``edge/cli.py``'s table; training no longer registers it, so the
    two offline layers import each other in one direction only: calibration -> training)."""
    add_calibrate_parser(subparsers)


def add_calibrate_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "calibrate", help="export a checkpoint to ONNX, fit temperature on val, quantize to INT8 (QDQ)")
    p.add_argument("checkpoint", type=Path,
                   help="best.pt from `emostream distill` / `train teacher`, or a registered model (student)")
    p.add_argument("--name", default="student", help="file stem in --models-dir (default student)")
    p.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    p.add_argument("--data", type=Path, default=DEFAULT_FER, help="FER2013 folder (train/ and val/)")
    p.add_argument("--cache", type=Path, default=REPO / ".cache")
    p.add_argument("--calib-images", type=int, default=1024, help="INT8 calibration images drawn from train")
    p.add_argument("--method", default="percentile", choices=("percentile", "minmax", "entropy"))
    p.add_argument("--activations", default="u8", choices=("u8", "s8"),
                   help="INT8 activation type: u8 = ONNX Runtime's CPU path (7-bit weights: exact on every x86 "
                        "and ARM CPU); s8 = TensorRT explicit QDQ (full-range; saturates on x86 CPUs)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_cmd_calibrate)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    report = calibrate_checkpoint(args.checkpoint, args.name, args.models_dir, args.data, args.cache,
                                  args.calib_images, args.method, args.seed, args.activations)
    f, q, t = report["fp32"], report["int8"], report["temperature"]
    print(f"done: {args.name} val_acc {f['accuracy']:.4f} macro_f1 {f['macro_f1']:.4f} "
          f"T {t['temperature']:.3f} ECE {t['ece_before']:.4f}->{t['ece_after']:.4f} "
          f"int8_acc {q['accuracy']:.4f} (delta {q['accuracy'] - f['accuracy']:+.4f}) -> {args.models_dir}")
    return 0


def _eval_engine(card: Path, images: np.ndarray, labels: np.ndarray, names: tuple[str, ...],
                 temperature: float) -> tuple[dict, np.ndarray]:
    """Run a card through ONNX Runtime (2 threads) and score it; returns metrics and the raw logits."""
    from emostream.calibration.temperature import expected_calibration_error, softmax
    from emostream.engines.emotion import load_engine
    from emostream.training.loop import evaluate_logits

    eng = load_engine("onnxruntime", card, threads=2)
    # The engine applies the card's temperature; read the logits back as log-probs at T=1 for fitting.
    probs = np.concatenate([eng.run(images[i:i + 512]) for i in range(0, len(images), 512)])
    eng.close()
    order = [eng.labels.index(n) for n in names]
    logits = np.log(np.clip(probs[:, order], 1e-12, None)) * temperature  # logits up to a constant per row
    ev = evaluate_logits(logits.astype(np.float32), labels, names)
    return ({"accuracy": ev.accuracy, "macro_f1": ev.macro_f1, "nll": ev.nll,
             "ece": expected_calibration_error(softmax(logits), labels),
             "per_class_recall": ev.per_class_recall}, logits)


def _crossfit_ece(logits: np.ndarray, labels: np.ndarray, seed: int) -> tuple[float, float]:
    """(before, after) ECE on held-out halves: T fitted on one half of val, scored on the other, both ways.

    "Before" is scored on the same halves, so the pair compares like with like (ECE on ~1,800 faces is
    noisier than on all 3,589).
    """
    from emostream.calibration.temperature import expected_calibration_error, fit_temperature, softmax

    perm = np.random.default_rng(seed).permutation(len(labels))
    halves = (perm[: len(perm) // 2], perm[len(perm) // 2:])
    before, after = [], []
    for fit_idx, test_idx in (halves, halves[::-1]):
        t = fit_temperature(logits[fit_idx], labels[fit_idx]).temperature
        before.append(expected_calibration_error(softmax(logits[test_idx]), labels[test_idx]))
        after.append(expected_calibration_error(softmax(logits[test_idx], t), labels[test_idx]))
    return float(np.mean(before)), float(np.mean(after))


def calibrate_checkpoint(checkpoint: Path, name: str, models_dir: Path, data: Path, cache: Path,
                         calib_images: int = 1024, method: str = "percentile", seed: int = 0,
                         activations: str = "u8") -> dict:
    import torch

    from emostream.calibration.int8 import FaceCalibrationReader, quantize_qdq, stratified_sample
    from emostream.calibration.temperature import fit_temperature
    from emostream.training.data import load_fer_cached
    from emostream.training.export import export_onnx
    from emostream.training.models import arch_kwargs, count_macs, load_checkpoint, load_checkpoint_model

    ckpt = load_checkpoint(checkpoint)
    model = load_checkpoint_model(checkpoint)
    cfg = ckpt.get("config", {})
    mean, scale = float(cfg.get("mean", 0.5)), float(cfg.get("scale", 4.0))
    size = int(ckpt.get("input_size", 48))
    train_ds = load_fer_cached(data, "train", size, cache)
    val_ds = load_fer_cached(data, "val", size, cache)
    names = tuple(ckpt["labels"])
    if names != train_ds.names:
        raise ValueError(f"checkpoint labels {names} differ from the loader's {train_ds.names}")

    models_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = models_dir / f"{name}.onnx"
    int8_path = models_dir / f"{name}.int8.onnx"
    pt_path = models_dir / f"{name}.pt"
    export_onnx(model, onnx_path, size, check_images=val_ds.images[:64], mean=mean, scale=scale)
    torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, pt_path)

    card = {
        "name": f"fer_{name}",
        "onnx": onnx_path.name,
        "torch_state": pt_path.name,
        "arch": "plain_convnet",
        "arch_kwargs": arch_kwargs(ckpt["arch"], len(names)),
        "labels": list(names),
        "input_size": size,
        "channels": 1,
        "color": "grayscale",
        "mean": mean,
        "scale": scale,
        "preprocessing": f"x_norm = (x / 255 - {mean}) * {scale} on a grayscale face crop resized to {size}x{size}",
        "outputs": "logits",
        "temperature": 1.0,
        "onnx_io": {"input": f"input (batch, 1, {size}, {size}) float32",
                    "output": f"logits (batch, {len(names)}) float32", "opset": 17},
    }
    fp32_card = models_dir / f"{name}.json"
    fp32_card.write_text(json.dumps(card, indent=2) + "\n")

    fp32, logits = _eval_engine(fp32_card, val_ds.images, val_ds.labels, names, 1.0)
    fit = fit_temperature(logits, val_ds.labels)
    card["temperature"] = round(fit.temperature, 4)

    idx = stratified_sample(train_ds.labels, calib_images, seed)
    reader = FaceCalibrationReader(train_ds.images[idx], mean, scale)
    t0 = time.time()
    quantize_qdq(onnx_path, int8_path, reader, method=method, activations=activations)
    quant_s = time.time() - t0
    int8_card_dict = dict(card, name=f"fer_{name}_int8", onnx=int8_path.name, torch_state=None,
                          quantization={"format": "QDQ", "weights": "int8 per-channel symmetric"
                                        + (", 7-bit range (no U8S8 saturation without VNNI)"
                                           if activations == "u8" else ""),
                                        "activations": "uint8 asymmetric" if activations == "u8"
                                        else "int8 symmetric", "calibration": method,
                                        "calibration_images": int(len(idx)),
                                        "calibration_source": "FER2013 train, class-stratified, seed "
                                                              f"{seed}"})
    int8_card_dict.pop("torch_state")
    int8_card = models_dir / f"{name}_int8.json"
    int8_card.write_text(json.dumps(int8_card_dict, indent=2) + "\n")
    int8, int8_logits = _eval_engine(int8_card, val_ds.images, val_ds.labels, names, card["temperature"])
    agree = float(np.mean(int8_logits.argmax(1) == logits.argmax(1)))
    report = {
        "checkpoint": str(checkpoint),
        "arch": ckpt["arch"],
        "macs": count_macs(model, size),
        "params": int(sum(p.numel() for p in model.parameters())),
        "best_epoch": ckpt.get("metrics", {}).get("epoch"),
        "train_config": cfg,
        "teachers": ckpt.get("teachers", []),
        "fp32": fp32,
        "temperature": {"temperature": fit.temperature, "nll_before": fit.nll_before, "nll_after": fit.nll_after,
                        "ece_before": fit.ece_before, "ece_after": fit.ece_after,
                        **dict(zip(("ece_before_halves", "ece_after_crossfit"),
                                   _crossfit_ece(logits, val_ds.labels, seed)))},
        "int8": {**int8, "delta_accuracy": int8["accuracy"] - fp32["accuracy"], "quantize_seconds": quant_s},
        "int8_fp32_top1_agreement": agree,
    }
    card["metrics"] = {"fer2013_val": {"accuracy": round(fp32["accuracy"], 4),
                                       "macro_f1": round(fp32["macro_f1"], 4),
                                       "ece_before": round(fit.ece_before, 4),
                                       "ece_after": round(fit.ece_after, 4)},
                       "int8_accuracy": round(int8["accuracy"], 4)}
    card["int8_card"] = int8_card.name
    card["valence_arousal"] = ("derived, not trained: engines.emotion.valence_arousal maps the label "
                               "probabilities onto Russell (1980) circumplex prototypes")
    card["model_card"] = f"{name}.md"
    fp32_card.write_text(json.dumps(card, indent=2) + "\n")
    (models_dir / f"{name}.metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
