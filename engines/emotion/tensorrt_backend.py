"""TensorRT backend: the Jetson path (FP16 engine built from the shipped ONNX, cached on disk).

Written against the TensorRT Python API of JetPack 6 (TensorRT 10: named I/O tensors,
``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``), and TensorRT 8.6 where the
difference is one flag (explicit batch). Device memory comes from NVIDIA's ``cuda-python``
(``cuda.bindings.runtime``, formerly ``cuda.cudart``) so the hot path needs no torch.

TensorRT cannot be installed on a CPU-only machine; this module imports it only inside the engine
class, so ``import engines.emotion.tensorrt_backend`` is always safe and ``tensorrt_usable()`` just
answers False there.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from emostream.engines.emotion.engine import (
    EmotionModelInfo,
    EngineError,
    check_crops,
    empty_result,
    postprocess,
    preprocess,
)

#: Dynamic-batch optimisation profile: faces per frame on an edge camera.
MIN_BATCH, OPT_BATCH, MAX_BATCH = 1, 8, 32
WORKSPACE_BYTES = 256 << 20


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/emostream/trt`` (``~/.cache/emostream/trt``): engines are per device and version."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "emostream" / "trt"


def _import_cudart() -> Any | None:
    """cuda-python's runtime module under its new (12.x+) or old name, or None."""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def tensorrt_usable() -> bool:
    """True where TensorRT and cuda-python import and a CUDA device is visible (what ``auto`` asks)."""
    if importlib.util.find_spec("tensorrt") is None:
        return False
    cudart = _import_cudart()
    if cudart is None:
        return False
    try:
        err, count = cudart.cudaGetDeviceCount()
    except Exception:  # a broken driver install must not break the CPU fallback
        return False
    return int(err) == 0 and count > 0


def _check(result: Any, what: str) -> Any:
    """cuda-python returns (error, *values); turn a non-zero error into EngineError."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise EngineError(f"CUDA call {what} failed with error {int(err)}")
    return values[0] if len(values) == 1 else values


def engine_cache_path(info: EmotionModelInfo, cache_dir: Path, trt_version: str, device_name: str) -> Path:
    """``<cache>/<model>-<hash>.engine``: the hash covers everything that makes an engine reusable."""
    h = hashlib.sha256(info.onnx_path.read_bytes())
    h.update(f"trt={trt_version};dev={device_name};fp16;batch={MIN_BATCH},{OPT_BATCH},{MAX_BATCH}".encode())
    return cache_dir / f"{info.name}-{h.hexdigest()[:16]}.engine"


class TensorRTEngine:
    """An :class:`~engines.emotion.engine.EmotionEngine` on TensorRT (FP16, dynamic batch 1..32)."""

    name = "tensorrt"

    def __init__(self, info: EmotionModelInfo, *, cache_dir: str | Path | None = None) -> None:
        try:
            import tensorrt as trt
        except ImportError:
            raise EngineError(
                "the tensorrt backend needs TensorRT, which is not installed here "
                "(it ships with JetPack on Jetson); use --backend onnxruntime"
            ) from None
        cudart = _import_cudart()
        if cudart is None:
            raise EngineError(
                "the tensorrt backend needs cuda-python for device memory (pip install cuda-python)"
            )
        self.model = info
        self.labels = info.labels
        self.input_size = info.input_size
        self._trt = trt
        self._cudart = cudart
        self._logger = trt.Logger(trt.Logger.WARNING)
        device = _check(cudart.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
        raw_name = device.name
        device_name = raw_name.decode(errors="replace") if isinstance(raw_name, bytes) else str(raw_name)
        cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.engine_path = engine_cache_path(info, cache, trt.__version__, device_name)
        self._engine = self._load_or_build()
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise EngineError(f"{info.onnx_path}: want 1 input and 1 output, got {inputs}, {outputs}")
        self._input, self._output = inputs[0], outputs[0]
        # Fixed-size device buffers for the largest batch: no allocation per call.
        s, c, k = info.input_size, info.channels, info.num_classes
        self._in_host = np.empty((MAX_BATCH, c, s, s), dtype=np.float32)
        self._out_host = np.empty((MAX_BATCH, k), dtype=np.float32)
        self._stream = _check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._d_in = _check(cudart.cudaMalloc(self._in_host.nbytes), "cudaMalloc")
        self._d_out = _check(cudart.cudaMalloc(self._out_host.nbytes), "cudaMalloc")
        self._context.set_tensor_address(self._input, int(self._d_in))
        self._context.set_tensor_address(self._output, int(self._d_out))

    # --- building -------------------------------------------------------------------------------

    def _load_or_build(self) -> Any:
        trt = self._trt
        runtime = trt.Runtime(self._logger)
        self._runtime = runtime  # the runtime must outlive the engine it deserialised
        if self.engine_path.is_file():
            engine = runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
            if engine is not None:
                return engine
            # Stale or corrupt cache (another TensorRT build): rebuild rather than fail.
        plan = self._build()
        self.engine_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.engine_path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(plan)
        os.replace(tmp, self.engine_path)  # atomic: a concurrent reader never sees half an engine
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise EngineError(f"TensorRT cannot deserialize the engine it built from {self.model.onnx_path}")
        return engine

    def _build(self) -> bytes:
        trt = self._trt
        info = self.model
        builder = trt.Builder(self._logger)
        major = int(trt.__version__.split(".")[0])
        # TensorRT 10 networks are always explicit-batch (the flag is deprecated); 8.x needs it set.
        flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(info.onnx_path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise EngineError(f"TensorRT cannot parse {info.onnx_path}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        if builder.platform_has_fast_fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        c, s = info.channels, info.input_size
        name = network.get_input(0).name
        profile.set_shape(name, (MIN_BATCH, c, s, s), (OPT_BATCH, c, s, s), (MAX_BATCH, c, s, s))
        config.add_optimization_profile(profile)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise EngineError(f"TensorRT failed to build an engine from {info.onnx_path} (see its log above)")
        return bytes(plan)

    # --- running --------------------------------------------------------------------------------

    def run(self, crops: np.ndarray) -> np.ndarray:
        """(N, H, W) uint8 crops -> (N, C) float32 probabilities; batches above 32 run in chunks."""
        if self._context is None:
            raise EngineError("this TensorRT engine is closed")
        crops = check_crops(crops, self.model)
        n = crops.shape[0]
        if n == 0:
            return empty_result(self.model)
        parts = [self._run_chunk(crops[i : i + MAX_BATCH]) for i in range(0, n, MAX_BATCH)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _run_chunk(self, crops: np.ndarray) -> np.ndarray:
        cudart = self._cudart
        n = crops.shape[0]
        x = preprocess(crops, self.model, out=self._in_host[:n])
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        if not self._context.set_input_shape(self._input, x.shape):
            raise EngineError(f"TensorRT rejected input shape {x.shape}")
        _check(cudart.cudaMemcpyAsync(self._d_in, x.ctypes.data, x.nbytes, h2d, self._stream), "memcpy H2D")
        if not self._context.execute_async_v3(int(self._stream)):
            raise EngineError("TensorRT execution failed")
        out = self._out_host[:n]
        stream = self._stream
        _check(cudart.cudaMemcpyAsync(out.ctypes.data, self._d_out, out.nbytes, d2h, stream), "memcpy D2H")
        _check(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return postprocess(out.copy(), self.model)

    def close(self) -> None:
        """Free device buffers and the stream; safe to call twice."""
        if self._context is None:
            return
        self._context = None
        self._engine = None
        for ptr in (self._d_in, self._d_out):
            self._cudart.cudaFree(ptr)
        self._cudart.cudaStreamDestroy(self._stream)

    def __enter__(self) -> TensorRTEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
