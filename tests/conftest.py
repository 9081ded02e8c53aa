"""Shared fixtures: where the real data lives, skipping cleanly where it does not, and the test tiers.

Tiers (pytest markers, assigned here at collection so no test module has to remember them):

* ``data``  — reads ``../shared/data``. Where that folder exists these tests must run: a missing file there
  is a failure, not a skip (a renamed clip must not silently turn a test suite green).
* ``media`` — runs GStreamer, MediaPipe or a real ``emostream`` process (seconds, not milliseconds).
* ``gpu``   — needs TensorRT/CUDA; skips with a reason elsewhere.
* ``slow``  — fuzzing, giant images, training loops, tiny VLMs: the long tail of the suite.
* ``unit``  — everything else: in-process, no media, no data; ``pytest -m unit`` runs in seconds.

``faults`` (fault injection and abuse) is set by the modules under ``tests/faults/`` themselves.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``../shared/data`` beside the clone, or ``$EMOSTREAM_DATA`` when set."""
    env = os.environ.get("EMOSTREAM_DATA")
    return Path(env) if env else (REPO.parent / "shared" / "data")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_dir()
    if not root.is_dir():
        pytest.skip(f"real test data not found at {root} (set EMOSTREAM_DATA or place ../shared/data)")
    return root


@pytest.fixture(scope="session")
def data_file(shared_data: Path):
    """Return a function that resolves a path under the shared data.

    Reached only when the shared folder exists (``shared_data`` skips otherwise), so a missing file is a
    broken expectation and fails the test.
    """

    def resolve(rel: str) -> Path:
        path = shared_data / rel
        if not path.exists():
            pytest.fail(f"shared data folder {shared_data} exists but lacks {rel}")
        return path

    return resolve


@pytest.fixture(scope="session")
def fer_sample(data_file, tmp_path_factory) -> Path:
    """The first 12 train and 6 val files of every FER2013 label folder, copied: real faces, decoded in a second.

    Lives here, not in a tests/training/conftest.py: a second ``conftest`` module would shadow this one for
    the tests that ``from conftest import run_emostream``.
    """
    import shutil

    src = data_file("fer2013")
    root = tmp_path_factory.mktemp("fer_sample")
    for split, n in (("train", 12), ("val", 6)):
        for label_dir in sorted(p for p in (src / split).iterdir() if p.is_dir()):
            dst = root / split / label_dir.name
            dst.mkdir(parents=True)
            for f in sorted(label_dir.glob("*.jpg"))[:n]:
                shutil.copy(f, dst / f.name)
    return root


@pytest.fixture(scope="session")
def fer_easy(data_file, tmp_path_factory):
    """(train, val) of two visually distinct FER2013 classes, happy and surprise: 240 train faces (seeded) and
    200 balanced val faces (chance = 0.5), learnable in seconds -- for tests that a training loop learns."""
    import numpy as np

    from emostream.training.data import load_fer_cached

    cache = tmp_path_factory.mktemp("cache")
    root = data_file("fer2013")
    train, val = load_fer_cached(root, "train", cache_dir=cache), load_fer_cached(root, "val", cache_dir=cache)
    ids = [train.names.index(n) for n in ("happy", "surprise")]
    rng = np.random.default_rng(0)
    tr = np.sort(np.concatenate([rng.permutation(np.flatnonzero(train.labels == i))[:120] for i in ids]))
    va = np.sort(np.concatenate([np.flatnonzero(val.labels == i)[:100] for i in ids]))
    return train.subset(tr), val.subset(va)


#: Modules in the ``gpu`` and ``slow`` tiers, by file name (the cost is the module's nature, not a fixture's).
GPU_MODULES = {"test_emotion_tensorrt.py", "test_tensorrt_calibrator.py"}
SLOW_MODULES = {"test_fuzz_contract.py", "test_fuzz_labels_csv.py", "test_giant_images.py", "test_smoke_training.py",
                "test_vlm_transformers.py", "test_signals.py", "test_tune_vlm.py"}
#: Names whose presence in a test module means it drives real media or a real emostream process.
MEDIA_NAMES = {"run_emostream", "emostream", "open_source", "FaceDetector", "Gst", "_gst", "reasoner_process",
               "open_sink", "VideoSource", "subprocess"}


def _tiers(item: pytest.Item) -> set[str]:
    tiers: set[str] = set()
    if {"data_file", "shared_data"} & set(getattr(item, "fixturenames", ())):
        tiers.add("data")
    name = item.path.name
    if name in GPU_MODULES:
        tiers.add("gpu")
    if name in SLOW_MODULES:
        tiers.add("slow")
    module = getattr(item, "module", None)
    if module is not None and (MEDIA_NAMES & set(vars(module)) or "emostream" in getattr(item, "fixturenames", ())):
        tiers.add("media")
    if item.path.parent.name == "streams":
        tiers.add("media")
    return tiers or {"unit"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for tier in _tiers(item):
            item.add_marker(tier)


def run_emostream(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real `emostream` CLI in a child process (quiet MediaPipe logging)."""
    env = {**os.environ, "GLOG_minloglevel": "2"}
    return subprocess.run([sys.executable, "-m", "emostream", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


@pytest.fixture(scope="session")
def emostream():
    """The CLI as a function: ``emostream("run", path, ...) -> CompletedProcess``."""
    return run_emostream
