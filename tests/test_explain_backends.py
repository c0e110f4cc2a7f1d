"""Grad-CAM through both inference backends: same heatmap, and ONNX needs no TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from cxr.decode import decode_image
from cxr.explain import explain_gray
from cxr.inference import load_predictor
from model_training import explain
from tests.web_support import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def predictors(tiny_onnx_model):
    return {b: load_predictor(tiny_onnx_model, backend=b) for b in ("onnx", "tensorflow")}


def test_both_backends_give_the_same_explanation(predictors, sample_xrays):
    for path in sample_xrays["covid"][:2] + sample_xrays["normal"][:2]:
        gray = decode_image(path.read_bytes())
        onnx = explain_gray(predictors["onnx"], gray)
        tf = explain_gray(predictors["tensorflow"], gray)
        assert onnx.label == tf.label and onnx.explained_class == tf.explained_class
        assert onnx.probabilities["Covid"] == pytest.approx(tf.probabilities["Covid"], abs=1e-4)
        np.testing.assert_allclose(onnx.heatmap, tf.heatmap, atol=1e-3)
        assert onnx.heatmap.max() > onnx.heatmap.min()


def test_explain_on_onnx_imports_no_tensorflow(tiny_onnx_model, sample_xrays, tmp_path):
    """The CLI path and the app path on ONNX Runtime: Grad-CAM without TensorFlow."""
    out = tmp_path / "heatmap.png"
    script = (
        "import json, sys\n"
        "from model_training import explain\n"
        f"rc = explain.main(['--model', {str(tiny_onnx_model)!r}, '--image', "
        f"{str(sample_xrays['covid'][0])!r}, '--out', {str(out)!r}, '--backend', 'onnx'])\n"
        "print(json.dumps({'rc': rc, 'tf': 'tensorflow' in sys.modules, 'keras': 'keras' in sys.modules}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"rc": 0, "tf": False, "keras": False}
    assert out.stat().st_size > 1000


def test_default_source_follows_the_app_backend_choice(tiny_onnx_model):
    assert explain.feature_source(tiny_onnx_model).backend == "onnx"
