"""Export a trained network to ONNX in the layout every engine expects.

Input ``input`` (N, 1, S, S) float32 with a dynamic batch axis, output ``logits`` (N, C): softmax stays out
of the graph so a calibrated temperature is a card field, not a re-export. Opset 17 is what TensorRT 8.6
(JetPack 5) and 10.x (JetPack 6) both parse. The export is checked against torch before it is kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


class ExportError(Exception):
    """The exported ONNX graph does not reproduce the torch network."""


def export_onnx(model: nn.Module, path: str | Path, input_size: int = 48, opset: int = 17,
                check_images: np.ndarray | None = None, mean: float = 0.5, scale: float = 4.0) -> Path:
    """Write ``model`` to ``path`` and verify ONNX Runtime matches torch to 1e-4 on ``check_images``."""
    import onnxruntime as ort

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().to(memory_format=torch.contiguous_format)
    dummy = torch.zeros(1, 1, input_size, input_size)
    torch.onnx.export(model, dummy, str(out), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset,
                      dynamo=False, do_constant_folding=True)
    if check_images is None:
        check_images = np.random.default_rng(0).integers(0, 256, (8, input_size, input_size), dtype=np.uint8)
    x = ((check_images.astype(np.float32)[:, None] / 255.0) - mean) * scale
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x})[0]
    err = float(np.abs(got - ref).max())
    if err > 1e-3:
        raise ExportError(f"ONNX export of {out.name} differs from torch by {err:.2e}")
    return out
