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
from PIL import Image, ImageOps

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


class NotAnImage(UndecodableImage):
    """Bytes that match no image signature at all (random data, text named .png)."""

    status = 422
    code = "not_an_image"


# Image formats we recognise but do not read: these get 415 rather than 422.
_OTHER_IMAGE_MAGIC = (
    (b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"), (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"), (b"\xffO\xffQ", "JPEG 2000"),
    (b"qoif", "QOI"), (b"8BPS", "PSD"), (b"\x00\x00\x01\x00", "ICO"),
)


def _other_image_format(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        return "HEIF/AVIF"
    for magic, name in _OTHER_IMAGE_MAGIC:
        if data.startswith(magic):
            return name
    return None


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
        other = _other_image_format(data)
        if other is not None:
            raise UnsupportedFormat(
                f"{other} images are not supported. Accepted formats: {accepted_formats_text()}."
            )
        raise NotAnImage(
            f"The data is not an image we recognise. Accepted formats: {accepted_formats_text()}."
        )
    if fmt == "DICOM":
        from .dicom import decode_dicom  # pydicom is imported only when a DICOM arrives

        return decode_dicom(data)
    if fmt == "JPEG":
        check_jpeg_structure(data)
    return _decode_pillow(data, fmt)


# JPEG markers that stand alone (no length field): TEM and the restart markers RST0-7.
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}
# Markers that may carry a length-prefixed segment: SOFn/DHT/DAC (C0-CF), DQT, DNL, DRI,
# DHP, EXP (DB-DF), APPn (E0-EF), JPGn extensions (F0-FD) and COM (FE).
_JPEG_SEGMENTS = {*range(0xC0, 0xD0), *range(0xDB, 0xE0), *range(0xE0, 0xF0),
                  *range(0xF0, 0xFE), 0xFE}
_JPEG_SOF = {*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0)}


def check_jpeg_structure(data: bytes) -> None:
    """Walk the JPEG markers and entropy-coded scans; raise :class:`UndecodableImage`.

    libjpeg only *warns* about a corrupt scan (an invalid marker inside the compressed
    data, restart markers out of order, data ending before EOI) and then fills the
    rest of the image with gray, which Pillow returns as a valid picture. A model fed
    that half-gray image would answer confidently, so such files are refused here.
    Random bit flips that keep the marker structure valid cannot be detected without
    a full Huffman decode; this check covers the structural damage.
    """

    def corrupt(why: str):
        return UndecodableImage(f"The JPEG data is corrupt ({why}).")

    n = len(data)
    pos = 2  # after SOI
    seen_sof = seen_sos = False
    while True:
        if pos >= n:
            raise corrupt("truncated: no end-of-image marker")
        if data[pos] != 0xFF:
            raise corrupt(f"expected a marker at byte {pos}")
        while pos < n and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            raise corrupt("truncated: no end-of-image marker")
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI
            if not (seen_sof and seen_sos):
                raise corrupt("no image data before the end-of-image marker")
            return
        if marker in _JPEG_STANDALONE:
            continue
        if marker != 0xDA and marker not in _JPEG_SEGMENTS:
            raise corrupt(f"invalid marker 0xFF{marker:02X}")
        if pos + 2 > n:
            raise corrupt("truncated segment header")
        length = int.from_bytes(data[pos:pos + 2], "big")
        if length < 2 or pos + length > n:
            raise corrupt("truncated segment")
        pos += length
        if marker in _JPEG_SOF:
            seen_sof = True
        if marker != 0xDA:
            continue
        if not seen_sof:
            raise corrupt("scan before frame header")
        seen_sos = True
        pos = _skip_entropy_coded(data, pos, corrupt)


def _skip_entropy_coded(data: bytes, pos: int, corrupt) -> int:
    """Return the position of the first marker after a scan's entropy-coded data."""
    n = len(data)
    expected_rst = 0
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= n:
            raise corrupt("truncated scan: no end-of-image marker")
        nxt = data[pos + 1]
        if nxt == 0x00:  # stuffed 0xFF data byte
            pos += 2
        elif 0xD0 <= nxt <= 0xD7:  # restart markers must count 0..7 in order
            if nxt - 0xD0 != expected_rst:
                raise corrupt("restart markers out of order")
            expected_rst = (expected_rst + 1) % 8
            pos += 2
        elif nxt == 0xFF:  # fill byte before a marker
            pos += 1
        else:
            if nxt != 0xD9 and nxt != 0xDA and nxt not in _JPEG_SEGMENTS:
                raise corrupt(f"invalid marker 0xFF{nxt:02X} inside the compressed data")
            return pos


def _decode_pillow(data: bytes, fmt: str) -> np.ndarray:
    with warnings.catch_warnings():
        # Pillow only warns between ~89 MP and ~179 MP; we want a hard refusal.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=[fmt])
            check_dimensions(*image.size)
            image.load()
            image = ImageOps.exif_transpose(image)
            return to_gray8(image)
        except InputError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLarge(f"The image is too large to decode safely ({exc}).") from None
        except MemoryError:
            raise ImageTooLarge("The image is too large to decode in memory.") from None
        except Exception as exc:  # noqa: BLE001 - any decoder failure on untrusted bytes
            # Pillow raises OSError, SyntaxError, ValueError, EOFError, struct.error,
            # IndexError... on hostile input; all of them mean "cannot decode".
            raise UndecodableImage(
                f"The {fmt} data could not be decoded ({exc.__class__.__name__})."
            ) from None


def check_dimensions(width: int, height: int, what: str = "image") -> None:
    """Refuse sizes from the header, before any pixel is decoded (bombs, thumbnails)."""
    if width * height > MAX_PIXELS:
        raise ImageTooLarge(
            f"The {what} declares {width}x{height} pixels; the limit is "
            f"{MAX_PIXELS // 1_000_000} megapixels."
        )
    if min(width, height) < MIN_SIDE:
        raise ImageTooSmall(
            f"The {what} is {width}x{height} pixels; a chest X-ray needs at least "
            f"{MIN_SIDE} pixels on each side."
        )


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
