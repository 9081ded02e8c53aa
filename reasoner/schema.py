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

from emostream.engines.labels import CANONICAL_LABELS

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
#: ``probs`` (keyframe) and ``fused`` (reply) are probability distributions: each value in [0, 1]
#: and the sum within this of 1. Loose enough for float32 softmax output rounded to 4 decimals,
#: tight enough to refuse a vector of scores (sum 7) or a one-hot per label.
PROB_SUM_TOLERANCE = 1e-2

#: Every ``code`` an error reply may carry (README, Contract). The edge refuses others as malformed.
ERROR_CODES: tuple[str, ...] = (
    "malformed",
    "unknown_field",
    "bad_version",
    "too_large",
    "expired",
    "overloaded",
    "engine",
    "no_answer",
    "internal",
)

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


def _check_version(msg: dict[str, Any]) -> None:
    v = msg.get("v")
    if type(v) is not int or v != SCHEMA_VERSION:  # not True, not 1.0: the version is an integer
        raise ProtocolError(
            "bad_version", f"schema version {str(v)[:32]!r} not supported (this side speaks {SCHEMA_VERSION})"
        )


def check_header(msg: dict[str, Any]) -> str:
    """Version and type first: a wrong-version sender gets ``bad_version`` even if its fields differ."""
    _check_version(msg)
    kind = msg.get("type")
    if kind not in ("keyframe", "ping"):
        raise ProtocolError("malformed", f"unknown message type {str(kind)[:32]!r}")
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
    unknown_labels = [x for x in labels if x not in CANONICAL_LABELS]
    if unknown_labels:
        # The engines, priors and fusion gate speak the canonical names only: an alias or a typo
        # would silently become "no prior" downstream, so it is refused here, by name.
        raise ProtocolError(
            "malformed",
            f"field 'labels' has unknown label(s) {', '.join(map(repr, unknown_labels))}; "
            f"known: {', '.join(CANONICAL_LABELS)}",
        )
    if len(set(labels)) != len(labels):
        raise ProtocolError("malformed", "field 'labels' has duplicates")
    probs = _need(msg, "probs", list, "a list of probabilities")
    if len(probs) != len(labels) or not all(_finite_in(p, 0.0, 1.0) for p in probs):
        raise ProtocolError("malformed", "field 'probs' must hold one probability in [0, 1] per label")
    _check_distribution("probs", probs)
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


def _check_distribution(key: str, values: list[Any]) -> None:
    """Values already checked to lie in [0, 1]; they must also sum to 1 (within the tolerance).

    Why: a per-label score vector (sum 7) or a softmax over the wrong axis passes every per-value
    check, and would then be fused and answered as if it were a distribution.
    """
    total = math.fsum(values)
    if not abs(total - 1.0) <= PROB_SUM_TOLERANCE:
        raise ProtocolError(
            "malformed", f"field {key!r} sums to {total:.6g}; probabilities must sum to 1 (±{PROB_SUM_TOLERANCE:g})"
        )


def error_reply(rid: Any, code: str, message: str) -> dict[str, Any]:
    return {
        "v": SCHEMA_VERSION,
        "type": "error",
        "id": rid if isinstance(rid, str) and 0 < len(rid) <= 64 else None,  # never echo a bad id
        "code": code,
        "message": message[:MAX_TEXT],
    }


# --------------------------------------------------------------------------- what the edge receives

REPLY_REQUIRED = (
    "v",
    "type",
    "id",
    "expression",
    "valence",
    "arousal",
    "aus",
    "rationale",
    "verified",
    "agreement",
    "samples",
    "fused",
    "engine",
    "engine_ms",
)
#: ``service_ms`` is added by the ZeroMQ service; the in-process reasoner has no service around it.
REPLY_OPTIONAL = ("service_ms",)
ERROR_FIELDS = ("v", "type", "id", "code", "message")
PONG_FIELDS = ("v", "type", "id", "engine")
#: Upper bound on ``samples`` (SEKE answers per keyframe) and on the millisecond fields: far beyond
#: any real value, only there so a hostile number cannot pass as a measurement.
MAX_SAMPLES = 1000
MAX_REPLY_MS = 1e7


def validate_reply(msg: dict[str, Any], labels: tuple[str, ...] | list[str] | None = None) -> dict[str, Any]:
    """Check a message from the reasoner (``reply``, ``error`` or ``pong``) as the edge receives it.

    Replies are untrusted input on the edge just as keyframes are on the reasoner: a buggy or
    hostile reasoner must cost the edge a counted drop, never an exception or a nonsense record.
    ``labels`` are the candidate labels of the request the reply answers (canonical names when
    unknown): ``expression`` must be one of them and ``fused`` a distribution over exactly them.
    Returns ``msg`` with its numbers as floats; raises :class:`ProtocolError` otherwise.
    """
    _check_version(msg)
    kind = msg.get("type")
    shapes = {"reply": REPLY_REQUIRED, "error": ERROR_FIELDS, "pong": PONG_FIELDS}
    if not isinstance(kind, str) or kind not in shapes:  # a list or map is no type (and unhashable)
        raise ProtocolError("malformed", f"unknown reply type {str(kind)[:32]!r}")
    fields = shapes[kind]
    optional = REPLY_OPTIONAL if kind == "reply" else ()
    unknown = set(msg) - set(fields) - set(optional)
    if unknown:
        raise ProtocolError("unknown_field", f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
    missing = [k for k in fields if k not in msg]
    if missing:
        raise ProtocolError("malformed", f"missing field(s): {', '.join(missing)}")
    rid = msg["id"]
    if not (kind == "error" and rid is None) and not (isinstance(rid, str) and 0 < len(rid) <= 64):
        raise ProtocolError("malformed", "field 'id' must be 1-64 characters")
    if kind == "error":
        if msg["code"] not in ERROR_CODES:
            raise ProtocolError("malformed", f"unknown error code {str(msg['code'])[:32]!r}")
        if not isinstance(msg["message"], str) or len(msg["message"]) > MAX_TEXT:
            raise ProtocolError("malformed", f"field 'message' must be a string of at most {MAX_TEXT} characters")
        return msg
    engine = msg["engine"]
    if not isinstance(engine, str) or not 0 < len(engine) <= 64:
        raise ProtocolError("malformed", "field 'engine' must be 1-64 characters")
    if kind == "pong":
        return msg
    out = dict(msg)
    candidates = tuple(labels) if labels is not None else CANONICAL_LABELS
    if not isinstance(msg["expression"], str) or msg["expression"] not in candidates:
        raise ProtocolError("malformed", "field 'expression' is not one of the request's labels")
    for key in ("valence", "arousal"):
        if not _finite_in(msg[key], -1.0, 1.0):
            raise ProtocolError("malformed", f"field {key!r} must be a number in [-1, 1]")
        out[key] = float(msg[key])
    aus = msg["aus"]
    if not isinstance(aus, list) or len(aus) > len(AU_IDS):
        raise ProtocolError("malformed", "field 'aus' must be a list of action units")
    seen: set[str] = set()
    for item in aus:
        if (
            not isinstance(item, dict)
            or set(item) != {"au", "intensity"}
            or item["au"] not in AU_IDS
            or item["au"] in seen
            or not _finite_in(item["intensity"], 0.0, 1.0)
        ):
            raise ProtocolError("malformed", "field 'aus' must hold distinct {au: AU id, intensity in [0, 1]}")
        seen.add(item["au"])
    out["aus"] = [{"au": a["au"], "intensity": float(a["intensity"])} for a in aus]
    if not isinstance(msg["rationale"], str) or len(msg["rationale"]) > MAX_RATIONALE:
        raise ProtocolError("malformed", f"field 'rationale' must be a string of at most {MAX_RATIONALE} characters")
    if not isinstance(msg["verified"], bool):
        raise ProtocolError("malformed", "field 'verified' must be true or false")
    if not _finite_in(msg["agreement"], 0.0, 1.0):
        raise ProtocolError("malformed", "field 'agreement' must be a number in [0, 1]")
    out["agreement"] = float(msg["agreement"])
    if not _finite_in(msg["samples"], 1, MAX_SAMPLES) or not isinstance(msg["samples"], int):
        raise ProtocolError("malformed", f"field 'samples' must be an integer in 1..{MAX_SAMPLES}")
    fused = msg["fused"]
    if (
        not isinstance(fused, dict)
        or not fused
        or not all(k in candidates and _finite_in(p, 0.0, 1.0) for k, p in fused.items())
        or (labels is not None and len(fused) != len(candidates))  # keys are distinct: all labels
    ):
        raise ProtocolError("malformed", "field 'fused' must map each of the request's labels to a probability")
    _check_distribution("fused", list(fused.values()))
    out["fused"] = {k: float(p) for k, p in fused.items()}
    for key in ("engine_ms", *(k for k in REPLY_OPTIONAL if k in msg)):
        if not _finite_in(msg[key], 0.0, MAX_REPLY_MS):
            raise ProtocolError("malformed", f"field {key!r} must be a number of milliseconds")
        out[key] = float(msg[key])
    return out


def decode_reply(
    data: bytes, labels: tuple[str, ...] | list[str] | None = None, max_bytes: int = MAX_MESSAGE_BYTES
) -> dict[str, Any]:
    """Bytes from the wire -> a checked reply, error or pong (or :class:`ProtocolError`)."""
    return validate_reply(unpack(data, max_bytes), labels)


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
