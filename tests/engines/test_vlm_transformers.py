"""The ``transformers`` VLM engine on a tiny random LLaVA built here (no hub), with llguidance.

The model is garbage by construction; the test shows that constrained decoding turns its garbage
into schema-valid answers on every try, through the real ``save_pretrained``/``from_pretrained``.
"""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("transformers")
pytest.importorskip("llguidance")

from emostream.engines.labels import CANONICAL_LABELS  # noqa: E402
from emostream.engines.vlm import VLMError, VLMPrompt  # noqa: E402
from emostream.engines.vlm.tiny import build_tiny_vlm  # noqa: E402
from emostream.engines.vlm.transformers_engine import TransformersEngine  # noqa: E402
from emostream.reasoner.core import Reasoner  # noqa: E402
from emostream.reasoner.schema import AnswerError, answer_lark_grammar, parse_answer, validate_keyframe  # noqa: E402
from tests.reasoner.procs import RawClient, face_crop, jpeg, keyframe_msg, reasoner_process  # noqa: E402


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    os.environ["HF_HUB_OFFLINE"] = "1"
    return build_tiny_vlm(tmp_path_factory.mktemp("tiny-vlm"))


@pytest.fixture(scope="module")
def engine(tiny_vlm):
    return TransformersEngine(tiny_vlm, grammar_fn=answer_lark_grammar, max_new_tokens=400)


@pytest.fixture(scope="module")
def crop_jpeg(data_file):
    crop, _ = face_crop(data_file("multiface/single_face.jpg"))
    return jpeg(crop)


def test_saved_folder_is_a_real_pretrained_dir(tiny_vlm):
    config = json.loads((tiny_vlm / "config.json").read_text())
    assert config["model_type"] == "llava"
    assert (tiny_vlm / "tokenizer.json").is_file() and (tiny_vlm / "model.safetensors").is_file()


def test_constrained_decoding_makes_every_answer_parse(engine, crop_jpeg):
    labels7 = CANONICAL_LABELS[:7]  # a 7-class model: contempt must never be answered
    prompts = [
        VLMPrompt(crop_jpeg, "which emotion?", "", CANONICAL_LABELS),
        VLMPrompt(crop_jpeg, "which emotion?", "", labels7),
    ]
    greedy = engine.generate(prompts, n=1)
    sampled = engine.generate(prompts, n=4)
    answers = []
    for texts, labels in (
        (greedy[0], CANONICAL_LABELS),
        (greedy[1], labels7),
        (sampled[0], CANONICAL_LABELS),
        (sampled[1], labels7),
    ):
        assert not isinstance(texts, VLMError), texts
        answers += [parse_answer(t, labels) for t in texts]  # raises if any is not schema-valid
    assert len(answers) == 10
    assert all(a.expression != "contempt" for a in answers[1:2] + answers[6:])
    assert len({(a.expression, a.valence, a.arousal) for a in answers[2:]}) > 1  # sampling varies


def test_unconstrained_random_model_does_not_parse(tiny_vlm, crop_jpeg):
    """The control: without the grammar the same model's output is not an answer."""
    free = TransformersEngine(tiny_vlm, grammar_fn=None, max_new_tokens=40)
    texts = free.generate([VLMPrompt(crop_jpeg, "which emotion?", "", CANONICAL_LABELS)], n=3)[0]
    for t in texts:
        with pytest.raises(AnswerError):
            parse_answer(t, CANONICAL_LABELS)


def test_reasoner_core_verifies_and_resamples(engine, crop_jpeg):
    reasoner = Reasoner(engine=engine, resample_k=3)
    kfs = [validate_keyframe(keyframe_msg(crop_jpeg)) for _ in range(3)]
    replies = reasoner.process(kfs)
    for reply in replies:
        assert reply["type"] == "reply" and reply["engine"].startswith("transformers:")
        assert reply["expression"] in CANONICAL_LABELS and isinstance(reply["verified"], bool)
        # a failed first answer was resampled K-1 = 2 more times
        assert reply["samples"] in (1, 3) and (reply["samples"] == 3 or reply["verified"])
        assert abs(sum(reply["fused"].values()) - 1) < 1e-3


def test_broken_model_dir_is_one_clear_error(tmp_path):
    with pytest.raises(VLMError, match="config.json"):
        TransformersEngine(tmp_path, grammar_fn=None)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(VLMError, match="cannot load VLM"):
        TransformersEngine(tmp_path, grammar_fn=None)


def test_reasoner_service_with_local_vlm(tmp_path, tiny_vlm, crop_jpeg):
    args = ("--vlm", str(tiny_vlm), "--max-new-tokens", "300", "--threads", "1")
    with reasoner_process(tmp_path, *args, ready_timeout=90) as (_, endpoint, _log):
        client = RawClient(endpoint)
        try:
            reply = client.ask(keyframe_msg(crop_jpeg), timeout_s=60)
        finally:
            client.close()
    assert reply["type"] == "reply" and reply["engine"] == f"transformers:{tiny_vlm.name}"
    assert reply["expression"] in CANONICAL_LABELS and -1 <= reply["valence"] <= 1
