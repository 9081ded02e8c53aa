"""`emostream bench` runs and reports every stage (a functional check; numbers go to the README, not asserts)."""

from __future__ import annotations

import json

import pytest
from conftest import run_emostream as emostream


def test_bench_reports_stages_and_baselines(data_file):
    proc = emostream("bench", str(data_file("video/single_face.mp4")), "--frames", "30", "--json", timeout=180)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["frames"] == 30 and result["faces"] >= 28
    assert set(result["ms_per_frame"]) == {"decode", "detect", "align", "infer"}
    assert all(v > 0 for v in result["ms_per_frame"].values())
    assert result["fps"] > 0 and result["baseline_decode_only_fps"] > result["fps"]
    assert result["baseline_decode_rgb_fps"] > result["fps"]  # the earlier baseline: GStreamer converts to RGB
    assert result["ratio_to_decode_rgb"] > 0
    assert result["baseline_haar_detect_ms"] > 0
    assert result["runs"]["process_front"] is None  # one stream: the thread front unless asked


def test_bench_text_report(data_file):
    proc = emostream("bench", str(data_file("video/single_face.mp4")), "--frames", "10", timeout=180)
    assert proc.returncode == 0, proc.stderr
    for word in ("decode", "detect", "align", "infer", "end-to-end", "Haar cascade", "decode only",
                 "decode to RGB"):
        assert word in proc.stdout


def test_bench_compares_overlap_interval_and_live_latency(data_file):
    """The overlapped and sequential runs wrote the same records; the interval run says what it changed;
    the live source reports latency percentiles. (Values are the README's business, not asserted.)"""
    proc = emostream("bench", str(data_file("video/single_face.mp4")), "--frames", "40", "--detect-interval", "3",
                     "--live-seconds", "1", "--json", timeout=240)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["overlapped_vs_sequential_records"]["identical"] is True
    assert r["fps_sequential"] > 0 and r["fps_every_frame_detection"] > 0 and r["detect_interval"] == 3
    sparse = r["runs"]["overlapped_detect_interval"]
    assert sparse["frames"] == 40 and sparse["full_detections"] + sparse["faces_carried"] >= 40
    assert sparse["tracker"] == "flow" and sparse["faces_carried"] > 0  # the default way of carrying faces
    assert 0 <= sparse["vs_every_frame"]["label_agreement"] <= 1
    assert 0 <= sparse["vs_every_frame"]["smoothed_label_agreement"] <= 1
    # CPU accounting (all threads) for the baseline and the pipeline: what bounds frames/s on a small CPU.
    assert r["baseline_decode_only_cpu"]["cpu_ms_per_frame"] > 0 and r["baseline_decode_only_cpu"]["cores_busy"] > 0
    assert sparse["cpu_ms_per_frame"] > r["baseline_decode_only_cpu"]["cpu_ms_per_frame"]  # it decodes too
    # ... split by thread: the run's own Python threads, and what the process used beyond them (GStreamer).
    by = sparse["cpu_ms_per_frame_by_thread"]
    assert set(by) == {"front", "main", "readers", "gstreamer_and_other"}
    assert by["front"] > 0 and by["main"] > 0 and by["readers"] > 0
    assert sum(by.values()) == pytest.approx(sparse["cpu_ms_per_frame"], abs=0.01)
    seq = r["runs"]["sequential_before"]["cpu_ms_per_frame_by_thread"]
    assert seq["front"] == 0 and seq["main"] > by["main"]  # no front thread: its work is on the main thread
    live = r["live"]
    assert live["frames"] + live["dropped"] >= 25
    assert 0 < live["latency_ms_p50"] <= live["latency_ms_p99"]


def test_bench_bad_interval_is_one_line(data_file):
    proc = emostream("bench", str(data_file("video/single_face.mp4")), "--detect-interval", "0", timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["emostream: error: --detect-interval must be within 1..30, got 0"]


def test_bench_front_process_writes_the_thread_fronts_records(data_file):
    """`--front process` adds a run with the front half in a child: same records, its CPU counted."""
    proc = emostream("bench", str(data_file("video/single_face.mp4")), "--frames", "30", "--front", "process",
                     "--json", timeout=240)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    run = r["runs"]["process_front"]
    assert run["frames"] == 30 and run["vs_thread_front"]["identical"] is True
    by = run["cpu_ms_per_frame_by_thread"]
    assert by["front_processes"] > 0 and by["front"] < by["front_processes"]  # the child did the detection
    assert sum(by.values()) == pytest.approx(run["cpu_ms_per_frame"], abs=0.01)
