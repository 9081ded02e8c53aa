"""Horizontal-flip test-time augmentation (``load_engine(..., tta=True)``) on the shipped student."""

from __future__ import annotations

import numpy as np
import pytest

from emostream.engines.emotion import EngineError, load_engine
from emostream.training.data import load_fer_split


@pytest.fixture(scope="module")
def engines():
    plain = load_engine("onnxruntime", "student", threads=2)
    tta = load_engine("onnxruntime", "student", threads=2, tta=True)
    yield plain, tta
    plain.close()
    tta.close()


def test_tta_answer_is_the_same_for_a_face_and_its_mirror(engines):
    """The mean over {crop, mirror} is mirror-invariant; the plain network is not (so this can fail)."""
    plain, tta = engines
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (6, 48, 48), dtype=np.uint8)
    mirrored = np.ascontiguousarray(crops[:, :, ::-1])
    np.testing.assert_allclose(tta.run(crops), tta.run(mirrored), atol=1e-5)
    assert not np.allclose(plain.run(crops), plain.run(mirrored), atol=1e-3)
    p = tta.run(crops)
    assert p.shape == (6, len(tta.labels)) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    assert tta.run(np.zeros((0, 48, 48), np.uint8)).shape == (0, len(tta.labels))
    with pytest.raises(EngineError, match="shape"):
        tta.run(np.zeros((1, 64, 64), np.uint8))


def test_tta_is_not_worse_on_real_val_faces(engines, data_file):
    plain, tta = engines
    val = load_fer_split(data_file("fer2013"), "val")
    order = [plain.labels.index(n) for n in val.names]
    acc = {}
    for name, eng in (("plain", plain), ("tta", tta)):
        probs = np.concatenate([eng.run(val.images[i:i + 512]) for i in range(0, len(val), 512)])[:, order]
        acc[name] = float(np.mean(probs.argmax(1) == val.labels))
    assert acc["tta"] >= acc["plain"], acc
