"""Build a tiny *random* LLaVA-family VLM offline, for tests and benchmarks.

Why: the service, constrained decoding and the real ``from_pretrained`` path must be exercised
without downloading anything. The model is a 1-layer CLIP vision tower + 1-layer Llama with a
byte-level BPE tokenizer trained here on a small corpus that contains the JSON characters and the
label words, plus a processor and a chat template assembled locally. Its answers are garbage;
constrained decoding makes them schema-valid garbage -- exactly what the tests need to show.

LLaVA was chosen over Idefics3/SmolVLM and Qwen2-VL because its processor assembles from a plain
CLIP image processor and a fast tokenizer with no extra files.
"""

from __future__ import annotations

import os
from pathlib import Path

from emostream.contract import AU_IDS, CANONICAL_LABELS

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: "
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
)


def build_tiny_vlm(out_dir: str | Path, *, seed: int = 0, hidden: int = 32, image_size: int = 32) -> Path:
    """Write a tiny random LLaVA (model + processor + tokenizer) to ``out_dir``; returns the path."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )


    torch.manual_seed(seed)
    corpus = [
        '{"expression":"happy","valence":0.52,"arousal":-0.25,"aus":[{"au":"AU12","intensity":0.8}],'
        '"rationale":"the cheeks are raised and the lip corners pulled up"}',
        " ".join(CANONICAL_LABELS),
        " ".join(AU_IDS),
        "0 1 2 3 4 5 6 7 8 9 . , - : ; ( ) ' +",
        "Which emotion does the facial expression show? Choose exactly one. Rate valence and arousal, "
        "list the visible facial action units and explain briefly why. Reply as JSON.",
    ] * 4
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<unk>", "<pad>", "<s>", "</s>", "<image>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": "<image>"},
    )
    patch = 8
    vision = CLIPVisionConfig(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch,
        projection_dim=hidden,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    model = LlavaForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
        ),
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        num_additional_image_tokens=1,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
