"""int8 inference behind an accuracy guard (issue 22): which graph is served, and why.

The shipped model's twin is made as ``make model-runtime`` makes it (``shipped_runtime``):
calibrated on siim train, judged on all of siim val. The tiny model checks the guard's
rejection path, where the app must keep serving fp32 and say why.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests

from cxr.inference import load_predictor
from cxr.onnx_status import int8_meta_path, int8_path, int8_status
from model_training.quantize import MAX_AUC_DROP, MAX_FLIP_SHARE, quantize_twin
from tests.web_support import ROOT, GunicornServer

SIIM = ROOT.parent / "shared" / "data" / "siim"


def _copy_model(model, folder, suffixes=(".h5", ".json", ".onnx", ".onnx.json", ".int8.onnx", ".int8.onnx.json")):
    """The model and those of its artefacts that exist, in ``folder`` (to alter them safely)."""
    stem, out = str(model)[:-3], folder / model.name
    for suffix in suffixes:
        if Path(stem + suffix).exists():
            shutil.copy2(stem + suffix, str(out)[:-3] + suffix)
    return out


def test_shipped_twin_passed_its_guard_and_is_served_by_default(shipped_runtime, sample_xrays):
    valid, reason = int8_status(shipped_runtime)
    assert valid, reason
    record = json.loads(int8_meta_path(shipped_runtime).read_text())
    guard = record["guard"]
    assert guard["split"] == "siim val" and guard["images"] == 608 and guard["passed"]
    assert guard["auc_fp32"] - guard["auc_int8"] <= MAX_AUC_DROP
    assert guard["flips"] / guard["images"] <= MAX_FLIP_SHARE
    assert "siim train" in record["quantization"]["calibration"]

    int8 = load_predictor(shipped_runtime)  # auto: the twin, as make run serves it
    fp32 = load_predictor(shipped_runtime, precision="fp32")
    assert (int8.backend, int8.precision) == ("onnx", "int8") and int8.model_info()["precision"] == "int8"
    assert fp32.precision == "fp32" and fp32.model_info()["precision"] == "fp32"
    assert int8.onnx_path.stat().st_size < fp32.onnx_path.stat().st_size / 3
    xrays = [p.read_bytes() for p in sample_xrays["covid"] + sample_xrays["normal"]]
    p8 = np.array([r.probabilities["Covid"] for r in int8.predict_uploads(xrays)])
    p32 = np.array([r.probabilities["Covid"] for r in fp32.predict_uploads(xrays)])
    assert np.abs(p8 - p32).max() < 0.1  # close, not equal: the guard bounds decisions, not digits
    assert not np.allclose(p8, p32, atol=1e-6), "int8 gave fp32's exact answers: is it really the twin?"


def test_a_stale_or_altered_twin_is_never_served(shipped_runtime, tmp_path):
    model = _copy_model(shipped_runtime, tmp_path)
    assert int8_status(model)[0]
    twin = int8_path(model)
    twin.write_bytes(twin.read_bytes() + b"\0")
    valid, reason = int8_status(model)
    assert not valid and "does not match the sha256" in reason
    predictor = load_predictor(model)
    assert predictor.precision == "fp32" and "sha256" in predictor.precision_reason
    with pytest.raises(RuntimeError, match="precision int8 requested but"):
        load_predictor(model, precision="int8")

    record = json.loads(int8_meta_path(model).read_text())
    record["source_sha256"] = "0" * 64
    int8_meta_path(model).write_text(json.dumps(record))
    assert "stale int8 twin" in int8_status(model)[1]


def test_int8_needs_the_onnx_backend(shipped_runtime):
    with pytest.raises(RuntimeError, match="needs the onnx backend"):
        load_predictor(shipped_runtime, backend="tensorflow", precision="int8")
    assert load_predictor(shipped_runtime, backend="tensorflow").precision == "fp32"


def test_a_rejected_twin_leaves_a_record_that_says_why(tiny_onnx_model, tmp_path):
    """The guard's rejection path, forced with a limit no twin can meet: no graph, a record with
    the figures, the app serves fp32 and says why, and ``--if-missing`` does not try again."""
    model = _copy_model(tiny_onnx_model, tmp_path, (".h5", ".json", ".onnx", ".onnx.json"))
    logs = []
    assert quantize_twin(model, data_dir=SIIM, calibration_per_class=8, guard_per_class=24,
                         limits=(MAX_AUC_DROP, -1.0), log=logs.append) is None
    assert not int8_path(model).exists()
    record = json.loads(int8_meta_path(model).read_text())
    assert record["guard"]["passed"] is False and record["guard"]["images"] == 48
    assert len(record["attempts"]) == 2  # every recipe was tried
    valid, reason = int8_status(model)
    assert not valid and reason.startswith("int8 twin rejected by its accuracy guard: ")
    predictor = load_predictor(model)
    assert predictor.precision == "fp32" and "rejected" in predictor.precision_reason
    result = subprocess.run([sys.executable, "-m", "model_training.export", "--model", str(model), "--if-missing"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "int8:" not in result.stdout, result.stdout + result.stderr


def test_readyz_and_answers_say_the_precision(shipped_runtime, sample_xrays):
    xray = sample_xrays["normal"][0].read_bytes()
    for precision in ("fp32", "int8"):
        with GunicornServer(shipped_runtime, extra_env={"INFERENCE_PRECISION": precision}) as server:
            server.wait_ready()
            ready = requests.get(server.url + "/readyz", timeout=10).json()
            answer = requests.post(server.url + "/predict", files={"file": ("x.jpg", xray)}, timeout=60).json()
            assert ready["model"]["precision"] == answer["model"]["precision"] == precision


def test_export_help_names_the_int8_switch():
    result = subprocess.run([sys.executable, "-m", "model_training.export", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--no-int8" in result.stdout and "--int8-data-dir" in result.stdout


def test_gradcam_on_the_int8_feature_map_matches_fp32(shipped_runtime, sample_xrays):
    """Grad-CAM reads the served pass's own feature map (int8 when the twin serves), so a heatmap
    always goes with the label it explains. Against fp32's heatmap of the same class: measured on
    20 siim test films, correlation median 0.999, lowest 0.88."""
    from cxr.explain import explain_upload

    fp32 = load_predictor(shipped_runtime, precision="fp32")
    int8 = load_predictor(shipped_runtime, precision="int8")
    correlations = []
    for path in sample_xrays["covid"] + sample_xrays["normal"]:
        data = path.read_bytes()
        a, _ = explain_upload(fp32, data, "Covid")
        b, _ = explain_upload(int8, data, "Covid")
        assert a.heatmap.shape == b.heatmap.shape
        correlations.append(np.corrcoef(a.heatmap.ravel(), b.heatmap.ravel())[0, 1])
    assert np.median(correlations) >= 0.98 and min(correlations) >= 0.8, correlations
