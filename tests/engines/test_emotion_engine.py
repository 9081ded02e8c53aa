"""The emotion engine interface on ONNX Runtime: the shipped v0 model, its card, and bad input.

Everything here is real: the shipped ONNX file, ONNX Runtime's CPU provider, and a stored Keras
reference (made once by engines/emotion/make_reference.py with TensorFlow).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
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
    FlipTTAEngine,
    load_engine,
    load_model_info,
)
from emostream.engines.emotion.backend import EmotionBackend, preprocess
from emostream.engines.emotion.card import MODELS_DIR
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
        engine = load_engine("auto")
        assert engine.name == "onnxruntime"
        assert engine.selection.startswith("onnxruntime (auto: tensorrt not importable: No module named 'tensorrt'")
    else:
        pytest.skip("TensorRT is installed: auto may legitimately pick it")


def test_a_backend_chosen_by_name_says_so():
    engine = load_engine("onnxruntime", "v0", threads=1)
    assert engine.selection == "onnxruntime (asked for by name)"
    tta = load_engine("onnxruntime", "v0", threads=1, tta=True)
    assert tta.name == "onnxruntime+flip-tta" and tta.selection == "onnxruntime (asked for by name) + flip TTA"


# --- TensorRT's absence, as a user meets it -----------------------------------------------------
#
# Real imports in a fresh interpreter: TensorRT and cuda-python are absent on this machine, and a child
# process cannot see modules this test process (or another test) imported. Where a test needs a
# TensorRT that imports, or one whose native library is broken, it puts a stand-in ``tensorrt`` package
# first on the child's path: real TensorRT cannot be installed without an NVIDIA GPU stack.

_SELECTION_PROBE = """
import json
from emostream.engines.emotion import EngineError, load_engine
out = {}
try:
    load_engine("tensorrt", "student")
except EngineError as exc:
    out["error"] = str(exc)
auto = load_engine("auto", "student", threads=1)
out["auto"] = [auto.name, auto.selection]
print(json.dumps(out))
"""


def _selection_in_child(stand_in: str | None, tmp_path: Path) -> dict:
    env = dict(os.environ)
    if stand_in is not None:
        pkg = tmp_path / "stand_in" / "tensorrt"
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text(stand_in)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(pkg.parent), env.get("PYTHONPATH")) if p)
    out = subprocess.run([sys.executable, "-c", _SELECTION_PROBE], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _cuda_python_here() -> bool:
    return importlib.util.find_spec("cuda") is not None


needs_no_tensorrt = pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None,
                                       reason="TensorRT is installed here")


@needs_no_tensorrt
def test_tensorrt_missing_names_what_is_missing(tmp_path):
    got = _selection_in_child(None, tmp_path)
    error = got["error"]
    assert "\n" not in error and "Traceback" not in error
    assert "tensorrt not importable: No module named 'tensorrt'" in error and "JetPack" in error
    assert "--engine onnxruntime" in error and "--backend" not in error
    if not _cuda_python_here():
        assert "cuda-python not importable" in error and "emostream[tensorrt]" in error
    name, selection = got["auto"]
    assert name == "onnxruntime"
    assert selection.startswith("onnxruntime (auto: tensorrt not importable: No module named 'tensorrt'")


@needs_no_tensorrt
def test_broken_tensorrt_install_is_named_with_its_own_error(tmp_path):
    """A JetPack whose libnvinfer is missing imports ``tensorrt`` and fails: the user sees that failure."""
    stand_in = 'raise ImportError("libnvinfer.so.10: cannot open shared object file: No such file or directory")\n'
    got = _selection_in_child(stand_in, tmp_path)
    assert "tensorrt not importable: libnvinfer.so.10: cannot open shared object file" in got["error"]
    assert "libnvinfer.so.10" in got["auto"][1] and got["auto"][0] == "onnxruntime"


@needs_no_tensorrt
@pytest.mark.skipif(_cuda_python_here(), reason="cuda-python is installed here: the stand-in would meet it")
def test_tensorrt_without_cuda_python_names_only_cuda_python(tmp_path):
    """The finding of issue 10: TensorRT present, cuda-python not declared, and auto quietly used the CPU."""
    got = _selection_in_child('__version__ = "10.3.0"\n', tmp_path)
    assert "tensorrt not importable" not in got["error"]
    assert "cuda-python not importable: No module named 'cuda'" in got["error"]
    assert "pip install 'emostream[tensorrt]'" in got["error"]
    name, selection = got["auto"]
    assert name == "onnxruntime" and selection.startswith("onnxruntime (auto: cuda-python not importable")


@needs_no_tensorrt
def test_cli_engine_tensorrt_fails_in_one_line(emostream):
    out = emostream("run", "test://", "--engine", "tensorrt", "--max-frames", "1", timeout=120)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("emostream: error: the tensorrt engine cannot run here: tensorrt not importable")
    assert out.stdout == ""


def test_tensorrt_runtime_needs_are_declared():
    """The error's install hint names an extra that exists, and the Jetson image installs it (issue 10)."""
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads TOML")
    from emostream.engines.emotion.tensorrt_backend import CUDA_PYTHON_HINT

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("cuda-python") for req in extras["tensorrt"]), extras
    assert CUDA_PYTHON_HINT == "pip install 'emostream[tensorrt]'"
    docker = (REPO / "jetson" / "Dockerfile.l4t").read_text()
    assert "pip install --no-cache-dir -e '.[tensorrt]'" in docker and "--system-site-packages" in docker


# --- the base class: what a backend gets by implementing only _infer ------------------------------


class _MeanBackend(EmotionBackend):
    """A real, tiny backend: logits from the mean brightness, in chunks of at most 4."""

    name = "mean"
    runtime = "Mean"
    max_batch = 4

    def __init__(self, fail: bool = False) -> None:
        super().__init__(load_model_info("v0"))
        self.chunks: list[int] = []
        self.released = 0
        self.fail = fail

    def _infer(self, x: np.ndarray) -> np.ndarray:
        if self.fail:
            raise RuntimeError("device lost")
        assert x.dtype == np.float32 and x.flags.c_contiguous and x.shape[1:] == (1, 64, 64)
        self.chunks.append(x.shape[0])
        m = x.mean(axis=(1, 2, 3))
        return np.stack([m * k for k in range(7)], axis=1)

    def _release(self) -> None:
        self.released += 1


def test_base_class_chunks_checks_and_closes_once():
    backend = _MeanBackend()
    crops = _crops(10, seed=5)
    probs = backend.run(crops)
    assert backend.chunks == [4, 4, 2]
    assert probs.shape == (10, 7) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    # Chunking changes nothing: each row is what a batch of one gives.
    np.testing.assert_allclose(probs, np.concatenate([backend.run(crops[i : i + 1]) for i in range(10)]), atol=1e-6)
    backend.chunks.clear()
    assert backend.run(np.zeros((0, 64, 64), np.uint8)).shape == (0, 7) and backend.chunks == []
    with pytest.raises(EngineError, match="shape"):
        backend.run(np.zeros((1, 48, 48), np.uint8))
    with backend:
        pass
    backend.close()
    assert backend.released == 1
    with pytest.raises(EngineError, match="this Mean engine is closed"):
        backend.run(crops)


def test_base_class_turns_runtime_failures_into_engine_errors():
    with pytest.raises(EngineError, match="Mean failed on a batch of 3: device lost") as info:
        _MeanBackend(fail=True).run(_crops(3))
    assert isinstance(info.value.__cause__, RuntimeError)


def test_flip_tta_wraps_any_backend_and_closes_it():
    inner = _MeanBackend()
    wrapped = FlipTTAEngine(inner)
    crops = _crops(3, seed=2)
    np.testing.assert_allclose(wrapped.run(crops), wrapped.run(np.ascontiguousarray(crops[:, :, ::-1])), atol=1e-6)
    assert inner.chunks == [4, 2, 4, 2]  # crops and mirrors in one batch of 6, chunked by the inner backend
    wrapped.close()
    assert inner.released == 1
    with pytest.raises(EngineError, match="closed"):
        wrapped.run(crops)


def test_backends_are_small_subclasses_of_the_base():
    from emostream.engines.emotion.onnxruntime_backend import OnnxRuntimeEngine
    from emostream.engines.emotion.tensorrt_backend import TensorRTEngine
    from emostream.engines.emotion.torch_backend import TorchEngine

    for cls in (OnnxRuntimeEngine, TorchEngine, TensorRTEngine):
        assert issubclass(cls, EmotionBackend)
        # The shared steps live in the base class only; a backend that overrides them has drifted.
        assert {"run", "close", "_forward", "_forward_chunk", "__enter__", "__exit__"}.isdisjoint(vars(cls)), cls
        assert "_infer" in vars(cls)


def _package_imports(path: Path) -> set[str]:
    """Modules of engines/emotion that ``path`` imports, at the top or inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            mods = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        else:
            continue
        prefix = "emostream.engines.emotion"
        names |= {m[len(prefix) + 1 :].split(".")[0] or "__init__" for m in mods if m.startswith(prefix + ".")}
        names |= {"__init__" for m in mods if m == prefix}
    return names


def test_no_import_circle_inside_the_emotion_package():
    """Lazy imports count too: a circle through a function-level import is still a circle."""
    folder = REPO / "engines" / "emotion"
    modules = {p.stem for p in folder.glob("*.py")}
    graph = {p.stem: _package_imports(p) & modules - {p.stem} for p in folder.glob("*.py")}
    assert "engine" not in graph["card"] | graph["backend"]
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        if state.get(node) == "done":
            return
        assert state.get(node) != "open", f"import circle: {' -> '.join([*trail, node])}"
        state[node] = "open"
        for nxt in sorted(graph[node]):
            visit(nxt, [*trail, node])
        state[node] = "done"

    for module in sorted(graph):
        visit(module, [])


def test_onnxruntime_path_imports_no_torch():
    """The edge hot path must stay free of torch (ARCHITECTURE.md); check in a fresh interpreter."""
    code = (
        "import sys, numpy as np\n"
        "from emostream.engines.emotion import load_engine\n"
        "e = load_engine('onnxruntime', 'v0', threads=1)\n"
        "e.run(np.zeros((2, 64, 64), np.uint8))\n"
        "bad = [m for m in ('torch', 'transformers', 'tensorrt') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
