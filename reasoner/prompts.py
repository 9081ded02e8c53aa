"""Emotion instruction prompts (EmoVIT style).

EmoVIT (Xie et al., CVPR 2024) tunes VLMs on emotion instructions of three kinds: categorical
("which of these emotions …", candidates listed), conversation, and reasoning ("why"). The reasoner
asks one combined instruction: the categorical question with the candidate labels, the affective
dimensions, the action units, and a short "why" -- answered as the JSON of ``schema.py`` so the
three grains can be cross-checked (``verify.py``).
"""

from __future__ import annotations

from emostream.contract import AU_IDS, MAX_RATIONALE

SYSTEM_PROMPT = (
    "You are an expert in facial expression analysis trained on the Facial Action Coding System. "
    "Answer only with the requested JSON object."
)


def emotion_instruction(labels: list[str] | tuple[str, ...], probs: list[float] | None = None) -> str:
    """The user turn for one face crop.

    The network's own estimate is *not* included on purpose: a VLM primed with it tends to echo it,
    and the gate fusion already combines the two opinions afterwards.
    """
    del probs
    return (
        "The image shows one person's face. Which emotion does the facial expression show? "
        f"Choose exactly one of: {', '.join(labels)}. "
        "Rate valence (unpleasant -1 to pleasant 1) and arousal (calm -1 to excited 1), "
        f"list the visible facial action units (FACS, from {', '.join(AU_IDS)}) with intensity 0 to 1, "
        f"and explain briefly why (at most {MAX_RATIONALE} characters). "
        'Reply as JSON: {"expression": ..., "valence": ..., "arousal": ..., '
        '"aus": [{"au": ..., "intensity": ...}], "rationale": ...}'
    )
