"""The one image preprocessing shared by training, evaluation and the web app.

Train/serve skew is the classic bug of image classifiers, so every path that turns
bytes into a model input goes through :func:`load_image_bytes`. It uses only Pillow
and NumPy on purpose: the web app can then serve a non-TensorFlow runtime without
importing TensorFlow, and the training batches (``model_training.data.ImageBatches``, a
Keras ``PyDataset``) call the very same function.

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


def resize_gray(gray: np.ndarray, image_size: int) -> np.ndarray:
    """A uint8 gray image resized to (size, size) with bilinear filtering, still uint8."""
    resized = Image.fromarray(gray, mode="L").resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def model_input(small: np.ndarray) -> np.ndarray:
    """A resized uint8 gray image -> the model input: float32 HxWx3 with the caffe means subtracted."""
    g = small.astype(np.float32)
    return np.stack([g, g, g], axis=-1) - CAFFE_MEAN_BGR


def preprocess_gray(gray: np.ndarray, image_size: int) -> np.ndarray:
    """Resize a uint8 gray image to (size, size) and apply caffe preprocessing -> float32 HxWx3."""
    return model_input(resize_gray(gray, image_size))


def load_image_bytes(data: bytes, image_size: int) -> np.ndarray:
    """Bytes in, model input out: the single entry point for training and serving."""
    return preprocess_gray(decode_image(data), image_size)


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
    height, width = gray.shape[:2]
    small = resize_gray(gray, image_size)
    return PreparedImage(model_input(small), colourfulness, width / height, small)


def prepare_image_bytes(data: bytes, image_size: int) -> PreparedImage:
    """:func:`load_image_bytes` (the same array) plus the gate's cues: what serving calls."""
    gray, colour = decode_image_colour(data)
    return prepare_gray(gray, image_size, colour)


def load_image_file(path: str | Path, image_size: int) -> np.ndarray:
    return load_image_bytes(Path(path).read_bytes(), image_size)
