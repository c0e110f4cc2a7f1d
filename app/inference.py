"""Model loading and the compiled inference call used by the web app.

The model is loaded once per worker and wrapped in a ``tf.function`` with a fixed input
signature: ``model.predict`` builds a new data pipeline on every call and costs about
twice the forward pass for a single image. Input size, class names and threshold come
from the model's own sidecar metadata.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_training.metadata import CLASS_NAMES, POSITIVE_CLASS, read_metadata, sha256_file
from model_training.preprocessing import load_image_bytes


@dataclass
class Prediction:
    label: str
    probabilities: dict[str, float]
    threshold: float
    inference_ms: float

    def as_dict(self) -> dict:
        return {
            "label": self.label,
            "probabilities": self.probabilities,
            "threshold": self.threshold,
            "inference_ms": round(self.inference_ms, 2),
        }


class Predictor:
    """One loaded model plus its metadata; ``forward`` is the backend-specific part."""

    backend = "tensorflow"

    def __init__(self, model_path: str | Path, metadata: dict, sha256: str):
        self.model_path = Path(model_path)
        self.metadata = metadata
        self.sha256 = sha256
        self.name = metadata.get("name", self.model_path.stem)
        self.input_size = int(metadata["input_size"])
        self.class_names = tuple(metadata.get("class_names", CLASS_NAMES))
        self.threshold = float(metadata.get("threshold", 0.5))
        if self.class_names != CLASS_NAMES:
            raise ValueError(f"{model_path}: class order {self.class_names} differs from {CLASS_NAMES}")

    def forward(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def model_info(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "input_size": self.input_size,
                "backend": self.backend}

    def preprocess(self, data: bytes) -> np.ndarray:
        return load_image_bytes(data, self.input_size)

    def predict_array(self, image: np.ndarray) -> Prediction:
        started = time.perf_counter()
        probs = self.forward(image[np.newaxis].astype(np.float32, copy=False))[0]
        elapsed = (time.perf_counter() - started) * 1000
        probabilities = {name: float(p) for name, p in zip(self.class_names, probs)}
        positive = probabilities[POSITIVE_CLASS]
        label = POSITIVE_CLASS if positive >= self.threshold else _other(self.class_names)
        return Prediction(label, probabilities, self.threshold, elapsed)

    def predict_bytes(self, data: bytes) -> Prediction:
        return self.predict_array(self.preprocess(data))

    def warm_up(self) -> None:
        """One inference on a blank image, so the first user does not pay for tracing."""
        self.forward(np.zeros((1, self.input_size, self.input_size, 3), dtype=np.float32))


def _other(class_names) -> str:
    return next(c for c in class_names if c != POSITIVE_CLASS)


class TensorFlowPredictor(Predictor):
    backend = "tensorflow"

    def __init__(self, model_path, metadata, sha256):
        super().__init__(model_path, metadata, sha256)
        import tensorflow as tf

        from model_training.model import load_classifier

        self.model = load_classifier(model_path)
        spec = tf.TensorSpec((None, self.input_size, self.input_size, 3), tf.float32)
        self._call = tf.function(lambda x: self.model(x, training=False), input_signature=[spec])

    def forward(self, batch: np.ndarray) -> np.ndarray:
        return self._call(batch).numpy()


def load_predictor(model_path: str | Path) -> Predictor:
    """Load the model at ``model_path`` with its sidecar metadata and warm it up."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"Model file {model_path} not found (set MODEL_PATH).")
    metadata = read_metadata(model_path)
    sha = sha256_file(model_path)
    predictor = TensorFlowPredictor(model_path, metadata, sha)
    predictor.warm_up()
    return predictor
