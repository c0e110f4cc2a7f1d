"""One config flow: every setting comes from the environment or from ``create_app({...})``,
parsed by the one shared parser (``cxr.settings``), and reaches the code that uses it. One test
per group of settings, through the real app serving a real (tiny) model."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from app import create_app
from app.config import DEFAULTS, load_config
from cxr.settings import parse_bool

ROOT = Path(__file__).resolve().parents[1]


def test_the_core_reads_no_environment_variable():
    offenders = [str(p) for p in (ROOT / "cxr").glob("*.py")
                 if "os.environ" in p.read_text() or "getenv" in p.read_text()]
    assert offenders == []


def test_every_setting_is_parsed_the_same_from_the_environment_and_from_overrides():
    environ = {"INFERENCE_SPIN": "on", "MAX_UPLOAD_MB": "2.5", "BATCH_MAX_FILES": "3", "LOAD_MODEL_ASYNC": "off"}
    from_env = load_config(environ=environ)
    from_overrides = load_config(overrides=environ, environ={})
    for key in environ:
        assert from_env[key] == from_overrides[key], key
    assert from_env["INFERENCE_SPIN"] is True and from_env["LOAD_MODEL_ASYNC"] is False
    assert load_config(environ={}) == {**DEFAULTS, "INFERENCE_SPIN": False, "LOAD_MODEL_ASYNC": True}
    assert [parse_bool("X", w) for w in ("1", "true", "YES", "on", "0", "no", "off", "")] == [True] * 4 + [False] * 4
    for key, bad in (("INFERENCE_SPIN", "maybe"), ("INFERENCE_CONCURRENCY", "-1"), ("BATCH_MAX_FILES", "many"),
                     ("INFERENCE_BACKEND", "fastest"), ("MAX_UPLOAD_MB", "0")):
        with pytest.raises(ValueError, match=key):
            load_config(environ={key: bad})


def test_upload_limit_override(tiny_model, sample_xrays):
    client = create_app({"MODEL_PATH": str(tiny_model), "LOAD_MODEL_ASYNC": "false",
                         "MAX_UPLOAD_MB": "0.005"}).test_client()
    image = sample_xrays["covid"][0].read_bytes()
    assert len(image) > 0.005 * 2**20
    response = client.post("/predict", data=image, content_type="image/jpeg")
    assert response.status_code == 413 and "0.005 MB" in response.get_json()["error"]["message"]


def test_batch_limit_override(tiny_model, sample_xrays):
    client = create_app({"MODEL_PATH": str(tiny_model), "LOAD_MODEL_ASYNC": False,
                         "BATCH_MAX_FILES": "1"}).test_client()
    files = [(io.BytesIO(p.read_bytes()), p.name) for p in sample_xrays["covid"][:2]]
    response = client.post("/predict/batch", data={"files": files})
    assert response.status_code == 413 and response.get_json()["error"]["code"] == "too_many_files"


def test_api_key_override(tiny_model, sample_xrays):
    client = create_app({"MODEL_PATH": str(tiny_model), "LOAD_MODEL_ASYNC": False,
                         "API_KEY": "s3cret"}).test_client()
    image = sample_xrays["covid"][0].read_bytes()
    assert client.post("/predict", data=image, content_type="image/jpeg").status_code == 401
    ok = client.post("/predict", data=image, content_type="image/jpeg", headers={"X-API-Key": "s3cret"})
    assert ok.status_code == 200


def test_inference_settings_reach_the_predictor(tiny_onnx_model):
    for backend in ("onnx", "tensorflow"):
        app = create_app({"MODEL_PATH": str(tiny_onnx_model), "LOAD_MODEL_ASYNC": False, "INFERENCE_BACKEND": backend,
                          "INFERENCE_INTRA_OP_THREADS": "1", "INFERENCE_SPIN": "on", "INFERENCE_CONCURRENCY": 1})
        ready = app.test_client().get("/readyz").get_json()
        assert ready["model"]["backend"] == backend
        predictor = app.extensions["cxr_model"].predictor
        assert (predictor.threads.intra_op, predictor.threads.spin, predictor.threads.concurrency) == (1, True, 1)


def test_model_loading_settings(tiny_model, tmp_path):
    missing = create_app({"MODEL_PATH": str(tmp_path / "absent.h5"), "LOAD_MODEL_ASYNC": "no", "READY_WAIT_S": "0"})
    response = missing.test_client().get("/readyz")
    assert response.status_code == 503 and "absent.h5" in response.get_json()["error"]["message"]


def test_gunicorn_settings_use_the_shared_parser():
    """gunicorn.conf.py parses its settings with cxr.settings: a bad value names the setting."""
    code = "import runpy; print(runpy.run_path('gunicorn.conf.py')['worker_class'].request_read_timeout)"
    bad = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "GUNICORN_THREADS": "four"})
    assert bad.returncode != 0 and "GUNICORN_THREADS='four' is not an integer" in bad.stderr
    good = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "REQUEST_READ_TIMEOUT": "7"})
    assert good.returncode == 0 and good.stdout.strip() == "7.0", good.stderr
