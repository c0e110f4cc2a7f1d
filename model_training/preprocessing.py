"""The one image preprocessing shared by training, evaluation and the web app.

Train/serve skew is the classic bug of image classifiers, so every path that turns
bytes into a model input goes through :func:`load_image_bytes`. It uses only Pillow
and NumPy on purpose: the web app can then serve a non-TensorFlow runtime without
importing TensorFlow, and the tf.data pipeline calls the very same function through
``tf.numpy_function``.

Steps: detect the format from the bytes (never from a file name), decode with Pillow
restricted to that format, apply the EXIF orientation, reduce to 8-bit grayscale
(16-bit is scaled by 1/257), resize to a square with bilinear filtering, repeat the
gray channel three times and apply ResNet50's ``preprocess_input`` in "caffe" mode
(BGR mean subtraction, no scaling).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

PREPROCESSING_MODE = "caffe"
# keras.applications.imagenet_utils "caffe" means, in BGR order.
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)

ACCEPTED_FORMATS = ("PNG", "JPEG", "DICOM")
MIN_SIDE = 32
MAX_PIXELS = 50_000_000  # 50 MP: far above any X-ray export, far below a decompression bomb

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
)


class InputError(ValueError):
    """An input the model cannot use; carries the HTTP status and code the app answers with."""

    status = 422
    code = "undecodable_image"


class EmptyInput(InputError):
    status = 400
    code = "empty_input"


class UnsupportedFormat(InputError):
    status = 415
    code = "unsupported_media_type"


class ImageTooLarge(InputError):
    status = 413
    code = "image_too_large"


class UndecodableImage(InputError):
    status = 422
    code = "undecodable_image"


class ImageTooSmall(InputError):
    status = 422
    code = "image_too_small"


def accepted_formats_text() -> str:
    return ", ".join(accepted_formats())


def accepted_formats() -> tuple[str, ...]:
    return ACCEPTED_FORMATS


def sniff_format(data: bytes) -> str | None:
    """Return the format named by the leading magic bytes, or None."""
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if data[128:132] == b"DICM":  # DICOM Part 10: 128-byte preamble, then the magic
        return "DICOM"
    return None


def decode_image(data: bytes) -> np.ndarray:
    """Decode image bytes to a 2-D uint8 grayscale array, or raise an :class:`InputError`."""
    if not data:
        raise EmptyInput("The upload is empty.")
    fmt = sniff_format(data)
    if fmt is None:
        raise UnsupportedFormat(
            f"Not an image format we read. Accepted formats: {accepted_formats_text()}."
        )
    if fmt == "DICOM":
        from .dicom import decode_dicom  # pydicom is imported only when a DICOM arrives

        return decode_dicom(data)
    return _decode_pillow(data, fmt)


def _decode_pillow(data: bytes, fmt: str) -> np.ndarray:
    with warnings.catch_warnings():
        # Pillow only warns between ~89 MP and ~179 MP; we want a hard refusal.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=[fmt])
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageTooLarge(
                    f"The image declares {width}x{height} pixels; the limit is "
                    f"{MAX_PIXELS // 1_000_000} megapixels."
                )
            if min(width, height) < MIN_SIDE:
                raise ImageTooSmall(
                    f"The image is {width}x{height} pixels; a chest X-ray needs at least "
                    f"{MIN_SIDE} pixels on each side."
                )
            image.load()
            image = ImageOps.exif_transpose(image)
            return to_gray8(image)
        except InputError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLarge(f"The image is too large to decode safely ({exc}).") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
            raise UndecodableImage(
                f"The {fmt} data could not be decoded ({exc.__class__.__name__})."
            ) from None


def to_gray8(image: Image.Image) -> np.ndarray:
    """Any Pillow mode to 8-bit gray; 16-bit values are divided by 257 (65535 -> 255)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        wide = np.asarray(image, dtype=np.float64)
        return np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)
    if image.mode == "F":
        return np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
    if image.mode != "L":
        if image.mode not in ("RGB", "1"):
            image = image.convert("RGB")
        image = image.convert("L")
    return np.asarray(image, dtype=np.uint8)


def preprocess_gray(gray: np.ndarray, image_size: int) -> np.ndarray:
    """Resize a uint8 gray image to (size, size) and apply caffe preprocessing -> float32 HxWx3."""
    resized = Image.fromarray(gray, mode="L").resize(
        (image_size, image_size), Image.Resampling.BILINEAR
    )
    g = np.asarray(resized, dtype=np.float32)
    return np.stack([g, g, g], axis=-1) - CAFFE_MEAN_BGR


def load_image_bytes(data: bytes, image_size: int) -> np.ndarray:
    """Bytes in, model input out: the single entry point for training and serving."""
    return preprocess_gray(decode_image(data), image_size)


def load_image_file(path: str | Path, image_size: int) -> np.ndarray:
    return load_image_bytes(Path(path).read_bytes(), image_size)
