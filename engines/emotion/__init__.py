"""The emotion network behind one small interface (ONNX Runtime, torch, TensorRT backends).

Importing this package pulls in numpy only; backends load their runtimes when chosen. Inside it the
imports run one way: ``card`` (model cards, errors) <- ``backend`` (the base class) <- the runtime
backends; ``engine`` (the loader) imports the backends lazily and nothing imports ``engine`` back.
"""

from emostream.engines.emotion.backend import EmotionBackend, EmotionEngine
from emostream.engines.emotion.card import (
    DEFAULT_MODEL,
    MODEL_REGISTRY,
    MODELS_DIR,
    EmotionModelInfo,
    EngineError,
    load_model_info,
)
from emostream.engines.emotion.engine import BACKENDS, FlipTTAEngine, load_engine

__all__ = [
    "BACKENDS",
    "DEFAULT_MODEL",
    "MODEL_REGISTRY",
    "MODELS_DIR",
    "EmotionBackend",
    "EmotionEngine",
    "EmotionModelInfo",
    "EngineError",
    "FlipTTAEngine",
    "load_engine",
    "load_model_info",
]
