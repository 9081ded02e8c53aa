"""Emotion label names: the system speaks names, never bare indices (ARCHITECTURE.md, Contracts).

Models declare their own label order; everything downstream maps through these names so a 7-class
FER model and an 8-class AffectNet model can sit behind the same interface.
"""

from __future__ import annotations

#: Canonical set, AffectNet-8 order. A 7-class model simply has no ``contempt``.
CANONICAL_LABELS: tuple[str, ...] = (
    "neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt",
)

#: Spellings seen in datasets and model cards, mapped to the canonical names.
_ALIASES: dict[str, str] = {
    "angry": "anger",
    "anger": "anger",
    "mad": "anger",
    "happiness": "happy",
    "joy": "happy",
    "sadness": "sad",
    "surprised": "surprise",
    "fearful": "fear",
    "afraid": "fear",
    "scared": "fear",
    "disgusted": "disgust",
    "calm": "neutral",
}


def canonical_label(name: str) -> str:
    """Map a dataset or model spelling (``angry``, ``Happiness`` …) to the canonical name.

    Raises ``ValueError`` for a name that is no known emotion, so a typo in a labels file is an
    error rather than a silently empty class.
    """
    key = name.strip().lower()
    if key in CANONICAL_LABELS:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    raise ValueError(f"unknown emotion label {name!r}; known: {', '.join(CANONICAL_LABELS)}")
