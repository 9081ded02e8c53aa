"""The records file against restarts, crashes, full disks and a mistyped path, with the real CLI.

* A service restarted by systemd reopens the same ``--output``: the previous session must survive
  (append by default; ``--overwrite`` to truncate), and a line cut by a crash must not swallow the
  next session's first record.
* ``emostream run x.mp4 -o x.mp4`` (or any other spelling of the same file) must be refused before
  anything is opened: opening the output would destroy the video.
* A full disk (``/dev/full``, a real 100 KiB tmpfs) gives one ``emostream: error:`` line and a
  non-zero exit, and leaves only complete JSON lines behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, run_emostream

pytestmark = pytest.mark.faults

VIDEO = "video/WolfgangLanger_Pexels.mp4"
PHOTO = "multiface/single_face.jpg"


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("emostream: error:")]


def assert_one_clear_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    errors = error_lines(proc.stderr)
    assert len(errors) == 1, proc.stderr
    for word in words:
        assert word in errors[0], proc.stderr
    return errors[0]


def json_lines(path: Path) -> list[dict]:
    text = path.read_text()
    assert text.endswith("\n"), f"last line cut: {text[-200:]!r}"
    return [json.loads(line) for line in text.splitlines()]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------------------------------
# restarts


def test_a_restart_appends_to_the_output(data_file, tmp_path):
    out = tmp_path / "faces.jsonl"
    photo = str(data_file(PHOTO))
    first = run_emostream("run", photo, "-o", str(out), "-q")
    assert first.returncode == 0, first.stderr
    session1 = out.read_bytes()
    assert session1.count(b'"type":"frame"') == 1
    second = run_emostream("run", photo, "-o", str(out), "-q")
    assert second.returncode == 0, second.stderr
    both = out.read_bytes()
    assert both.startswith(session1), "the restart rewrote the previous session"
    recs = json_lines(out)
    assert [r["frame"] for r in recs if r["type"] == "frame"] == [0, 0]


def test_overwrite_truncates_the_output(data_file, tmp_path):
    out = tmp_path / "faces.jsonl"
    out.write_text('{"type":"frame","stream":"old","frame":7,"t":0.0,"faces":[]}\n' * 3)
    proc = run_emostream("run", str(data_file(PHOTO)), "-o", str(out), "--overwrite", "-q")
    assert proc.returncode == 0, proc.stderr
    recs = json_lines(out)
    assert "old" not in {r.get("stream") for r in recs}
    assert [r["frame"] for r in recs if r["type"] == "frame"] == [0]


def test_a_line_cut_by_a_crash_is_not_glued_to_the_next_record(data_file, tmp_path):
    out = tmp_path / "faces.jsonl"
    whole = '{"type":"frame","stream":"crashed","frame":0,"t":0.0,"faces":[]}\n'
    cut = '{"type":"frame","stream":"crashed","frame":1,"t":0.04,"fa'
    out.write_text(whole + cut)
    proc = run_emostream("run", str(data_file(PHOTO)), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "cut line" in proc.stderr
    lines = out.read_text().splitlines()
    assert lines[:2] == [whole.rstrip("\n"), cut], "the earlier session was changed"
    new = [json.loads(line) for line in lines[2:]]  # every record of the new session is whole
    assert [r["frame"] for r in new if r["type"] == "frame"] == [0]


# ----------------------------------------------------------------------------------------------------
# an output that is an input


@pytest.fixture
def clip(data_file, tmp_path) -> Path:
    """A private copy of the video: if a refusal fails, only the copy is destroyed."""
    copy = tmp_path / "clip.mp4"
    shutil.copyfile(data_file(VIDEO), copy)
    return copy


@pytest.mark.parametrize("spelling", ["same", "dotdot", "symlink", "hardlink", "file_uri", "overlay",
                                      "overlay_uri"])
def test_an_output_naming_the_input_video_is_refused(clip, tmp_path, spelling):
    before = sha256(clip)
    (tmp_path / "sub").mkdir()
    source, flag, target = str(clip), "-o", str(clip)
    if spelling == "dotdot":
        target = str(tmp_path / "sub" / ".." / "clip.mp4")
    elif spelling == "symlink":
        (tmp_path / "link.mp4").symlink_to(clip)
        target = str(tmp_path / "link.mp4")
    elif spelling == "hardlink":
        os.link(clip, tmp_path / "hard.mp4")
        target = str(tmp_path / "hard.mp4")
    elif spelling == "file_uri":
        source = clip.as_uri()
    elif spelling == "overlay":
        flag = "--overlay"
    elif spelling == "overlay_uri":
        flag, target = "--overlay", f"file://localhost{clip}"
    proc = run_emostream("run", source, flag, target, timeout=120)
    assert_one_clear_error(proc, "refusing to overwrite", flag)
    assert sha256(clip) == before, "the input video was changed"
    assert "frames in" not in proc.stderr, "it ran before refusing"


def test_output_and_overlay_on_one_file_are_refused(clip, tmp_path):
    target = tmp_path / "out.mp4"
    proc = run_emostream("run", str(clip), "-o", str(target), "--overlay", str(target), timeout=120)
    assert_one_clear_error(proc, "same file")
    assert not target.exists()


# ----------------------------------------------------------------------------------------------------
# full disks


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_output_to_a_full_device_is_one_clear_error(data_file):
    proc = run_emostream("run", str(data_file(PHOTO)), "-o", "/dev/full")
    assert_one_clear_error(proc, "/dev/full", "No space left on device")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_stdout_to_a_full_device_is_one_clear_error(data_file):
    env = {**os.environ, "GLOG_minloglevel": "2"}
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "emostream", "run", str(data_file(PHOTO))], cwd=REPO,
                              env=env, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert_one_clear_error(proc, "stdout", "No space left on device")


@pytest.fixture
def small_disk(tmp_path):
    """A real 100 KiB tmpfs (root only); unmounted afterwards whatever happened."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=100k", "tmpfs", str(mnt)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip() or mount.returncode}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_disk_filling_up_leaves_only_whole_records(data_file, tmp_path, small_disk):
    out = small_disk / "faces.jsonl"
    overlay = tmp_path / "annotated.mp4"  # on another disk: it must still be finished
    proc = run_emostream("run", str(data_file(VIDEO)), "-o", str(out), "--overlay", str(overlay))
    assert_one_clear_error(proc, str(out), "No space left on device")
    recs = json_lines(out)  # every line whole: the cut one was taken back
    frames = [r["frame"] for r in recs if r["type"] == "frame"]
    assert 50 < len(frames) < 472, len(frames)
    assert frames == list(range(len(frames)))
    assert out.stat().st_size <= 100 * 1024

    from emostream.streams import open_source

    src = open_source(str(overlay))  # finished (playable) despite the failed records
    try:
        decoded = 0
        while src.read() is not None:
            decoded += 1
    finally:
        src.close()
    assert decoded >= len(frames)
