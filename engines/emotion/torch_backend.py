"""Torch backend: the reference implementation (training, debugging, cross-checking the ONNX export).

Not for the edge hot path: torch is imported here only, when this backend is chosen.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from emostream.engines.emotion.backend import EmotionBackend
from emostream.engines.emotion.card import EmotionModelInfo, EngineError


class TorchEngine(EmotionBackend):
    """:class:`~emostream.engines.emotion.backend.EmotionBackend` running the card's torch architecture on the CPU."""

    name = "torch"
    runtime = "torch"

    def __init__(self, info: EmotionModelInfo, *, threads: int | None = None) -> None:
        try:
            import torch
        except ImportError:
            raise EngineError("the torch backend needs torch (pip install 'emostream[train]')") from None
        from emostream.engines.emotion.archs import build_arch

        if info.arch is None:
            raise EngineError(f"model card {info.card_path} has no 'arch' for the torch backend")
        if info.torch_state is None or not info.torch_state.is_file():
            raise EngineError(f"model {info.name} has no torch weights file (card says {info.torch_state})")
        super().__init__(info)
        self._torch = torch
        if threads is not None:
            # Process-wide in torch; the caller asked for it explicitly.
            torch.set_num_threads(threads)
        net = build_arch(info.arch, info.arch_kwargs)
        try:
            state = torch.load(info.torch_state, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        except Exception as exc:  # pickle/zip errors, key or shape mismatches: all "unusable file"
            raise EngineError(f"cannot load torch weights {info.torch_state}: {exc}") from None
        self._net: Any = net.eval()

    def _infer(self, x: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self._net(self._torch.from_numpy(x)).numpy()

    def _release(self) -> None:
        self._net = None
