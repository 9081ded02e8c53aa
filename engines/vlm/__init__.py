"""Vision-language model engines for the reasoner (``transformers`` local dir, ``openai`` HTTP).

One small interface so the reasoner does not care where the VLM runs: ``generate(prompts, n)``
returns, per prompt, ``n`` raw text answers or a :class:`VLMError` saying why there are none.
The engines import their heavy dependencies (torch, transformers, llguidance) lazily, inside
their own modules; importing this package costs nothing on the edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class VLMError(RuntimeError):
    """A VLM engine could not load or could not answer (bad model dir, server down, timeout)."""


@dataclass(frozen=True)
class VLMPrompt:
    """One request: a face crop (JPEG bytes) and the instruction text."""

    image_jpeg: bytes
    text: str
    system: str = ""
    #: Candidate labels: the engine constrains the answer's ``expression`` to these.
    labels: tuple[str, ...] = ()


class VLMEngine(Protocol):
    #: What made the answers, e.g. ``transformers:SmolVLM-256M`` or ``openai:qwen2.5-vl``.
    name: str

    def generate(self, prompts: list[VLMPrompt], n: int = 1) -> list[list[str] | VLMError]:
        """``n`` answers per prompt (first greedy/low temperature, further ones sampled)."""
        ...
