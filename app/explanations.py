"""``POST /predict?explain=true``: the prediction plus a Grad-CAM overlay as base64 PNG.

Kept out of the plain request path: ``/predict`` only reads the ``explain`` query flag and
calls :func:`explain_upload` when it is set. One forward pass serves both the probabilities
and the heatmap (``Predictor.forward_features``), so an explained request costs about one
prediction plus a few milliseconds of NumPy and PNG encoding, on either backend; nothing
here imports TensorFlow when the predictor runs on ONNX Runtime.
"""

from __future__ import annotations

import base64
import time

from cxr.decode import decode_image
from cxr.gradcam import DEFAULT_OPACITY, MAX_SIDE, explain_gray

TRUE_VALUES = ("1", "true", "yes", "on")
FALSE_VALUES = ("", "0", "false", "no", "off")


def parse_flag(raw: str | None) -> bool | None:
    """Query flag -> True/False; None when the value is not a recognisable boolean."""
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in TRUE_VALUES:
        return True
    if value in FALSE_VALUES:
        return False
    return None


def explain_upload(predictor, data: bytes, class_name: str | None = None, *,
                   opacity: float = DEFAULT_OPACITY, max_side: int = MAX_SIDE) -> dict:
    """Upload bytes -> the /predict JSON fields plus ``explained_class`` and ``heatmap_png``."""
    gray = decode_image(data)
    with predictor.gated():  # the same per-process inference gate as plain predictions
        started = time.perf_counter()
        explanation = explain_gray(predictor, gray, class_name)
        inference_ms = (time.perf_counter() - started) * 1000
    png = explanation.overlay_png(gray, opacity=opacity, max_side=max_side)
    return {
        "label": explanation.label,
        "probabilities": explanation.probabilities,
        "threshold": predictor.threshold,
        "inference_ms": round(inference_ms, 2),
        "explained_class": explanation.explained_class,
        "heatmap_png": base64.b64encode(png).decode("ascii"),
    }
