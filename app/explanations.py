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

import numpy as np

from app.answers import image_answer
from cxr.decode import decode_image_colour
from cxr.gradcam import DEFAULT_OPACITY, MAX_SIDE, explain_gray
from cxr.preprocessing import prepare_gray

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
    """Upload bytes -> the /predict JSON fields plus ``explained_class`` and ``heatmap_png``.

    The input gate reads the same forward pass's feature map: an image it refuses raises
    ``NotAChestXray`` (422) before any heatmap is drawn.
    """
    gray, colour = decode_image_colour(data)
    prepared = prepare_gray(gray, predictor.input_size, colour)
    with predictor.inference_slot():  # the same concurrency limit as plain predictions
        started = time.perf_counter()
        explanation = explain_gray(predictor, gray, class_name, prepared.array)
        inference_ms = (time.perf_counter() - started) * 1000
    verdict = predictor.check_input(explanation.feature_map[np.newaxis], prepared)
    probs = np.array([explanation.probabilities[name] for name in predictor.class_names])
    answer = image_answer(predictor.prediction_from(probs, inference_ms, verdict))
    png = explanation.overlay_png(gray, opacity=opacity, max_side=max_side)
    answer["explained_class"] = explanation.explained_class
    answer["heatmap_png"] = base64.b64encode(png).decode("ascii")
    return answer
