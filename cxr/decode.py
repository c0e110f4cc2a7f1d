"""Upload bytes -> 2-D uint8 gray image: one dispatcher by format, the readers as siblings below it.

The format comes from the leading magic bytes (never from a file name): PNG and JPEG go to
``cxr.images`` (Pillow), DICOM to ``cxr.dicom`` (pydicom, imported only when a DICOM arrives):
Part 10 files by ``DICM`` at byte 128, bare datasets (no preamble, no file meta) when their
first bytes look like a first data element and they then parse as an image.
Known image formats we do not read get ``UnsupportedFormat``; anything else ``NotAnImage``.
Decoding never calls back up into preprocessing: ``cxr.preprocessing`` sits above this module.
"""

from __future__ import annotations

import numpy as np

from .dicom import decode_dicom, looks_like_dataset
from .errors import EmptyInput, NotAnImage, UnsupportedFormat
from .images import IMAGE_MAGIC, check_jpeg_structure, decode_pillow, other_image_format

ACCEPTED_FORMATS = ("PNG", "JPEG", "DICOM")


def accepted_formats_text() -> str:
    return ", ".join(accepted_formats())


def accepted_formats() -> tuple[str, ...]:
    return ACCEPTED_FORMATS


def sniff_format(data: bytes) -> str | None:
    """Return the format named by the leading magic bytes, or None. "DICOM" also for bytes
    that may be a bare dataset (:func:`cxr.dicom.looks_like_dataset`): only parsing tells, and
    ``decode_image`` answers ``NotAnImage`` when it fails."""
    for magic, name in IMAGE_MAGIC:
        if data.startswith(magic):
            return name
    if data[128:132] == b"DICM":  # DICOM Part 10: 128-byte preamble, then the magic
        return "DICOM"
    if looks_like_dataset(data):  # maybe a bare DICOM dataset (no preamble, no file meta)
        return "DICOM"
    return None


def decode_image(data: bytes) -> np.ndarray:
    """Decode image bytes to a 2-D uint8 grayscale array, or raise an :class:`InputError`."""
    return _decode(data, colour=False)[0]


def decode_image_colour(data: bytes) -> tuple[np.ndarray, float]:
    """:func:`decode_image` plus the colourfulness (0..1) the gray image has lost; DICOM is
    read as gray (its header says what it shows, ``cxr.dicom_header``) and counts as 0."""
    return _decode(data, colour=True)


def _decode(data: bytes, colour: bool) -> tuple[np.ndarray, float]:
    """``colour``: measure colourfulness too (the input gate needs it; training does not)."""
    if not data:
        raise EmptyInput("The upload is empty.")
    fmt = sniff_format(data)
    if fmt is None:
        raise _unknown(data)
    if fmt == "DICOM":
        try:
            return decode_dicom(data), 0.0  # pydicom is imported only when a DICOM arrives
        except NotAnImage:  # bare bytes that did not parse as a DICOM dataset after all
            raise _unknown(data) from None
    if fmt == "JPEG":
        check_jpeg_structure(data)
    return decode_pillow(data, fmt, colour=colour)


def _unknown(data: bytes) -> UnsupportedFormat | NotAnImage:
    other = other_image_format(data)
    if other is not None:
        return UnsupportedFormat(
            f"{other} images are not supported. Accepted formats: {accepted_formats_text()}."
        )
    return NotAnImage(
        f"The data is not an image we recognise. Accepted formats: {accepted_formats_text()}."
    )
