"""TensorRT INT8 (implicit quantization) with an entropy calibrator and a calibration cache.

Written against the official TensorRT Python API (8.6 on JetPack 5, 10.x on JetPack 6): a subclass of
``trt.IInt8EntropyCalibrator2`` feeds normalised train crops to the builder through device memory from
NVIDIA's ``cuda-python`` (as the TensorRT backend does, so no torch or pycuda on the device), and keeps
the computed scales in a calibration cache so rebuilding an engine on the same device skips calibration.

TensorRT cannot be installed on a machine without an NVIDIA GPU, so nothing here runs in this project's
CI; importing the module is always safe (TensorRT is imported when a calibrator is made). On TensorRT 10
implicit calibration is deprecated in favour of explicit quantization: the QDQ model from
:mod:`calibration.int8` builds directly with ``BuilderFlag.INT8`` there and needs no calibrator.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from emostream.calibration.int8 import FaceCalibrationReader


class TensorRTCalibrationError(Exception):
    """TensorRT or cuda-python is missing, or the INT8 build failed."""


def read_cache(path: str | Path) -> bytes | None:
    """The cached calibration table, or None when there is none (TensorRT then calibrates)."""
    p = Path(path)
    return p.read_bytes() if p.is_file() and p.stat().st_size > 0 else None


def write_cache(path: str | Path, data: bytes | memoryview) -> None:
    """Write the table atomically: a half-written cache would give a silently wrong engine."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + f".tmp{os.getpid()}")
    tmp.write_bytes(bytes(data))
    os.replace(tmp, p)


def _cudart() -> Any:
    from emostream.engines.emotion.tensorrt_backend import _import_cudart

    cudart = _import_cudart()
    if cudart is None:
        raise TensorRTCalibrationError("TensorRT INT8 calibration needs cuda-python (pip install cuda-python)")
    return cudart


def _ok(result: Any, what: str) -> Any:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise TensorRTCalibrationError(f"{what} failed with CUDA error {int(err)}")
    return rest[0] if len(rest) == 1 else rest


def make_entropy_calibrator(reader: FaceCalibrationReader, cache_path: str | Path) -> Any:
    """An ``IInt8EntropyCalibrator2`` over ``reader``'s batches (equal-sized, normalised like the card)."""
    try:
        import tensorrt as trt
    except ImportError:
        raise TensorRTCalibrationError("TensorRT is not installed (it ships with JetPack on Jetson)") from None
    cudart = _cudart()

    class FaceEntropyCalibrator(trt.IInt8EntropyCalibrator2):
        """Entropy calibration (KL-minimising thresholds), TensorRT's recommended calibrator for CNNs."""

        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # pybind11 needs the explicit base __init__
            self.reader = reader
            self.cache_path = Path(cache_path)
            self.batch_size = reader.batch_size
            s = reader.images.shape[1]
            self.nbytes = self.batch_size * s * s * 4
            self.device_input = _ok(cudart.cudaMalloc(self.nbytes), "cudaMalloc")
            reader.rewind()

        def get_batch_size(self) -> int:
            return self.batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = self.reader.get_next()
            if batch is None:
                return None  # tells TensorRT calibration data is exhausted
            x = np.ascontiguousarray(next(iter(batch.values())), dtype=np.float32)
            kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
            _ok(cudart.cudaMemcpy(self.device_input, x.ctypes.data, x.nbytes, kind), "cudaMemcpy H2D")
            return [int(self.device_input)]

        def read_calibration_cache(self) -> bytes | None:
            return read_cache(self.cache_path)

        def write_calibration_cache(self, cache: Any) -> None:
            write_cache(self.cache_path, cache)

        def free(self) -> None:
            if self.device_input is not None:
                cudart.cudaFree(self.device_input)
                self.device_input = None

    return FaceEntropyCalibrator()


def build_int8_engine(onnx_path: str | Path, reader: FaceCalibrationReader, cache_path: str | Path,
                      engine_path: str | Path, max_batch: int = 32, opt_batch: int = 8) -> Path:
    """Build and save an INT8 (with FP16 fallback) engine with a dynamic batch 1..``max_batch``.

    The calibration profile is fixed at the calibrator's batch size, which TensorRT requires when the
    network has dynamic shapes.
    """
    try:
        import tensorrt as trt
    except ImportError:
        raise TensorRTCalibrationError("TensorRT is not installed (it ships with JetPack on Jetson)") from None
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTCalibrationError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.INT8)
    if builder.platform_has_fast_fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    inp = network.get_input(0)
    c, s = inp.shape[1], inp.shape[2]
    profile = builder.create_optimization_profile()
    profile.set_shape(inp.name, (1, c, s, s), (opt_batch, c, s, s), (max_batch, c, s, s))
    config.add_optimization_profile(profile)
    calib_profile = builder.create_optimization_profile()
    b = reader.batch_size
    calib_profile.set_shape(inp.name, (b, c, s, s), (b, c, s, s), (b, c, s, s))
    config.set_calibration_profile(calib_profile)
    calibrator = make_entropy_calibrator(reader, cache_path)
    config.int8_calibrator = calibrator
    try:
        plan = builder.build_serialized_network(network, config)
    finally:
        calibrator.free()
    if plan is None:
        raise TensorRTCalibrationError(f"TensorRT failed to build an INT8 engine from {onnx_path}")
    out = Path(engine_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(bytes(plan))
    return out
