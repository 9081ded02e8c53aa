"""The whole teaching loop offline: instructions -> LoRA tuning -> the reasoner with the adapter -> fit-gate.

Real FER2013 val faces, the knowledge teacher on the real emotion network, the tiny random LLaVA the VLM tests
build (``engines/vlm/tiny.py``, saved and loaded through real ``save_pretrained``/``from_pretrained``), real peft,
and a real ``emostream reasoner`` process answering over ZeroMQ. The tiny model's answers are garbage by
construction; what is tested is the machinery: loss falls, the adapter round-trips, answers stay schema-valid,
the gate never does worse than its inputs without saying why.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("peft")
pytest.importorskip("transformers")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from emostream.engines.labels import CANONICAL_LABELS  # noqa: E402
from emostream.engines.vlm.tiny import build_tiny_vlm  # noqa: E402
from emostream.engines.vlm.transformers_engine import TransformersEngine  # noqa: E402
from emostream.reasoner.core import Reasoner  # noqa: E402
from emostream.reasoner.schema import answer_lark_grammar, validate_keyframe, validate_reply  # noqa: E402
from emostream.training.instructions import build_teacher, generate  # noqa: E402
from emostream.training.tune_vlm import (  # noqa: E402
    IGNORE,
    TuneConfig,
    TuneError,
    encode,
    load_records,
    lora_targets,
    tune,
)
from tests.reasoner.procs import RawClient, jpeg, keyframe_msg, reasoner_process  # noqa: E402

FAST = {"batch_size": 2, "grad_accum": 2, "lr": 2e-2, "warmup": 1, "threads": 1, "dropout": 0.0}


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory) -> Path:
    os.environ["HF_HUB_OFFLINE"] = "1"
    return build_tiny_vlm(tmp_path_factory.mktemp("tiny-vlm"))


@pytest.fixture(scope="module")
def data(tmp_path_factory, data_file) -> Path:
    teacher = build_teacher("knowledge", threads=1)
    out = tmp_path_factory.mktemp("instr") / "train.jsonl"
    try:
        generate(data_file("fer2013/val"), out, teacher, limit=24, seed=0, progress=False)
    finally:
        teacher.close()
    return out


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny_vlm, data) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("adapter") / "lora"
    metrics = tune(tiny_vlm, data, out, TuneConfig(steps=12, save_every=6, **FAST), progress=False)
    return out, metrics


def test_loss_is_only_on_the_assistant_turns(tiny_vlm, data):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_vlm)
    recs = load_records(data)
    conv = next(r for r in recs if r["kind"] == "conversation")
    item = encode(processor, conv, 4096)
    ids, labels = item["input_ids"].tolist(), item["labels"].tolist()
    taught = processor.tokenizer.decode([i for i, lab in zip(ids, labels) if lab != IGNORE])
    answers = [t["value"] for t in conv["conversations"] if t["from"] == "gpt"]
    questions = [t["value"].replace("<image>\n", "") for t in conv["conversations"] if t["from"] == "human"]
    assert all(a in taught for a in answers)
    assert not any(q in taught for q in questions) and "system" not in taught.lower()
    assert labels[0] == IGNORE and item["pixel_values"].shape[0] == 1


#: A ChatML template as Qwen2.5-VL's (``<|im_start|>role\n … <|im_end|>\n``), with the tiny tokenizer's <s>/</s>.
CHATML = ("{% for m in messages %}<s>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}{% else %}"
          "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}"
          "{% endfor %}{% endif %}</s>\n{% endfor %}{% if add_generation_prompt %}<s>assistant\n{% endif %}")


def test_with_a_chatml_template_the_end_of_turn_is_taught_and_the_role_header_is_not(tiny_vlm, data):
    """The model must learn to *stop*: the end-of-turn marker after each answer carries loss; the
    ``assistant`` header before it is prompt (the reasoner's generation prompt supplies it)."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_vlm)
    processor.chat_template = CHATML
    conv = next(r for r in load_records(data) if r["kind"] == "conversation")
    item = encode(processor, conv, 4096)
    ids, labels = item["input_ids"].tolist(), item["labels"].tolist()
    tok = processor.tokenizer
    eos = tok.convert_tokens_to_ids("</s>")
    taught_eos = sum(1 for i, lab in zip(ids, labels) if lab != IGNORE and i == eos)
    assert taught_eos == 3  # one per assistant turn
    assert sum(1 for i in ids if i == eos) == 3 + 4  # system + 3 user turns end with </s> too, untaught
    taught = tok.decode([i for i, lab in zip(ids, labels) if lab != IGNORE], skip_special_tokens=False)
    assert "assistant" not in taught and taught.startswith("They look")


def test_lora_sits_on_the_language_model_only(tiny_vlm):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm)
    names = lora_targets(model)
    assert names and all(n.startswith("model.language_model.") for n in names)
    assert {n.rsplit(".", 1)[-1] for n in names} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                     "up_proj", "down_proj"}
    # The CLIP vision tower has q/k/v projections too: none of them may be adapted.
    assert any("vision_tower" in n and n.endswith("q_proj") for n, _ in model.named_modules())


def test_tuning_lowers_the_loss_on_a_fixed_batch_and_saves_the_adapter(adapter):
    out, m = adapter
    assert m["steps"] == 12 and m["precision"] == "fp32" and m["device"] == "cpu"
    assert m["probe_loss_after"] < m["probe_loss_before"] - 0.1, m
    assert 0 < m["trainable_params"] < m["total_params"] // 2 and m["lora_layers"] == 7
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    assert json.loads((out / "tune.json").read_text())["steps"] == 12
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] == 12 and len(state["losses"]) == 12


def test_an_interrupted_run_resumes_to_the_same_adapter(tmp_path, tiny_vlm, data, adapter):
    """Stopped after 5 of 12 steps, then the same command again: it continues from the checkpoint and ends where
    a straight 12-step run ended (same batches, LR schedule and optimiser state; dropout off: no RNG involved)."""
    out = tmp_path / "resumed"
    cfg = TuneConfig(steps=12, save_every=6, **FAST)
    first = tune(tiny_vlm, data, out, cfg, progress=False, stop=lambda step: step == 5)
    assert first["steps"] == 5 and not first["finished"]
    logs: list[str] = []
    again = tune(tiny_vlm, data, out, cfg, progress=False, log=logs.append)
    assert again["finished"] and any("resuming" in line and "step 5" in line for line in logs)
    straight = load_file(str(adapter[0] / "adapter_model.safetensors"))
    resumed = load_file(str(out / "adapter_model.safetensors"))
    assert straight.keys() == resumed.keys()
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k], rtol=1e-4, atol=1e-5)


def test_the_reasoner_answers_schema_valid_json_with_the_adapter(tiny_vlm, adapter, data_file):
    out, _ = adapter
    engine = TransformersEngine(tiny_vlm, grammar_fn=answer_lark_grammar, max_new_tokens=300, adapter=out)
    assert engine.name == f"transformers:{tiny_vlm.name}+{out.name}"
    base = TransformersEngine(tiny_vlm, grammar_fn=None, max_new_tokens=1)
    # The merged weights differ from the base's: the adapter really was applied.
    changed = [n for n, p in engine.model.named_parameters() if "q_proj" in n and "language_model" in n]
    assert changed and any(not torch.equal(p, dict(base.model.named_parameters())[n])
                           for n, p in engine.model.named_parameters() if n in changed)
    import cv2

    face = cv2.imread(str(sorted((data_file("fer2013/val") / "happy").glob("*.jpg"))[0]))
    kfs = [validate_keyframe(keyframe_msg(jpeg(face[:, :, ::-1].copy()))) for _ in range(2)]
    for reply in Reasoner(engine=engine, resample_k=2).process(kfs):
        validate_reply(reply)
        assert reply["type"] == "reply" and reply["expression"] in CANONICAL_LABELS


def test_fit_gate_then_serve_adapter_and_gate_in_a_real_reasoner(tmp_path, tiny_vlm, adapter, data_file, emostream):
    out, _ = adapter
    gate = tmp_path / "gate.json"
    done = emostream("fit-gate", str(data_file("fer2013/val")), "-o", str(gate), "--vlm", str(tiny_vlm),
                     "--adapter", str(out), "--limit", "28", "--resample", "1", "--max-new-tokens", "200",
                     "--threads", "1", "--json", "--no-progress", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["faces"] == 28 and report["fit"] + report["held_out"] == 28
    assert report["engine"].endswith(f"+{out.name}")
    scores = report["held_out_scores"]
    best = max(scores["network"]["accuracy"], scores["vlm"]["accuracy"])
    # The bar: fused >= the better input on the held-out half, or the report says why not.
    assert scores["fitted_gate"]["accuracy"] >= best or "why_not" in report, report
    assert report["fused_at_least_best_input"] == (scores["fitted_gate"]["accuracy"] >= best)
    args = ("--vlm", str(tiny_vlm), "--adapter", str(out), "--gate", str(gate), "--max-new-tokens", "300",
            "--threads", "1")
    with reasoner_process(tmp_path, *args, ready_timeout=120) as (_, endpoint, _log):
        client = RawClient(endpoint)
        try:
            crop = jpeg(_face(data_file))
            labels = json.loads(gate.read_text())["labels"]  # the network's labels, as the edge sends them
            reply = client.ask(keyframe_msg(crop, probs=[1 / len(labels)] * len(labels), labels=labels),
                               timeout_s=90)
        finally:
            client.close()
    assert reply["type"] == "reply" and reply["engine"].endswith(f"+{out.name}")
    assert list(reply["fused"]) == labels and abs(sum(reply["fused"].values()) - 1) < 1e-3
    # With flat network probabilities the fused distribution is the fitted gate's own answer for this vote.
    from emostream.reasoner.fusion import load_gate

    expected = load_gate(gate).fuse(reply["expression"], [1 / len(labels)] * len(labels))
    assert max(abs(reply["fused"][k] - float(p)) for k, p in zip(labels, expected)) < 1e-3


def _face(data_file):
    import cv2

    bgr = cv2.imread(str(sorted((data_file("fer2013/val") / "sad").glob("*.jpg"))[0]))
    return bgr[:, :, ::-1].copy()


def test_a_local_vlm_teacher_is_resampled_and_filtered(tmp_path, tiny_vlm, data_file):
    """The tiny random VLM as teacher: its constrained answers parse, but they are garbage, so SEKE and the label
    check must reject most of them after K samples -- and whatever is kept must pass both."""
    from emostream.reasoner.schema import parse_answer
    from emostream.reasoner.verify import check

    teacher = build_teacher(str(tiny_vlm), threads=1, max_new_tokens=200, seed=0)
    assert teacher.name == f"transformers:{tiny_vlm.name}"
    out = tmp_path / "vlm.jsonl"
    warnings: list[str] = []
    summary = generate(data_file("fer2013/val"), out, teacher, k=2, limit=6, progress=False, warn=warnings.append)
    assert summary.faces == 6 and summary.samples > 6  # rejected first answers were resampled
    assert set(summary.reasons) <= {"va_inconsistent", "au_inconsistent", "au_va_inconsistent", "wrong_label",
                                    "no_aus", "unparseable"}
    assert "unparseable" not in summary.reasons  # constrained decoding: every answer parses
    for line in out.read_text().splitlines():
        rec = json.loads(line)
        if rec["kind"] == "categorical":
            a = parse_answer(rec["conversations"][1]["value"], teacher.labels)
            assert a.expression == rec["label"] and check(a).ok
    assert bool(summary.kept) or any("no answer" in w for w in warnings)


def test_cli_tunes_and_prints_one_metrics_line(tmp_path, tiny_vlm, data, emostream):
    done = emostream("tune-vlm", "--base", str(tiny_vlm), "--data", str(data), "--out", str(tmp_path / "a"),
                     "--steps", "2", "--batch-size", "1", "--grad-accum", "2", "--threads", "1", "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    line = done.stdout.strip()
    assert line.startswith("done: 2 steps on ") and "samples/s on cpu fp32" in line and "LoRA layers" in line
    assert (tmp_path / "a" / "adapter_model.safetensors").is_file()


def test_sigterm_stops_after_the_step_with_a_checkpoint_and_the_rerun_resumes(tmp_path, tiny_vlm, data, emostream):
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    out = tmp_path / "sig"
    args = ["tune-vlm", "--base", str(tiny_vlm), "--data", str(data), "--out", str(out), "--steps", "100000",
            "--batch-size", "1", "--grad-accum", "1", "--save-every", "100000", "--threads", "1", "--no-progress"]
    err = tmp_path / "err.log"
    with open(err, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "emostream", *args], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=fh, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        deadline = time.monotonic() + 120
        while "tuning:" not in err.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()[-2000:]
            time.sleep(0.05)
        time.sleep(1.0)  # a few steps
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = err.read_text()
    assert proc.returncode == 128 + signal.SIGTERM, log[-2000:]
    assert "interrupted (SIGTERM)" in log and "Traceback" not in log and not stdout.startswith("done")
    step = json.loads((out / "checkpoint" / "state.json").read_text())["step"]
    assert 1 <= step < 100000
    assert not (out / "adapter_model.safetensors").exists()  # no half-tuned adapter that looks finished
    again = emostream(*[str(step + 2) if a == "100000" else a for a in args])
    assert again.returncode == 0 and f"at step {step}" in again.stderr, again.stderr[-2000:]
    assert again.stdout.startswith(f"done: {step + 2} steps") and (out / "adapter_model.safetensors").is_file()


def test_bad_tuning_inputs_are_one_line(tmp_path, tiny_vlm, data, emostream):
    with pytest.raises(TuneError, match="needs a CUDA GPU"):
        tune(tiny_vlm, data, tmp_path / "q", TuneConfig(steps=1, qlora=True), progress=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"conversations": [{"from": "gpt", "value": "x"}, {"from": "human", "value": "y"}], '
                   '"image": "a.jpg"}\n')
    for args, msg in [
        (("--base", str(tmp_path), "--data", str(data), "--out", str(tmp_path / "o")), "config.json"),
        (("--base", str(tiny_vlm), "--data", str(bad), "--out", str(tmp_path / "o")), "bad.jsonl:1: turn 1"),
        (("--base", str(tiny_vlm), "--data", str(data), "--out", str(tmp_path / "o"), "--qlora"), "CUDA"),
        (("--base", str(tiny_vlm), "--data", str(data), "--out", str(data)), "is a file"),
    ]:
        done = emostream("tune-vlm", *args)
        assert done.returncode == 2 and msg in done.stderr and "Traceback" not in done.stderr, done.stderr
    wrong = emostream("reasoner", "--bind", "tcp://127.0.0.1:1", "--vlm", str(tiny_vlm), "--adapter", str(tmp_path))
    assert wrong.returncode == 2 and "adapter_config.json" in wrong.stderr
