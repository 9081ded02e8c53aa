"""The emotion network behind one small interface (ONNX Runtime, torch, TensorRT backends).

Importing this package pulls in numpy only; backends load their runtimes when chosen.
"""

from emostream.engines.emotion.engine import (
    BACKENDS,
    DEFAULT_MODEL,
    MODEL_REGISTRY,
    MODELS_DIR,
    EmotionEngine,
    EmotionModelInfo,
    EngineError,
    load_engine,
    load_model_info,
)

__all__ = [
    "BACKENDS",
    "DEFAULT_MODEL",
    "MODEL_REGISTRY",
    "MODELS_DIR",
    "EmotionEngine",
    "EmotionModelInfo",
    "EngineError",
    "load_engine",
    "load_model_info",
]
