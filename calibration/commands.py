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

from emostream.errors import positive_int

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FER = REPO.parent / "shared" / "data" / "fer2013"
MODELS_DIR = REPO / "engines" / "models"


def register(subparsers: argparse._SubParsersAction) -> None:
    """``emostream calibrate`` (named in ``edge/cli.py``'s table; training no longer registers it, so the
    two offline layers import each other in one direction only: calibration -> training)."""
    add_calibrate_parser(subparsers)
    add_fit_gate_parser(subparsers)


class GateCommandError(ValueError):
    """Bad input for ``emostream fit-gate`` (one line, exit 2)."""


def add_fit_gate_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "fit-gate", help="fit the EmoVLM-KD fusion gate (VLM answer + network logits) on a labelled folder",
        description="Ask the reasoner (a VLM, or the knowledge engine) and the emotion network about every face of "
                    "DATA, fit the gate on one stratified half and report network alone, VLM alone and fused "
                    "(accuracy, macro-F1) on the other half. Serve the gate with `emostream reasoner --gate OUT`.")
    p.add_argument("data", metavar="DATA", help="labelled face folder (the layouts `emostream eval` reads)")
    p.add_argument("-o", "--out", required=True, type=Path, metavar="GATE.json", help="the fitted gate")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    engine = p.add_mutually_exclusive_group()
    engine.add_argument("--vlm", metavar="VLM_DIR", help="local transformers VLM directory")
    engine.add_argument("--vlm-url", metavar="URL", help="OpenAI-compatible server, e.g. http://gpu:8000/v1")
    p.add_argument("--vlm-model", default="default", help="model name sent to --vlm-url")
    p.add_argument("--adapter", metavar="DIR", help="LoRA adapter for --vlm (`emostream tune-vlm` output)")
    p.add_argument("--model", default=None, metavar="NAME|PATH", help="emotion network (default: the shipped one)")
    p.add_argument("--resample", type=positive_int, default=3, metavar="K", help="SEKE answers per face at most")
    p.add_argument("--max-new-tokens", type=positive_int, default=400, help="decode budget for --vlm")
    p.add_argument("--batch", type=positive_int, default=8, help="faces per VLM call (default 8)")
    p.add_argument("--limit", type=positive_int, default=None, metavar="N", help="a seeded random N of the faces")
    p.add_argument("--seed", type=int, default=0, help="face sample, halves, CV folds, VLM sampling")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads (network, local VLM)")
    p.add_argument("--device", default="auto", help="torch device for --vlm")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_fit_gate)


def collect_answers(args: argparse.Namespace, log=None) -> dict:
    """Per face: the network's probabilities, the reasoner's answer (label index or -1) and the truth index."""
    from tqdm import tqdm

    from emostream.datasets import DatasetError, load_labelled_images
    from emostream.engines.emotion import load_engine
    from emostream.engines.emotion.card import DEFAULT_MODEL
    from emostream.reasoner.core import Reasoner
    from emostream.reasoner.knowledge import KnowledgeEngine
    from emostream.training.instructions import InstructionError, read_face, select

    try:
        found = load_labelled_images(args.data)
    except DatasetError as exc:
        raise GateCommandError(str(exc)) from None
    if args.adapter and not args.vlm:
        raise GateCommandError("--adapter needs --vlm VLM_DIR")
    net = load_engine("onnxruntime", args.model or DEFAULT_MODEL, threads=args.threads)
    labels = tuple(net.labels)
    if args.vlm:
        import torch

        from emostream.engines.vlm.transformers_engine import TransformersEngine
        from emostream.reasoner.schema import answer_lark_grammar

        torch.manual_seed(args.seed)
        vlm = TransformersEngine(args.vlm, grammar_fn=answer_lark_grammar, max_new_tokens=args.max_new_tokens,
                                 threads=args.threads, device=args.device, adapter=args.adapter)
    elif args.vlm_url:
        from emostream.engines.vlm.openai_engine import OpenAIEngine
        from emostream.reasoner.schema import answer_json_schema

        vlm = OpenAIEngine(args.vlm_url, model=args.vlm_model, schema_fn=answer_json_schema)
    else:
        vlm = KnowledgeEngine()
    reasoner = Reasoner(engine=vlm, resample_k=args.resample)
    chosen = select(len(found), args.limit, args.seed)
    probs, answers, truth = [], [], []
    counts = {"unreadable": 0, "label_not_in_network": 0, "vlm_errors": {}}
    bar = tqdm(total=len(chosen), unit="face", disable=args.no_progress, dynamic_ncols=True)
    try:
        for lo in range(0, len(chosen), args.batch):
            crops, jpegs, ys = [], [], []
            for i in chosen[lo : lo + args.batch]:
                if found.labels[i] not in labels:
                    counts["label_not_in_network"] += 1
                    continue
                try:
                    crop, jpeg = read_face(found.files[i], net.input_size)
                except InstructionError as exc:
                    counts["unreadable"] += 1
                    if log:
                        log(f"skipped (counted): {exc}")
                    continue
                crops.append(crop)
                jpegs.append(jpeg)
                ys.append(labels.index(found.labels[i]))
            if crops:
                p = net.run(np.stack(crops))
                kfs = [{"id": str(lo + j), "crop": jpegs[j], "labels": list(labels), "probs": p[j].tolist()}
                       for j in range(len(crops))]
                for reply in reasoner.process(kfs):
                    if "expression" in reply and reply["expression"] in labels:
                        answers.append(labels.index(reply["expression"]))
                    else:
                        answers.append(-1)
                        code = str(reply.get("code", "no_answer"))
                        counts["vlm_errors"][code] = counts["vlm_errors"].get(code, 0) + 1
                probs.append(p)
                truth += ys
            bar.update(min(args.batch, len(chosen) - lo))
    finally:
        bar.close()
        net.close()
        close = getattr(vlm, "close", None)
        if close:
            close()
    if not truth:
        raise GateCommandError(f"no usable face in {args.data} ({counts['unreadable']} unreadable, "
                               f"{counts['label_not_in_network']} with labels the network does not have)")
    return {"labels": labels, "net_probs": np.concatenate(probs), "vlm_idx": np.array(answers),
            "truth": np.array(truth), "counts": counts, "engine": reasoner.name}


def _cmd_fit_gate(args: argparse.Namespace) -> int:
    import sys

    from emostream.calibration.fusion import gate_report, save_gate

    out = Path(args.out)
    if out.is_dir():
        raise GateCommandError(f"--out {out} is a directory (name a .json file)")
    if out.exists() and not args.overwrite:
        raise GateCommandError(f"--out {out} exists (pass --overwrite to replace it)")
    if not out.parent.is_dir():
        raise GateCommandError(f"output folder {out.parent} does not exist")
    got = collect_answers(args, log=lambda line: print(f"emostream: warning: {line}", file=sys.stderr))
    gate, report = gate_report(got["labels"], got["vlm_idx"], got["net_probs"], got["truth"], seed=args.seed)
    report = {"engine": got["engine"], "labels": list(got["labels"]), **got["counts"], **report}
    if got["engine"] == "knowledge":
        report["note"] = ("the knowledge engine answers from the network's own probabilities: 'vlm' is the network "
                          "again, so the gate can add nothing; fit with --vlm or --vlm-url")
    save_gate(gate, out)
    out.with_name(out.name + ".report.json").write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"fit-gate: {report['faces']} faces ({report['fit']} fit, {report['held_out']} held out), "
          f"engine {report['engine']}, VLM answered {report['vlm_answered']:.0%}, shrinkage l2 {report['l2']}")
    print(f"{'held-out half':14s} {'accuracy':>9s} {'macro-F1':>9s}")
    for name, row in report["held_out_scores"].items():
        print(f"{name:14s} {row['accuracy']:9.4f} {row['macro_f1']:9.4f}")
    for key in ("why_not", "note"):
        if key in report:
            print(f"note: {report[key]}")
    print(f"done: gate -> {out} (report {out.name}.report.json); serve it with `emostream reasoner --gate {out}`")
    return 0


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
