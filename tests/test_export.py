"""The ONNX export: verified on real X-rays, keyed by the .h5's sha256, written atomically."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from cxr.metadata import sha256_file
from cxr.onnx_status import FEATURES_OUTPUT, PROBS_OUTPUT, export_meta_path, export_status, onnx_path
from model_training.export import TOLERANCE, ExportError, ensure_export, export

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def copy_model(model: Path, folder: Path, with_export: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / model.name
    suffixes = [".h5", ".json"] + ([".onnx", ".onnx.json"] if with_export else [])
    for suffix in suffixes:
        shutil.copy2(model.with_suffix(suffix), target.with_suffix(suffix))
    return target


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env},
    )


def test_cli_help():
    result = subprocess.run([sys.executable, "-m", "model_training.export", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "--model" in result.stdout and "--tolerance" in result.stdout


def test_export_records_verification_on_real_xrays(tiny_onnx_model, data_dir):
    meta = json.loads(export_meta_path(tiny_onnx_model).read_text())
    assert meta["source_sha256"] == sha256_file(tiny_onnx_model)
    assert meta["onnx_sha256"] == sha256_file(onnx_path(tiny_onnx_model))
    check = meta["verification"]
    assert check["passed"] and check["tolerance"] == TOLERANCE
    assert 0 <= check["max_abs_prob_diff"] <= TOLERANCE
    assert len(check["images"]) == 4 and all((data_dir / p).is_file() for p in check["images"])
    assert {"covid", "normal"} == {Path(p).parts[-2] for p in check["images"]}
    assert meta["outputs"] == {PROBS_OUTPUT: [2], FEATURES_OUTPUT: [2, 2, 2048]}
    assert export_status(tiny_onnx_model) == (True, "valid")


def test_onnx_graph_matches_keras_on_real_xrays(tiny_onnx_model, sample_xrays):
    """Recomputed here, independently of the export's own record."""
    import onnxruntime as ort

    from cxr.preprocessing import load_image_file
    from model_training.model import load_classifier

    paths = sample_xrays["covid"][:2] + sample_xrays["normal"][:2]
    batch = np.stack([load_image_file(p, 64) for p in paths])
    keras_probs = load_classifier(tiny_onnx_model)(batch, training=False).numpy()
    session = ort.InferenceSession(str(onnx_path(tiny_onnx_model)), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == [PROBS_OUTPUT, FEATURES_OUTPUT]
    onnx_probs, features = session.run(None, {"image": batch})
    np.testing.assert_allclose(onnx_probs, keras_probs, atol=1e-4, rtol=0)
    assert features.shape == (4, 2, 2, 2048)


def test_stale_export_is_detected(tiny_onnx_model, tmp_path):
    """A changed .h5 (as after retraining) must never be served by the old export."""
    model = copy_model(tiny_onnx_model, tmp_path / "retrained")
    assert export_status(model)[0]
    with h5py.File(model, "r+") as f:  # a different but perfectly loadable model
        bias = f["model_weights/predictions/predictions/bias"]
        bias[...] = bias[...] + 1.0
    valid, reason = export_status(model)
    assert not valid and "stale" in reason

    result = run_python(f"from cxr.inference import load_predictor; print(load_predictor({str(model)!r}).backend)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "tensorflow"

    forced = run_python(f"from cxr.inference import load_predictor; load_predictor({str(model)!r}, backend='onnx')")
    assert forced.returncode != 0 and "stale export" in forced.stderr


def test_tampered_onnx_is_not_trusted(tiny_onnx_model, tmp_path):
    model = copy_model(tiny_onnx_model, tmp_path / "tampered")
    with open(onnx_path(model), "ab") as f:
        f.write(b"\0")
    valid, reason = export_status(model)
    assert not valid and "does not match" in reason


def test_failed_verification_writes_nothing(tiny_onnx_model, tmp_path, data_dir):
    model = copy_model(tiny_onnx_model, tmp_path / "strict", with_export=False)
    with pytest.raises(ExportError, match="differs from Keras"):
        export(model, data_dir=data_dir, images=2, tolerance=-1.0, log=lambda *_: None)
    assert {p.name for p in model.parent.iterdir()} == {model.name, model.with_suffix(".json").name}


def test_ensure_export_is_a_cheap_no_op_when_current(tiny_onnx_model, tmp_path):
    """At start-up or `make run` a current export costs one sha256, and no TensorFlow import."""
    model = copy_model(tiny_onnx_model, tmp_path / "current")
    before = onnx_path(model).stat().st_mtime_ns
    result = run_python(
        f"import sys; from model_training.export import ensure_export; ensure_export({str(model)!r}); "
        "print('tensorflow' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"
    assert onnx_path(model).stat().st_mtime_ns == before
    assert ensure_export(model, log=lambda *_: None) == onnx_path(model)
