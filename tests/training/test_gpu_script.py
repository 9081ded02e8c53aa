"""training/gpu_distill.sh, the one command a session with a GPU runs: valid bash, clear failures, and a CPU rehearsal.

A later session gets one ~10-minute call on the GPU machine; anything wrong in the script must show here first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from emostream.training.data import load_fer_pack, pack_fer
from emostream.training.loop import bf16_native
from emostream.training.models import load_checkpoint, load_checkpoint_model

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "training" / "gpu_distill.sh"


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work"),
            **env}
    return subprocess.run(["bash", str(SCRIPT)], cwd=REPO, env=full, capture_output=True, text=True, timeout=300)


def test_bash_syntax_is_valid():
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_missing_pack_fails_at_once_with_one_line(tmp_path):
    done = _run(tmp_path, PACK=str(tmp_path / "nowhere.npz"))
    assert done.returncode == 2
    pack = tmp_path / "nowhere.npz"
    assert done.stderr.strip() == (f"gpu_distill: error: pack not found: {pack} "
                                   f"(run `emostream pack-fer -o {pack}` here and carry its folder)")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def small_pack(fer_sample, tmp_path_factory) -> Path:
    """A pack of real faces (84 train, 42 val) made by the same code as the full one."""
    out = tmp_path_factory.mktemp("pack") / "small.npz"
    pack_fer(fer_sample, out, cache_dir=out.parent / "cache")
    return out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA failure")
def test_without_cuda_fails_clearly(tmp_path, small_pack):
    done = _run(tmp_path, PACK=str(small_pack))
    assert done.returncode == 2
    assert "gpu_distill: error: CUDA is not available" in done.stderr.strip().splitlines()[-1]


def test_bad_camera_aug_is_one_line(tmp_path, small_pack):
    # Each refused before minutes of teacher training.
    for name, value, message in [
        ("CAMERA_AUG", "yes", "CAMERA_AUG must be 0 or 1, got yes"),
        ("TEACHER_FLIP", "2", "TEACHER_FLIP must be 0 or 1, got 2"),
        ("MIXUP", "-1", "MIXUP must be a number >= 0 (0 = off), got -1"),
        ("STUDENT_EMA", "1", "STUDENT_EMA must be a decay in [0, 1) (0 = off), got 1"),
        ("LIGHT_AUG", "on", "LIGHT_AUG must be 0 or 1, got on"),
        ("ENGINE_BENCH", "yes", "ENGINE_BENCH must be 0 or 1, got yes"),
    ]:
        done = _run(tmp_path, PACK=str(small_pack), **{name: value})
        assert done.returncode == 2
        assert done.stderr.strip() == f"gpu_distill: error: {message}"


def test_cpu_rehearsal_writes_what_comes_back(tmp_path, small_pack):
    """The whole script on the CPU with tiny budgets: teacher (fp16 return copy), distilled student, logs;
    the student (student_l, the shipped arch) and the teacher both trained with camera degradations."""
    done = _run(tmp_path, PACK=str(small_pack), DEVICE="cpu", LIMIT="32", TEACHER_ARCH="teacher_s",
                TEACHER_EPOCHS="1", STUDENT_EPOCHS="1", TEACHER_BUDGET="30", STUDENT_BUDGET="30", BATCH="16",
                CAMERA_AUG="1", TEACHER_FLIP="1", MIXUP="0.3", LIGHT_AUG="1", STUDENT_EMA="0.9")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "out"
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "gpu_distill.log", "gpu_engine_bench.json", "student/best.pt", "student/log.jsonl", "teacher/best.pt",
        "teacher/log.jsonl"]
    bench = json.loads((out / "gpu_engine_bench.json").read_text())  # the engine timed on the device (here: CPU)
    want = {(m, b) for m in ("student", "v0") for b in (1, 32, 256)}
    assert {(r["model"], r["batch"]) for r in bench["rows"]} == want
    assert all(r["faces_per_s"] > 0 for r in bench["rows"]) and bench["device"].startswith("CPU")
    assert all(p.stat().st_size < 16 * 2**20 for p in out.rglob("*") if p.is_file())  # the tool's per-file limit
    teacher = load_checkpoint(out / "teacher" / "best.pt")
    assert teacher["stored_dtype"] == "float16" and teacher["arch"] == "teacher_s"
    assert all(v.dtype != torch.float32 for v in teacher["model"].values())
    net = load_checkpoint_model(out / "teacher" / "best.pt")  # fp16 weights load into the fp32 network
    assert next(net.parameters()).dtype == torch.float32
    student = load_checkpoint(out / "student" / "best.pt")
    assert student["arch"] == "student_l" and student["init"] == "student" and student["camera_aug"] is True
    assert load_checkpoint(out / "teacher" / "best.pt")["camera_aug"] is True
    assert student["config"]["teacher_flip"] is True and student["config"]["mixup"] == 0.3
    assert student["config"]["ema"] == 0.9 and student["light_aug"] is True
    assert student["config"]["augment"]["light_p"] > 0 and teacher["config"]["augment"]["light_p"] > 0
    assert student["teachers"] == [str(tmp_path / "work" / "teacher" / "best.pt")]
    log = (out / "gpu_distill.log").read_text()
    precision = "bf16 autocast" if bf16_native() else "fp32"
    assert "teacher done" in log and "student done" in log and f"on cpu ({precision})" in log
    assert len(load_fer_pack(small_pack, "val")) == 42
