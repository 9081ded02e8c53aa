"""ONNX Runtime backend: the embedded default (CPU, no torch, no GPU)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from emostream.engines.emotion.backend import EmotionBackend
from emostream.engines.emotion.card import EmotionModelInfo, EngineError


def session_options(threads: int | None) -> ort.SessionOptions:
    """Options for a small CNN on an edge CPU.

    One inter-op thread because the graph is a chain (parallel branches gain nothing and cost
    wake-ups); intra-op threads as the caller asks, so an edge box can leave cores to decoding and
    face detection.
    """
    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # warnings about unused initialisers are noise for users
    return opts


class OnnxRuntimeEngine(EmotionBackend):
    """:class:`~emostream.engines.emotion.backend.EmotionBackend` on ONNX Runtime's CPU execution provider."""

    name = "onnxruntime"
    runtime = "ONNX Runtime"

    def __init__(self, info: EmotionModelInfo, *, threads: int | None = None) -> None:
        super().__init__(info)
        try:
            self._session: ort.InferenceSession | None = ort.InferenceSession(
                str(info.onnx_path), sess_options=session_options(threads), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/… types; all mean "unusable file".
            raise EngineError(f"ONNX Runtime cannot load {info.onnx_path}: {exc}") from None
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise EngineError(f"{info.onnx_path} has {len(inputs)} inputs; an emotion model has exactly one")
        shape = inputs[0].shape
        want = [info.channels, info.input_size, info.input_size]
        if len(shape) != 4 or [d if isinstance(d, int) else None for d in shape[1:]] != want:
            raise EngineError(f"{info.onnx_path} input shape {shape} does not match its card (N, {want})")
        if isinstance(shape[0], int):
            # Batching faces per frame is the point of the engine; a fixed batch would need padding.
            raise EngineError(
                f"{info.onnx_path} has a fixed batch of {shape[0]}; export it with a dynamic batch axis"
            )
        self._input_name = inputs[0].name
        self._output_name = self._session.get_outputs()[0].name

    def _infer(self, x: np.ndarray) -> np.ndarray:
        assert self._session is not None  # the base class never calls _infer after close()
        return self._session.run([self._output_name], {self._input_name: x})[0]

    def _release(self) -> None:
        """Drop the session; ORT frees its arena when the last reference goes."""
        self._session = None
