"""Emotion label names for the engines: a re-export of :mod:`emostream.contract`.

The names live in the contract (one place for every layer); this module stays so that model code
keeps a short, engine-local import and existing callers do not break.
"""

from __future__ import annotations

from emostream.contract import CANONICAL_LABELS, canonical_label

__all__ = ["CANONICAL_LABELS", "canonical_label"]
