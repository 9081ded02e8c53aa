"""LoRA / QLoRA tuning throughput of `emostream tune-vlm` on a random-weight VLM of a known shape.

No weights can be downloaded here, so the model is built from a config with random weights: throughput and
memory depend on the shape, not on the values. What this cannot tell is the *quality* of a tuned real model.

Shapes (LLaVA family, the tokenizer/processor of ``engines/vlm/tiny.py``; the vocabulary size is the real one so
the LM head costs what it costs):

* ``small``  -- Llama text 512 wide x 4 layers, CLIP 224/14 x 4 layers (a CPU-sized smoke shape);
* ``3b``     -- Qwen2.5-3B's text dimensions (2048 wide, 36 layers, 16 heads / 2 KV heads, MLP 11008, vocab
  151,936) on a Llama decoder + CLIP ViT-L/14-336 (24 layers, 1024 wide): about 3.4 B parameters, the size
  class of Qwen2.5-VL-3B (whose M-RoPE decoder and window-attention vision tower it does not copy).

Per run it prints s/step, samples/s and peak GPU memory for LoRA (the baseline) and, on CUDA with
bitsandbytes, QLoRA, with the ratio QLoRA/LoRA measured in the same process.

    python benchmarks/tune_vlm_bench.py --shape small --steps 5            # CPU
    python benchmarks/tune_vlm_bench.py --shape 3b --steps 300 --qlora     # GPU (bf16 LoRA, then 4-bit QLoRA)
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHAPES = {
    "small": {"text": {"hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 4,
                       "num_attention_heads": 8, "num_key_value_heads": 2},
              "vision": {"hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 4,
                         "num_attention_heads": 6, "image_size": 224, "patch_size": 14}},
    "3b": {"text": {"hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
                    "num_attention_heads": 16, "num_key_value_heads": 2, "rope_theta": 1e6},
           "vision": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                      "num_attention_heads": 16, "image_size": 336, "patch_size": 14}},
}
VOCAB = 151_936


def build(shape: str, out: Path) -> tuple[Path, int]:
    """A random LLaVA of ``shape`` saved with a working processor (the tiny VLM's tokenizer, resized images)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import (
        AutoProcessor,
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from emostream.engines.vlm.tiny import CHAT_TEMPLATE, build_tiny_vlm

    tiny = build_tiny_vlm(out / "tokenizer-source")
    tok = AutoProcessor.from_pretrained(tiny).tokenizer
    s = SHAPES[shape]
    vision = CLIPVisionConfig(**s["vision"], projection_dim=s["vision"]["hidden_size"])
    text = LlamaConfig(vocab_size=VOCAB, max_position_embeddings=4096, pad_token_id=tok.pad_token_id,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **s["text"])
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_index=tok.convert_tokens_to_ids("<image>"),
                         vision_feature_layer=-2, vision_feature_select_strategy="default")
    torch.manual_seed(0)
    with torch.device("cpu"):
        model = LlavaForConditionalGeneration(config)
    size = s["vision"]["image_size"]
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}),
        tokenizer=tok, patch_size=s["vision"]["patch_size"], vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE, num_additional_image_tokens=1)
    path = out / f"random-{shape}"
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path, sum(p.numel() for p in model.parameters())


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="small")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--faces", type=int, default=32, help="FER2013 val faces for the instruction data")
    ap.add_argument("--qlora", action="store_true", help="also run 4-bit QLoRA (CUDA + bitsandbytes)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "fer2013" / "val")
    args = ap.parse_args()

    import torch

    from emostream.training.instructions import build_teacher, generate
    from emostream.training.tune_vlm import TuneConfig, TuneError, tune

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else _cpu_name()
    print(f"machine: {device}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        base, params = build(args.shape, tmp)
        print(f"built random {args.shape} VLM ({params / 1e6:.1f} M params) in {time.perf_counter() - t0:.1f} s")
        teacher = build_teacher("knowledge", threads=args.threads)
        data = tmp / "train.jsonl"
        summary = generate(args.data, data, teacher, limit=args.faces, progress=False)
        teacher.close()
        print(f"instruction records: {sum(summary.kept.values())} from {summary.faces} faces")
        runs = [("lora", False)] + ([("qlora", True)] if args.qlora else [])
        results = {}
        for name, qlora in runs:
            cfg = TuneConfig(steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum,
                             warmup=min(10, args.steps), save_every=max(args.steps, 1), qlora=qlora,
                             threads=args.threads)
            try:
                m = tune(base, data, tmp / name, cfg, progress=False)
            except TuneError as exc:
                print(f"{name}: skipped ({exc})")
                continue
            results[name] = m
            mem = f"{m['peak_memory_gib']:.2f} GiB" if m["peak_memory_gib"] is not None else "n/a (CPU)"
            print(f"{name:6s} {m['precision']:>18s}  {m['samples_per_s']:.3f} samples/s  "
                  f"{cfg.batch_size * cfg.grad_accum / m['samples_per_s']:.2f} s/step  peak {mem}  "
                  f"loss {m['loss_first']:.3f} -> {m['loss_last']:.3f}  trainable {m['trainable_params']:,}")
        if "lora" in results and "qlora" in results:
            a, b = results["lora"], results["qlora"]
            print(f"qlora/lora: speed x{b['samples_per_s'] / a['samples_per_s']:.2f}, "
                  f"memory x{b['peak_memory_gib'] / a['peak_memory_gib']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
