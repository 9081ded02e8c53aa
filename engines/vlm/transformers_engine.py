"""A local image-text-to-text model through Hugging Face transformers, with constrained decoding.

Any directory ``AutoProcessor`` + ``AutoModelForImageTextToText`` can load (Qwen2.5-VL, SmolVLM /
Idefics3, LLaVA families). Decoding is constrained by llguidance: a small logits processor asks an
``LLMatcher`` per sequence for the set of tokens the grammar allows next and masks the rest, so
even a tiny random model produces an answer that parses (the grammar is bounded; see
``reasoner.schema.answer_lark_grammar``). xgrammar and outlines were tried in the issue and had gaps
with tiny vocabularies; llguidance handled them all.

torch/transformers/llguidance are imported here only, when the engine is built (never on the edge).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import VLMError, VLMPrompt


class TransformersEngine:
    """Load once, answer batches; ``generate`` never raises for one bad prompt (returns VLMError)."""

    def __init__(
        self,
        path: str | Path,
        *,
        grammar_fn: Callable[[tuple[str, ...]], str] | None,
        max_new_tokens: int = 512,
        temperature: float = 0.8,
        threads: int | None = None,
        device: str = "auto",
        adapter: str | Path | None = None,
    ) -> None:
        path = Path(path)
        if not (path / "config.json").is_file():
            raise VLMError(f"VLM directory {path} has no config.json (expected a save_pretrained folder)")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local directory must never reach the hub
        try:
            import torch
            from transformers import AutoModelForImageTextToText, AutoProcessor
        except ImportError as exc:
            raise VLMError(f"the transformers engine needs the 'reasoner' extra ({exc.name} missing)") from None
        if threads:
            torch.set_num_threads(threads)
        try:
            self.processor = AutoProcessor.from_pretrained(path, local_files_only=True)
            self.model = AutoModelForImageTextToText.from_pretrained(path, local_files_only=True)
        except Exception as exc:  # transformers raises many kinds for a broken folder
            raise VLMError(f"cannot load VLM from {path}: {exc.__class__.__name__}: {str(exc)[:200]}") from None
        if adapter is not None:
            self.model = _with_adapter(self.model, Path(adapter))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.device = torch.device(device)
            self.model.to(self.device).eval()
        except (RuntimeError, ValueError) as exc:  # e.g. "cuda" on a machine without a GPU
            raise VLMError(f"cannot use device {device!r}: {str(exc)[:200]}") from None
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"  # decoder-only batch generation pads on the left
        if getattr(self.processor, "chat_template", None) is None:
            raise VLMError(f"VLM directory {path} has no chat template")
        self.name = f"transformers:{path.name}" + (f"+{Path(adapter).name}" if adapter is not None else "")
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self._torch = torch
        self._grammar_fn = grammar_fn
        self._grammars: dict[tuple[str, ...], str] = {}
        self._lltok = None
        if grammar_fn is not None:
            try:
                import llguidance
                import llguidance.hf
            except ImportError:
                raise VLMError("constrained decoding needs llguidance (the 'reasoner' extra)") from None
            n_vocab = int(self.model.get_output_embeddings().weight.shape[0])
            eos = self.model.generation_config.eos_token_id
            eos = eos if eos is not None else self.tokenizer.eos_token_id
            self._lltok = llguidance.hf.from_tokenizer(self.tokenizer, n_vocab=n_vocab, eos_token=eos)

    def _grammar(self, labels: tuple[str, ...]) -> str:
        """Compiled grammar per candidate-label set (cached: keyframes from one model share it)."""
        if labels not in self._grammars:
            import llguidance

            grammar = llguidance.grammar_from("lark", self._grammar_fn(labels))
            err = llguidance.LLMatcher(self._lltok, grammar).get_error()
            if err:
                raise VLMError(f"answer grammar rejected by llguidance: {err}")
            self._grammars[labels] = grammar
        return self._grammars[labels]

    def _inputs(self, prompts: list[VLMPrompt]) -> Any:
        import cv2
        import numpy as np
        from PIL import Image

        images, texts = [], []
        for p in prompts:
            bgr = cv2.imdecode(np.frombuffer(p.image_jpeg, np.uint8), cv2.IMREAD_COLOR)
            if bgr is None:
                raise VLMError("face crop is not a decodable JPEG")
            images.append(Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
            msgs = []
            if p.system:
                msgs.append({"role": "system", "content": [{"type": "text", "text": p.system}]})
            msgs.append({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": p.text}]})
            texts.append(self.processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False))
        return self.processor(images=images, text=texts, return_tensors="pt", padding=True).to(self.device)

    def generate(self, prompts: list[VLMPrompt], n: int = 1) -> list[list[str] | VLMError]:
        if not prompts:
            return []
        try:
            inputs = self._inputs(prompts)
        except VLMError as exc:
            if len(prompts) == 1:
                return [exc]
            # One bad crop must not sink the batch: answer the rest one by one.
            return [self.generate([p], n)[0] for p in prompts]
        from transformers import LogitsProcessorList

        processors = LogitsProcessorList()
        if self._grammar_fn is not None:
            try:
                grammars = [self._grammar(p.labels) for p in prompts for _ in range(n)]
            except VLMError as exc:
                return [exc for _ in prompts]
            processors.append(_GrammarProcessor(self._lltok, grammars))
        sample = n > 1
        kwargs: dict[str, Any] = {"do_sample": sample, "num_return_sequences": n}
        if sample:
            kwargs.update(temperature=self.temperature, top_k=0, top_p=1.0)
        try:
            with self._torch.inference_mode():
                out = self.model.generate(
                    **inputs,
                    max_new_tokens=self.max_new_tokens,
                    logits_processor=processors,
                    pad_token_id=self.tokenizer.pad_token_id,
                    **kwargs,
                )
        except Exception as exc:  # noqa: BLE001 - a model failure is an error answer, not a crash
            err = VLMError(f"generation failed: {exc.__class__.__name__}: {str(exc)[:200]}")
            return [err for _ in prompts]
        texts = self.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        return [texts[i * n : (i + 1) * n] for i in range(len(prompts))]


def _with_adapter(model: Any, adapter: Path) -> Any:
    """The base model with a LoRA adapter (``emostream tune-vlm``) merged in.

    Merged, not wrapped: the tuned model then decodes exactly as fast as the base (no extra matmuls per
    projection), and generation, constrained decoding and batching stay the base model's own code.
    """
    if not (adapter / "adapter_config.json").is_file():
        raise VLMError(f"adapter directory {adapter} has no adapter_config.json (expected `emostream tune-vlm` output)")
    try:
        from peft import PeftModel
    except ImportError:
        raise VLMError("--adapter needs peft (the 'tune' extra)") from None
    try:
        return PeftModel.from_pretrained(model, adapter, is_trainable=False).merge_and_unload()
    except Exception as exc:  # a mismatched adapter fails in many ways inside peft
        raise VLMError(f"cannot apply adapter {adapter}: {exc.__class__.__name__}: {str(exc)[:200]}") from None


class _GrammarProcessor:
    """Mask every token the grammar forbids, one llguidance matcher per generated row.

    transformers calls this once per step with the ids so far; the previous step's token is the
    last column, so each matcher consumes it before computing the next mask (the first call has
    nothing to consume). Rows that finished (matcher stopped) are left alone: generate pads them.
    """

    def __init__(self, lltok: Any, grammars: list[str]) -> None:
        import llguidance
        import llguidance.numpy as lt  # not llguidance.torch: importing it sets up torch.compile (~2 s)

        self._lt = lt
        self.matchers = [llguidance.LLMatcher(lltok, g) for g in grammars]
        self.mask = lt.allocate_token_bitmask(len(grammars), lltok.vocab_size)
        self.first = True

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        for i, m in enumerate(self.matchers):
            if not self.first and not m.is_stopped():
                m.consume_token(int(input_ids[i, -1]))
            self._lt.fill_next_token_bitmask(m, self.mask, i)
        self.first = False
        # llguidance.torch.apply_token_bitmask_inplace is torch.compile'd: ~7 s of compiling on the first
        # call on a CPU. Unpacking the 32-bit words with numpy costs microseconds and needs no compiler.
        import numpy as np
        import torch

        words = self.mask.view(np.uint8)
        allowed = np.unpackbits(words, axis=1, bitorder="little")[:, : scores.shape[1]].astype(bool)
        scores.masked_fill_(~torch.from_numpy(allowed).to(scores.device), float("-inf"))
        return scores
