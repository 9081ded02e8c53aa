"""TensorRT INT8 calibrator: needs TensorRT and an NVIDIA GPU (Jetson / CUDA host); skipped elsewhere.

The cache helpers are plain Python and are tested everywhere.
"""

from __future__ import annotations

import numpy as np
import pytest

from emostream.calibration.int8 import FaceCalibrationReader
from emostream.calibration.tensorrt_int8 import read_cache, write_cache


def test_cache_round_trip(tmp_path):
    path = tmp_path / "sub" / "student.calib"
    assert read_cache(path) is None
    write_cache(path, memoryview(b"TRT-8601-EntropyCalibration2\ninput: 3c010a14\n"))
    assert read_cache(path).startswith(b"TRT-8601")
    assert [p.name for p in path.parent.iterdir()] == ["student.calib"]  # no temp file left behind


def test_entropy_calibrator_feeds_batches_and_writes_cache(tmp_path):
    trt = pytest.importorskip("tensorrt", reason="TensorRT is only installable with an NVIDIA GPU (JetPack/CUDA)")
    from emostream.calibration.tensorrt_int8 import make_entropy_calibrator

    imgs = np.random.default_rng(0).integers(0, 256, (64, 48, 48), dtype=np.uint8)
    reader = FaceCalibrationReader(imgs, 0.5, 4.0, batch_size=16)
    cal = make_entropy_calibrator(reader, tmp_path / "c.cache")
    assert isinstance(cal, trt.IInt8EntropyCalibrator2)
    assert cal.get_batch_size() == 16
    batches = 0
    while cal.get_batch(["input"]) is not None:
        batches += 1
    assert batches == 4
    cal.write_calibration_cache(b"table")
    assert cal.read_calibration_cache() == b"table"
    cal.free()


def test_int8_engine_builds_from_the_student(tmp_path, data_file):
    pytest.importorskip("tensorrt", reason="TensorRT is only installable with an NVIDIA GPU (JetPack/CUDA)")
    from emostream.calibration.tensorrt_int8 import build_int8_engine
    from emostream.engines.emotion import load_model_info
    from emostream.training.data import load_fer_split

    info = load_model_info("student")
    val = load_fer_split(data_file("fer2013"), "val")  # any faces: this test checks the build, not accuracy
    reader = FaceCalibrationReader(val.images[:256], info.mean, info.scale, batch_size=32)
    engine = build_int8_engine(info.onnx_path, reader, tmp_path / "s.cache", tmp_path / "s.engine")
    assert engine.stat().st_size > 0 and (tmp_path / "s.cache").stat().st_size > 0
