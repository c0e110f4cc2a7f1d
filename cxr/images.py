"""PNG and JPEG: reading Pillow formats into an 8-bit gray array, and the checks before that.

Decoding is restricted to the format the magic bytes name (never a file name); the header's
size is checked before any pixel is decoded (decompression bombs, thumbnails); a JPEG's marker
structure is walked first, because libjpeg only warns about a corrupt scan and fills the rest
with gray. EXIF orientation is applied; 16-bit values are scaled by 1/257 (65535 -> 255).
``cxr.dicom`` reuses :func:`check_dimensions` and :func:`check_jpeg_structure`; the dispatcher
over both formats is ``cxr.decode``. Only Pillow and NumPy.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

from .errors import ImageTooLarge, ImageTooSmall, InputError, UndecodableImage

MIN_SIDE = 32
MAX_PIXELS = 50_000_000  # 50 MP: far above any X-ray export, far below a decompression bomb

IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
)


# Image formats we recognise but do not read: UnsupportedFormat rather than NotAnImage (cxr.decode).
_OTHER_IMAGE_MAGIC = (
    (b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"), (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"), (b"\xffO\xffQ", "JPEG 2000"),
    (b"qoif", "QOI"), (b"8BPS", "PSD"), (b"\x00\x00\x01\x00", "ICO"),
)


def other_image_format(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        return "HEIF/AVIF"
    for magic, name in _OTHER_IMAGE_MAGIC:
        if data.startswith(magic):
            return name
    return None


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


def decode_pillow(data: bytes, fmt: str, colour: bool = False) -> tuple[np.ndarray, float]:
    """PNG/JPEG bytes -> (2-D uint8 gray, colourfulness or 0.0 without ``colour``), or raise an
    ``InputError``."""
    with warnings.catch_warnings():
        # Pillow only warns between ~89 MP and ~179 MP; we want a hard refusal.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=[fmt])
            check_dimensions(*image.size)
            image.load()
            image = ImageOps.exif_transpose(image)
            return to_gray8(image), (colourfulness(image) if colour else 0.0)
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


def colourfulness(image: Image.Image) -> float:
    """How far from gray an image is, 0..1: the mean of (max - min channel) / 255 over a
    64x64 thumbnail. Gray modes are 0 without looking; the gate (``cxr.gate``) uses it because
    the gray model input no longer shows colour."""
    if image.mode in ("L", "LA", "1", "I", "F") or image.mode.startswith("I;16"):
        return 0.0
    small = image.convert("RGB") if image.mode != "RGB" else image
    small = small.resize((64, 64), Image.Resampling.BOX)
    rgb = np.asarray(small, dtype=np.int16)
    return float((rgb.max(axis=2) - rgb.min(axis=2)).mean()) / 255.0


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
