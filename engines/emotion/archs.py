"""Name -> torch architecture factory for model cards (``"arch"`` + ``"arch_kwargs"``).

Architectures are named by import string and imported only when built, so reading this module
costs nothing and pulls in no torch. A new student network registers one line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from emostream.engines.emotion.card import EngineError

#: arch name -> "module:callable" returning a torch ``nn.Module``.
ARCHITECTURES: dict[str, str] = {
    "mini_xception": "emostream.engines.emotion.mini_xception:MiniXception",
    "plain_convnet": "emostream.engines.emotion.plain_convnet:PlainConvNet",
}


def build_arch(arch: str, kwargs: Mapping[str, Any] | None = None) -> Any:
    """Instantiate the torch module for ``arch`` with the card's kwargs (imports torch)."""
    if arch not in ARCHITECTURES:
        raise EngineError(f"unknown model architecture {arch!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    module_name, _, attr = ARCHITECTURES[arch].partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    kw = dict(kwargs or {})
    # JSON has no tuples; architectures take tuples for channel lists.
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()}
    try:
        return factory(**kw)
    except TypeError as exc:
        raise EngineError(f"architecture {arch!r} rejects the card's arch_kwargs: {exc}") from None
