"""Both inference backends serve the same .h5 with the same answers; ONNX needs no TensorFlow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cxr.inference import (
    OnnxPredictor,
    TensorFlowPredictor,
    ThreadSettings,
    load_predictor,
    resolve_backend,
)
from cxr.metadata import sha256_file

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def predictors(tiny_onnx_model):
    return {
        "onnx": load_predictor(tiny_onnx_model, backend="onnx"),
        "tensorflow": load_predictor(tiny_onnx_model, backend="tensorflow"),
    }


@pytest.fixture(scope="module")
def xray_bytes(sample_xrays):
    return [p.read_bytes() for p in sample_xrays["covid"][:2] + sample_xrays["normal"][:2]]


def test_backend_classes(predictors):
    assert isinstance(predictors["onnx"], OnnxPredictor) and predictors["onnx"].backend == "onnx"
    assert isinstance(predictors["tensorflow"], TensorFlowPredictor)
    assert predictors["onnx"].model_info()["backend"] == "onnx"


def test_auto_prefers_a_valid_export(tiny_onnx_model, tiny_model):
    assert resolve_backend(tiny_onnx_model, sha256_file(tiny_onnx_model))[0] == "onnx"
    # tiny_model itself has no export beside it
    backend, reason = resolve_backend(tiny_model, sha256_file(tiny_model))
    assert backend == "tensorflow" and "no export" in reason
    with pytest.raises(RuntimeError, match="no export"):
        resolve_backend(tiny_model, sha256_file(tiny_model), "onnx")
    with pytest.raises(ValueError, match="fastest"):
        resolve_backend(tiny_onnx_model, "x", "fastest")


def test_both_backends_give_the_same_prediction(predictors, xray_bytes):
    for data in xray_bytes:
        onnx, tf = (predictors[b].predict_upload(data) for b in ("onnx", "tensorflow"))
        assert onnx.label == tf.label
        for name in ("Covid", "Normal"):
            assert abs(onnx.probabilities[name] - tf.probabilities[name]) <= 1e-4
        assert onnx.threshold == tf.threshold
        assert json.dumps(onnx.as_dict()) and onnx.inference_ms > 0


def test_features_and_head_reproduce_the_probabilities(predictors, xray_bytes):
    """What Grad-CAM relies on: features (N,h,w,2048) and the Dense head, the same on both backends."""
    onnx = predictors["onnx"]
    batch = np.stack([onnx.prepare(b).array for b in xray_bytes])
    results = {name: p.forward_features(batch) for name, p in predictors.items()}
    for probs, features in results.values():
        assert probs.shape == (4, 2) and features.shape == (4, 2, 2, 2048)
        assert features.dtype == np.float32
    scale = np.abs(results["tensorflow"][1]).max()
    np.testing.assert_allclose(results["onnx"][1], results["tensorflow"][1], atol=1e-4 * scale, rtol=0)
    np.testing.assert_allclose(results["onnx"][0], onnx.forward(batch), atol=1e-6)

    kernel, bias = onnx.head_weights()
    assert onnx.head_type == "gap" and kernel.shape == (2048, 2) and bias.shape == (2,)
    tf_kernel, tf_bias = predictors["tensorflow"].model.get_layer("predictions").get_weights()
    np.testing.assert_array_equal(kernel, tf_kernel)
    np.testing.assert_array_equal(bias, tf_bias)
    logits = results["onnx"][1].mean(axis=(1, 2)) @ kernel + bias  # GAP -> Dense, by hand
    by_hand = np.exp(logits - logits.max(1, keepdims=True))
    by_hand /= by_hand.sum(1, keepdims=True)
    np.testing.assert_allclose(by_hand, results["onnx"][0], atol=1e-5)


def test_onnx_backend_never_imports_tensorflow(tiny_onnx_model, sample_xrays):
    code = (
        "import sys, numpy as np\n"
        "from cxr.inference import load_predictor\n"
        f"p = load_predictor({str(tiny_onnx_model)!r}, backend='onnx')\n"
        f"pred = p.predict_upload(open({str(sample_xrays['covid'][0])!r}, 'rb').read())\n"
        "probs, feats = p.forward_features(np.zeros((1, 64, 64, 3), np.float32))\n"
        "p.head_weights()\n"
        "print(p.backend, feats.shape[-1], sorted(m for m in ('tensorflow', 'keras', 'tf2onnx') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "onnx 2048 []"


def test_thread_settings_from_the_app_config():
    from app.config import load_config, predictor_settings

    assert predictor_settings(load_config(environ={}))["threads"] == ThreadSettings(
        len(os.sched_getaffinity(0)), 1, False, 0)
    env = {"INFERENCE_INTRA_OP_THREADS": "1", "INFERENCE_INTER_OP_THREADS": "2", "INFERENCE_SPIN": "1",
           "INFERENCE_CONCURRENCY": "2"}
    assert predictor_settings(load_config(environ=env))["threads"] == ThreadSettings(1, 2, True, 2)
    with pytest.raises(ValueError, match="INFERENCE_INTRA_OP_THREADS"):
        load_config(environ={"INFERENCE_INTRA_OP_THREADS": "two"})


def test_onnx_session_uses_the_thread_settings(tiny_onnx_model):
    predictor = load_predictor(tiny_onnx_model, backend="onnx", threads=ThreadSettings.resolve(intra_op=1))
    assert predictor.threads.intra_op == 1
    assert predictor.session.get_session_options().intra_op_num_threads == 1
