"""The one explain flow: a prediction and its Grad-CAM heatmap from the same forward pass.

Used by the web API (``/predict?explain=true``, through ``app.explanations``), the explain CLI
and the report grid (``model_training.explain``) and the benchmarks, so a heatmap always
belongs to the answer the API gives for the same image: the same preprocessing, input gate,
calibration and operating point (``Predictor.predict_with_features``). ``class_name`` None
explains the predicted label. The Grad-CAM arithmetic itself is ``cxr.gradcam``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .decode import decode_image_colour
from .gradcam import DEFAULT_OPACITY, MAX_SIDE, gradcam, head_type_for, overlay, png_bytes
from .inference import Prediction, Predictor
from .preprocessing import prepare_gray


@dataclass
class Explanation:
    """A prediction plus the Grad-CAM of ``explained_class`` (heatmap at feature resolution)."""

    prediction: Prediction
    explained_class: str
    heatmap: np.ndarray
    feature_map: np.ndarray  # (h, w, C): what the heatmap and the input gate were computed from

    @property
    def label(self) -> str:
        return self.prediction.label

    @property
    def probabilities(self) -> dict[str, float]:
        return self.prediction.probabilities

    def overlay_png(self, gray: np.ndarray, opacity: float = DEFAULT_OPACITY,
                    max_side: int = MAX_SIDE, colormap: str = "inferno") -> bytes:
        """The heatmap over ``gray`` (the decoded image, at its own aspect ratio) as PNG bytes."""
        return png_bytes(overlay(gray, self.heatmap, opacity=opacity, max_side=max_side, colormap=colormap))


def explain_gray(predictor: Predictor, gray: np.ndarray, class_name: str | None = None, *,
                 operating_point: str | None = None, colourfulness: float = 0.0) -> Explanation:
    """Explain one decoded uint8 gray image; raises ``NotAChestXray`` when the input gate refuses it,
    ``ValueError`` for a ``class_name`` the model does not have."""
    names = predictor.class_names
    if class_name is not None and class_name not in names:
        raise ValueError(f"class must be one of {names}, not {class_name!r}")
    prepared = prepare_gray(gray, predictor.input_size, colourfulness)
    prediction, features = predictor.predict_with_features(prepared, operating_point)
    target = class_name or prediction.label
    kernel, _bias = predictor.head_weights()
    head = head_type_for(kernel, features.shape, predictor.head_type)
    return Explanation(prediction, target, gradcam(features, kernel, names.index(target), head), features)


def explain_upload(predictor: Predictor, data: bytes, class_name: str | None = None, *,
                   operating_point: str | None = None) -> tuple[Explanation, np.ndarray]:
    """Upload bytes (PNG, JPEG or DICOM) -> the explanation and the decoded gray image (for the overlay)."""
    gray, colour = decode_image_colour(data)
    return explain_gray(predictor, gray, class_name, operating_point=operating_point, colourfulness=colour), gray
