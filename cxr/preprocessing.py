"""The one image preprocessing shared by training, evaluation and the web app.

Train/serve skew is the classic bug of image classifiers, so every path that turns an
image into a model input goes through the same private steps, behind one entry point per use:

* :func:`load_image_file`: training and evaluation, from image files (the training batches,
  ``model_training.data.ImageBatches``, a Keras ``PyDataset``);
* :func:`prepare_image_bytes`: serving, from upload bytes (``Predictor.prepare``); the same
  array plus the cues the input gate reads (:class:`PreparedImage`);
* :func:`prepare_gray`: an image already decoded (the explain flow, ``cxr.explain``, which
  keeps the decoded image for the overlay).

It uses only Pillow and NumPy on purpose: the web app can then serve a non-TensorFlow runtime
without importing TensorFlow. A test proves the training and serving arrays identical.

Steps: decode the bytes to 8-bit gray (``cxr.decode``: format from the bytes, EXIF
orientation, 16-bit scaled by 1/257, DICOM's display pipeline), resize to a square with
bilinear filtering, repeat the gray channel three times and apply ResNet50's
``preprocess_input`` in "caffe" mode (BGR mean subtraction, no scaling).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .decode import decode_image, decode_image_colour

PREPROCESSING_MODE = "caffe"
# keras.applications.imagenet_utils "caffe" means, in BGR order.
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)


def _resize_gray(gray: np.ndarray, image_size: int) -> np.ndarray:
    """A uint8 gray image resized to (size, size) with bilinear filtering, still uint8."""
    resized = Image.fromarray(gray, mode="L").resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def _model_input(small: np.ndarray) -> np.ndarray:
    """A resized uint8 gray image -> the model input: float32 HxWx3 with the caffe means subtracted."""
    g = small.astype(np.float32)
    return np.stack([g, g, g], axis=-1) - CAFFE_MEAN_BGR


def _preprocess_gray(gray: np.ndarray, image_size: int) -> np.ndarray:
    """Resize a uint8 gray image to (size, size) and apply caffe preprocessing -> float32 HxWx3."""
    return _model_input(_resize_gray(gray, image_size))


@dataclass(frozen=True)
class PreparedImage:
    """A model input plus what the input gate (``cxr.gate``) reads: the resized uint8 gray image
    it was made from, and two cues the square gray input has lost: colourfulness (0..1) and
    the decoded image's width / height."""

    array: np.ndarray
    colourfulness: float = 0.0
    aspect: float = 1.0
    small: np.ndarray | None = None

    @property
    def gray(self) -> np.ndarray:
        """The resized uint8 gray image (recovered from ``array`` when it was not kept)."""
        if self.small is not None:
            return self.small
        return np.clip(np.rint(self.array[..., 0] + CAFFE_MEAN_BGR[0]), 0, 255).astype(np.uint8)


def prepare_gray(gray: np.ndarray, image_size: int, colourfulness: float = 0.0) -> PreparedImage:
    """A decoded uint8 gray image -> the model input plus the gate's cues."""
    height, width = gray.shape[:2]
    small = _resize_gray(gray, image_size)
    return PreparedImage(_model_input(small), colourfulness, width / height, small)


def prepare_image_bytes(data: bytes, image_size: int) -> PreparedImage:
    """Upload bytes (PNG, JPEG, DICOM) -> the model input plus the gate's cues: what serving calls."""
    gray, colour = decode_image_colour(data)
    return prepare_gray(gray, image_size, colour)


def load_image_file(path: str | Path, image_size: int) -> np.ndarray:
    """An image file -> the model input (float32 HxWx3): what training and evaluation call.
    The same array as ``prepare_image_bytes(bytes).array``, without the gate's cues (cheaper)."""
    return _preprocess_gray(decode_image(Path(path).read_bytes()), image_size)
