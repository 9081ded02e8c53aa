"""TensorRT backend (placeholder until the full build/run code lands; see the next commit)."""

from __future__ import annotations

import importlib.util


def tensorrt_usable() -> bool:
    """True where TensorRT is importable (and, once implemented, a CUDA device is present)."""
    return False


class TensorRTEngine:
    def __init__(self, info, *, cache_dir=None) -> None:
        from engines.emotion.engine import EngineError

        if importlib.util.find_spec("tensorrt") is None:
            raise EngineError("TensorRT is not installed here; it ships with JetPack on Jetson")
        raise EngineError("the TensorRT backend is not implemented yet")
