"""Inputs for the input-gate tests (issue 12): the issue's photographs and a real X-ray the gate
finds unlike the training data."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_sample_image

from cxr.errors import NotAChestXray
from tests.web_support import ROOT

MODEL = ROOT / "models" / "covid_resnet50.h5"


def encode(array: np.ndarray, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format=fmt)
    return out.getvalue()


def sample_photos() -> dict[str, bytes]:
    """The issue's examples: scikit-learn's temple and flower, in colour and in gray, plus noise."""
    photos = {}
    for name in ("china", "flower"):
        image = load_sample_image(f"{name}.jpg")
        photos[f"{name}.jpg"] = encode(image, "JPEG")
        photos[f"{name}_gray.jpg"] = encode(np.asarray(Image.fromarray(image).convert("L")), "JPEG")
    photos["noise.png"] = encode(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8))
    return photos


def out_of_distribution_xray(predictor) -> tuple[str, bytes]:
    """A real test X-ray the gate accepts but finds unlike the training data."""
    for path in sorted((ROOT.parent / "shared" / "data" / "cxr" / "test").glob("*/*.jpg")):
        data = path.read_bytes()
        try:
            prediction = predictor.predict_upload(data)
        except NotAChestXray:
            continue
        if prediction.in_distribution is False:
            return path.name, data
    pytest.fail("no test X-ray is out of distribution, yet the report counts some")
