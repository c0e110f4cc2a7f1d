"""``POST /predict/batch``: several X-rays in one request, one forward pass for all of them.

The request is ``multipart/form-data`` with the field ``files`` repeated (PNG, JPEG or DICOM,
as ``/predict``). The answer has one item per file, in the order sent: the per-image fields
of a ``/predict`` answer (built by ``app.answers.image_answer``, the same function) or
``{"error": {"code", "message"}}`` for that file alone, with the code ``/predict`` would
have answered. One bad file never fails the others; the files that decode go through the
model together (``cxr.inference.Predictor.predict_uploads``).

Limits (settings, see ``app.config``): at most ``BATCH_MAX_FILES`` files (413
``too_many_files``) and ``BATCH_MAX_MB`` for the whole request (413 ``batch_too_large``);
each file is also held to ``MAX_UPLOAD_MB``, as on ``/predict`` (that item's error:
``payload_too_large``). Parts stay in memory (``app.InMemoryRequest``), like every upload.
"""

from __future__ import annotations

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from app.answers import error_item, image_answer
from app.config import MB
from app.errors import ApiError
from cxr.errors import InputError

FIELD = "files"
# Form parts allowed beyond the files themselves (non-file fields are ignored), so that a
# client adding a field or two does not get 413 while a flood of tiny parts still does.
EXTRA_PARTS = 8


def _too_many_files(max_files: int) -> ApiError:
    return ApiError(413, "too_many_files",
                    f"At most {max_files} files per batch (BATCH_MAX_FILES); split the request.")


def _batch_too_large(max_mb: float) -> ApiError:
    return ApiError(413, "batch_too_large",
                    f"The batch is larger than the {max_mb:g} MB limit (BATCH_MAX_MB); split the request.")


def read_uploads(config) -> list[bytes | dict]:
    """The ``files`` parts in order: each one's bytes, or its error item when it is over
    ``MAX_UPLOAD_MB``. Raises :class:`ApiError` for a request that cannot be a batch (400) or
    is over the batch limits (413)."""
    max_files = int(config["BATCH_MAX_FILES"])
    max_mb = float(config["BATCH_MAX_MB"])
    per_file = int(config["MAX_UPLOAD_MB"] * MB)
    if request.mimetype != "multipart/form-data":
        raise ApiError(400, "no_file", f"Send the X-rays as multipart/form-data, the field '{FIELD}' "
                       "repeated once per file (curl -F files=@a.png -F files=@b.jpg).")
    if request.content_length is not None and request.content_length > max_mb * MB:
        raise _batch_too_large(max_mb)
    # Flask 3.1: per-request limits, set before anything reads the body.
    request.max_content_length = int(max_mb * MB)
    request.max_form_parts = max_files + EXTRA_PARTS
    try:
        uploads = request.files.getlist(FIELD)
    except RequestEntityTooLarge:
        # Werkzeug raises the same error for the size and the part count; without a
        # Content-Length only an exhausted stream tells that the size was the problem.
        if request.content_length is None and getattr(request.stream, "is_exhausted", False):
            raise _batch_too_large(max_mb) from None
        raise _too_many_files(max_files) from None
    if not uploads:
        raise ApiError(400, "no_file", f"The form has no '{FIELD}' field; repeat the field '{FIELD}' "
                       "once per X-ray.")
    if len(uploads) > max_files:
        raise _too_many_files(max_files)
    items: list[bytes | dict] = []
    for upload in uploads:
        try:
            data = upload.read()
        finally:
            upload.close()
        if len(data) > per_file:
            limit = config["MAX_UPLOAD_MB"]
            items.append(error_item("payload_too_large",
                                    f"The file is larger than the {limit:g} MB limit (MAX_UPLOAD_MB)."))
        else:
            items.append(data)
    return items


def batch_results(predictor, items: list[bytes | dict], operating_point: str | None = None) -> list[dict]:
    """One answer item per upload, in order; the uploads still in play share one forward pass."""
    outcomes = iter(predictor.predict_uploads([item for item in items if isinstance(item, bytes)], operating_point))
    results = []
    for item in items:
        if isinstance(item, dict):
            results.append(item)
            continue
        outcome = next(outcomes)
        if isinstance(outcome, InputError):
            results.append(error_item(outcome.code, str(outcome)))
        else:
            results.append(image_answer(outcome))
    return results
