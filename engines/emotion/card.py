"""Model cards: what a shipped or user-supplied emotion network is (labels, input, preprocessing).

Its own module, below every backend and the loader, so that ``engine`` (the loader), ``backend``
(the base class) and the runtime backends all import it and nothing here imports them back: the
import graph inside ``engines.emotion`` is a line, not a circle. Swapping the v0 port for a
distilled student is a card change, not a code change.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

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


class EngineError(Exception):
    """A model or backend cannot be loaded, or a call got input it cannot run on.

    The message is meant for the user as is (the CLI prints ``emostream: error: <msg>``). It lives
    here, in the lowest module of the package, because card parsing is the first thing that raises it.
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
