"""What the API answers for one classified image, built in one place.

``POST /predict``, the form's result page and every item of ``POST /predict/batch`` build
their per-image fields with :func:`image_answer`, so a field added here (or to the core's
``Prediction.as_dict``) appears in all of them. A batch item that failed carries the same
error shape as a failed request (:func:`error_item`).
"""

from __future__ import annotations


def image_answer(prediction) -> dict:
    """The per-image fields of a ``/predict`` answer: label, probabilities, threshold, ..."""
    return prediction.as_dict()


def error_item(code: str, message: str) -> dict:
    """``{"error": {"code", "message"}}``: the API's one error shape, here for one batch item."""
    return {"error": {"code": code, "message": message}}
