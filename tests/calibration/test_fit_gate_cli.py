"""``emostream fit-gate`` as a user runs it: real FER2013 val faces, the real network, the knowledge engine.

(The run with a tuned VLM is in tests/training/test_tune_vlm.py.)
"""

from __future__ import annotations

import json

from emostream.calibration.fusion import load_gate


def test_fit_gate_with_the_knowledge_engine_reports_and_saves_a_loadable_gate(tmp_path, data_file, emostream):
    gate = tmp_path / "gate.json"
    done = emostream("fit-gate", str(data_file("fer2013/val")), "-o", str(gate), "--limit", "80", "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    for row in ("network", "vlm", "fixed_gate", "fitted_gate"):
        assert row in out
    assert "knowledge engine answers from the network's own probabilities" in out
    report = json.loads((tmp_path / "gate.json.report.json").read_text())
    assert report["faces"] == 80 and report["engine"] == "knowledge"
    s = report["held_out_scores"]
    assert s["network"] == s["vlm"]  # the knowledge engine's answer is the network's top label
    g = load_gate(gate, report["labels"])
    assert g.fitted and g.weight.shape == (len(g.labels), 2 * len(g.labels))


def test_fit_gate_bad_inputs_are_one_line(tmp_path, data_file, emostream):
    fer = str(data_file("fer2013/val"))
    (tmp_path / "exists.json").write_text("{}")
    for args, msg in [
        (("/nope", "-o", str(tmp_path / "g.json")), "no such folder"),
        ((fer, "-o", str(tmp_path / "exists.json")), "exists"),
        ((fer, "-o", str(tmp_path / "nodir" / "g.json")), "does not exist"),
        ((fer, "-o", str(tmp_path / "g.json"), "--adapter", str(tmp_path)), "--adapter needs --vlm"),
        ((fer, "-o", str(tmp_path / "g.json"), "--vlm", str(tmp_path)), "config.json"),
        ((fer, "-o", str(tmp_path / "g.json"), "--limit", "-1"), "at least 1"),
    ]:
        done = emostream("fit-gate", *args)
        assert done.returncode == 2 and msg in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)
    assert not (tmp_path / "g.json").exists()
