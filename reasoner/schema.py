"""The edge <-> reasoner message contract and the VLM answer schema (ARCHITECTURE.md, Contracts).

Everything that crosses a process boundary is checked here, in one place, so the service and the
edge agree on the rules and a malformed message becomes a specific error (an error reply or a
counted drop), never an exception that takes a process down. Pure Python + msgpack: the edge
imports this module, so it must stay free of zmq, torch and transformers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

#: Bump when a field changes meaning; the reasoner refuses other versions with ``bad_version``.
SCHEMA_VERSION = 1

#: Size limits. A keyframe is a small face crop plus a downscaled context frame, a few tens of KiB;
#: anything far beyond that is a bug or an attack and is refused before it is decoded.
MAX_MESSAGE_BYTES = 1 << 20
#: Transport-level hard cap (``zmq.MAXMSGSIZE``): larger frames make zmq drop the connection
#: outright; between the two limits the sender gets a ``too_large`` error reply.
HARD_MESSAGE_BYTES = 8 << 20
MAX_CROP_BYTES = 256 << 10
MAX_CONTEXT_BYTES = 512 << 10
MAX_TEXT = 256
MAX_LABELS = 16
DEFAULT_DEADLINE_MS = 3000
MAX_DEADLINE_MS = 60_000

#: Answer bounds: keep the constrained grammar finite so a bounded ``max_new_tokens`` always
#: reaches the closing brace (every answer parses).
MAX_RATIONALE = 160
MAX_AUS = 6

#: FACS action units the answer may name (those used by the EMFACS prototypes in ``verify.py``).
AU_IDS: tuple[str, ...] = (
    "AU1",
    "AU2",
    "AU4",
    "AU5",
    "AU6",
    "AU7",
    "AU9",
    "AU10",
    "AU12",
    "AU14",
    "AU15",
    "AU16",
    "AU17",
    "AU20",
    "AU23",
    "AU24",
    "AU25",
    "AU26",
)

KEYFRAME_REQUIRED = (
    "v",
    "type",
    "id",
    "stream",
    "track",
    "frame",
    "t_ns",
    "crop",
    "labels",
    "probs",
    "reason",
)
KEYFRAME_OPTIONAL = ("context", "box", "va", "deadline_ms", "sent_ns")
PING_FIELDS = ("v", "type", "id")


class ProtocolError(ValueError):
    """A message that breaks the contract; ``code`` goes into the error reply."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class AnswerError(ValueError):
    """A model answer that does not satisfy the answer schema (counted as an inconsistent sample)."""


# --------------------------------------------------------------------------- wire format


def pack(obj: dict[str, Any]) -> bytes:
    import msgpack

    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """Decode one message with every msgpack container limit set, so a hostile payload cannot
    allocate more than ``max_bytes``."""
    import msgpack

    if len(data) > max_bytes:
        raise ProtocolError("too_large", f"message of {len(data)} bytes exceeds the {max_bytes}-byte limit")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_bin_len=max_bytes,
            max_str_len=max_bytes,
            max_array_len=4096,
            max_map_len=64,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises several unrelated types for bad bytes
        raise ProtocolError("malformed", f"not a msgpack message ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise ProtocolError("malformed", f"message must be a map, got {type(obj).__name__}")
    return obj


def _need(msg: dict, key: str, types: type | tuple[type, ...], what: str) -> Any:
    value = msg.get(key)
    if isinstance(value, bool) or not isinstance(value, types):  # bool is an int in Python: refuse it
        raise ProtocolError("malformed", f"field {key!r} must be {what}, got {type(value).__name__}")
    return value


def check_header(msg: dict[str, Any]) -> str:
    """Version and type first: a wrong-version sender gets ``bad_version`` even if its fields differ."""
    v = msg.get("v")
    if v != SCHEMA_VERSION:
        raise ProtocolError(
            "bad_version", f"schema version {v!r} not supported (this side speaks {SCHEMA_VERSION})"
        )
    kind = msg.get("type")
    if kind not in ("keyframe", "ping"):
        raise ProtocolError("malformed", f"unknown message type {kind!r}")
    rid = _need(msg, "id", str, "a string")
    if not 0 < len(rid) <= 64:
        raise ProtocolError("malformed", "field 'id' must be 1-64 characters")
    return kind


def validate_keyframe(msg: dict[str, Any]) -> dict[str, Any]:
    """Check a keyframe request field by field; returns it with defaults filled in."""
    check_header(msg)
    unknown = set(msg) - set(KEYFRAME_REQUIRED) - set(KEYFRAME_OPTIONAL)
    if unknown:
        raise ProtocolError("unknown_field", f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
    missing = [k for k in KEYFRAME_REQUIRED if k not in msg]
    if missing:
        raise ProtocolError("malformed", f"missing field(s): {', '.join(missing)}")
    stream = _need(msg, "stream", str, "a string")
    if len(stream) > MAX_TEXT:
        raise ProtocolError("malformed", "field 'stream' too long")
    for key in ("track", "frame", "t_ns"):
        _need(msg, key, int, "an integer")
    reason = _need(msg, "reason", str, "a string")
    if len(reason) > 64:
        raise ProtocolError("malformed", "field 'reason' too long")
    crop = _need(msg, "crop", bytes, "JPEG bytes")
    if not 0 < len(crop) <= MAX_CROP_BYTES or not crop.startswith(b"\xff\xd8"):
        raise ProtocolError("malformed", f"field 'crop' must be a JPEG of at most {MAX_CROP_BYTES} bytes")
    context = msg.get("context")
    if context is not None and (
        not isinstance(context, bytes)
        or len(context) > MAX_CONTEXT_BYTES
        or not context.startswith(b"\xff\xd8")
    ):
        raise ProtocolError(
            "malformed", f"field 'context' must be a JPEG of at most {MAX_CONTEXT_BYTES} bytes"
        )
    labels = _need(msg, "labels", list, "a list of label names")
    if not 0 < len(labels) <= MAX_LABELS or not all(isinstance(x, str) and 0 < len(x) <= 32 for x in labels):
        raise ProtocolError("malformed", "field 'labels' must be 1-16 label names")
    if len(set(labels)) != len(labels):
        raise ProtocolError("malformed", "field 'labels' has duplicates")
    probs = _need(msg, "probs", list, "a list of probabilities")
    if len(probs) != len(labels) or not all(_finite_in(p, 0.0, 1.0) for p in probs):
        raise ProtocolError("malformed", "field 'probs' must hold one probability in [0, 1] per label")
    box = msg.get("box")
    if box is not None and (
        not isinstance(box, list) or len(box) != 4 or not all(_finite_in(x, -1e6, 1e6) for x in box)
    ):
        raise ProtocolError("malformed", "field 'box' must be [x, y, w, h]")
    va = msg.get("va")
    if va is not None and (
        not isinstance(va, list) or len(va) != 2 or not all(_finite_in(x, -1.0, 1.0) for x in va)
    ):
        raise ProtocolError("malformed", "field 'va' must be [valence, arousal] in [-1, 1]")
    deadline = msg.get("deadline_ms", DEFAULT_DEADLINE_MS)
    if not _finite_in(deadline, 1, MAX_DEADLINE_MS):
        raise ProtocolError("malformed", f"field 'deadline_ms' must be in 1..{MAX_DEADLINE_MS}")
    out = dict(msg)
    out["deadline_ms"] = deadline
    out["probs"] = [float(p) for p in probs]
    return out


def _finite_in(x: Any, lo: float, hi: float) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and lo <= x <= hi


def error_reply(rid: Any, code: str, message: str) -> dict[str, Any]:
    return {
        "v": SCHEMA_VERSION,
        "type": "error",
        "id": rid if isinstance(rid, str) else None,
        "code": code,
        "message": message[:MAX_TEXT],
    }


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
        if not _finite_in(x, -1.0, 1.0):
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
            or not _finite_in(item.get("intensity"), 0, 1)
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
