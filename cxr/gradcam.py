"""Grad-CAM: where in the X-ray the model looked, so anyone can check that it reads the
lungs and not text markers, rulers or borders.

Why no gradient tape: everything after ``conv5_block3_out`` (``cxr.metadata.FEATURES_LAYER``)
up to the softmax is linear (global average pooling or flatten, dropout that is off at
inference, one Dense layer).
So d(logit_c)/d(features) is a constant read from the Dense kernel:

* ``gap`` head: ``kernel[:, c] / (h*w)`` at every position;
* ``flatten`` head: ``kernel[:, c]`` reshaped to ``(h, w, channels)``.

Grad-CAM = ReLU(sum_k alpha_k A_k) with alpha_k the spatial mean of that gradient, scaled
to [0, 1]. It needs only one forward pass that also returns the features, costs a few
NumPy operations, and works the same for every backend (TensorFlow or ONNX Runtime): this
module holds the arithmetic on arrays and the overlay; the one explain flow that runs a
predictor and calls it is ``cxr.explain``. Nothing here imports TensorFlow.

The overlay is drawn on the uploaded image itself, at its own aspect ratio (the model's
square input is stretched back), at most 512 px on the long side, with a perceptually
uniform colormap so equal steps of colour mean equal steps of attention. The CLI and the
report grid are ``model_training.explain``; the web API's wrapper is ``app.explanations``.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
from PIL import Image

HEAD_TYPES = ("gap", "flatten")
COLORMAPS = ("inferno", "viridis", "magma", "plasma", "cividis")
DEFAULT_OPACITY = 0.4
MAX_SIDE = 512


# --------------------------------------------------------------------------- core

def class_gradient(kernel: np.ndarray, class_index: int, head_type: str,
                   feature_shape: tuple[int, int, int]) -> np.ndarray:
    """d(logit_c)/d(features) for a linear head, shape ``feature_shape`` (h, w, channels)."""
    h, w, channels = feature_shape
    column = np.asarray(kernel, dtype=np.float64)[:, class_index]
    if head_type == "gap":
        if column.size != channels:
            raise ValueError(f"gap head: kernel has {column.size} rows, features {channels} channels")
        return np.broadcast_to(column / (h * w), (h, w, channels))
    if head_type == "flatten":
        if column.size != h * w * channels:
            raise ValueError(f"flatten head: kernel has {column.size} rows, features {h}x{w}x{channels}")
        return column.reshape(h, w, channels)  # Flatten is row-major over (h, w, channels)
    raise ValueError(f"head_type must be one of {HEAD_TYPES}, not {head_type!r}")


def head_type_for(kernel: np.ndarray, feature_shape: tuple[int, int, int], declared: str | None = None) -> str:
    """The head type the kernel's shape proves: (c, n) is gap, (h*w*c, n) is flatten.

    ``declared`` (from the sidecar) wins when it fits; a sidecar without the training
    settings must not break the explanation. At a 1x1 feature map both are the same thing.
    """
    h, w, channels = feature_shape
    rows = np.shape(kernel)[0]
    fits = {"gap": rows == channels, "flatten": rows == h * w * channels}
    if declared in fits and fits[declared]:
        return declared
    for head, ok in fits.items():
        if ok:
            return head
    raise ValueError(f"A head kernel with {rows} rows fits neither a gap nor a flatten head "
                     f"on {h}x{w}x{channels} features.")


def gradcam(features: np.ndarray, kernel: np.ndarray, class_index: int, head_type: str) -> np.ndarray:
    """Grad-CAM of one image: features (h, w, c) or (1, h, w, c) -> float32 (h, w) in [0, 1].

    An all-zero map (the class has no positive evidence anywhere) stays all zero.
    """
    a = np.asarray(features, dtype=np.float64)
    if a.ndim == 4:
        if a.shape[0] != 1:
            raise ValueError("gradcam explains one image at a time")
        a = a[0]
    grad = class_gradient(kernel, class_index, head_type, a.shape)
    alpha = grad.mean(axis=(0, 1))                      # (channels,)
    cam = np.maximum(np.tensordot(a, alpha, axes=([2], [0])), 0.0)
    peak = cam.max()
    return (cam / peak if peak > 0 else cam).astype(np.float32)


COLORMAP_TABLES = Path(__file__).with_name("colormaps.npz")


@functools.cache
def colormap_lut(name: str = "inferno") -> np.ndarray:
    """A matplotlib colormap as a (256, 3) uint8 table.

    Read from ``colormaps.npz`` beside this module (matplotlib's tables, sampled once:
    tests/test_explain.py checks them against matplotlib), so serving needs no matplotlib.
    """
    if name not in COLORMAPS:
        raise ValueError(f"colormap must be one of {COLORMAPS}")
    with np.load(COLORMAP_TABLES) as tables:
        return tables[name]


def overlay(gray: np.ndarray, heatmap: np.ndarray, *, opacity: float = DEFAULT_OPACITY,
            max_side: int = MAX_SIDE, colormap: str = "inferno") -> Image.Image:
    """Blend the colour-mapped heatmap over the gray image: RGB, same aspect, long side <= max_side."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError("opacity must be between 0 and 1")
    base = Image.fromarray(np.asarray(gray, dtype=np.uint8), mode="L")
    base.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    size = base.size
    heat = Image.fromarray(np.asarray(heatmap, dtype=np.float32), mode="F").resize(
        size, Image.Resampling.BILINEAR)
    index = np.clip(np.rint(np.asarray(heat) * 255), 0, 255).astype(np.uint8)
    color = colormap_lut(colormap)[index].astype(np.float32)
    gray_rgb = np.asarray(base, dtype=np.float32)[..., None]
    blended = (1.0 - opacity) * gray_rgb + opacity * color
    return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8), mode="RGB")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=3)  # ~4x faster than 6, ~8% larger
    return buffer.getvalue()
