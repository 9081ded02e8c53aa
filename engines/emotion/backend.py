"""The one base class every emotion backend derives from, and the numpy steps they share.

Every runtime (ONNX Runtime, torch, TensorRT) used to repeat the same run/close code: validate the
crops, answer an empty batch without calling the runtime, preprocess, call the runtime, softmax,
refuse work after ``close()``. :class:`EmotionBackend` owns all of that once; a backend implements
only :meth:`EmotionBackend._infer` (one float32 NCHW batch in, raw network output out) and, if it
holds native resources, :meth:`EmotionBackend._release`. So a fix to the input checks or the
softmax lands in every backend at once, and a new runtime is a screenful of code.

This module imports numpy and the model card only: no runtime, so the edge hot path stays light.
"""

from __future__ import annotations

from typing import ClassVar, Protocol, TypeVar, runtime_checkable

import numpy as np

from emostream.engines.emotion.card import EmotionModelInfo, EngineError

_B = TypeVar("_B", bound="EmotionBackend")


@runtime_checkable
class EmotionEngine(Protocol):
    """One loaded emotion network on one backend (what the edge and the benchmarks program against)."""

    name: str
    model: EmotionModelInfo
    labels: tuple[str, ...]
    input_size: int

    def run(self, crops: np.ndarray) -> np.ndarray:
        """(N, H, W) uint8 grayscale crops at ``input_size`` -> (N, C) float32 probabilities."""
        ...

    def close(self) -> None: ...


# --- shared pre/post-processing (numpy) ---------------------------------------------------------


def check_crops(crops: object, info: EmotionModelInfo) -> np.ndarray:
    """Validate a crop batch and return it as an ndarray; raise :class:`EngineError` otherwise.

    Wrong shapes are an error rather than a silent resize: the caller owns alignment and resizing,
    and a silently resized crop would give confidently wrong emotions.
    """
    if not isinstance(crops, np.ndarray):
        raise EngineError(f"crops must be a numpy array, got {type(crops).__name__}")
    if crops.dtype != np.uint8:
        raise EngineError(f"crops must be uint8, got {crops.dtype}")
    s = info.input_size
    expected = (s, s) if info.channels == 1 else (s, s, info.channels)
    if crops.ndim != 1 + len(expected) or crops.shape[1:] != expected:
        want = "(N, " + ", ".join(str(d) for d in expected) + ")"
        raise EngineError(f"crops must have shape {want} for model {info.name}, got {crops.shape}")
    return crops


def preprocess(crops: np.ndarray, info: EmotionModelInfo, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 crops -> (N, C, H, W) float32 ``(x/255 - mean) * scale``, written straight into ``out``.

    One fused multiply into a preallocated NCHW buffer and one in-place subtract: no float64
    temporaries, no extra copies on the hot path.
    """
    n = crops.shape[0]
    s = info.input_size
    if out is None:
        out = np.empty((n, info.channels, s, s), dtype=np.float32)
    src = crops[:, None] if info.channels == 1 else crops.transpose(0, 3, 1, 2)
    np.multiply(src, np.float32(info.scale / 255.0), out=out, dtype=np.float32)
    out -= np.float32(info.mean * info.scale)
    return out


def postprocess(raw: np.ndarray, info: EmotionModelInfo) -> np.ndarray:
    """Network output -> float32 probabilities (softmax with the card's temperature for logits)."""
    raw = np.asarray(raw, dtype=np.float32)
    if raw.ndim != 2 or raw.shape[1] != info.num_classes:
        raise EngineError(
            f"model {info.name} produced shape {raw.shape}, expected (N, {info.num_classes}) for its labels"
        )
    if info.outputs == "probs":
        return np.ascontiguousarray(raw)
    z = raw / np.float32(info.temperature) if info.temperature != 1.0 else raw.copy()
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def empty_result(info: EmotionModelInfo) -> np.ndarray:
    """The (0, C) answer for an empty batch (no runtime call: some runtimes reject batch 0)."""
    return np.zeros((0, info.num_classes), dtype=np.float32)


def check_threads(threads: int | None) -> int | None:
    """Validate a CPU thread count up front, so a bad ``--threads`` is a user error, not a runtime crash."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise EngineError(f"threads must be a positive integer or None, got {threads!r}")
    return threads


# --- the base class -----------------------------------------------------------------------------


class EmotionBackend:
    """check crops -> empty batch? -> preprocess -> :meth:`_infer` -> postprocess, once for every runtime.

    Subclasses set :attr:`name` (the ``--engine`` value) and :attr:`runtime` (the product name used in
    messages), call ``super().__init__(info)`` first, and implement :meth:`_infer`. A backend whose
    runtime has a largest batch sets :attr:`max_batch`; larger batches then run in chunks. A wrapper
    that transforms whole crop batches (flip TTA) overrides :meth:`_forward` instead.

    ``selection`` says why this engine is the one running (set by ``load_engine``: asked for by name,
    or what ``auto`` found); a run summary prints it so a Jetson that fell back to the CPU says so.
    """

    name: str = "backend"
    runtime: ClassVar[str] = "the emotion runtime"
    max_batch: ClassVar[int | None] = None

    def __init__(self, info: EmotionModelInfo) -> None:
        self._closed = False
        self.model = info
        self.labels = info.labels
        self.input_size = info.input_size
        self.selection = f"{self.name} (asked for by name)"

    def run(self, crops: np.ndarray) -> np.ndarray:
        """(N, H, W) uint8 crops -> (N, C) float32 probabilities in ``labels`` order."""
        if self._closed:
            raise EngineError(f"this {self.runtime} engine is closed")
        crops = check_crops(crops, self.model)
        if crops.shape[0] == 0:
            return empty_result(self.model)
        return self._forward(crops)

    def _forward(self, crops: np.ndarray) -> np.ndarray:
        """Validated, non-empty crops -> probabilities, in chunks of at most :attr:`max_batch`."""
        step = self.max_batch or crops.shape[0]
        parts = [self._forward_chunk(crops[i : i + step]) for i in range(0, crops.shape[0], step)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _forward_chunk(self, crops: np.ndarray) -> np.ndarray:
        x = preprocess(crops, self.model)
        try:
            raw = self._infer(x)
        except EngineError:
            raise
        except Exception as exc:  # a failure inside the runtime: a one-line user error, cause kept chained
            raise EngineError(f"{self.runtime} failed on a batch of {x.shape[0]}: {exc}") from exc
        return postprocess(raw, self.model)

    def _infer(self, x: np.ndarray) -> np.ndarray:
        """(N, C, H, W) float32, C-contiguous -> (N, num_classes) raw output (logits or probs per the card)."""
        raise NotImplementedError(f"{type(self).__name__} must implement _infer")

    def _release(self) -> None:
        """Free the runtime's resources; called once, by the first :meth:`close`."""

    def close(self) -> None:
        """Release the runtime; later :meth:`run` calls raise :class:`EngineError`. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._release()

    def __enter__(self: _B) -> _B:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
