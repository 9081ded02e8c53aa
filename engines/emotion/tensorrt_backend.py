"""TensorRT backend: the Jetson path (FP16 engine built from the shipped ONNX, cached on disk).

Written against the TensorRT Python API of JetPack 6 (TensorRT 10: named I/O tensors,
``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``), and TensorRT 8.6 where the
difference is one flag (explicit batch). Device memory comes from NVIDIA's ``cuda-python``
(``cuda.bindings.runtime``, formerly ``cuda.cudart``), as in TensorRT's own Python samples, so the
hot path needs no torch and no pycuda. The ``tensorrt`` extra installs cuda-python; TensorRT itself
comes with JetPack (or NVIDIA's wheels on a desktop GPU).

TensorRT cannot be installed on a CPU-only machine; this module imports it only when probed or
when the engine is built, so ``import emostream.engines.emotion.tensorrt_backend`` is always safe.
:func:`tensorrt_problems` names exactly what is missing, for ``--engine tensorrt``'s error and for
``auto``'s account of why it chose the CPU.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from emostream.engines.emotion.backend import EmotionBackend
from emostream.engines.emotion.card import EmotionModelInfo, EngineError

#: Dynamic-batch optimisation profile: faces per frame on an edge camera.
MIN_BATCH, OPT_BATCH, MAX_BATCH = 1, 8, 32
WORKSPACE_BYTES = 256 << 20
#: What to install for the device-memory half; TensorRT itself ships with JetPack.
CUDA_PYTHON_HINT = "pip install 'emostream[tensorrt]'"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/emostream/trt`` (``~/.cache/emostream/trt``): engines are per device and version."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "emostream" / "trt"


def _import_cudart_or_error() -> tuple[Any | None, str]:
    """cuda-python's runtime module under its new (12.x+) or old name, or None and the import error."""
    first_error = ""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name), ""
        except ImportError as exc:
            first_error = first_error or str(exc)
    return None, first_error


def _import_cudart() -> Any | None:
    """cuda-python's runtime module, or None (calibration's INT8 calibrator shares it)."""
    return _import_cudart_or_error()[0]


def _cuda_error_name(err: Any) -> str:
    """``cudaErrorNoDevice`` rather than ``100``: cuda-python's errors are enums."""
    return str(getattr(err, "name", None) or int(err))


def tensorrt_problems() -> list[str]:
    """Everything that stops the TensorRT backend here, one phrase each; empty where it can run.

    Checks all three needs, not just the first, so a user fixes them in one go: the ``tensorrt``
    module (a real import: a JetPack install with a missing ``libnvinfer`` fails here, not later),
    cuda-python, and a visible CUDA device.
    """
    problems: list[str] = []
    try:
        importlib.import_module("tensorrt")
    except Exception as exc:  # ImportError, or OSError/RuntimeError from a broken native install
        problems.append(f"tensorrt not importable: {exc} (TensorRT comes with JetPack on Jetson)")
    cudart, error = _import_cudart_or_error()
    if cudart is None:
        problems.append(f"cuda-python not importable: {error} ({CUDA_PYTHON_HINT})")
        return problems
    try:
        err, count = cudart.cudaGetDeviceCount()
    except Exception as exc:  # a broken driver install must not break the CPU fallback
        problems.append(f"no CUDA device: cudaGetDeviceCount raised {exc}")
        return problems
    if int(err) != 0:
        problems.append(f"no CUDA device: cudaGetDeviceCount returned {_cuda_error_name(err)}")
    elif count < 1:
        problems.append("no CUDA device: cudaGetDeviceCount found none")
    return problems


def tensorrt_usable() -> bool:
    """True where TensorRT and cuda-python import and a CUDA device is visible (what ``auto`` asks)."""
    return not tensorrt_problems()


def _check(result: Any, what: str) -> Any:
    """cuda-python returns (error, *values); turn a non-zero error into EngineError."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise EngineError(f"CUDA call {what} failed with {_cuda_error_name(err)}")
    return values[0] if len(values) == 1 else values


def engine_cache_path(info: EmotionModelInfo, cache_dir: Path, trt_version: str, device_name: str) -> Path:
    """``<cache>/<model>-<hash>.engine``: the hash covers everything that makes an engine reusable."""
    h = hashlib.sha256(info.onnx_path.read_bytes())
    h.update(f"trt={trt_version};dev={device_name};fp16;batch={MIN_BATCH},{OPT_BATCH},{MAX_BATCH}".encode())
    return cache_dir / f"{info.name}-{h.hexdigest()[:16]}.engine"


class TensorRTEngine(EmotionBackend):
    """:class:`~emostream.engines.emotion.backend.EmotionBackend` on TensorRT (FP16, dynamic batch 1..32)."""

    name = "tensorrt"
    runtime = "TensorRT"
    max_batch = MAX_BATCH

    def __init__(self, info: EmotionModelInfo, *, cache_dir: str | Path | None = None) -> None:
        problems = tensorrt_problems()
        if problems:
            raise EngineError(
                f"the tensorrt engine cannot run here: {'; '.join(problems)}. "
                "Use --engine onnxruntime (the CPU), or --engine auto to fall back by itself"
            )
        import tensorrt as trt

        super().__init__(info)
        cudart = _import_cudart()
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
        # Device buffers for the largest batch, bound once: no allocation or rebinding per call.
        s, c = info.input_size, info.channels
        self._stream = _check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._d_in = _check(cudart.cudaMalloc(MAX_BATCH * c * s * s * 4), "cudaMalloc")
        self._d_out = _check(cudart.cudaMalloc(MAX_BATCH * info.num_classes * 4), "cudaMalloc")
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

    def _infer(self, x: np.ndarray) -> np.ndarray:
        """One chunk of at most :data:`MAX_BATCH` (the base class chunks): copy in, execute, copy out."""
        cudart, stream = self._cudart, self._stream
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        out = np.empty((x.shape[0], self.model.num_classes), dtype=np.float32)
        if not self._context.set_input_shape(self._input, x.shape):
            raise EngineError(f"TensorRT rejected input shape {x.shape}")
        _check(cudart.cudaMemcpyAsync(self._d_in, x.ctypes.data, x.nbytes, h2d, stream), "memcpy H2D")
        if not self._context.execute_async_v3(int(stream)):
            raise EngineError("TensorRT execution failed")
        _check(cudart.cudaMemcpyAsync(out.ctypes.data, self._d_out, out.nbytes, d2h, stream), "memcpy D2H")
        _check(cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        return out

    def _release(self) -> None:
        """Free device buffers and the stream (the base class calls this once)."""
        self._context = None
        self._engine = None
        for ptr in (self._d_in, self._d_out):
            self._cudart.cudaFree(ptr)
        self._cudart.cudaStreamDestroy(self._stream)
