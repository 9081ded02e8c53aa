"""The VLM answer schema (what a model must say), on top of the edge <-> reasoner contract.

The message contract itself -- limits, error codes, the typed messages and the one validator both
directions use -- lives in :mod:`emostream.contract`, which the edge imports too; the names below are
re-exported so the reasoner's modules (and existing callers) keep one import. What stays here is the
reasoner's own business: the shape of a model's answer, as a JSON schema (OpenAI-compatible servers),
a bounded Lark grammar (llguidance) and a checker that turns text into an :class:`Answer`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from emostream.contract import (
    AU_IDS,
    DEFAULT_DEADLINE_MS,
    ERROR_CODES,
    ERROR_FIELDS,
    HARD_MESSAGE_BYTES,
    KEYFRAME_OPTIONAL,
    KEYFRAME_REQUIRED,
    MAX_AUS,
    MAX_CONTEXT_BYTES,
    MAX_CROP_BYTES,
    MAX_DEADLINE_MS,
    MAX_LABELS,
    MAX_MESSAGE_BYTES,
    MAX_RATIONALE,
    MAX_REPLY_MS,
    MAX_SAMPLES,
    MAX_TEXT,
    PING_FIELDS,
    PONG_FIELDS,
    PROB_SUM_TOLERANCE,
    REPLY_OPTIONAL,
    REPLY_REQUIRED,
    SCHEMA_VERSION,
    ProtocolError,
    check_header,
    decode_reply,
    error_reply,
    finite_in,
    pack,
    unpack,
    validate,
    validate_keyframe,
    validate_reply,
)

__all__ = [
    "AU_IDS", "DEFAULT_DEADLINE_MS", "ERROR_CODES", "ERROR_FIELDS", "HARD_MESSAGE_BYTES", "KEYFRAME_OPTIONAL",
    "KEYFRAME_REQUIRED", "MAX_AUS", "MAX_CONTEXT_BYTES", "MAX_CROP_BYTES", "MAX_DEADLINE_MS", "MAX_LABELS",
    "MAX_MESSAGE_BYTES", "MAX_RATIONALE", "MAX_REPLY_MS", "MAX_SAMPLES", "MAX_TEXT", "PING_FIELDS", "PONG_FIELDS",
    "PROB_SUM_TOLERANCE", "REPLY_OPTIONAL", "REPLY_REQUIRED", "SCHEMA_VERSION", "ProtocolError", "check_header",
    "decode_reply", "error_reply", "pack", "unpack", "validate", "validate_keyframe", "validate_reply",
    "Answer", "AnswerError", "answer_json_schema", "answer_lark_grammar", "validate_answer", "parse_answer",
]


class AnswerError(ValueError):
    """A model answer that does not satisfy the answer schema (counted as an inconsistent sample)."""

# --------------------------------------------------------------------------- the answer


@dataclass(frozen=True)
class Answer:
    """One model answer, validated: the three grains SEKE checks against each other."""

    expression: str
    valence: float
    arousal: float
    aus: tuple[tuple[str, float], ...]
    rationale: str

    def aus_list(self) -> list[dict[str, float | str]]:
        return [{"au": au, "intensity": round(i, 3)} for au, i in self.aus]


def answer_json_schema(labels: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """JSON schema of an answer, for ``response_format`` on OpenAI-compatible servers."""
    return {
        "type": "object",
        "properties": {
            "expression": {"type": "string", "enum": list(labels)},
            "valence": {"type": "number", "minimum": -1, "maximum": 1},
            "arousal": {"type": "number", "minimum": -1, "maximum": 1},
            "aus": {
                "type": "array",
                "maxItems": MAX_AUS,
                "items": {
                    "type": "object",
                    "properties": {
                        "au": {"type": "string", "enum": list(AU_IDS)},
                        "intensity": {"type": "number", "minimum": 0, "maximum": 1},
                    },
                    "required": ["au", "intensity"],
                    "additionalProperties": False,
                },
            },
            "rationale": {"type": "string", "maxLength": MAX_RATIONALE},
        },
        "required": ["expression", "valence", "arousal", "aus", "rationale"],
        "additionalProperties": False,
    }


def answer_lark_grammar(labels: tuple[str, ...] | list[str]) -> str:
    """The same answer as a *bounded* Lark grammar for llguidance.

    Why not the JSON schema: JSON numbers and strings are unbounded, and a tiny or confused model
    can wander in digits forever and be cut by ``max_new_tokens`` before the closing brace. Here
    numbers have at most two decimals, the rationale at most ``MAX_RATIONALE`` characters and the
    AU list at most ``MAX_AUS`` items, so the whole answer has a hard length bound.
    """
    expr = " | ".join(json.dumps(json.dumps(x)) for x in labels)
    aus = " | ".join(json.dumps(json.dumps(x)) for x in AU_IDS)
    item = "au"
    nested = ""
    for _ in range(MAX_AUS - 1):
        nested = f'("," {item}{nested})?'
    return "\n".join(
        [
            'start: "{\\"expression\\":" EXPR ",\\"valence\\":" SNUM ",\\"arousal\\":" SNUM '
            '",\\"aus\\":[" aulist "],\\"rationale\\":" RAT "}"',
            f"aulist: ({item} {nested})?",
            'au: "{\\"au\\":" AUID ",\\"intensity\\":" UNUM "}"',
            f"EXPR: {expr}",
            f"AUID: {aus}",
            r"SNUM: /-?(0(\.[0-9]{1,2})?|1(\.00?)?)/",
            r"UNUM: /0(\.[0-9]{1,2})?|1(\.00?)?/",
            f'RAT: /"[A-Za-z0-9 ,.;:()\'+-]{{0,{MAX_RATIONALE}}}"/',
        ]
    )


def validate_answer(obj: Any, labels: tuple[str, ...] | list[str]) -> Answer:
    """Turn a decoded answer into an :class:`Answer`, or raise :class:`AnswerError` saying why."""
    if not isinstance(obj, dict):
        raise AnswerError("answer is not a JSON object")
    expr = obj.get("expression")
    if not isinstance(expr, str) or expr.strip().lower() not in labels:
        raise AnswerError(f"expression {expr!r} is not one of the candidate labels")
    vals = []
    for key in ("valence", "arousal"):
        x = obj.get(key)
        if not finite_in(x, -1.0, 1.0):
            raise AnswerError(f"{key} {x!r} is not a number in [-1, 1]")
        vals.append(float(x))
    raw_aus = obj.get("aus", [])
    if not isinstance(raw_aus, list) or len(raw_aus) > 2 * MAX_AUS:
        raise AnswerError("aus must be a short list")
    aus: dict[str, float] = {}
    for item in raw_aus:
        if isinstance(item, str):  # tolerate ["AU6", "AU12"] from lenient servers: intensity unknown
            item = {"au": item, "intensity": 1.0}
        if (
            not isinstance(item, dict)
            or item.get("au") not in AU_IDS
            or not finite_in(item.get("intensity"), 0, 1)
        ):
            raise AnswerError(f"bad action unit entry {item!r}")
        aus[item["au"]] = max(aus.get(item["au"], 0.0), float(item["intensity"]))
    rationale = obj.get("rationale", "")
    if not isinstance(rationale, str):
        raise AnswerError("rationale must be a string")
    return Answer(
        expr.strip().lower(), vals[0], vals[1], tuple(aus.items()), rationale.strip()[:MAX_RATIONALE]
    )


def parse_answer(text: str, labels: tuple[str, ...] | list[str]) -> Answer:
    """Parse a model's text answer (tolerating a code fence around the JSON)."""
    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`")
        body = body[body.find("{") :]
    try:
        obj = json.loads(body)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise AnswerError(f"answer is not valid JSON ({exc.__class__.__name__})") from None
    return validate_answer(obj, labels)
