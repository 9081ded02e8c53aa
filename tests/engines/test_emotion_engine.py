"""The emotion engine interface on ONNX Runtime: the shipped v0 model, its card, and bad input.

Everything here is real: the shipped ONNX file, ONNX Runtime's CPU provider, and a stored Keras
reference (made once by engines/emotion/make_reference.py with TensorFlow).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emostream.engines.emotion import (
    DEFAULT_MODEL,
    MODEL_REGISTRY,
    EmotionEngine,
    EngineError,
    load_engine,
    load_model_info,
)
from emostream.engines.emotion.engine import MODELS_DIR, preprocess
from emostream.engines.labels import CANONICAL_LABELS

REFERENCE = Path(__file__).parent / "data" / "fer_reference.npz"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ort_engine():
    engine = load_engine("onnxruntime", "v0", threads=1)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def reference():
    ref = np.load(REFERENCE)
    return ref["inputs"], ref["probs"]


def _crops(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 64, 64), dtype=np.uint8)


# --- model info ---------------------------------------------------------------------------------


def test_v0_card_describes_the_shipped_model():
    info = load_model_info("v0")
    assert DEFAULT_MODEL in MODEL_REGISTRY
    assert info.onnx_path.is_file() and info.onnx_path.parent == MODELS_DIR
    assert info.labels == ("anger", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert set(info.labels) <= set(CANONICAL_LABELS)
    assert (info.input_size, info.channels, info.mean, info.scale) == (64, 1, 0.5, 2.0)
    assert info.outputs == "logits" and info.temperature == 1.0
    assert info.torch_state is not None and info.torch_state.is_file()
    assert info.arch == "mini_xception"
    card = json.loads(info.card_path.read_text())
    assert card["license"] == "MIT" and "Justin Shenk" in card["copyright"]
    # MIT asks for the notice to travel with the weights: the human-readable card carries it.
    notice = (info.card_path.parent / card["model_card"]).read_text()
    assert "Copyright (c) 2018 Justin Shenk" in notice and "Permission is hereby granted" in notice


def test_model_info_from_onnx_or_card_path_matches_registered_name():
    by_name = load_model_info("v0")
    assert load_model_info(by_name.onnx_path) == by_name
    assert load_model_info(str(by_name.card_path)) == by_name


def test_shipped_onnx_has_named_dynamic_batch_input():
    import onnxruntime as ort

    sess = ort.InferenceSession(str(load_model_info("v0").onnx_path), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert inp.name == "input" and inp.type == "tensor(float)"
    assert not isinstance(inp.shape[0], int) and inp.shape[1:] == [1, 64, 64]


# --- numerics -----------------------------------------------------------------------------------


def test_onnxruntime_matches_keras_reference(ort_engine, reference):
    inputs, keras_probs = reference
    probs = ort_engine.run(inputs)
    assert probs.dtype == np.float32 and probs.shape == keras_probs.shape
    assert np.abs(probs - keras_probs).max() < 1e-4
    # The reference inputs are varied enough to exercise several classes, not one constant answer.
    assert len(set(keras_probs.argmax(1).tolist())) >= 4


@pytest.mark.parametrize("n", [0, 1, 33])
def test_batches_of_any_size_give_normalised_rows(ort_engine, n):
    probs = ort_engine.run(_crops(n, seed=n))
    assert probs.shape == (n, 7) and probs.dtype == np.float32
    assert np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_batch_rows_equal_single_runs(ort_engine):
    crops = _crops(5, seed=7)
    batched = ort_engine.run(crops)
    single = np.concatenate([ort_engine.run(crops[i : i + 1]) for i in range(5)])
    np.testing.assert_allclose(batched, single, atol=1e-6)


def test_non_contiguous_crops_are_accepted(ort_engine):
    big = _crops(4, seed=3)
    view = big[::2]  # strided view, as a caller slicing a batch buffer would pass
    assert not view.flags.c_contiguous
    np.testing.assert_allclose(ort_engine.run(view), ort_engine.run(np.ascontiguousarray(view)), atol=1e-7)


def test_preprocess_is_fers_formula():
    info = load_model_info("v0")
    crops = _crops(2, seed=11)
    x = preprocess(crops, info)
    assert x.shape == (2, 1, 64, 64) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0], (crops / 255.0 - 0.5) * 2.0, atol=1e-6)


def test_engine_satisfies_protocol(ort_engine):
    assert isinstance(ort_engine, EmotionEngine)
    assert ort_engine.name == "onnxruntime" and ort_engine.input_size == 64
    assert ort_engine.labels == ort_engine.model.labels


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("crops", "fragment"),
    [
        (np.zeros((2, 64, 64), np.float32), "uint8"),
        (np.zeros((2, 48, 48), np.uint8), "shape"),
        (np.zeros((64, 64), np.uint8), "shape"),
        (np.zeros((2, 64, 64, 3), np.uint8), "shape"),
        ([[0] * 64] * 64, "numpy array"),
    ],
)
def test_bad_crops_raise_clear_engine_error(ort_engine, crops, fragment):
    with pytest.raises(EngineError, match=fragment):
        ort_engine.run(crops)


def test_unknown_backend_and_model_are_clear_errors():
    with pytest.raises(EngineError, match="unknown emotion backend 'cuda'.*onnxruntime"):
        load_engine("cuda")
    with pytest.raises(EngineError, match="unknown emotion model 'v9'.*registered: .*v0"):
        load_engine("onnxruntime", "v9")
    with pytest.raises(EngineError, match="threads"):
        load_engine("onnxruntime", threads=0)


def test_missing_and_cardless_model_paths_are_clear_errors(tmp_path):
    with pytest.raises(EngineError, match="not found"):
        load_model_info(tmp_path / "nope.onnx")
    lone = tmp_path / "lone.onnx"
    shutil.copy(load_model_info("v0").onnx_path, lone)
    with pytest.raises(EngineError, match="no model card lone.json"):
        load_model_info(lone)
    with pytest.raises(EngineError, match="neither"):
        load_model_info(tmp_path)


def _copy_model(tmp_path: Path, **card_changes) -> Path:
    info = load_model_info("v0")
    shutil.copy(info.onnx_path, tmp_path / info.onnx_path.name)
    card = json.loads(info.card_path.read_text())
    card.update(card_changes)
    card = {k: v for k, v in card.items() if v is not None}
    path = tmp_path / "card.json"
    path.write_text(json.dumps(card))
    return path


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"labels": ["anger", "joyish", "fear", "happy", "sad", "surprise"]}, "unknown emotion label"),
        ({"outputs": "scores"}, "outputs must be"),
        ({"mean": None}, "lacks mean"),
        ({"onnx": "missing.onnx"}, "does not exist"),
        ({"outputs": "probs", "temperature": 2.0}, "temperature"),
    ],
)
def test_malformed_cards_are_clear_errors(tmp_path, changes, fragment):
    with pytest.raises(EngineError, match=fragment):
        load_model_info(_copy_model(tmp_path, **changes))


def test_card_that_is_not_json_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(EngineError, match="cannot read model card"):
        load_model_info(bad)


def test_card_input_size_disagreeing_with_onnx_is_caught(tmp_path):
    with pytest.raises(EngineError, match="does not match its card"):
        load_engine("onnxruntime", _copy_model(tmp_path, input_size=48))


def test_corrupt_onnx_is_a_clear_error(tmp_path):
    card = _copy_model(tmp_path)
    (tmp_path / load_model_info("v0").onnx_path.name).write_bytes(b"\x08\x07this is not a protobuf" * 10)
    with pytest.raises(EngineError, match="ONNX Runtime cannot load"):
        load_engine("onnxruntime", card)


def test_temperature_from_card_softens_probabilities(tmp_path, reference):
    inputs, _ = reference
    base = load_engine("onnxruntime", "v0", threads=1).run(inputs)
    warm = load_engine("onnxruntime", _copy_model(tmp_path, temperature=3.0), threads=1).run(inputs)
    np.testing.assert_array_equal(base.argmax(1), warm.argmax(1))
    assert np.all(warm.max(1) < base.max(1))


def test_closed_engine_refuses_work():
    engine = load_engine("onnxruntime", "v0")
    engine.close()
    with pytest.raises(EngineError, match="closed"):
        engine.run(_crops(1))


def test_auto_falls_back_to_onnxruntime_without_tensorrt():
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert load_engine("auto").name == "onnxruntime"
    else:
        pytest.skip("TensorRT is installed: auto may legitimately pick it")


def test_onnxruntime_path_imports_no_torch():
    """The edge hot path must stay free of torch (ARCHITECTURE.md); check in a fresh interpreter."""
    code = (
        "import sys, numpy as np\n"
        "from engines.emotion import load_engine\n"
        "e = load_engine('onnxruntime', 'v0', threads=1)\n"
        "e.run(np.zeros((2, 64, 64), np.uint8))\n"
        "bad = [m for m in ('torch', 'transformers', 'tensorrt') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
