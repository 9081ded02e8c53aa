"""The shared contract: typed messages that write today's wire bytes, one validator in both directions,
one valence/arousal table, label orders with distinct names."""

from __future__ import annotations

import numpy as np
import pytest

from emostream import contract
from emostream.contract import (
    ANSWER_TYPES,
    CIRCUMPLEX_PROTOTYPES,
    REPLY_OPTIONAL,
    REPLY_REQUIRED,
    REQUEST_TYPES,
    ErrorReply,
    Keyframe,
    ProtocolError,
    Reply,
    pack,
    unpack,
    validate,
    validate_reply,
)
from emostream.edge.keyframes import make_keyframe
from emostream.engines.emotion.valence_arousal import valence_arousal
from emostream.reasoner.core import Reasoner
from emostream.reasoner.knowledge import VA_PRIOR, KnowledgeEngine

LABELS = contract.FER7_LABELS
RNG = np.random.default_rng(0)


def _edge_keyframe(**kw) -> dict:
    """A keyframe exactly as the edge builds it (real JPEG encoding, real field order)."""
    probs = RNG.dirichlet(np.ones(len(LABELS)))
    return make_keyframe("cam", 3, 12, 123_456_789, RNG.integers(0, 255, (48, 48), np.uint8),
                         RNG.integers(0, 255, (240, 320, 3), np.uint8), [1.0, 2.0, 30.0, 40.0], probs, LABELS,
                         "uncertain", **kw)


@pytest.mark.parametrize("va", [None, [0.25, -0.5]])
def test_keyframe_struct_writes_the_edges_bytes(va) -> None:
    msg = _edge_keyframe(va=va)
    typed = Keyframe.from_wire(unpack(pack(msg)))
    assert typed.labels == LABELS and typed.deadline_ms == contract.DEFAULT_DEADLINE_MS
    assert pack(typed.to_wire()) == pack(msg)  # byte-compatible with schema v1 as sent today


def test_reply_struct_is_what_the_reasoner_sends_and_the_edge_accepts() -> None:
    kf = validate(unpack(pack(_edge_keyframe())), accept=REQUEST_TYPES)
    reply = Reasoner().process([kf])[0]
    assert list(reply) == list(REPLY_REQUIRED)  # wire order unchanged (no service_ms in-process)
    checked = validate_reply(unpack(pack(reply)), LABELS)
    assert checked["expression"] in LABELS
    fields = {k: v for k, v in reply.items() if k not in ("v", "type", "aus")}
    typed = Reply(**fields, aus=tuple((a["au"], a["intensity"]) for a in reply["aus"]))
    assert pack(typed.to_wire()) == pack(reply)
    wire = Reply(**fields, aus=typed.aus, service_ms=1.5).to_wire()
    assert list(wire) == [*REPLY_REQUIRED, *REPLY_OPTIONAL]
    # aus go to the wire as maps; the struct holds pairs
    assert Reply(id="x", expression="happy", valence=0.1, arousal=0.2, aus=(("AU12", 0.5),), rationale="r" * 500,
                 verified=True, agreement=1.0, samples=1, fused={"happy": 1.0}, engine="k",
                 engine_ms=1.0).to_wire()["rationale"] == "r" * contract.MAX_RATIONALE


def test_one_validator_refuses_the_other_directions_messages() -> None:
    kf = _edge_keyframe()
    with pytest.raises(ProtocolError) as exc:
        validate(kf, accept=ANSWER_TYPES)  # a keyframe arriving at the edge
    assert exc.value.code == "malformed" and "reply type" in str(exc.value)
    reply = Reasoner().process([validate(kf, accept=REQUEST_TYPES)])[0]
    with pytest.raises(ProtocolError) as exc:
        validate(reply, accept=REQUEST_TYPES)  # a reply arriving at the reasoner
    assert exc.value.code == "malformed" and "message type" in str(exc.value)
    # an error reply with an unusable id is written with id None, and still passes the edge's check
    err = ErrorReply(["not", "an", "id"], "overloaded", "x" * 1000).to_wire()  # type: ignore[arg-type]
    assert err["id"] is None and len(err["message"]) == contract.MAX_TEXT
    assert validate(err, accept=ANSWER_TYPES)["code"] == "overloaded"


def test_one_valence_arousal_table_for_frames_and_replies() -> None:
    assert VA_PRIOR is CIRCUMPLEX_PROTOTYPES
    probs = RNG.dirichlet(np.ones(len(LABELS)), size=5)
    for p in probs:
        answer = KnowledgeEngine().answer(list(LABELS), p.tolist())
        frame_va = valence_arousal(p[None], LABELS)[0]
        assert answer.valence == pytest.approx(frame_va[0], abs=2e-3)
        assert answer.arousal == pytest.approx(frame_va[1], abs=2e-3)
    assert "Russell" in contract.VA_SOURCE


def test_fer_orders_have_distinct_names_and_the_same_classes() -> None:
    assert contract.FER7_LABELS == ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger")
    assert contract.FER2013_INDEX_ORDER[0] == "angry" and contract.FER2013_INDEX_ORDER[-1] == "neutral"
    canon = [contract.canonical_label(x) for x in contract.FER2013_INDEX_ORDER]
    assert sorted(canon) == sorted(contract.FER7_LABELS) and canon != list(contract.FER7_LABELS)
