"""TensorRT backend on a real GPU: the engine it builds agrees with the same model on ONNX Runtime.

The reference is the model's own ONNX Runtime output on the same real FER2013 faces, not a stored
file for some other model: the default student is 48 px, the stored Keras reference is the 64-px v0,
and comparing the two could only fail. TensorRT cannot be installed on a CPU-only machine, so here
the comparison skips and says what is missing; what TensorRT's absence looks like to a user (the
error, ``auto``'s reason) is tested in test_emotion_engine.py, which runs everywhere.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from emostream.engines.emotion import EngineError, load_engine, load_model_info
from emostream.engines.emotion.tensorrt_backend import default_cache_dir, tensorrt_problems

#: Faces per class taken from FER2013 val: enough for the agreement rate to mean something.
FACES_PER_CLASS = 12


def test_default_cache_dir_is_per_user(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "emostream" / "trt"


@pytest.fixture(scope="module")
def trt_ready() -> None:
    """Skip, naming exactly what is missing, unless TensorRT, cuda-python and a CUDA device are all here."""
    problems = tensorrt_problems()
    if problems:
        pytest.skip("TensorRT cannot run here: " + "; ".join(problems))


def _real_faces(root: Path, size: int) -> np.ndarray:
    """The first faces of every FER2013 val class, as the model's own uint8 input size."""
    classes = sorted(d for d in (root / "val").iterdir() if d.is_dir())
    paths = [p for d in classes for p in sorted(d.glob("*.jpg"))[:FACES_PER_CLASS]]
    faces = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths]
    assert faces and all(f is not None for f in faces), root
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in faces])


@pytest.mark.parametrize("model", ["student", "v0"])
def test_tensorrt_matches_the_models_own_onnxruntime_output(trt_ready, request, tmp_path, model):
    info = load_model_info(model)
    # Asked for only after trt_ready, so a CPU box skips for TensorRT, not for the data.
    faces = _real_faces(request.getfixturevalue("data_file")("fer2013"), info.input_size)
    reference = load_engine("onnxruntime", info, threads=2)
    try:
        expected = reference.run(faces)
    finally:
        reference.close()
    engine = load_engine("tensorrt", info, cache_dir=tmp_path)
    try:
        assert engine.name == "tensorrt" and engine.engine_path.parent == tmp_path
        assert engine.engine_path.is_file()
        probs = engine.run(faces)  # 84 faces: three chunks of at most 32 through the base class
        assert probs.shape == expected.shape and probs.dtype == np.float32
        # FP16 engine: a looser bound than the fp32 backends, the same decisions.
        assert np.abs(probs - expected).max() < 2e-2
        assert (probs.argmax(1) == expected.argmax(1)).mean() >= 0.95
        for n in (0, 1, 33):
            out = engine.run(faces[:n] if n <= len(faces) else np.resize(faces, (n, *faces.shape[1:])))
            assert out.shape == (n, info.num_classes)
            np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-3)
        with pytest.raises(EngineError, match="uint8"):
            engine.run(faces.astype(np.float32))
    finally:
        engine.close()
    with pytest.raises(EngineError, match="closed"):
        engine.run(faces[:1])
    # A second load reuses the cached engine instead of rebuilding it.
    mtime = engine.engine_path.stat().st_mtime_ns
    again = load_engine("tensorrt", info, cache_dir=tmp_path)
    again.close()
    assert engine.engine_path.stat().st_mtime_ns == mtime
