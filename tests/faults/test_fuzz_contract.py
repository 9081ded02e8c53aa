"""Property-based fuzz of both ends of the edge <-> reasoner contract (hypothesis, derandomized).

Thousands of generated messages -- random bytes, random msgpack structures, huge values, missing
fields, and valid messages with one field mutated -- go through the code that really decodes them:

* reasoner side: ``reasoner.service._receive`` (what the ROUTER loop calls for every message);
* edge side: ``Escalator._receive`` (what the DEALER loop calls for every reply), and
  ``reasoner.schema.decode_reply``.

The only outcomes allowed are a valid decoded message or the project's typed error (a
``ProtocolError`` whose code is in the README's list), answered or counted -- never another
exception. Whatever the reasoner accepts, it must also be able to answer with a reply the edge
accepts, so the two halves of the contract are checked against each other.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emostream.edge.escalation import Escalator
from emostream.engines.labels import CANONICAL_LABELS
from emostream.reasoner.core import Reasoner
from emostream.reasoner.schema import (
    AU_IDS,
    ERROR_CODES,
    KEYFRAME_OPTIONAL,
    KEYFRAME_REQUIRED,
    MAX_CROP_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_RATIONALE,
    MAX_TEXT,
    REPLY_OPTIONAL,
    REPLY_REQUIRED,
    ProtocolError,
    decode_reply,
    pack,
    unpack,
    validate_reply,
)
from emostream.reasoner.service import ServiceConfig, ServiceStats, _receive

pytestmark = pytest.mark.faults

#: Derandomized (the same examples on every run, so a failure reproduces), no per-example deadline
#: (a shared, loaded 2-core box), no example database written into the repo.
FUZZ = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
#: Examples per test; the seven tests below try 4,400 messages in all.
N_RANDOM = 600
N_MUTATED = 1000
N_VALID = 300

REASONER = Reasoner()
CONFIG = ServiceConfig(bind="tcp://127.0.0.1:1")

# --------------------------------------------------------------------------- strategies

LEAF = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()  # NaN and ±inf included
    | st.text(max_size=40)
    | st.binary(max_size=40)
)
ANY = st.recursive(
    LEAF, lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=12,
)
#: Values far beyond the limits, built once (generating them per example would be slow, not harder).
HUGE = st.sampled_from(
    [
        b"\xff\xd8" + bytes(MAX_CROP_BYTES),  # a "JPEG" just over the crop limit
        "x" * 100_000,
        [0.1] * 5000,  # beyond msgpack's array limit of 4096
        list(CANONICAL_LABELS) * 3,
        {f"k{i}": i for i in range(100)},  # beyond the map limit of 64
        2**64 - 1,
        -(2**63),
        1e308,
        -0.0,
        5e-324,
    ]
)
VALUE = ANY | HUGE
RAW = st.binary(max_size=300) | st.sampled_from(
    [
        b"",
        b"\xc1",  # never-used msgpack byte
        b"\x91" * 5000 + b"\xc0",  # nesting far deeper than any decoder stack
        b"\xdd\xff\xff\xff\xff",  # an array header claiming 4 billion items
        b"\xc6\xff\xff\xff\xff",  # a bin header claiming 4 GiB
        b"\x00" * (MAX_MESSAGE_BYTES + 1),  # too large
        msgpack.packb({"v": 1, "type": "keyframe"}),
    ]
)


def unit_distribution(draw: st.DrawFn, n: int) -> list[float]:
    weights = draw(st.lists(st.floats(0, 1), min_size=n, max_size=n))
    total = math.fsum(weights)
    return [w / total for w in weights] if total > 0 else [1.0 / n] * n


@st.composite
def valid_keyframes(draw: st.DrawFn) -> dict[str, Any]:
    labels = draw(st.lists(st.sampled_from(CANONICAL_LABELS), min_size=1, max_size=8, unique=True))
    msg: dict[str, Any] = {
        "v": 1,
        "type": "keyframe",
        "id": draw(st.text(min_size=1, max_size=64)),
        "stream": draw(st.text(max_size=40)),
        "track": draw(st.integers(-(2**63), 2**63 - 1)),
        "frame": draw(st.integers(0, 2**40)),
        "t_ns": draw(st.integers(0, 2**63 - 1)),
        "crop": b"\xff\xd8" + draw(st.binary(max_size=64)),
        "labels": labels,
        "probs": unit_distribution(draw, len(labels)),
        "reason": draw(st.sampled_from(["new_track", "label_change", "uncertain", "heartbeat", ""])),
    }
    if draw(st.booleans()):
        msg["context"] = b"\xff\xd8" + draw(st.binary(max_size=64))
    if draw(st.booleans()):
        msg["box"] = draw(st.lists(st.floats(-1e6, 1e6), min_size=4, max_size=4))
    if draw(st.booleans()):
        msg["va"] = draw(st.lists(st.floats(-1, 1), min_size=2, max_size=2))
    if draw(st.booleans()):
        msg["deadline_ms"] = draw(st.integers(1, 60_000) | st.floats(1, 60_000))
    if draw(st.booleans()):
        msg["sent_ns"] = draw(st.integers(0, 2**63 - 1))
    return msg


def mutate(draw: st.DrawFn, msg: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """One change: a field set to anything (or deleted, or added), or one item inside a list/map field."""
    msg = dict(msg)
    key = draw(st.sampled_from((*keys, "extra", "", "V")))  # hypothesis favours the first: order matters
    how = draw(st.sampled_from(["inner", "set", "delete", "set"]))
    inner = msg.get(key)
    if how == "delete":
        msg.pop(key, None)
    elif how == "inner" and isinstance(inner, list) and inner:
        inner = list(inner)
        inner[draw(st.integers(0, len(inner) - 1))] = draw(VALUE)
        msg[key] = inner
    elif how == "inner" and isinstance(inner, dict) and inner:
        inner = dict(inner)
        inner[draw(st.sampled_from(sorted(inner)))] = draw(VALUE)
        msg[key] = inner
    else:
        msg[key] = draw(VALUE)
    return msg


#: The fields to mutate, the richest first (hypothesis draws early choices most often); each list
#: is checked below to cover every field of the contract.
KEYFRAME_KEYS = ("probs", "labels", "crop", "id", "deadline_ms", "va", "box", "context", "track", "frame", "t_ns",
                 "stream", "reason", "sent_ns", "type", "v")
REPLY_KEYS = ("fused", "aus", "valence", "arousal", "expression", "rationale", "verified", "agreement", "samples",
              "engine", "engine_ms", "service_ms", "id", "type", "code", "message", "v")
assert set(KEYFRAME_KEYS) == {*KEYFRAME_REQUIRED, *KEYFRAME_OPTIONAL}
assert set(REPLY_KEYS) == {*REPLY_REQUIRED, *REPLY_OPTIONAL, "code", "message"}


@st.composite
def mutated_keyframes(draw: st.DrawFn) -> bytes:
    return pack(mutate(draw, draw(valid_keyframes()), KEYFRAME_KEYS))


RID = "a" * 32  # the id of the request in flight on the edge
LABELS = list(CANONICAL_LABELS)


@st.composite
def valid_replies(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.integers(0, 4)) == 0:
        return {
            "v": 1,
            "type": "error",
            "id": RID,
            "code": draw(st.sampled_from(ERROR_CODES)),
            "message": draw(st.text(max_size=MAX_TEXT)),
        }
    aus = draw(st.lists(st.sampled_from(AU_IDS), max_size=6, unique=True))
    fused = unit_distribution(draw, len(LABELS))
    msg = {
        "v": 1,
        "type": "reply",
        "id": RID,
        "expression": draw(st.sampled_from(LABELS)),
        "valence": draw(st.floats(-1, 1)),
        "arousal": draw(st.floats(-1, 1)),
        "aus": [{"au": au, "intensity": draw(st.floats(0, 1))} for au in aus],
        "rationale": draw(st.text(max_size=MAX_RATIONALE)),
        "verified": draw(st.booleans()),
        "agreement": draw(st.floats(0, 1)),
        "samples": draw(st.integers(1, 10)),
        "fused": dict(zip(LABELS, fused)),
        "engine": draw(st.text(min_size=1, max_size=64)),
        "engine_ms": draw(st.floats(0, 1e6)),
    }
    if draw(st.booleans()):
        msg["service_ms"] = draw(st.floats(0, 1e6))
    return msg


@st.composite
def mutated_replies(draw: st.DrawFn) -> bytes:
    return pack(mutate(draw, draw(valid_replies()), REPLY_KEYS))


# --------------------------------------------------------------------------- the properties


def reasoner_takes(data: bytes) -> str:
    """Feed one message to the service's receive path; check the one outcome it must have."""
    pending: deque = deque()
    sent: list[dict[str, Any]] = []
    _receive([b"peer", data], pending, CONFIG, ServiceStats(), lambda _ident, msg: sent.append(msg), "knowledge")
    assert len(pending) + len(sent) == 1, (pending, sent)
    if sent:
        reply = validate_reply(unpack(pack(sent[0])))  # what the edge would receive: within the contract
        if reply["type"] == "error":
            assert reply["code"] in ERROR_CODES
            return reply["code"]
        assert reply["type"] == "pong"
        return "pong"
    # Accepted: the reasoner must be able to answer it, with a reply the edge accepts.
    _, keyframe, _ = pending[0]
    answer = REASONER.process([keyframe])[0]
    checked = validate_reply(unpack(pack(answer)), keyframe["labels"])
    assert checked["type"] == "reply" and checked["id"] == keyframe["id"]
    return "accepted"


def edge_takes(data: bytes) -> str:
    """Feed one reply to a real Escalator with one request in flight; check its accounting."""
    esc = Escalator(LABELS)  # not started: its receive path is the code under test, no thread needed
    esc.submit({"id": RID, "labels": LABELS, "stream": "cam", "frame": 1, "track": 1, "reason": "x",
                "deadline_ms": 60_000})
    item = esc._take()
    esc._in_flight[RID] = item
    esc._counts["sent"] += 1
    esc._receive(data, time.monotonic())
    c = esc.counters()
    records = esc.poll()
    assert c["sent"] == c["answered"] + c["errors"] + c["in_flight"] == 1, c
    try:
        decoded = decode_reply(data, LABELS)
    except ProtocolError as exc:
        assert exc.code in ERROR_CODES
        decoded = None
    if decoded is not None and decoded["id"] == RID and decoded["type"] == "reply":
        assert c["answered"] == 1 and len(records) == 1 and c["malformed_replies"] == 0, c
        r = records[0]
        assert r["expression"] in LABELS and -1 <= r["valence"] <= 1 and -1 <= r["arousal"] <= 1
        assert set(r["fused"]) == set(LABELS) and abs(math.fsum(r["fused"].values()) - 1) <= 1e-2
        assert all(a["au"] in AU_IDS and 0 <= a["intensity"] <= 1 for a in r["aus"])
        return "answered"
    assert records == [] and c["answered"] == 0, c
    if decoded is not None and decoded["id"] == RID and decoded["type"] == "error":
        assert c["errors"] == 1 and c["malformed_replies"] == 0, c
        return "error"
    assert c["malformed_replies"] == 1, c  # broken, or not about our request: dropped and counted
    return "malformed"


@settings(FUZZ, max_examples=N_RANDOM)
@given(RAW)
def test_reasoner_survives_random_bytes(data):
    assert reasoner_takes(data) != "accepted"


@settings(FUZZ, max_examples=N_RANDOM)
@given(ANY | HUGE)
def test_reasoner_survives_random_structures(value):
    assert reasoner_takes(pack(value)) != "accepted"


@settings(FUZZ, max_examples=N_MUTATED)
@given(mutated_keyframes())
def test_reasoner_survives_keyframes_with_one_field_mutated(data):
    reasoner_takes(data)


@settings(FUZZ, max_examples=N_VALID)
@given(valid_keyframes())
def test_reasoner_accepts_and_answers_every_valid_keyframe(msg):
    assert reasoner_takes(pack(msg)) == "accepted"


@settings(FUZZ, max_examples=N_RANDOM)
@given(RAW | ANY.map(pack))
def test_edge_survives_random_bytes_and_structures(data):
    assert edge_takes(data) == "malformed"


@settings(FUZZ, max_examples=N_MUTATED)
@given(mutated_replies())
def test_edge_survives_replies_with_one_field_mutated(data):
    edge_takes(data)


@settings(FUZZ, max_examples=N_VALID)
@given(valid_replies())
def test_edge_accepts_every_valid_reply(msg):
    assert edge_takes(pack(msg)) == ("error" if msg["type"] == "error" else "answered")
