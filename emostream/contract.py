"""The one contract every layer speaks: label names, FACS AU ids, the valence/arousal prior, and the
edge <-> reasoner messages with their limits and their one validator (ARCHITECTURE.md, Contracts).

Why one module at the bottom of the import graph: the edge and the reasoner must agree on every rule
without importing each other (``make lint`` enforces that with import-linter), and the engines,
training and calibration need the same label names. So everything both sides of a boundary must
agree on lives here, and this module imports nothing of the project and nothing heavier than the
standard library (``msgpack`` is imported only inside :func:`pack` / :func:`unpack`).

Wire format (unchanged, schema ``v: 1``): msgpack maps with ``bin`` for JPEG bytes; field names,
order and values are those the README's "Contract" paragraph lists. The typed structs
(:class:`Keyframe`, :class:`Reply`, :class:`ErrorReply`) write exactly those maps, and
:func:`validate` is the single checker both directions use: the reasoner for what it receives
(``keyframe``, ``ping``) and the edge for what it receives (``reply``, ``error``, ``pong``).

Why plain dataclasses and a hand-written validator rather than msgspec or pydantic: the contract
promises *which* error a sender hears (``bad_version`` before anything else, ``unknown_field`` before
``malformed``, a probability vector that does not sum to 1, an alias such as ``angry`` refused by
name), and both libraries report their own error kinds in their own order; mapping those back would
be a second validator. It also keeps the edge's dependency list (Jetson images) unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

# --------------------------------------------------------------------------- labels

#: Canonical set, AffectNet-8 order. A 7-class model simply has no ``contempt``.
CANONICAL_LABELS: tuple[str, ...] = (
    "neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt",
)

#: The 7 FER2013 classes in *canonical* order (contempt omitted): the order the models trained here
#: declare in their cards. Not to be confused with :data:`FER2013_INDEX_ORDER`.
FER7_LABELS: tuple[str, ...] = CANONICAL_LABELS[:7]

#: FER2013's own class indices 0..6 (``angry, disgust, fear, happy, sad, surprise, neutral``), the
#: order of the original ``fer`` package's output. Dataset spellings; map through
#: :func:`canonical_label` before they go anywhere else.
FER2013_INDEX_ORDER: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

#: Spellings seen in datasets and model cards, mapped to the canonical names.
_ALIASES: Mapping[str, str] = MappingProxyType({
    "angry": "anger",
    "mad": "anger",
    "happiness": "happy",
    "joy": "happy",
    "sadness": "sad",
    "surprised": "surprise",
    "fearful": "fear",
    "afraid": "fear",
    "scared": "fear",
    "disgusted": "disgust",
    "calm": "neutral",
})


def canonical_label(name: str) -> str:
    """Map a dataset or model spelling (``angry``, ``Happiness`` …) to the canonical name.

    Raises ``ValueError`` for a name that is no known emotion, so a typo in a labels file is an
    error rather than a silently empty class. (The wire never goes through this: a keyframe with an
    alias is refused, because every engine and prior downstream speaks canonical names only.)
    """
    key = name.strip().lower()
    if key in CANONICAL_LABELS:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    raise ValueError(f"unknown emotion label {name!r}; known: {', '.join(CANONICAL_LABELS)}")


# --------------------------------------------------------------------------- action units

#: FACS action units an answer may name: those the EMFACS prototypes use (Ekman & Friesen 1978;
#: Friesen & Ekman 1983), see ``reasoner/knowledge.py`` for which expression uses which.
AU_IDS: tuple[str, ...] = (
    "AU1", "AU2", "AU4", "AU5", "AU6", "AU7", "AU9", "AU10", "AU12",
    "AU14", "AU15", "AU16", "AU17", "AU20", "AU23", "AU24", "AU25", "AU26",
)

# --------------------------------------------------------------------------- valence / arousal

#: label -> (valence, arousal) prototype, both in [-1, 1] (AffectNet convention).
#:
#: Source: Russell, J. A. (1980). A circumplex model of affect. J. Personality and Social Psychology
#: 39(6), 1161-1178, Fig. 4 -- each category at its nearest affect word, read off the figure and
#: scaled to the unit circle (approximate): happy = "happy", sad = "sad", anger = "angry",
#: fear = "afraid", surprise = "astonished", neutral at the origin. Disgust and contempt do not appear
#: in Russell (1980); they are placed *by assumption* in the unpleasant, moderately aroused quadrant
#: between "annoyed" and "miserable" (contempt milder and less aroused than disgust).
#:
#: Why this table and not the reasoner's former ``VA_PRIOR`` (also "Russell 1980", with centres
#: attributed to AffectNet class means): every entry here is traceable to one word of the cited
#: figure or marked as an assumption, whereas the other table's numbers could not be traced to the
#: figure it named; and this is the table the edge already used for every ``valence``/``arousal`` it
#: writes, so the frame records users see do not change. The knowledge engine and SEKE checks now
#: use it too, so a reply's valence/arousal and the frame's agree.
CIRCUMPLEX_PROTOTYPES: Mapping[str, tuple[float, float]] = MappingProxyType({
    "neutral": (0.0, 0.0),
    "happy": (0.83, 0.53),      # Russell 1980 "happy"
    "sad": (-0.65, -0.27),      # Russell 1980 "sad"
    "surprise": (0.16, 0.89),   # Russell 1980 "astonished"
    "fear": (-0.34, 0.64),      # Russell 1980 "afraid"
    "anger": (-0.52, 0.58),     # Russell 1980 "angry"
    "disgust": (-0.62, 0.25),   # not in Russell 1980: assumption (between "annoyed" and "miserable")
    "contempt": (-0.50, 0.15),  # not in Russell 1980: assumption (milder, less aroused than disgust)
})
VA_SOURCE = "Russell (1980), A circumplex model of affect, Fig. 4 (disgust, contempt: assumed)"

# --------------------------------------------------------------------------- message limits

#: Bump when a field changes meaning; the reasoner refuses other versions with ``bad_version``.
SCHEMA_VERSION = 1

#: A keyframe is a small face crop plus a downscaled context frame, a few tens of KiB; anything far
#: beyond that is a bug or an attack and is refused before it is decoded.
MAX_MESSAGE_BYTES = 1 << 20
#: Transport-level hard cap (``zmq.MAXMSGSIZE``): larger frames make zmq drop the connection
#: outright; between the two limits the sender gets a ``too_large`` error reply.
HARD_MESSAGE_BYTES = 8 << 20
MAX_CROP_BYTES = 256 << 10
MAX_CONTEXT_BYTES = 512 << 10
#: Longest side of the downscaled context frame the edge sends (pixels).
CONTEXT_SIDE = 320
MAX_ID = 64
MAX_TEXT = 256
MAX_REASON = 64
MAX_LABELS = 16
MAX_LABEL_CHARS = 32
#: The one default deadline of a keyframe, edge and reasoner alike (milliseconds).
DEFAULT_DEADLINE_MS = 3000
MAX_DEADLINE_MS = 60_000
#: ``probs`` (keyframe) and ``fused`` (reply) are probability distributions: each value in [0, 1]
#: and the sum within this of 1. Loose enough for float32 softmax output rounded to 4 decimals,
#: tight enough to refuse a vector of scores (sum 7) or a one-hot per label.
PROB_SUM_TOLERANCE = 1e-2
#: Answer bounds: keep the constrained grammar finite so a bounded ``max_new_tokens`` always
#: reaches the closing brace (every answer parses).
MAX_RATIONALE = 160
MAX_AUS = 6
#: Upper bound on ``samples`` (SEKE answers per keyframe) and on the millisecond fields: far beyond
#: any real value, only there so a hostile number cannot pass as a measurement.
MAX_SAMPLES = 1000
MAX_REPLY_MS = 1e7
#: Coordinates of ``box`` (pixels); generous, only there to refuse absurd numbers.
MAX_COORD = 1e6

#: Every ``code`` an error reply may carry (README, Contract). The edge refuses others as malformed.
ERROR_CODES: tuple[str, ...] = (
    "malformed", "unknown_field", "bad_version", "too_large", "expired", "overloaded", "engine",
    "no_answer", "internal",
)

#: What each side receives: the reasoner gets requests, the edge gets answers.
REQUEST_TYPES: tuple[str, ...] = ("keyframe", "ping")
ANSWER_TYPES: tuple[str, ...] = ("reply", "error", "pong")

KEYFRAME_REQUIRED = ("v", "type", "id", "stream", "track", "frame", "t_ns", "crop", "labels", "probs", "reason")
KEYFRAME_OPTIONAL = ("context", "box", "va", "deadline_ms", "sent_ns")
PING_FIELDS = ("v", "type", "id")
REPLY_REQUIRED = (
    "v", "type", "id", "expression", "valence", "arousal", "aus", "rationale", "verified", "agreement",
    "samples", "fused", "engine", "engine_ms",
)
#: ``service_ms`` is added by the ZeroMQ service; the in-process reasoner has no service around it.
REPLY_OPTIONAL = ("service_ms",)
ERROR_FIELDS = ("v", "type", "id", "code", "message")
PONG_FIELDS = ("v", "type", "id", "engine")


class ProtocolError(ValueError):
    """A message that breaks the contract; ``code`` (one of :data:`ERROR_CODES`) goes into the error reply."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- typed messages


@dataclass(frozen=True)
class Keyframe:
    """Edge -> reasoner: one face worth a VLM's look. Field order is the wire order.

    Limits: ``id`` 1-64 chars; ``stream`` <= 256 chars; ``crop`` a JPEG <= 256 KiB; ``context`` a JPEG
    <= 512 KiB (longest side 320); ``labels`` 1-16 distinct canonical names; ``probs`` one value in
    [0, 1] per label summing to 1 ± 0.01; ``va`` in [-1, 1]; ``reason`` <= 64 chars; ``deadline_ms``
    in 1..60000.
    """

    id: str
    stream: str
    track: int
    frame: int
    t_ns: int
    crop: bytes
    box: tuple[float, float, float, float] | None
    labels: tuple[str, ...]
    probs: tuple[float, ...]
    reason: str
    deadline_ms: int = DEFAULT_DEADLINE_MS
    context: bytes | None = None
    va: tuple[float, float] | None = None

    def to_wire(self) -> dict[str, Any]:
        """The msgpack-able map, in the order the edge has always sent it."""
        msg: dict[str, Any] = {
            "v": SCHEMA_VERSION, "type": "keyframe", "id": self.id, "stream": self.stream, "track": self.track,
            "frame": self.frame, "t_ns": self.t_ns, "crop": self.crop,
        }
        if self.box is not None:
            msg["box"] = [float(x) for x in self.box]
        msg.update(labels=list(self.labels), probs=[float(p) for p in self.probs], reason=self.reason,
                   deadline_ms=int(self.deadline_ms))
        if self.context is not None:
            msg["context"] = self.context
        if self.va is not None:
            msg["va"] = [float(x) for x in self.va]
        return msg

    @classmethod
    def from_wire(cls, msg: dict[str, Any]) -> Keyframe:
        m = validate(msg, accept=("keyframe",))
        return cls(m["id"], m["stream"], m["track"], m["frame"], m["t_ns"], m["crop"],
                   tuple(m["box"]) if m.get("box") is not None else None, tuple(m["labels"]), tuple(m["probs"]),
                   m["reason"], m["deadline_ms"], m.get("context"),
                   tuple(m["va"]) if m.get("va") is not None else None)


@dataclass(frozen=True)
class Reply:
    """Reasoner -> edge: the answer to one keyframe. Field order is the wire order.

    Limits: ``expression`` one of the request's labels; ``valence``/``arousal`` in [-1, 1]; ``aus``
    distinct AU ids of :data:`AU_IDS` with intensity in [0, 1]; ``rationale`` <= 160 chars;
    ``agreement`` in [0, 1]; ``samples`` 1..1000; ``fused`` a distribution over the request's labels.
    """

    id: str
    expression: str
    valence: float
    arousal: float
    aus: tuple[tuple[str, float], ...]
    rationale: str
    verified: bool
    agreement: float
    samples: int
    fused: Mapping[str, float]
    engine: str
    engine_ms: float
    service_ms: float | None = None

    def to_wire(self) -> dict[str, Any]:
        msg: dict[str, Any] = {
            "v": SCHEMA_VERSION, "type": "reply", "id": self.id, "expression": self.expression,
            "valence": self.valence, "arousal": self.arousal,
            "aus": [{"au": au, "intensity": i} for au, i in self.aus],
            "rationale": self.rationale[:MAX_RATIONALE], "verified": self.verified, "agreement": self.agreement,
            "samples": self.samples, "fused": dict(self.fused), "engine": self.engine, "engine_ms": self.engine_ms,
        }
        if self.service_ms is not None:
            msg["service_ms"] = self.service_ms
        return msg


@dataclass(frozen=True)
class ErrorReply:
    """Reasoner -> edge: why a keyframe got no answer. ``id`` is None when the request's id was unusable."""

    id: str | None
    code: str
    message: str = field(default="")

    def to_wire(self) -> dict[str, Any]:
        return {
            "v": SCHEMA_VERSION,
            "type": "error",
            "id": self.id if _good_id(self.id) else None,  # never echo a bad id
            "code": self.code,
            "message": self.message[:MAX_TEXT],
        }


def error_reply(rid: Any, code: str, message: str) -> dict[str, Any]:
    """The wire map of an :class:`ErrorReply` (``rid`` may be anything a hostile sender put there)."""
    return ErrorReply(rid if _good_id(rid) else None, code, message).to_wire()


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
            data, raw=False, strict_map_key=True, max_bin_len=max_bytes, max_str_len=max_bytes,
            max_array_len=4096, max_map_len=64, max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises several unrelated types for bad bytes
        raise ProtocolError("malformed", f"not a msgpack message ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise ProtocolError("malformed", f"message must be a map, got {type(obj).__name__}")
    return obj


# --------------------------------------------------------------------------- the one validator


def validate(
    msg: dict[str, Any], *, accept: Sequence[str], labels: Sequence[str] | None = None
) -> dict[str, Any]:
    """Check one decoded message against the contract; returns it with numbers as floats and defaults
    filled in, or raises :class:`ProtocolError` with the code its sender should hear.

    Both directions use this: the reasoner with ``accept=REQUEST_TYPES`` (or ``("keyframe",)``), the
    edge with ``accept=ANSWER_TYPES`` and ``labels`` = the candidate labels of the request the reply
    answers (canonical names when unknown). The version is checked first, so a wrong-version sender
    gets ``bad_version`` whatever else differs; messages are untrusted input on both ends, so a buggy
    or hostile peer costs a counted drop or an error reply, never an exception or a nonsense record.
    """
    _check_version(msg)
    kind = msg.get("type")
    if not isinstance(kind, str) or kind not in accept:  # a list or map is no type (and unhashable)
        what = "reply" if set(accept) <= set(ANSWER_TYPES) else "message"
        raise ProtocolError("malformed", f"unknown {what} type {str(kind)[:32]!r}")
    if kind in REQUEST_TYPES:
        check_header(msg)
        return msg if kind == "ping" else _keyframe(msg)
    return _answer(msg, kind, labels)


def check_header(msg: dict[str, Any]) -> str:
    """Version, type and id of a request (in that order); returns ``keyframe`` or ``ping``."""
    _check_version(msg)
    kind = msg.get("type")
    if not isinstance(kind, str) or kind not in REQUEST_TYPES:
        raise ProtocolError("malformed", f"unknown message type {str(kind)[:32]!r}")
    _check_id(msg.get("id"))
    return kind


def validate_keyframe(msg: dict[str, Any]) -> dict[str, Any]:
    """The reasoner's check of a keyframe request (the keyframe half of :func:`validate`)."""
    check_header(msg)
    return _keyframe(msg)


def validate_reply(msg: dict[str, Any], labels: Sequence[str] | None = None) -> dict[str, Any]:
    """The edge's check of a ``reply``, ``error`` or ``pong`` (:func:`validate` with ``ANSWER_TYPES``)."""
    return validate(msg, accept=ANSWER_TYPES, labels=labels)


def decode_reply(
    data: bytes, labels: Sequence[str] | None = None, max_bytes: int = MAX_MESSAGE_BYTES
) -> dict[str, Any]:
    """Bytes from the wire -> a checked reply, error or pong (or :class:`ProtocolError`)."""
    return validate_reply(unpack(data, max_bytes), labels)


def _check_fields(msg: dict[str, Any], required: Sequence[str], optional: Sequence[str]) -> None:
    """Unknown fields first (``unknown_field``), then missing ones (``malformed``): the codes' documented order."""
    unknown = set(msg) - set(required) - set(optional)
    if unknown:
        raise ProtocolError("unknown_field", f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
    missing = [k for k in required if k not in msg]
    if missing:
        raise ProtocolError("malformed", f"missing field(s): {', '.join(missing)}")


def _keyframe(msg: dict[str, Any]) -> dict[str, Any]:
    _check_fields(msg, KEYFRAME_REQUIRED, KEYFRAME_OPTIONAL)
    stream = _need(msg, "stream", str, "a string")
    if len(stream) > MAX_TEXT:
        raise ProtocolError("malformed", "field 'stream' too long")
    for key in ("track", "frame", "t_ns"):
        _need(msg, key, int, "an integer")
    reason = _need(msg, "reason", str, "a string")
    if len(reason) > MAX_REASON:
        raise ProtocolError("malformed", "field 'reason' too long")
    crop = _need(msg, "crop", bytes, "JPEG bytes")
    if not 0 < len(crop) <= MAX_CROP_BYTES or not crop.startswith(b"\xff\xd8"):
        raise ProtocolError("malformed", f"field 'crop' must be a JPEG of at most {MAX_CROP_BYTES} bytes")
    context = msg.get("context")
    if context is not None and (
        not isinstance(context, bytes) or len(context) > MAX_CONTEXT_BYTES or not context.startswith(b"\xff\xd8")
    ):
        raise ProtocolError("malformed", f"field 'context' must be a JPEG of at most {MAX_CONTEXT_BYTES} bytes")
    labels = _need(msg, "labels", list, "a list of label names")
    if not 0 < len(labels) <= MAX_LABELS or not all(
        isinstance(x, str) and 0 < len(x) <= MAX_LABEL_CHARS for x in labels
    ):
        raise ProtocolError("malformed", f"field 'labels' must be 1-{MAX_LABELS} label names")
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
    if len(probs) != len(labels) or not all(finite_in(p, 0.0, 1.0) for p in probs):
        raise ProtocolError("malformed", "field 'probs' must hold one probability in [0, 1] per label")
    _check_distribution("probs", probs)
    box = msg.get("box")
    if box is not None and (
        not isinstance(box, list) or len(box) != 4 or not all(finite_in(x, -MAX_COORD, MAX_COORD) for x in box)
    ):
        raise ProtocolError("malformed", "field 'box' must be [x, y, w, h]")
    va = msg.get("va")
    if va is not None and (
        not isinstance(va, list) or len(va) != 2 or not all(finite_in(x, -1.0, 1.0) for x in va)
    ):
        raise ProtocolError("malformed", "field 'va' must be [valence, arousal] in [-1, 1]")
    deadline = msg.get("deadline_ms", DEFAULT_DEADLINE_MS)
    if not finite_in(deadline, 1, MAX_DEADLINE_MS):
        raise ProtocolError("malformed", f"field 'deadline_ms' must be in 1..{MAX_DEADLINE_MS}")
    out = dict(msg)
    out["deadline_ms"] = deadline
    out["probs"] = [float(p) for p in probs]
    return out


def _answer(msg: dict[str, Any], kind: str, labels: Sequence[str] | None) -> dict[str, Any]:
    fields = {"reply": REPLY_REQUIRED, "error": ERROR_FIELDS, "pong": PONG_FIELDS}[kind]
    optional = REPLY_OPTIONAL if kind == "reply" else ()
    _check_fields(msg, fields, optional)
    if not (kind == "error" and msg["id"] is None) and not _good_id(msg["id"]):
        raise ProtocolError("malformed", f"field 'id' must be 1-{MAX_ID} characters")
    if kind == "error":
        if msg["code"] not in ERROR_CODES:
            raise ProtocolError("malformed", f"unknown error code {str(msg['code'])[:32]!r}")
        if not isinstance(msg["message"], str) or len(msg["message"]) > MAX_TEXT:
            raise ProtocolError("malformed", f"field 'message' must be a string of at most {MAX_TEXT} characters")
        return msg
    engine = msg["engine"]
    if not isinstance(engine, str) or not 0 < len(engine) <= MAX_ID:
        raise ProtocolError("malformed", f"field 'engine' must be 1-{MAX_ID} characters")
    if kind == "pong":
        return msg
    out = dict(msg)
    candidates = tuple(labels) if labels is not None else CANONICAL_LABELS
    if not isinstance(msg["expression"], str) or msg["expression"] not in candidates:
        raise ProtocolError("malformed", "field 'expression' is not one of the request's labels")
    for key in ("valence", "arousal"):
        if not finite_in(msg[key], -1.0, 1.0):
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
            or not finite_in(item["intensity"], 0.0, 1.0)
        ):
            raise ProtocolError("malformed", "field 'aus' must hold distinct {au: AU id, intensity in [0, 1]}")
        seen.add(item["au"])
    out["aus"] = [{"au": a["au"], "intensity": float(a["intensity"])} for a in aus]
    if not isinstance(msg["rationale"], str) or len(msg["rationale"]) > MAX_RATIONALE:
        raise ProtocolError("malformed", f"field 'rationale' must be a string of at most {MAX_RATIONALE} characters")
    if not isinstance(msg["verified"], bool):
        raise ProtocolError("malformed", "field 'verified' must be true or false")
    if not finite_in(msg["agreement"], 0.0, 1.0):
        raise ProtocolError("malformed", "field 'agreement' must be a number in [0, 1]")
    out["agreement"] = float(msg["agreement"])
    if not finite_in(msg["samples"], 1, MAX_SAMPLES) or not isinstance(msg["samples"], int):
        raise ProtocolError("malformed", f"field 'samples' must be an integer in 1..{MAX_SAMPLES}")
    fused = msg["fused"]
    if (
        not isinstance(fused, dict)
        or not fused
        or not all(k in candidates and finite_in(p, 0.0, 1.0) for k, p in fused.items())
        or (labels is not None and len(fused) != len(candidates))  # keys are distinct: all labels
    ):
        raise ProtocolError("malformed", "field 'fused' must map each of the request's labels to a probability")
    _check_distribution("fused", list(fused.values()))
    out["fused"] = {k: float(p) for k, p in fused.items()}
    for key in ("engine_ms", *(k for k in REPLY_OPTIONAL if k in msg)):
        if not finite_in(msg[key], 0.0, MAX_REPLY_MS):
            raise ProtocolError("malformed", f"field {key!r} must be a number of milliseconds")
        out[key] = float(msg[key])
    return out


def _good_id(rid: Any) -> bool:
    return isinstance(rid, str) and 0 < len(rid) <= MAX_ID


def _check_id(rid: Any) -> None:
    if isinstance(rid, bool) or not isinstance(rid, str):
        raise ProtocolError("malformed", f"field 'id' must be a string, got {type(rid).__name__}")
    if not _good_id(rid):
        raise ProtocolError("malformed", f"field 'id' must be 1-{MAX_ID} characters")


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


def finite_in(x: Any, lo: float, hi: float) -> bool:
    """A real number (not a bool, not NaN/inf) in [lo, hi]: the check behind every numeric field."""
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
