"""ONNX Runtime static INT8 (QDQ): the quantized graph really is QDQ, runs, and agrees with FP32.

The shipped ``student-int8`` is checked against the FP32 ``student`` on every FER2013 val face on the CPU
that runs the tests: full-range U8S8 weights agreed 0.64 with FP32 on AVX2-only x86 (saturation) and
0.99 on VNNI x86, so this test is what catches a recipe that is right on one CPU only. The recipe itself
is exercised on the v0 network (another real FER2013 model), calibrated on train-disjoint faces.
"""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from emostream.calibration.int8 import FaceCalibrationReader, QuantizationError, quantize_qdq, stratified_sample
from emostream.engines.emotion import load_engine, load_model_info
from emostream.training.data import load_fer_split


def _run(path, x):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def test_qdq_model_runs_and_agrees_with_fp32(data_file, tmp_path):
    info = load_model_info("v0")
    val = load_fer_split(data_file("fer2013"), "val")
    s = info.input_size
    idx = stratified_sample(val.labels, 140, seed=1)  # calibration faces ...
    rest = np.setdiff1d(np.arange(len(val)), idx)[::12]  # ... and disjoint evaluation faces
    prep = lambda ims: np.stack([cv2.resize(im, (s, s)) for im in ims])  # noqa: E731
    reader = FaceCalibrationReader(prep(val.images[idx]), info.mean, info.scale, batch_size=35)
    out = quantize_qdq(info.onnx_path, tmp_path / "v0.int8.onnx", reader, method="minmax")

    graph = onnx.load(str(out)).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert any(t.data_type == onnx.TensorProto.INT8 for t in graph.initializer)

    x = ((prep(val.images[rest]).astype(np.float32)[:, None] / 255.0) - info.mean) * info.scale
    fp32, int8 = _run(info.onnx_path, x), _run(out, x)
    agree = np.mean(fp32.argmax(1) == int8.argmax(1))
    assert agree >= 0.9, agree
    acc = lambda z: np.mean(z.argmax(1) == np.array([info.labels.index(val.names[y]) for y in val.labels[rest]]))  # noqa: E731
    assert abs(acc(int8) - acc(fp32)) < 0.05


def test_shipped_int8_student_matches_fp32_on_this_cpu(data_file):
    val = load_fer_split(data_file("fer2013"), "val")
    probs = {}
    for name in ("student", "student-int8"):
        eng = load_engine("onnxruntime", name, threads=2)
        assert eng.model.input_size == val.images.shape[1]
        order = [eng.labels.index(n) for n in val.names]
        probs[name] = np.concatenate([eng.run(val.images[i:i + 256]) for i in range(0, len(val), 256)])[:, order]
        eng.close()
    fp32, int8 = probs["student"].argmax(1), probs["student-int8"].argmax(1)
    agree = float(np.mean(fp32 == int8))
    acc32, acc8 = float(np.mean(fp32 == val.labels)), float(np.mean(int8 == val.labels))
    assert agree >= 0.97, f"INT8/FP32 top-1 agreement {agree:.4f} on {len(val)} val faces"
    assert abs(acc8 - acc32) <= 0.01, f"INT8 accuracy {acc8:.4f} vs FP32 {acc32:.4f}"


def test_stratified_sample_covers_every_class():
    labels = np.array([0] * 900 + [1] * 90 + [2] * 10)
    idx = stratified_sample(labels, 30, seed=0)
    assert np.bincount(labels[idx]).tolist() == [10, 10, 10]
    assert np.array_equal(idx, stratified_sample(labels, 30, seed=0))


def test_errors_are_clear(tmp_path):
    with pytest.raises(QuantizationError, match="empty"):
        FaceCalibrationReader(np.zeros((0, 48, 48), np.uint8), 0.5, 4.0)
    reader = FaceCalibrationReader(np.zeros((4, 48, 48), np.uint8), 0.5, 4.0)
    with pytest.raises(QuantizationError, match="not found"):
        quantize_qdq(tmp_path / "missing.onnx", tmp_path / "out.onnx", reader)
