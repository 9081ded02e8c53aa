"""The v0 network as a KD teacher: fed the student's 48x48 batch, it must say what the v0 engine says."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from emostream.engines.emotion import load_engine
from emostream.training.data import FER7_LABELS, load_fer_split
from emostream.training.loop import normalize
from emostream.training.models import CheckpointError
from emostream.training.teachers import load_teacher


def test_v0_teacher_matches_the_v0_engine(data_file):
    val = load_fer_split(data_file("fer2013"), "val")
    faces = val.images[::150]  # 24 real faces of every class
    teacher = load_teacher("v0", FER7_LABELS, 0.5, 4.0)
    with torch.no_grad():
        p_teacher = torch.softmax(teacher(normalize(faces, 0.5, 4.0)), 1).numpy()
    engine = load_engine("onnxruntime", "v0", threads=1)
    p_engine = engine.run(np.stack([cv2.resize(f, (64, 64)) for f in faces]))
    p_engine = p_engine[:, [engine.labels.index(n) for n in FER7_LABELS]]  # into the student's order
    assert np.mean(p_teacher.argmax(1) == p_engine.argmax(1)) >= 0.9
    assert np.abs(p_teacher - p_engine).mean() < 0.03


def test_unknown_teacher_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_teacher(tmp_path / "missing.pt", FER7_LABELS)
