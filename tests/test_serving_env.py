"""The lean serving environment (issue 22): ``requirements-serve.txt`` alone, no TensorFlow.

The served Docker image installs only that file; here a fresh virtualenv made from it (cached
like a Docker layer, ``tests.deploy_support.cached_venv``) runs ``make run``'s gunicorn command on
the shipped model, and every answer is compared with the same request to a server from the
full environment (the tests' own). What must hold there: same labels and probabilities (1e-4),
same refusals, DICOM and Grad-CAM work, TensorFlow and the training stack cannot be imported,
and a missing export is a clear start-up error at /readyz rather than a crash loop.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.deploy_support import cached_venv
from tests.gate_inputs import sample_photos
from tests.test_dicom import make_dicom
from tests.web_support import ROOT, GunicornServer
from tests.xray_inputs import gray_image, random_bytes, truncated

pytestmark = pytest.mark.slow
SIZE_LIMIT_MB = 400  # the target for the serving virtualenv
TRAINING_STACK = ("tensorflow", "keras", "tf2onnx", "onnx", "sklearn", "matplotlib")


@pytest.fixture(scope="module")
def serve_venv() -> Path:
    return cached_venv(ROOT / "requirements-serve.txt", "serve-venv")


def venv_megabytes(venv: Path) -> float:
    return sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6


def test_serving_env_is_small_and_has_no_training_stack(serve_venv):
    python = str(serve_venv / "bin" / "python")
    for module in TRAINING_STACK:
        result = subprocess.run([python, "-c", f"import {module}"], capture_output=True, text=True, timeout=60)
        assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr, module
    size = venv_megabytes(serve_venv)
    print(f"serving virtualenv: {size:.0f} MB")
    assert size < SIZE_LIMIT_MB


def _requests(sample_xrays) -> dict[str, tuple[str, bytes, dict]]:
    """name -> (path and query, body, headers): X-rays, a DICOM, a heatmap, a photograph, broken files."""
    xrays = sample_xrays["covid"][:2] + sample_xrays["normal"][:2]
    out = {p.name: ("/predict", p.read_bytes(), {"Content-Type": "image/jpeg"}) for p in xrays}
    out["high_sensitivity"] = ("/predict?operating_point=high_sensitivity", xrays[0].read_bytes(),
                               {"Content-Type": "image/jpeg"})
    pixels = np.asarray(gray_image(xrays[1]), dtype=np.uint8)
    out["dicom"] = ("/predict", make_dicom(pixels), {"Content-Type": "application/dicom"})
    out["explain"] = ("/predict?explain=true", xrays[2].read_bytes(), {"Content-Type": "image/jpeg"})
    out["photo"] = ("/predict", sample_photos()["china.jpg"], {"Content-Type": "image/jpeg"})
    out["truncated"] = ("/predict", truncated(xrays[3].read_bytes()), {"Content-Type": "image/jpeg"})
    out["garbage"] = ("/predict", random_bytes(), {"Content-Type": "application/octet-stream"})
    return out


def _answers(server: GunicornServer, calls) -> dict[str, tuple[int, dict]]:
    server.wait_ready()
    out = {}
    for name, (path, body, headers) in calls.items():
        response = requests.post(server.url + path, data=body, headers=headers, timeout=120)
        out[name] = (response.status_code, response.json())
    return out


def test_serving_env_answers_like_the_full_env(serve_venv, shipped_runtime, sample_xrays):
    calls = _requests(sample_xrays)
    with GunicornServer(shipped_runtime, python=serve_venv / "bin" / "python") as lean:
        lean_answers = _answers(lean, calls)
    with GunicornServer(shipped_runtime) as full:
        full_answers = _answers(full, calls)
    for name in calls:
        (lean_status, lean_body), (full_status, full_body) = lean_answers[name], full_answers[name]
        assert lean_status == full_status, (name, lean_body, full_body)
        if lean_status != 200:
            assert lean_body["error"]["code"] == full_body["error"]["code"], name
            continue
        assert lean_body["label"] == full_body["label"], name
        for cls, p in full_body["probabilities"].items():
            assert abs(lean_body["probabilities"][cls] - p) <= 1e-4, (name, cls)
        assert lean_body["in_distribution"] == full_body["in_distribution"], name
        assert lean_body["operating_point"] == full_body["operating_point"], name
        assert lean_body["model"] == full_body["model"], name
    assert lean_answers["photo"][1]["error"]["code"] == "not_a_chest_xray"
    assert lean_answers["garbage"][1]["error"]["code"] in ("not_an_image", "undecodable_image")
    assert lean_answers["dicom"][0] == 200 and lean_answers["explain"][1]["heatmap_png"]
    assert lean_answers["high_sensitivity"][1]["operating_point"] == "high_sensitivity"


def test_serving_env_without_export_says_why_and_stays_up(serve_venv, tmp_path):
    """No valid ONNX export and no TensorFlow: the workers start, /healthz answers, /readyz gives
    503 with the reason and the fix; nothing restarts in a loop."""
    model = tmp_path / "covid_resnet50.h5"
    for suffix in (".h5", ".json"):
        shutil.copy2(ROOT / "models" / f"covid_resnet50{suffix}", model.with_suffix(suffix))
    with GunicornServer(model, python=serve_venv / "bin" / "python") as server:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "model load failed" not in server.log_text():
            assert server.proc.poll() is None, server.log_text()[-3000:]
            time.sleep(0.3)
        pids = server.worker_pids()
        assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
        ready = requests.get(server.url + "/readyz", timeout=5)
        assert ready.status_code == 503
        message = ready.json()["error"]["message"]
        assert "TensorFlow is not installed" in message and "make export" in message, message
        time.sleep(2)
        assert server.proc.poll() is None and server.worker_pids() == pids, "workers restarted"
        assert server.log_text().count("model load failed") == 1
    assert not os.path.exists(model.with_suffix(".onnx"))
