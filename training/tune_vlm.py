"""LoRA instruction tuning of a local transformers VLM on emotion instruction data (EmoVLM-KD / EmoVIT).

What is trained, and why:

* LoRA (peft) on the *language model's* attention and MLP projections only (``q/k/v/o_proj``,
  ``gate/up/down_proj`` under the model's language model). The vision tower and the multimodal projector stay
  frozen: the emotion cues are already in the visual features; what the model must learn is to read them out
  in the reasoner's answer format. Vision towers use the same projection names (Qwen2.5-VL's has
  ``gate/up/down_proj``), so targets are picked by *module path*, not by name alone.
* Loss only on the assistant turns: every other token's label is -100. The turns are tokenised piece by piece
  (prompt, answer, next prompt, ...) exactly as the reasoner will see them at run time -- a prompt tokenised
  alone and the answer's tokens appended -- rather than as one string, whose BPE merges across the turn
  boundary would differ from inference.
* bf16 autocast on a GPU that has it (fp16 with loss scaling otherwise), fp32 on the CPU; 4-bit NF4 QLoRA
  (bitsandbytes) on CUDA only -- anywhere else it fails with one line.
* Resumable: ``OUT/checkpoint/`` holds the adapter, the optimiser state and the step every ``save_every``
  steps; running the same command again continues from it (the batch order is a function of seed and step).

The data is the JSONL of ``emostream instructions`` (LLaVA/ShareGPT ``conversations`` + ``image``); any
file in that layout works.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Projection names of the decoder's attention and MLP blocks (Llama, Qwen2, Mistral, Gemma, Idefics3 text).
LORA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
IGNORE = -100


class TuneError(ValueError):
    """Bad input or an impossible setting for ``emostream tune-vlm`` (one line, exit 2)."""


@dataclass(frozen=True)
class TuneConfig:
    steps: int = 100
    batch_size: int = 4
    grad_accum: int = 4
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup: int = 10
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    qlora: bool = False
    seed: int = 0
    save_every: int = 50
    max_length: int = 2048
    device: str = "auto"
    threads: int | None = None


# --------------------------------------------------------------------------- data


def load_records(path: str | Path) -> list[dict[str, Any]]:
    """The JSONL records, each checked: ``conversations`` alternate human/gpt, the first turn holds ``<image>``,
    the image exists (relative paths are taken from the JSONL's folder). Errors name the line."""
    path = Path(path)
    if not path.is_file():
        raise TuneError(f"--data {path}: no such file")
    out = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TuneError(f"{where}: not JSON ({exc.msg})") from None
            if not isinstance(rec, dict):
                raise TuneError(f"{where}: a record must be a JSON object")
            conv = rec.get("conversations")
            if not isinstance(conv, list) or len(conv) < 2:
                raise TuneError(f"{where}: needs 'conversations', a list of at least 2 turns")
            for i, turn in enumerate(conv):
                want = "human" if i % 2 == 0 else "gpt"
                if not isinstance(turn, dict) or turn.get("from") != want or not isinstance(turn.get("value"), str):
                    raise TuneError(f"{where}: turn {i + 1} must be {{'from': '{want}', 'value': text}}")
            image = rec.get("image") or (rec.get("images") or [None])[0]
            if not isinstance(image, str):
                raise TuneError(f"{where}: needs 'image', the path of the face image")
            img = Path(image) if os.path.isabs(image) else path.parent / image
            if not img.is_file():
                raise TuneError(f"{where}: image {image} not found")
            out.append({**rec, "image": str(img)})
    if not out:
        raise TuneError(f"--data {path} holds no records")
    return out


def to_messages(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """LLaVA turns -> chat-template messages (the image as a content part of the first user turn)."""
    msgs: list[dict[str, Any]] = []
    if rec.get("system"):
        msgs.append({"role": "system", "content": [{"type": "text", "text": rec["system"]}]})
    for i, turn in enumerate(rec["conversations"]):
        text = turn["value"]
        if turn["from"] == "human":
            parts: list[dict[str, str]] = []
            if i == 0:
                parts.append({"type": "image"})
                text = text.replace("<image>\n", "").replace("<image>", "")
            parts.append({"type": "text", "text": text})
            msgs.append({"role": "user", "content": parts})
        else:
            msgs.append({"role": "assistant", "content": [{"type": "text", "text": text}]})
    return msgs


def encode(processor: Any, rec: dict[str, Any], max_length: int) -> dict[str, Any]:
    """Token ids with labels only on the assistant turns, and the image tensors, for one record."""
    import torch
    from PIL import Image

    msgs = to_messages(rec)
    tok = processor.tokenizer
    name = rec.get("id") or rec["image"]
    try:
        with Image.open(rec["image"]) as im:
            image = im.convert("RGB")
    except OSError as exc:  # PIL's UnidentifiedImageError is an OSError
        raise TuneError(f"record {name}: image {rec['image']} does not decode ({exc.__class__.__name__})") from None
    # Rendered prefixes: before each assistant turn (with the generation prompt) and after it.
    cuts: list[tuple[str, bool]] = []  # (text piece, is_answer)
    done = ""
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        before = processor.apply_chat_template(msgs[:i], add_generation_prompt=True, tokenize=False)
        after = processor.apply_chat_template(msgs[: i + 1], add_generation_prompt=False, tokenize=False)
        if not before.startswith(done) or not after.startswith(before):
            raise TuneError("the model's chat template is not prefix-stable across turns; cannot mask the "
                            "assistant turns")
        cuts.append((before[len(done):], False))
        cuts.append((after[len(before):], True))
        done = after
    first = processor(images=[image], text=[cuts[0][0]], return_tensors="pt")
    ids = first["input_ids"][0].tolist()
    labels = [IGNORE] * len(ids)
    for text, is_answer in cuts[1:]:
        piece = tok(text, add_special_tokens=False)["input_ids"]
        ids += piece
        labels += piece if is_answer else [IGNORE] * len(piece)
    if len(ids) > max_length:
        ids, labels = ids[:max_length], labels[:max_length]
    if all(lab == IGNORE for lab in labels):
        # Nothing to learn (and a NaN loss): the prompt alone fills --max-length.
        raise TuneError(f"record {name}: no answer token within --max-length {max_length} (raise it)")
    extra = {k: v for k, v in first.items() if k not in ("input_ids", "attention_mask")}
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), **extra}


def collate(items: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Right-pad ids (labels -100, mask 0); image tensors concatenated on their first axis (as processors batch)."""
    import torch

    n = max(len(it["input_ids"]) for it in items)
    ids = torch.full((len(items), n), pad_id, dtype=torch.long)
    labels = torch.full((len(items), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), n), dtype=torch.long)
    for i, it in enumerate(items):
        k = len(it["input_ids"])
        ids[i, :k], labels[i, :k], mask[i, :k] = it["input_ids"], it["labels"], 1
    batch: dict[str, Any] = {"input_ids": ids, "labels": labels, "attention_mask": mask}
    for key in items[0]:
        if key not in batch:
            batch[key] = torch.cat([it[key] for it in items], dim=0)
    return batch


def batch_indices(step: int, micro: int, batch_size: int, grad_accum: int, n: int, seed: int) -> list[int]:
    """Record indices of one micro-batch: a pure function of (seed, step), so a resumed run sees the same order."""
    start = (step * grad_accum + micro) * batch_size
    out = []
    for g in range(start, start + batch_size):
        epoch, pos = divmod(g, n)
        out.append(int(np.random.default_rng((seed, epoch)).permutation(n)[pos]))
    return out


# --------------------------------------------------------------------------- model


def lora_targets(model: Any) -> list[str]:
    """Full names of the language model's attention/MLP projection layers (never the vision tower)."""
    import torch

    lm = getattr(getattr(model, "model", None), "language_model", None) or getattr(model, "language_model", None)
    if lm is None:
        lm = model.get_decoder()
    prefix = next((name for name, mod in model.named_modules() if mod is lm), None)
    if prefix is None:
        raise TuneError("cannot find the model's language model to put LoRA on")
    names = [name for name, mod in model.named_modules()
             if name.startswith(prefix + ".") and isinstance(mod, torch.nn.Linear)
             and name.rsplit(".", 1)[-1] in LORA_PROJECTIONS]
    if not names:
        raise TuneError(f"no {'/'.join(LORA_PROJECTIONS)} layers under {prefix}")
    return names


def pick_device(device: str) -> tuple[Any, Any]:
    """(torch device, autocast dtype or None): bf16 where the GPU has it, fp16 otherwise, fp32 on the CPU."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("no CUDA device is available")
    except RuntimeError as exc:
        raise TuneError(f"--device {device}: {exc}") from None
    if dev.type != "cuda":
        return dev, None
    return dev, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def load_model(base: str | Path, cfg: TuneConfig) -> tuple[Any, Any, Any, Any]:
    """(processor, peft model, device, autocast dtype) with LoRA on the language model; QLoRA if asked."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    base = Path(base)
    if not (base / "config.json").is_file():
        raise TuneError(f"--base {base} has no config.json (expected a save_pretrained VLM folder)")
    dev, amp = pick_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    kwargs: dict[str, Any] = {"local_files_only": True}
    if amp is not None:
        # Frozen base weights in the autocast dtype on a GPU (half the memory of fp32); peft keeps the LoRA
        # weights themselves in fp32 (autocast_adapter_dtype), so the optimiser never steps in half precision.
        kwargs["dtype"] = amp
    if cfg.qlora:
        if dev.type != "cuda":
            raise TuneError("--qlora needs a CUDA GPU (bitsandbytes 4-bit kernels); use plain LoRA on this machine")
        try:
            import bitsandbytes  # noqa: F401
            from transformers import BitsAndBytesConfig
        except ImportError:
            raise TuneError("--qlora needs bitsandbytes: pip install 'emostream[tune]' bitsandbytes") from None
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=amp or torch.bfloat16)
        kwargs["device_map"] = {"": dev.index or 0}
    try:
        processor = AutoProcessor.from_pretrained(base, local_files_only=True)
        model = AutoModelForImageTextToText.from_pretrained(base, **kwargs)
    except Exception as exc:  # transformers raises many kinds for a broken folder
        raise TuneError(f"cannot load VLM from {base}: {exc.__class__.__name__}: {str(exc)[:200]}") from None
    if getattr(processor, "chat_template", None) is None:
        raise TuneError(f"--base {base} has no chat template")
    if cfg.qlora:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        model.to(dev)
    targets = lora_targets(model)
    lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
                      bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    return processor, model, dev, amp


# --------------------------------------------------------------------------- training


def _loss(model: Any, batch: dict[str, Any], dev: Any, amp: Any) -> Any:
    import torch

    batch = {k: v.to(dev) for k, v in batch.items()}
    with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
        return model(**batch).loss


def tune(
    base: str | Path,
    data: str | Path,
    out: str | Path,
    cfg: TuneConfig,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    stop: Callable[[int], bool] | None = None,
) -> dict[str, Any]:
    """Tune, checkpoint, save the adapter to ``out``; returns the metrics (also written to ``out/tune.json``).

    ``probe_loss_before``/``probe_loss_after`` is the loss on one fixed batch (the first records) before the
    first step and after the last: the simplest evidence that the adapter learned the data's answers.
    ``stop(step)``, asked after every step, ends the run early with a checkpoint (a scheduler's pre-emption;
    the same command later resumes from it to the very same adapter).
    """
    for name, value in (("--steps", cfg.steps), ("--batch-size", cfg.batch_size), ("--grad-accum", cfg.grad_accum),
                        ("--rank", cfg.rank), ("--save-every", cfg.save_every)):
        if value < 1:
            raise TuneError(f"{name} must be at least 1")
    if not cfg.lr > 0:
        raise TuneError("--lr must be positive")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise TuneError(f"--out {out} is a file (name a folder for the adapter)")
    records = load_records(data)
    # Every check that needs no framework comes before torch/peft/transformers are imported (seconds each).
    if not (Path(base) / "config.json").is_file():
        raise TuneError(f"--base {base} has no config.json (expected a save_pretrained VLM folder)")
    import torch

    if cfg.qlora and not torch.cuda.is_available():
        raise TuneError("--qlora needs a CUDA GPU (bitsandbytes 4-bit kernels); use plain LoRA on this machine")
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    processor, model, dev, amp = load_model(base, cfg)
    pad = processor.tokenizer.pad_token_id
    pad = pad if pad is not None else processor.tokenizer.eos_token_id
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def lr_at(step: int) -> float:  # linear warm-up, cosine decay to 10 %
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))

    scaler = torch.amp.GradScaler("cuda", enabled=amp is torch.float16)
    cache: dict[int, dict[str, Any]] = {}

    def item(i: int) -> dict[str, Any]:
        if i not in cache:
            if len(cache) > 4096:
                cache.clear()
            cache[i] = encode(processor, records[i], cfg.max_length)
        return cache[i]

    probe = collate([item(i) for i in range(min(cfg.batch_size, len(records)))], pad)
    ckpt = out / "checkpoint"
    state: dict[str, Any] = {"step": 0, "losses": [], "samples": 0, "seconds": 0.0}
    if (ckpt / "state.json").is_file():
        state = json.loads((ckpt / "state.json").read_text())
        if state.get("config", {}).get("rank") not in (None, cfg.rank):
            raise TuneError(f"{ckpt} was made with --rank {state['config']['rank']}; resume with the same flags")
        set_peft_model_state_dict(model, load_file(str(ckpt / "adapter_model.safetensors")))
        opt.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location=dev, weights_only=True))
        if log:
            log(f"resuming from {ckpt} at step {state['step']}")
    model.eval()
    with torch.no_grad():
        probe_before = state.get("probe_loss_before") or float(_loss(model, probe, dev, amp))
    state["probe_loss_before"] = probe_before

    def save_checkpoint() -> None:
        tmp = out / "checkpoint.tmp"
        model.save_pretrained(tmp)
        torch.save(opt.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({**state, "config": asdict(cfg)}))
        if ckpt.exists():
            for f in ckpt.iterdir():
                f.unlink()
            ckpt.rmdir()
        tmp.rename(ckpt)

    out.mkdir(parents=True, exist_ok=True)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    model.train()
    if log:
        log(f"tuning: {len(records)} records, {sum(p.numel() for p in params):,} trainable parameters, "
            f"steps {state['step']}..{cfg.steps} on {dev}")
    bar = tqdm(total=cfg.steps, initial=state["step"], unit="step", disable=not progress, dynamic_ncols=True)
    try:
        while state["step"] < cfg.steps:
            if stop is not None and stop(state["step"]):
                break  # asked to stop before this step (e.g. a signal while the model loaded)
            t0 = time.perf_counter()
            step = state["step"]
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            total = 0.0
            for micro in range(cfg.grad_accum):
                idx = batch_indices(step, micro, cfg.batch_size, cfg.grad_accum, len(records), cfg.seed)
                loss = _loss(model, collate([item(i) for i in idx], pad), dev, amp) / cfg.grad_accum
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise TuneError(f"loss is {value} at step {step}; lower --lr")
                scaler.scale(loss).backward()
                total += value
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            state["seconds"] += time.perf_counter() - t0
            state["samples"] += cfg.batch_size * cfg.grad_accum
            state["step"] = step + 1
            state["losses"].append(round(total, 5))
            bar.update(1)
            bar.set_postfix(loss=f"{total:.4f}", lr=f"{lr_at(step):.2e}")
            stopping = stop is not None and stop(state["step"])
            if state["step"] % cfg.save_every == 0 or state["step"] == cfg.steps or stopping:
                save_checkpoint()
            if stopping:
                break
    finally:
        bar.close()
    finished = state["step"] >= cfg.steps
    model.eval()
    probe_after = None
    if finished:  # an interrupted run leaves only its checkpoint: no half-tuned adapter that looks finished
        with torch.no_grad():
            probe_after = float(_loss(model, probe, dev, amp))
        model.save_pretrained(out)
    losses = state["losses"]
    k = max(1, min(10, len(losses) // 4))
    metrics = {
        "steps": state["step"],
        "finished": finished,
        "records": len(records),
        "trainable_params": int(sum(p.numel() for p in params)),
        "total_params": int(sum(p.numel() for p in model.parameters())),
        "lora_layers": sum(1 for name, _ in model.named_modules() if name.endswith(".lora_A")),
        "loss_first": float(np.mean(losses[:k])) if losses else None,
        "loss_last": float(np.mean(losses[-k:])) if losses else None,
        "probe_loss_before": probe_before,
        "probe_loss_after": probe_after,
        "samples_per_s": state["samples"] / state["seconds"] if state["seconds"] else None,
        "peak_memory_gib": (torch.cuda.max_memory_allocated(dev) / 2**30) if dev.type == "cuda" else None,
        "device": str(dev) if dev.type != "cuda" else f"{dev} ({torch.cuda.get_device_name(dev)})",
        "precision": "4-bit NF4 + " + str(amp) if cfg.qlora else (str(amp) if amp is not None else "fp32"),
        "base": str(Path(base).resolve()),
        "config": asdict(cfg),
    }
    (out / "tune.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
