"""Fixtures shared by the training tests: a small FER2013-layout folder of real faces."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def fer_sample(data_file, tmp_path_factory) -> Path:
    """The first 12 train and 6 val files of every FER2013 label folder, copied: real faces, decoded in a second."""
    src = data_file("fer2013")
    root = tmp_path_factory.mktemp("fer_sample")
    for split, n in (("train", 12), ("val", 6)):
        for label_dir in sorted(p for p in (src / split).iterdir() if p.is_dir()):
            dst = root / split / label_dir.name
            dst.mkdir(parents=True)
            for f in sorted(label_dir.glob("*.jpg"))[:n]:
                shutil.copy(f, dst / f.name)
    return root
