"""`emostream bench` runs and reports every stage (a functional check; numbers go to the README, not asserts)."""

from __future__ import annotations

import json

from conftest import run_emostream as emostream


def test_bench_reports_stages_and_baselines(data_file):
    proc = emostream("bench", str(data_file("video/single_face.mp4")), "--frames", "30", "--json", timeout=180)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["frames"] == 30 and result["faces"] >= 28
    assert set(result["ms_per_frame"]) == {"decode", "detect", "align", "infer"}
    assert all(v > 0 for v in result["ms_per_frame"].values())
    assert result["fps"] > 0 and result["baseline_decode_only_fps"] > result["fps"]
    assert result["baseline_haar_detect_ms"] > 0


def test_bench_text_report(data_file):
    proc = emostream("bench", str(data_file("video/single_face.mp4")), "--frames", "10", timeout=180)
    assert proc.returncode == 0, proc.stderr
    for word in ("decode", "detect", "align", "infer", "end-to-end", "Haar cascade", "decode only"):
        assert word in proc.stdout
