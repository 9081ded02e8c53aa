"""emostream: real-time facial-emotion analysis for the edge.

The repository keeps one folder per layer (``streams/``, ``edge/``, ``engines/``, ``calibration/``,
``reasoner/``, ``training/``); the build maps each into this namespace (``emostream.edge``, …) so that
installing emostream never claims generic top-level names such as ``training`` or ``engines``.

The Python API (``emostream.Analyzer``, ``emostream.open_source``, ``emostream.FaceBatch``,
``emostream.frame_record``; see :mod:`emostream.api`) is loaded on first use, so ``import emostream``
stays cheap: no mediapipe, onnxruntime or GStreamer until a program asks for them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> the module that defines it (imported on first attribute access).
_LAZY = {
    "Analyzer": "emostream.api",
    "AnalyzerError": "emostream.api",
    "FaceBatch": "emostream.edge.face_batch",
    "frame_record": "emostream.edge.face_batch",
    "open_source": "emostream.streams",
    "Frame": "emostream.streams",
}

__all__ = ["Analyzer", "AnalyzerError", "FaceBatch", "Frame", "__version__", "frame_record", "open_source"]

if TYPE_CHECKING:
    from emostream.api import Analyzer, AnalyzerError
    from emostream.edge.face_batch import FaceBatch, frame_record
    from emostream.streams import Frame, open_source


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'emostream' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
