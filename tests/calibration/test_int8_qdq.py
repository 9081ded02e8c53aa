"""ONNX Runtime static INT8 (QDQ): the quantized graph really is QDQ, runs, and agrees with FP32.

Uses the committed v0 network (a real FER2013-trained model) so agreement is measured on a network whose
activations look like the shipped ones, on real val faces, calibrated on real train faces.
"""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from calibration.int8 import FaceCalibrationReader, QuantizationError, quantize_qdq, stratified_sample
from engines.emotion import load_model_info
from training.data import load_fer_split


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
