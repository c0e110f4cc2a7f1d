"""``POST /predict?explain=true``: the prediction plus a Grad-CAM overlay as base64 PNG.

Kept out of the plain request path: ``/predict`` only reads the ``explain`` query flag and
calls :func:`explain_answer` when it is set. One forward pass serves both the probabilities
and the heatmap (``Predictor.forward_features``), so an explained request costs about one
prediction plus a few milliseconds of NumPy and PNG encoding, on either backend; nothing
here imports TensorFlow when the predictor runs on ONNX Runtime.
"""

from __future__ import annotations

import base64

from app.answers import image_answer
from cxr.explain import explain_upload
from cxr.gradcam import DEFAULT_OPACITY, MAX_SIDE

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


def explain_answer(predictor, data: bytes, class_name: str | None = None, *, operating_point: str | None = None,
                   opacity: float = DEFAULT_OPACITY, max_side: int = MAX_SIDE) -> dict:
    """Upload bytes -> the /predict JSON fields plus ``explained_class`` and ``heatmap_png``.

    The core's one explain flow (``cxr.explain``): the input gate reads the same forward pass's
    feature map, so an image it refuses raises ``NotAChestXray`` (422) before any heatmap is drawn.
    """
    explanation, gray = explain_upload(predictor, data, class_name, operating_point=operating_point)
    answer = image_answer(explanation.prediction)
    answer["explained_class"] = explanation.explained_class
    answer["heatmap_png"] = base64.b64encode(explanation.overlay_png(gray, opacity, max_side)).decode("ascii")
    return answer
