"""The ``openai`` VLM engine against a real local OpenAI-compatible HTTP server."""

from __future__ import annotations

import time

import pytest

from emostream.engines.labels import CANONICAL_LABELS
from emostream.engines.vlm import VLMError, VLMPrompt
from emostream.engines.vlm.openai_engine import OpenAIEngine
from emostream.reasoner.core import Reasoner
from emostream.reasoner.schema import answer_json_schema, parse_answer, validate_keyframe
from tests.reasoner.procs import FakeOpenAI, RawClient, face_crop, free_port, jpeg, keyframe_msg, reasoner_process


@pytest.fixture(scope="module")
def crop_jpeg(data_file):
    crop, _ = face_crop(data_file("multiface/single_face.jpg"))
    return jpeg(crop)


@pytest.fixture
def server():
    srv = FakeOpenAI()
    yield srv
    srv.close()


def engine(url: str, **kw) -> OpenAIEngine:
    return OpenAIEngine(url, model="test-vlm", schema_fn=answer_json_schema, **kw)


def test_request_shape_and_answers(server, crop_jpeg):
    eng = engine(server.url)
    prompt = VLMPrompt(crop_jpeg, "Choose one of: " + ", ".join(CANONICAL_LABELS), "system", CANONICAL_LABELS)
    out = eng.generate([prompt, prompt], n=3)
    assert server.problems == []
    assert len(server.requests) == 2 and server.requests[0]["n"] == 3
    body = server.requests[0]
    assert body["response_format"]["json_schema"]["schema"]["properties"]["expression"]["enum"] == list(
        CANONICAL_LABELS
    )
    assert body["messages"][0] == {"role": "system", "content": "system"}
    assert all(len(texts) == 3 for texts in out)
    assert parse_answer(out[0][0], CANONICAL_LABELS).expression == "happy"
    eng.close()


def test_seke_resamples_an_incoherent_first_answer(server, crop_jpeg):
    server.mode = "incoherent"  # greedy answer says happy with negative valence and AU4
    reasoner = Reasoner(engine=engine(server.url), resample_k=3)
    kf = validate_keyframe(keyframe_msg(crop_jpeg))
    reply = reasoner.process([kf])[0]
    assert server.problems == []
    assert [r["n"] for r in server.requests] == [1, 2]  # one greedy, then K-1 = 2 resamples
    assert reply["type"] == "reply" and reply["verified"] is True and reply["samples"] == 3
    assert reply["agreement"] == 1.0 and reply["valence"] > 0  # the coherent sample was chosen
    assert reply["engine"] == "openai:test-vlm"


def test_malformed_garbage_slow_and_absent_servers_become_errors(server, crop_jpeg):
    kf = validate_keyframe(keyframe_msg(crop_jpeg))
    server.mode = "malformed"
    reply = Reasoner(engine=engine(server.url), resample_k=2).process([kf])[0]
    assert reply["type"] == "error" and reply["code"] == "no_answer"
    server.mode = "garbage"
    reply = Reasoner(engine=engine(server.url)).process([kf])[0]
    assert reply["type"] == "error" and reply["code"] == "engine" and "not a chat completion" in reply["message"]
    server.mode, server.delay_s = "slow", 3.0
    start = time.monotonic()
    out = engine(server.url, timeout_s=0.3).generate([VLMPrompt(b"\xff\xd8", "x", "", CANONICAL_LABELS)])
    assert isinstance(out[0], VLMError) and time.monotonic() - start < 2.0
    out = engine(f"http://127.0.0.1:{free_port()}/v1").generate([VLMPrompt(b"\xff\xd8", "x", "", ())])
    assert isinstance(out[0], VLMError) and "unreachable" in str(out[0])
    with pytest.raises(VLMError):
        engine("ftp://nowhere")


def test_reasoner_service_with_vlm_url(tmp_path, server, crop_jpeg):
    with reasoner_process(tmp_path, "--vlm-url", server.url, "--vlm-model", "qwen-test") as (_, endpoint, _log):
        client = RawClient(endpoint)
        try:
            reply = client.ask(keyframe_msg(crop_jpeg))
        finally:
            client.close()
    assert reply["type"] == "reply" and reply["engine"] == "openai:qwen-test" and reply["verified"]
    assert server.problems == [] and server.requests[0]["model"] == "qwen-test"
