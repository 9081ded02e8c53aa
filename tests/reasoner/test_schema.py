"""The message contract: every malformed keyframe is refused with a specific code."""

from __future__ import annotations

import json

import msgpack
import numpy as np
import pytest

from emostream.engines.labels import CANONICAL_LABELS
from emostream.reasoner.schema import (
    MAX_CROP_BYTES,
    AnswerError,
    ProtocolError,
    answer_json_schema,
    answer_lark_grammar,
    pack,
    parse_answer,
    unpack,
    validate_keyframe,
)

from .procs import jpeg, keyframe_msg

CROP = jpeg(np.full((32, 32, 3), 128, np.uint8))


def test_valid_keyframe_roundtrips_through_msgpack():
    msg = keyframe_msg(CROP, box=[1.0, 2.0, 30.0, 40.0], va=[0.2, -0.1])
    out = validate_keyframe(unpack(pack(msg)))
    assert out["id"] == msg["id"] and out["crop"] == CROP and out["deadline_ms"] == 5000


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"v": 2}, "bad_version"),
        ({"v": None}, "bad_version"),
        ({"type": "frame"}, "malformed"),
        ({"extra": 1}, "unknown_field"),
        ({"crop": b"not a jpeg"}, "malformed"),
        ({"crop": b"\xff\xd8" + b"0" * MAX_CROP_BYTES}, "malformed"),
        ({"probs": [0.5] * 3}, "malformed"),
        ({"probs": [float("nan")] * 8}, "malformed"),
        ({"track": True}, "malformed"),
        ({"track": "1"}, "malformed"),
        ({"labels": ["happy", "happy"]}, "malformed"),
        ({"deadline_ms": 0}, "malformed"),
        ({"box": [1, 2, 3]}, "malformed"),
        ({"id": ""}, "malformed"),
    ],
)
def test_bad_keyframes_get_specific_codes(change, code):
    msg = keyframe_msg(CROP)
    msg.update(change)
    with pytest.raises(ProtocolError) as err:
        validate_keyframe(unpack(pack(msg)))
    assert err.value.code == code


def test_missing_field_is_named():
    msg = keyframe_msg(CROP)
    del msg["probs"]
    with pytest.raises(ProtocolError, match="probs"):
        validate_keyframe(msg)


def test_unpack_limits():
    with pytest.raises(ProtocolError) as err:
        unpack(b"\x00" * 100, max_bytes=10)
    assert err.value.code == "too_large"
    for bad in (b"\xc1", b"\x92\x01", msgpack.packb([1, 2])):
        with pytest.raises(ProtocolError) as err:
            unpack(bad)
        assert err.value.code == "malformed"


def test_parse_answer_accepts_schema_and_rejects_others():
    labels = CANONICAL_LABELS
    good = {
        "expression": "happy",
        "valence": 0.5,
        "arousal": 0.2,
        "aus": [{"au": "AU6", "intensity": 0.7}, {"au": "AU12", "intensity": 0.9}],
        "rationale": "smile",
    }
    a = parse_answer(json.dumps(good), labels)
    assert a.expression == "happy" and dict(a.aus) == {"AU6": 0.7, "AU12": 0.9}
    assert parse_answer("```json\n" + json.dumps(good) + "\n```", labels).expression == "happy"
    for bad in (
        {**good, "expression": "bored"},
        {**good, "valence": 2},
        {**good, "aus": [{"au": "AU99"}]},
        {**good, "rationale": 5},
    ):
        with pytest.raises(AnswerError):
            parse_answer(json.dumps(bad), labels)
    with pytest.raises(AnswerError):
        parse_answer('{"expression": "happy"', labels)
    # 7-class model: contempt is not a candidate.
    with pytest.raises(AnswerError):
        parse_answer(json.dumps({**good, "expression": "contempt"}), labels[:7])


def test_grammar_and_schema_list_the_same_labels():
    labels = ("neutral", "happy", "sad")
    schema = answer_json_schema(labels)
    assert schema["properties"]["expression"]["enum"] == list(labels)
    grammar = answer_lark_grammar(labels)
    for label in labels:
        assert json.dumps(json.dumps(label)) in grammar
    assert '"surprise"' not in grammar
