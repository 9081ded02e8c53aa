"""The emotion-network interface every backend implements, model cards, and the backend loader.

Callers (the edge runtime, benchmarks, calibration) pass uint8 face crops and get label
probabilities back; preprocessing, label names and softmax/temperature come from the model card
(the JSON beside the ``.onnx``), so swapping the v0 port for a distilled student is a card change,
not a code change. This module imports no torch and no TensorRT: backends are imported lazily by
:func:`load_engine` so the edge hot path stays light.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

import numpy as np

from emostream.engines.labels import canonical_label

#: Where shipped model files and their cards live.
MODELS_DIR = Path(__file__).resolve().parents[1] / "models"

#: Registered model name -> card filename in :data:`MODELS_DIR`.
MODEL_REGISTRY: dict[str, str] = {
    "v0": "fer_mini_xception_v0.json",
    # The student (issue 3): FER2013 val 0.640 vs v0's 0.584, faster on the CPU; see models/student.md.
    "student": "student.json",
    "student-int8": "student_int8.json",
}
DEFAULT_MODEL: str = "student"

BACKENDS: tuple[str, ...] = ("auto", "onnxruntime", "torch", "tensorrt")


class EngineError(Exception):
    """A model or backend cannot be loaded, or a call got input it cannot run on.

    The message is meant for the user as is (the CLI prints ``emostream: error: <msg>``).
    """


@dataclass(frozen=True)
class EmotionModelInfo:
    """What a backend needs to know about a model, parsed from its JSON card."""

    name: str
    onnx_path: Path
    labels: tuple[str, ...]
    input_size: int
    channels: int
    mean: float
    scale: float
    outputs: str
    torch_state: Path | None
    temperature: float = 1.0
    arch: str | None = None
    arch_kwargs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), compare=False)
    card_path: Path | None = None

    @property
    def num_classes(self) -> int:
        return len(self.labels)


@runtime_checkable
class EmotionEngine(Protocol):
    """One loaded emotion network on one backend."""

    name: str
    model: EmotionModelInfo
    labels: tuple[str, ...]
    input_size: int

    def run(self, crops: np.ndarray) -> np.ndarray:
        """(N, H, W) uint8 grayscale crops at ``input_size`` -> (N, C) float32 probabilities."""
        ...

    def close(self) -> None: ...


# --- model cards ----------------------------------------------------------------------------------

_REQUIRED_CARD_KEYS = ("name", "onnx", "labels", "input_size", "channels", "mean", "scale", "outputs")


def _card_path_for(model: str | Path) -> Path:
    if isinstance(model, str) and model in MODEL_REGISTRY:
        return MODELS_DIR / MODEL_REGISTRY[model]
    path = Path(model).expanduser()
    if path.suffix.lower() not in (".json", ".onnx"):
        if isinstance(model, str) and not path.exists():
            raise EngineError(
                f"unknown emotion model {model!r}; registered: {', '.join(sorted(MODEL_REGISTRY))} "
                "(or give the path of a model card .json or an .onnx with its card beside it)"
            )
        raise EngineError(f"emotion model path {path} is neither a .json card nor an .onnx file")
    if not path.is_file():
        raise EngineError(f"emotion model file not found: {path}")
    if path.suffix.lower() == ".onnx":
        card = path.with_suffix(".json")
        if not card.is_file():
            raise EngineError(
                f"no model card {card.name} beside {path}: a card names the labels and the preprocessing"
            )
        return card
    return path


def _parse_card(card_path: Path) -> EmotionModelInfo:
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineError(f"cannot read model card {card_path}: {exc}") from None
    if not isinstance(card, dict):
        raise EngineError(f"model card {card_path} is not a JSON object")
    missing = [k for k in _REQUIRED_CARD_KEYS if k not in card]
    if missing:
        raise EngineError(f"model card {card_path} lacks {', '.join(missing)}")
    try:
        labels = tuple(canonical_label(str(x)) for x in card["labels"])
        input_size = int(card["input_size"])
        channels = int(card["channels"])
        mean, scale = float(card["mean"]), float(card["scale"])
        temperature = float(card.get("temperature", 1.0))
    except (TypeError, ValueError) as exc:
        raise EngineError(f"model card {card_path} is malformed: {exc}") from None
    outputs = card["outputs"]
    if outputs not in ("probs", "logits"):
        raise EngineError(f"model card {card_path}: outputs must be 'probs' or 'logits', not {outputs!r}")
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise EngineError(f"model card {card_path}: labels must be at least two distinct names")
    if input_size < 8 or channels not in (1, 3) or scale == 0 or temperature <= 0:
        raise EngineError(
            f"model card {card_path}: bad input_size/channels/scale/temperature "
            f"({input_size}, {channels}, {scale}, {temperature})"
        )
    if outputs == "probs" and temperature != 1.0:
        raise EngineError(f"model card {card_path}: a temperature needs a model that outputs logits")
    onnx_path = (card_path.parent / str(card["onnx"])).resolve()
    if not onnx_path.is_file():
        raise EngineError(f"model card {card_path} names {onnx_path}, which does not exist")
    torch_state = card.get("torch_state")
    arch = card.get("arch")
    arch_kwargs = card.get("arch_kwargs", {})
    if not isinstance(arch_kwargs, dict):
        raise EngineError(f"model card {card_path}: arch_kwargs must be an object")
    return EmotionModelInfo(
        name=str(card["name"]),
        onnx_path=onnx_path,
        labels=labels,
        input_size=input_size,
        channels=channels,
        mean=mean,
        scale=scale,
        outputs=outputs,
        torch_state=(card_path.parent / str(torch_state)).resolve() if torch_state else None,
        temperature=temperature,
        arch=str(arch) if arch else None,
        arch_kwargs=MappingProxyType(dict(arch_kwargs)),
        card_path=card_path.resolve(),
    )


def load_model_info(model: str | Path = DEFAULT_MODEL) -> EmotionModelInfo:
    """Resolve a registered model name, a card ``.json`` or an ``.onnx`` (card beside it) to its info."""
    return _parse_card(_card_path_for(model))


# --- shared pre/post-processing (numpy, used by every backend) -----------------------------------


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
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise EngineError(f"threads must be a positive integer or None, got {threads!r}")
    return threads


# --- loader -------------------------------------------------------------------------------------


def load_engine(
    backend: str = "auto",
    model: str | Path | EmotionModelInfo = DEFAULT_MODEL,
    *,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
    tta: bool = False,
) -> EmotionEngine:
    """Load ``model`` on ``backend``.

    ``"auto"`` picks TensorRT where it is importable and a CUDA device is present (a Jetson), else
    ONNX Runtime on the CPU, which is the embedded default. ``threads`` sets the CPU intra-op thread
    count (None: the runtime's default); ``cache_dir`` is where TensorRT keeps built engines.
    ``tta`` adds horizontal-flip test-time augmentation (:class:`FlipTTAEngine`).
    """
    engine = _load_backend(backend, model, threads=threads, cache_dir=cache_dir)
    return FlipTTAEngine(engine) if tta else engine


class FlipTTAEngine:
    """Horizontal-flip test-time augmentation around any backend: one batch of crops and their mirrors.

    Faces are near-symmetric but FER-style crops are not, so the network's two answers differ and their
    geometric mean (mean log-probability) is better than either: +1.3 points on FER2013 val for the
    student (0.640 -> 0.653). The mirrors travel in the same batch, so the cost is one batch of 2N
    rather than two calls.
    """

    def __init__(self, engine: EmotionEngine) -> None:
        self.engine = engine
        self.name = f"{engine.name}+flip-tta"
        self.model, self.labels, self.input_size = engine.model, engine.labels, engine.input_size

    def run(self, crops: np.ndarray) -> np.ndarray:
        crops = check_crops(crops, self.model)
        n = crops.shape[0]
        if n == 0:
            return empty_result(self.model)
        probs = self.engine.run(np.concatenate([crops, crops[:, :, ::-1]]))
        logp = np.log(np.clip(probs, 1e-12, None))
        z = (logp[:n] + logp[n:]) * np.float32(0.5)
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        return z.astype(np.float32, copy=False)

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> FlipTTAEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _load_backend(backend: str, model: str | Path | EmotionModelInfo, *, threads: int | None,
                  cache_dir: str | Path | None) -> EmotionEngine:
    if backend not in BACKENDS:
        raise EngineError(f"unknown emotion backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    threads = check_threads(threads)
    info = model if isinstance(model, EmotionModelInfo) else load_model_info(model)
    if backend == "auto":
        from emostream.engines.emotion.tensorrt_backend import tensorrt_usable

        backend = "tensorrt" if tensorrt_usable() else "onnxruntime"
    if backend == "onnxruntime":
        from emostream.engines.emotion.onnxruntime_backend import OnnxRuntimeEngine

        return OnnxRuntimeEngine(info, threads=threads)
    if backend == "torch":
        from emostream.engines.emotion.torch_backend import TorchEngine

        return TorchEngine(info, threads=threads)
    from emostream.engines.emotion.tensorrt_backend import TensorRTEngine

    return TensorRTEngine(info, cache_dir=cache_dir)
