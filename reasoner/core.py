"""From validated keyframes to replies: engine -> parse -> self-verification -> gate fusion.

Transport-free on purpose: the ZeroMQ service (``service.py``) and the edge's in-process escalator
(``edge/escalation.py``) run the very same code, so ``--reasoner inproc`` and a remote GPU host
give answers of the same shape. Imports only numpy and this package (no zmq, no torch): the VLM
engines are handed in already built.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emostream.contract import Reply, error_reply
from emostream.engines.vlm import VLMError, VLMPrompt

from .fusion import Gate, fixed_gate
from .knowledge import KnowledgeEngine
from .prompts import SYSTEM_PROMPT, emotion_instruction
from .schema import Answer, AnswerError, parse_answer
from .verify import Verdict, choose

#: Default SEKE resampling budget: K answers at most per keyframe (1 greedy + K-1 sampled).
DEFAULT_RESAMPLE_K = 3


@dataclass
class Reasoner:
    """``engine`` is a :class:`KnowledgeEngine` or any VLM engine (``generate(prompts, n)``)."""

    engine: Any = field(default_factory=KnowledgeEngine)
    resample_k: int = DEFAULT_RESAMPLE_K
    gate: Gate | None = None  # a fitted gate (reasoner.fusion.load_gate); fixed weighting otherwise
    _gates: dict[tuple[str, ...], Gate] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return str(self.engine.name)

    def _gate(self, labels: tuple[str, ...]) -> Gate:
        if self.gate is not None and self.gate.labels == labels:
            return self.gate
        if labels not in self._gates:
            self._gates[labels] = fixed_gate(labels)
        return self._gates[labels]

    def process(self, keyframes: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """One reply per (already validated) keyframe, in order; never raises for one bad item."""
        if not keyframes:
            return []
        start = time.perf_counter()
        if isinstance(self.engine, KnowledgeEngine):
            verdicts: list[Verdict | VLMError | None] = []
            for kf in keyframes:
                answer = self.engine.answer(list(kf["labels"]), kf["probs"], kf.get("va"))
                verdicts.append(choose([answer]))
        else:
            verdicts = self._ask_vlm(keyframes)
        ms = (time.perf_counter() - start) * 1000.0
        return [self._reply(kf, v, ms) for kf, v in zip(keyframes, verdicts, strict=True)]

    def _ask_vlm(self, keyframes: Sequence[dict[str, Any]]) -> list[Verdict | VLMError | None]:
        prompts = [
            VLMPrompt(kf["crop"], emotion_instruction(kf["labels"]), SYSTEM_PROMPT, tuple(kf["labels"]))
            for kf in keyframes
        ]
        first = self.engine.generate(prompts, 1)
        samples: list[list[Answer | None]] = []
        errors: dict[int, VLMError] = {}
        for i, (kf, texts) in enumerate(zip(keyframes, first, strict=True)):
            if isinstance(texts, VLMError):
                errors[i] = texts
                samples.append([])
            else:
                samples.append([_parse(t, kf["labels"]) for t in texts])
        # SEKE: resample (batched, K-1 more each) only the keyframes whose first answer failed.
        retry = [i for i, s in enumerate(samples) if i not in errors and not _consistent(s)]
        if retry and self.resample_k > 1:
            more = self.engine.generate([prompts[i] for i in retry], self.resample_k - 1)
            for i, texts in zip(retry, more, strict=True):
                if not isinstance(texts, VLMError):
                    samples[i].extend(_parse(t, keyframes[i]["labels"]) for t in texts)
        return [errors.get(i) or choose(s) for i, s in enumerate(samples)]

    def _reply(self, kf: dict[str, Any], verdict: Verdict | VLMError | None, ms: float) -> dict[str, Any]:
        rid = kf["id"]
        if isinstance(verdict, VLMError):
            return error_reply(rid, "engine", str(verdict))
        if verdict is None:
            return error_reply(rid, "no_answer", "no sample satisfied the answer schema")
        labels = tuple(kf["labels"])
        # The knowledge engine's answer is derived from these very probabilities, not a second opinion:
        # fusing it would only sharpen the network's own top label, so its "fused" is the network's.
        vote = None if isinstance(self.engine, KnowledgeEngine) else verdict.answer.expression
        fused = self._gate(labels).fuse(vote, np.asarray(kf["probs"]))
        a = verdict.answer
        return Reply(
            id=rid,
            expression=a.expression,
            valence=a.valence,
            arousal=a.arousal,
            aus=tuple((au, round(i, 3)) for au, i in a.aus),
            rationale=a.rationale,  # Reply.to_wire cuts it to the contract's bound, whichever engine wrote it
            verified=verdict.verified,
            agreement=round(verdict.agreement, 3),
            samples=verdict.samples,
            fused={label: round(float(p), 4) for label, p in zip(labels, fused, strict=True)},
            engine=self.name,
            engine_ms=round(ms, 2),
        ).to_wire()


def _parse(text: str, labels: Sequence[str]) -> Answer | None:
    try:
        return parse_answer(text, labels)
    except AnswerError:
        return None


def _consistent(samples: list[Answer | None]) -> bool:
    verdict = choose(samples)
    return verdict is not None and verdict.verified
