"""The input errors: what can be wrong with an upload, each with a stable ``code``.

Raised by decoding and preprocessing (``cxr.images``, ``cxr.dicom``, ``cxr.decode``); the web
app turns a code into an HTTP status and the JSON error body, the training side skips or
reports the file. Codes are part of the API: never rename one.
"""

from __future__ import annotations


class InputError(ValueError):
    """An input the model cannot use. ``code`` is stable and machine-readable; the web app maps
    it to an HTTP status (``app.errors``), so no HTTP lives here."""

    code = "undecodable_image"


class EmptyInput(InputError):
    code = "empty_input"


class UnsupportedFormat(InputError):
    code = "unsupported_media_type"


class ImageTooLarge(InputError):
    code = "image_too_large"


class UndecodableImage(InputError):
    code = "undecodable_image"


class ImageTooSmall(InputError):
    code = "image_too_small"


class NotAnImage(UndecodableImage):
    """Bytes that match no image signature at all (random data, text named .png)."""

    code = "not_an_image"


class NotAChestXray(InputError):
    """An image that is not a chest radiograph: a DICOM header naming another modality or body
    part (``cxr.dicom_header``); the image-content gate may raise it too."""

    code = "not_a_chest_xray"


class LateralView(InputError):
    """A lateral chest radiograph: the model reads frontal (PA/AP) views only."""

    code = "lateral_view"
