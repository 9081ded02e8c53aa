"""``emostream instructions``: EmoVIT instruction data kept only where SEKE and the label agree.

Real FER2013 val faces, the real emotion network (ONNX Runtime) behind the knowledge teacher, and a real HTTP
server (stdlib, tests/reasoner/procs.FakeOpenAI) for the OpenAI-compatible teacher.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emostream.reasoner.schema import parse_answer
from emostream.reasoner.verify import check
from emostream.training.instructions import KINDS, InstructionError, build_teacher, generate
from tests.reasoner.procs import FakeOpenAI

N = 36


@pytest.fixture(scope="module")
def fer_val(data_file) -> Path:
    return data_file("fer2013/val")


@pytest.fixture(scope="module")
def teacher():
    t = build_teacher("knowledge", threads=1)
    yield t
    t.close()


@pytest.fixture(scope="module")
def made(tmp_path_factory, fer_val, teacher):
    out = tmp_path_factory.mktemp("instr") / "out.jsonl"
    summary = generate(fer_val, out, teacher, k=3, limit=N, seed=0, progress=False)
    return out, summary, [json.loads(line) for line in out.read_text().splitlines()]


def test_every_kept_record_is_consistent_and_names_the_true_label(made, teacher):
    _, summary, recs = made
    assert recs and len(recs) == sum(summary.kept.values())
    for rec in recs:
        conv = rec["conversations"]
        assert conv[0]["from"] == "human" and conv[0]["value"].startswith("<image>\n")
        assert [t["from"] for t in conv] == ["human", "gpt"] * (len(conv) // 2)
        assert Path(rec["image"]).is_file() and rec["images"] == [rec["image"]]
        assert rec["kind"] in KINDS and rec["teacher"].startswith("knowledge:")
        if rec["kind"] == "categorical":
            answer = parse_answer(conv[1]["value"], teacher.labels)  # schema-valid for the reasoner's prompt
            assert answer.expression == rec["label"] and check(answer).ok
            assert "network" not in answer.rationale  # a visual rationale, not the network's numbers
            assert all(label in conv[0]["value"] for label in teacher.labels)
        elif rec["kind"] == "reasoning":
            assert "(AU" in conv[1]["value"] or rec["label"] == "neutral"
        else:
            assert len(conv) == 6 and rec["label"] in conv[1]["value"]


def test_summary_accounts_for_every_face_and_kind(made):
    _, summary, recs = made
    assert summary.faces == N and summary.unreadable == 0
    for kind in KINDS:
        assert summary.kept[kind] + summary.rejected[kind] == N
        assert summary.kept[kind] == sum(r["kind"] == kind for r in recs)
    # The network is right on about two faces in three: the label check must have rejected some.
    assert sum(summary.rejected.values()) > 0 and summary.reasons["wrong_label"] > 0
    assert sum(summary.kept_label.values()) + sum(summary.rejected_label.values()) == 3 * N
    assert summary.samples > N  # rejected first answers were resampled


def test_resampling_recovers_faces_and_wrong_labels_are_rejected(tmp_path, fer_val, teacher, made):
    _, summary3, _ = made
    once = generate(fer_val, tmp_path / "k1.jsonl", teacher, k=1, limit=N, seed=0, progress=False)
    assert once.samples == N
    assert sum(once.kept.values()) <= sum(summary3.kept.values())
    # The same faces with deliberately wrong labels: the ground-truth check rejects (nearly) all of them.
    csv = tmp_path / "wrong" / "labels.csv"
    csv.parent.mkdir()
    files = sorted((fer_val / "happy").glob("*.jpg"))[:12]
    for f in files:
        (csv.parent / f.name).symlink_to(f)
    csv.write_text("file,label\n" + "".join(f"{f.name},disgust\n" for f in files))
    wrong = generate(csv.parent, tmp_path / "wrong.jsonl", teacher, k=3, progress=False)
    assert sum(wrong.kept.values()) <= 3  # a happy face the network calls disgust on every view is rare
    assert wrong.reasons["wrong_label"] >= 3 * 12 - 3


def test_same_seed_same_file_whatever_the_workers(tmp_path, fer_val, teacher, made):
    out, _, _ = made
    again = tmp_path / "again.jsonl"
    generate(fer_val, again, teacher, k=3, limit=N, seed=0, workers=2, progress=False)
    assert again.read_bytes() == out.read_bytes()
    other = tmp_path / "other.jsonl"
    generate(fer_val, other, teacher, k=3, limit=N, seed=1, progress=False)
    assert other.read_bytes() != out.read_bytes()


def test_unreadable_images_are_counted_and_outputs_are_not_clobbered(tmp_path, fer_val, teacher):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = sorted((fer_val / "happy").glob("*.jpg"))[:3]
    for f in good:
        (folder / f.name).symlink_to(f)
    (folder / "broken.jpg").write_text("not an image")
    (folder / "labels.csv").write_text("file,label\n" + "".join(f"{f.name},happy\n" for f in good)
                                       + "broken.jpg,happy\n")
    warnings: list[str] = []
    out = tmp_path / "m.jsonl"
    summary = generate(folder, out, teacher, progress=False, warn=warnings.append)
    assert summary.unreadable == 1 and summary.faces == 3 and any("broken.jpg" in w for w in warnings)
    with pytest.raises(InstructionError, match="exists"):
        generate(folder, out, teacher, progress=False)
    with pytest.raises(InstructionError, match="no such folder"):
        generate(tmp_path / "nope", tmp_path / "n.jsonl", teacher, progress=False)
    assert not list(tmp_path.glob(".*.tmp"))  # no half-written temporary left behind


def test_openai_teacher_over_real_http_resamples_an_incoherent_first_answer(tmp_path, fer_val):
    """The server answers "happy": incoherent at first (negative valence, AU4), coherent when resampled."""
    server = FakeOpenAI("incoherent")
    try:
        teacher = build_teacher(url=server.url, model_name="m", workers=2)
        out = tmp_path / "http.jsonl"
        summary = generate(fer_val, out, teacher, k=3, limit=20, seed=0, workers=2, progress=False)
        teacher.close()
    finally:
        server.close()
    assert not server.problems
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    happy = summary.kept_label["happy"] + summary.rejected_label["happy"]
    assert happy > 0 and summary.kept_label["happy"] == happy  # every happy face kept, after resampling
    assert {r["label"] for r in recs} == {"happy"} and all(r["samples"] == 3 for r in recs)
    assert summary.reasons["wrong_label"] == sum(summary.rejected.values())  # the rest: "happy" is wrong
    assert any(b.get("n") == 2 for b in server.requests)  # K-1 = 2 more samples were asked for


def test_a_dead_teacher_server_is_one_error_not_an_empty_file(tmp_path, fer_val):
    from tests.reasoner.procs import free_port

    teacher = build_teacher(url=f"http://127.0.0.1:{free_port()}/v1")
    out = tmp_path / "dead.jsonl"
    with pytest.raises(InstructionError, match="teacher failed on every face.*unreachable"):
        generate(fer_val, out, teacher, limit=3, progress=False)
    assert not out.exists()


def test_cli_end_to_end_and_bad_flags(tmp_path, fer_val, emostream):
    out = tmp_path / "cli.jsonl"
    done = emostream("instructions", str(fer_val), "-o", str(out), "--limit", "8", "--no-progress", "--threads", "1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("done: 8 faces") and "categorical" in done.stderr
    summary = json.loads((tmp_path / "cli.jsonl.summary.json").read_text())
    assert summary["faces"] == 8 and summary["records"] == len(out.read_text().splitlines())
    for args, msg in [
        (("/nope", "-o", str(tmp_path / "x.jsonl")), "no such folder"),
        ((str(fer_val), "-o", str(out)), "exists"),
        ((str(fer_val), "-o", str(tmp_path / "x.jsonl"), "--teacher", "/nope"), "neither"),
        ((str(fer_val), "-o", str(tmp_path / "x.jsonl"), "--resample", "0"), "at least 1"),
    ]:
        bad = emostream("instructions", *args)
        assert bad.returncode == 2 and msg in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
