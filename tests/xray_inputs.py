"""Upload variants generated from real X-rays, shared by the input, server and load tests.

Nothing is committed: every file is built in memory from the real data set, so the
"must work" variants can be compared with the plain 8-bit image they came from.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

from PIL import Image


def gray_image(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("L")


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def plain_png(path: Path) -> bytes:
    return encode(gray_image(path), "PNG")


# ---- variants that must work and agree with the plain image ---------------------------

def png16(path: Path) -> bytes:
    """16-bit grayscale PNG as medical exports write it (value * 257 keeps 8-bit exactness)."""
    import numpy as np

    wide = np.asarray(gray_image(path), dtype=np.uint16) * 257
    image = Image.fromarray(wide)
    assert image.mode.startswith("I;16"), image.mode
    return encode(image, "PNG")


def rgb_png(path: Path) -> bytes:
    return encode(gray_image(path).convert("RGB"), "PNG")


def rgba_png(path: Path) -> bytes:
    im = gray_image(path).convert("RGBA")
    im.putalpha(255)
    return encode(im, "PNG")


def palette_png(path: Path) -> bytes:
    return encode(gray_image(path).convert("P"), "PNG")


def cmyk_jpeg(path: Path) -> bytes:
    return encode(gray_image(path).convert("RGB").convert("CMYK"), "JPEG", quality=95)


def progressive_jpeg(path: Path) -> bytes:
    return encode(gray_image(path), "JPEG", quality=95, progressive=True)


def exif_rotated_jpeg(path: Path) -> bytes:
    """Pixels stored rotated by 90 degrees with EXIF orientation 6 ("rotate 90 CW to view")."""
    stored = gray_image(path).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(stored, "JPEG", quality=95, exif=exif.tobytes())


def large_png(path: Path, side: int = 4000) -> bytes:
    """A very large export (default 4000x4000, several MB) upscaled from a real X-ray."""
    big = gray_image(path).resize((side, side), Image.Resampling.BICUBIC)
    return encode(big, "PNG", compress_level=1)


def nonsquare_png(path: Path) -> bytes:
    im = gray_image(path)
    return encode(im.resize((im.width * 2, im.height), Image.Resampling.BICUBIC), "PNG")


GOOD_VARIANTS = {
    "png16": png16, "rgb_png": rgb_png, "rgba_png": rgba_png, "palette_png": palette_png,
    "cmyk_jpeg": cmyk_jpeg, "progressive_jpeg": progressive_jpeg,
    "exif_rotated_jpeg": exif_rotated_jpeg, "large_4000_png": large_png,
    "nonsquare_png": nonsquare_png,
}


# ---- bad inputs: each must get its 4xx ----------------------------------------------

def random_bytes(n: int = 4096, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def text_named_png() -> bytes:
    return b"Patient: Jane Doe\nThis is a text file with a .png name.\n" * 20


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    return data[: int(len(data) * keep)]


def corrupt_scan_jpeg(path: Path, seed: int = 0) -> bytes:
    """A real JPEG whose compressed scan has its middle third overwritten with noise.

    The noise holds a stray marker (0xFFFE) as damaged files usually do; libjpeg takes it
    for the end of the scan, only *warns* ("premature end of data segment") and fills
    the rest of the image with flat gray, so Pillow returns a picture without error.
    """
    data = bytearray(encode(gray_image(path), "JPEG", quality=90))
    sos = data.index(b"\xff\xda")
    start = sos + 2 + int.from_bytes(data[sos + 2:sos + 4], "big")
    end = data.rindex(b"\xff\xd9")
    third = (end - start) // 3
    noise = bytearray(b if b != 0xFF else 0x00 for b in random.Random(seed).randbytes(third))
    noise[len(noise) // 2: len(noise) // 2 + 2] = b"\xff\xfe"
    data[start + third:start + 2 * third] = noise
    return bytes(data)


def restart_disorder_jpeg(path: Path) -> bytes:
    """A real JPEG with restart intervals whose 4th and 5th restart markers are swapped
    (libjpeg warns, resynchronises and shifts image blocks)."""
    data = bytearray(encode(gray_image(path), "JPEG", quality=90, restart_marker_blocks=4))
    sos = data.index(b"\xff\xda")
    rst = [i for i in range(sos, len(data) - 1)
           if data[i] == 0xFF and 0xD0 <= data[i + 1] <= 0xD7]
    data[rst[3] + 1], data[rst[4] + 1] = data[rst[4] + 1], data[rst[3] + 1]
    return bytes(data)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))


def bomb_png(side: int = 30000) -> bytes:
    """A valid ~100 KB 1-bit PNG that decodes to side x side pixels (900 MP by default)."""
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    comp = zlib.compressobj(9)
    parts = [comp.compress(row) for _ in range(side)]
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", b"".join(parts)) + _png_chunk(b"IEND", b""))


def tiny_png(path: Path, side: int = 16) -> bytes:
    return encode(gray_image(path).resize((side, side)), "PNG")


def other_format(path: Path, fmt: str) -> bytes:
    return encode(gray_image(path), fmt)
