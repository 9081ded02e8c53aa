"""Torch backend: the reference implementation (training, debugging, cross-checking the ONNX export).

Not for the edge hot path: torch is imported here only, when this backend is chosen.
"""

from __future__ import annotations

import numpy as np

from emostream.engines.emotion.engine import (
    EmotionModelInfo,
    EngineError,
    check_crops,
    empty_result,
    postprocess,
    preprocess,
)


class TorchEngine:
    """An :class:`~engines.emotion.engine.EmotionEngine` running the card's torch architecture on the CPU."""

    name = "torch"

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
        self.model = info
        self.labels = info.labels
        self.input_size = info.input_size
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
        self._net = net.eval()

    def run(self, crops: np.ndarray) -> np.ndarray:
        """(N, H, W) uint8 crops -> (N, C) float32 probabilities in ``labels`` order."""
        if self._net is None:
            raise EngineError("this torch engine is closed")
        crops = check_crops(crops, self.model)
        if crops.shape[0] == 0:
            return empty_result(self.model)
        x = self._torch.from_numpy(preprocess(crops, self.model))
        with self._torch.inference_mode():
            raw = self._net(x).numpy()
        return postprocess(raw, self.model)

    def close(self) -> None:
        self._net = None

    def __enter__(self) -> TorchEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
