"""The backend loader (``load_engine``: by name or ``auto``, with the reason for the choice) and flip TTA.

Callers (the edge runtime, benchmarks, calibration) pass uint8 face crops and get label
probabilities back; preprocessing, label names and softmax/temperature come from the model card
(:mod:`.card`), the shared run/close code from the base class (:mod:`.backend`). This module imports
no torch and no TensorRT: backends are imported lazily by :func:`load_engine` so the edge hot path
stays light. Backends import ``card`` and ``backend``, never this module, so there is no circle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emostream.engines.emotion.backend import (
    EmotionBackend,
    EmotionEngine,
    check_threads,
)
from emostream.engines.emotion.card import (
    DEFAULT_MODEL,
    EmotionModelInfo,
    EngineError,
    load_model_info,
)

BACKENDS: tuple[str, ...] = ("auto", "onnxruntime", "torch", "tensorrt")


def load_engine(
    backend: str = "auto",
    model: str | Path | EmotionModelInfo = DEFAULT_MODEL,
    *,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
    tta: bool = False,
) -> EmotionBackend:
    """Load ``model`` on ``backend``; the engine's ``selection`` says which backend runs and why.

    ``"auto"`` picks TensorRT where it is importable, cuda-python is installed and a CUDA device is
    present (a Jetson), else ONNX Runtime on the CPU, which is the embedded default; ``selection``
    then names what was missing (``"onnxruntime (auto: tensorrt not importable: …)"``), because a
    Jetson that quietly runs on the CPU is a bug its user cannot see. ``threads`` sets the CPU
    intra-op thread count (None: the runtime's default); ``cache_dir`` is where TensorRT keeps built
    engines. ``tta`` adds horizontal-flip test-time augmentation (:class:`FlipTTAEngine`).
    """
    engine = _load_backend(backend, model, threads=threads, cache_dir=cache_dir)
    return FlipTTAEngine(engine) if tta else engine


class FlipTTAEngine(EmotionBackend):
    """Horizontal-flip test-time augmentation around any backend: one batch of crops and their mirrors.

    Faces are near-symmetric but FER-style crops are not, so the network's two answers differ and their
    geometric mean (mean log-probability) is better than either: on FER2013 val +1.3 points for the
    first student (0.640 -> 0.653), +0.4 for the longer-trained one (0.665 -> 0.670). The mirrors travel
    in the same batch, so the cost is one batch of 2N rather than two calls.

    A wrapper, not a runtime: it takes the base class's checks, empty-batch and closed-state handling
    and replaces the whole forward pass, so it wraps any backend (or another engine).
    """

    runtime = "flip-TTA"

    def __init__(self, engine: EmotionEngine) -> None:
        super().__init__(engine.model)
        self.engine = engine
        self.name = f"{engine.name}+flip-tta"  # per instance: names the wrapped backend
        self.selection = f"{getattr(engine, 'selection', engine.name)} + flip TTA"

    def _forward(self, crops: np.ndarray) -> np.ndarray:
        n = crops.shape[0]
        probs = self.engine.run(np.concatenate([crops, crops[:, :, ::-1]]))
        logp = np.log(np.clip(probs, 1e-12, None))
        z = (logp[:n] + logp[n:]) * np.float32(0.5)
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        return z.astype(np.float32, copy=False)

    def _release(self) -> None:
        self.engine.close()


def _load_backend(backend: str, model: str | Path | EmotionModelInfo, *, threads: int | None,
                  cache_dir: str | Path | None) -> EmotionBackend:
    if backend not in BACKENDS:
        raise EngineError(f"unknown emotion backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    threads = check_threads(threads)
    info = model if isinstance(model, EmotionModelInfo) else load_model_info(model)
    selection = f"{backend} (asked for by name)"
    if backend == "auto":
        from emostream.engines.emotion.tensorrt_backend import tensorrt_problems

        problems = tensorrt_problems()
        backend = "onnxruntime" if problems else "tensorrt"
        why = "; ".join(problems) if problems else "tensorrt, cuda-python and a CUDA device found"
        selection = f"{backend} (auto: {why})"
    engine: EmotionBackend
    if backend == "onnxruntime":
        from emostream.engines.emotion.onnxruntime_backend import OnnxRuntimeEngine

        engine = OnnxRuntimeEngine(info, threads=threads)
    elif backend == "torch":
        from emostream.engines.emotion.torch_backend import TorchEngine

        engine = TorchEngine(info, threads=threads)
    else:
        from emostream.engines.emotion.tensorrt_backend import TensorRTEngine

        engine = TensorRTEngine(info, cache_dir=cache_dir)
    engine.selection = selection
    return engine
