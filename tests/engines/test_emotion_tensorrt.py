"""TensorRT backend. The real build/run test needs a Jetson or a CUDA box with TensorRT; here only
the clear-error path can run (TensorRT cannot be installed on this CPU-only machine)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from emostream.engines.emotion import EngineError, load_engine
from emostream.engines.emotion.tensorrt_backend import default_cache_dir, tensorrt_usable

REFERENCE = Path(__file__).parent / "data" / "fer_reference.npz"


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_tensorrt_missing_is_a_clear_engine_error():
    with pytest.raises(EngineError, match="needs TensorRT.*JetPack") as info:
        load_engine("tensorrt")
    assert "Traceback" not in str(info.value)
    assert tensorrt_usable() is False


def test_default_cache_dir_is_per_user(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "emostream" / "trt"


def test_tensorrt_builds_caches_and_matches_reference(tmp_path):
    pytest.importorskip(
        "tensorrt", reason="TensorRT is not installable here; it ships with JetPack on Jetson"
    )
    if not tensorrt_usable():
        pytest.skip("TensorRT imports but no CUDA device / cuda-python is available")
    ref = np.load(REFERENCE)
    engine = load_engine("tensorrt", cache_dir=tmp_path)
    try:
        assert engine.engine_path.is_file() and engine.engine_path.parent == tmp_path
        probs = engine.run(ref["inputs"])
        # FP16 engine: a looser bound than the fp32 backends, same decisions.
        assert np.abs(probs - ref["probs"]).max() < 2e-2
        assert (probs.argmax(1) == ref["probs"].argmax(1)).mean() >= 0.9
        for n in (0, 1, 33):
            out = engine.run(np.full((n, 64, 64), 90, np.uint8))
            assert out.shape == (n, 7)
            np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-3)
        with pytest.raises(EngineError, match="uint8"):
            engine.run(np.zeros((1, 64, 64), np.float32))
    finally:
        engine.close()
    # Second load reuses the cached engine instead of rebuilding.
    mtime = engine.engine_path.stat().st_mtime_ns
    again = load_engine("tensorrt", cache_dir=tmp_path)
    again.close()
    assert engine.engine_path.stat().st_mtime_ns == mtime
