"""Shared fixtures: where the real data lives, and skipping cleanly where it does not."""

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
    """Return a function that resolves a path under the shared data, skipping if it is absent."""

    def resolve(rel: str) -> Path:
        path = shared_data / rel
        if not path.exists():
            pytest.skip(f"shared data file missing: {path}")
        return path

    return resolve


def run_emostream(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real `emostream` CLI in a child process (quiet MediaPipe logging)."""
    env = {**os.environ, "GLOG_minloglevel": "2"}
    return subprocess.run([sys.executable, "-m", "emostream", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


@pytest.fixture(scope="session")
def emostream():
    """The CLI as a function: ``emostream("run", path, ...) -> CompletedProcess``."""
    return run_emostream
