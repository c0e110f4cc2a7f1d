"""The Flask app through its test client, against a real tiny model (no mocks)."""

from __future__ import annotations

import hashlib
import io
import logging
import re

import numpy as np
import pytest

DISCLAIMER_WORDS = ("research demo", "not a diagnosis")


@pytest.fixture(scope="module")
def xray_bytes(sample_xrays):
    return sample_xrays["covid"][0].read_bytes()


def check_prediction(body: dict, tiny_model) -> None:
    assert set(body) >= {"label", "probabilities", "threshold", "model", "inference_ms", "disclaimer"}
    probs = body["probabilities"]
    assert set(probs) == {"Covid", "Normal"}
    assert abs(probs["Covid"] + probs["Normal"] - 1.0) < 1e-5
    assert body["label"] in ("Covid", "Normal")
    assert body["label"] == ("Covid" if probs["Covid"] >= body["threshold"] else "Normal")
    assert body["model"]["sha256"] == hashlib.sha256(tiny_model.read_bytes()).hexdigest()
    assert body["model"]["input_size"] == 64
    assert body["model"]["name"]
    assert body["inference_ms"] > 0
    assert all(w in body["disclaimer"].lower() for w in DISCLAIMER_WORDS)


def test_healthz_and_readyz(client, tiny_model):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["model"]["sha256"] == hashlib.sha256(tiny_model.read_bytes()).hexdigest()


def test_predict_multipart_and_raw_body_agree(client, xray_bytes, tiny_model):
    multipart = client.post("/predict", data={"file": (io.BytesIO(xray_bytes), "scan.jpg")},
                            content_type="multipart/form-data")
    raw = client.post("/predict", data=xray_bytes, content_type="image/jpeg")
    # curl --data-binary without -H sends application/x-www-form-urlencoded: still the raw image.
    curl_default = client.post("/predict", data=xray_bytes,
                               content_type="application/x-www-form-urlencoded")
    for response in (multipart, raw, curl_default):
        assert response.status_code == 200, response.data
        check_prediction(response.get_json(), tiny_model)
    assert multipart.get_json()["probabilities"] == pytest.approx(raw.get_json()["probabilities"])
    assert raw.get_json()["label"] == curl_default.get_json()["label"]


def test_predict_matches_the_keras_model(client, sample_xrays, tiny_model):
    """The served answer is the model's own forward pass on the shared preprocessing."""
    from cxr.preprocessing import load_image_file
    from model_training.model import load_classifier

    model = load_classifier(tiny_model)
    paths = sample_xrays["covid"][:2] + sample_xrays["normal"][:2]
    batch = np.stack([load_image_file(p, 64) for p in paths])
    expected = model(batch, training=False).numpy()
    for path, probs in zip(paths, expected):
        body = client.post("/predict", data=path.read_bytes(), content_type="image/jpeg").get_json()
        assert body["probabilities"]["Covid"] == pytest.approx(float(probs[0]), abs=1e-4)
        assert body["probabilities"]["Normal"] == pytest.approx(float(probs[1]), abs=1e-4)


@pytest.mark.parametrize("request_kwargs, status, code", [
    ({"data": b"", "content_type": "image/png"}, 400, "empty_input"),
    ({"data": {"file": (io.BytesIO(b""), "empty.png")}, "content_type": "multipart/form-data"},
     400, "empty_input"),
    ({"data": {"note": "no file here"}, "content_type": "multipart/form-data"}, 400, "no_file"),
    ({"data": b"GIF89a" + b"\0" * 64, "content_type": "image/gif"}, 415, "unsupported_media_type"),
    ({"data": b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "content_type": "image/png"}, 422, "undecodable_image"),
    ({"data": b"x" * (10 * 1024 * 1024 + 1), "content_type": "image/png"}, 413, "payload_too_large"),
])
def test_predict_error_statuses(client, request_kwargs, status, code):
    response = client.post("/predict", **request_kwargs)
    assert response.status_code == status, response.data
    assert response.get_json() == {"error": {"code": code, "message": response.get_json()["error"]["message"]}}
    assert response.get_json()["error"]["message"]


def test_wrong_method_is_405_json(client):
    for response in (client.get("/predict"), client.post("/healthz"), client.delete("/")):
        assert response.status_code == 405
        assert response.get_json()["error"]["code"] == "method_not_allowed"
        assert "Allow" in response.headers


def test_not_ready_is_503_until_the_model_loads(tiny_model, tmp_path, xray_bytes):
    from app import create_app

    broken = create_app({"MODEL_PATH": str(tmp_path / "missing.h5"), "LOAD_MODEL_ASYNC": False,
                         "READY_WAIT_S": 0})
    client = broken.test_client()
    assert client.get("/healthz").status_code == 200  # alive, but not ready
    for response in (client.get("/readyz"),
                     client.post("/predict", data=xray_bytes, content_type="image/jpeg")):
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "not_ready"
        assert "missing.h5" in response.get_json()["error"]["message"]
        assert response.headers["Retry-After"]
    page = client.post("/", data={"file": (io.BytesIO(xray_bytes), "x.jpg")},
                       content_type="multipart/form-data")
    assert page.status_code == 503 and page.mimetype == "text/html"

    # Background loading (the served configuration): /healthz at once, /readyz 200 later.
    loading = create_app({"MODEL_PATH": str(tiny_model), "LOAD_MODEL_ASYNC": True})
    client = loading.test_client()
    assert client.get("/healthz").status_code == 200
    assert loading.extensions["cxr_model"].wait(120)
    assert client.get("/readyz").status_code == 200


def test_page_works_offline_and_has_the_result_hooks(client):
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    for marker in ('id="file-input"', 'id="classify"', 'id="label"', 'id="prob-covid"',
                   'id="prob-normal"', 'id="threshold"', 'id="model-name"', 'name="file"',
                   'enctype="multipart/form-data"', 'id="heatmap-toggle"', 'id="heatmap"'):
        assert marker in html
    assert all(w in html.lower() for w in DISCLAIMER_WORDS)
    # No CDN: every script, stylesheet and image comes from our own /static.
    for url in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert url.startswith("/"), url
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200


def test_no_js_form_renders_the_result_page(client, xray_bytes, tiny_model):
    page = client.post("/", data={"file": (io.BytesIO(xray_bytes), "scan.jpg")},
                       content_type="multipart/form-data")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    label = re.search(r'data-testid="label">(\w+)<', html).group(1)
    covid = float(re.search(r'data-testid="prob-covid">([\d.]+)<', html).group(1))
    normal = float(re.search(r'data-testid="prob-normal">([\d.]+)<', html).group(1))
    api = client.post("/predict", data=xray_bytes, content_type="image/jpeg").get_json()
    assert label == api["label"]
    assert covid == pytest.approx(api["probabilities"]["Covid"], abs=1e-3)
    assert normal == pytest.approx(api["probabilities"]["Normal"], abs=1e-3)
    assert api["model"]["sha256"][:12] in html


@pytest.mark.parametrize("data, status, words", [
    (b"", 400, "empty"),
    (b"Dear doctor, this is text", 422, "not an image"),
    (b"x" * (10 * 1024 * 1024 + 1), 413, "10 mb limit"),
])
def test_form_errors_are_friendly_pages(client, data, status, words):
    page = client.post("/", data={"file": (io.BytesIO(data), "scan.png")},
                       content_type="multipart/form-data")
    assert page.status_code == status
    assert page.mimetype == "text/html"
    error = re.search(r'data-testid="error"[^>]*>([^<]+)<', page.get_data(as_text=True)).group(1)
    assert words in error.lower()


def test_security_headers_on_every_response(client, xray_bytes):
    responses = [client.get("/"), client.get("/static/app.js"), client.get("/healthz"),
                 client.post("/predict", data=xray_bytes, content_type="image/jpeg"),
                 client.post("/predict", data=b"junk"), client.get("/predict"),
                 client.get("/missing")]
    for response in responses:
        headers = response.headers
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "no-referrer"
        csp = headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert responses[3].headers["Cache-Control"] == "no-store"


def test_debug_is_never_on(app, monkeypatch, tmp_path):
    from app import create_app

    assert app.debug is False
    monkeypatch.setenv("FLASK_DEBUG", "1")
    assert create_app({"MODEL_PATH": str(tmp_path / "none.h5"), "LOAD_MODEL_ASYNC": False}).debug is False
    answer = app.test_client().post("/predict", data=b"\xff\xd8\xff" + b"\0" * 99)
    assert "Traceback" not in answer.get_data(as_text=True)


def test_api_key(app, client, xray_bytes, monkeypatch):
    monkeypatch.setitem(app.config, "API_KEY", "s3cret-key")

    def send(**headers):
        return client.post("/predict", data=xray_bytes, content_type="image/jpeg", headers=headers)

    for response in (send(), send(**{"X-API-Key": "wrong"}), send(Authorization="Bearer nope"),
                     send(Authorization="Basic czNjcmV0LWtleQ==")):
        assert response.status_code == 401
        assert response.get_json()["error"]["code"] == "unauthorized"
    assert send(**{"X-API-Key": "s3cret-key"}).status_code == 200
    assert send(Authorization="Bearer s3cret-key").status_code == 200
    # The page asks for the key and its no-JS form sends it as a field.
    assert 'name="api_key"' in client.get("/").get_data(as_text=True)
    form = {"file": (io.BytesIO(xray_bytes), "scan.jpg"), "api_key": "s3cret-key"}
    assert client.post("/", data=form, content_type="multipart/form-data").status_code == 200
    form = {"file": (io.BytesIO(xray_bytes), "scan.jpg"), "api_key": "bad"}
    assert client.post("/", data=form, content_type="multipart/form-data").status_code == 401
    # Probes stay open for the platform's health checks.
    assert client.get("/readyz").status_code == 200


def test_access_log_has_no_file_names_or_bytes(client, xray_bytes, caplog):
    secret_name = "Jane_Doe_1970-01-01_chest.jpg"
    with caplog.at_level(logging.DEBUG):
        ok = client.post("/predict?patient=Jane_Doe", data={"file": (io.BytesIO(xray_bytes), secret_name)},
                         content_type="multipart/form-data")
        bad = client.post("/predict", data={"file": (io.BytesIO(b"junk"), secret_name)},
                          content_type="multipart/form-data")
    assert ok.status_code == 200 and bad.status_code == 422
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "Jane_Doe" not in text and "1970" not in text
    assert "\\x" not in text and "JFIF" not in text
    access = [r.getMessage() for r in caplog.records if r.name == "cxr.access"]
    assert len(access) == 2
    assert re.match(r"method=POST path=/predict status=200 req_bytes=\d+ resp_bytes=\d+ "
                    r"latency_ms=[\d.]+ request_id=[0-9a-f]{32} label=(Covid|Normal) in_distribution=\w+ "
                    r"operating_point=\w+$", access[0])
    assert "status=422" in access[1]
    assert all(len(m) < 200 for m in access)


def _file_writes(run):
    """Run ``run()`` and return the files it opened for writing (audit hook on open)."""
    import os
    import sys

    writes, state = [], {"on": False}

    def hook(event, args):
        if not state["on"]:
            return
        if event == "open":
            path, mode, flags = args
            write_mode = isinstance(mode, str) and any(c in mode for c in "wax+")
            write_flags = isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            if write_mode or write_flags:
                writes.append(str(path))
        elif event in ("tempfile.mkstemp", "tempfile.mkdtemp"):
            writes.append(f"{event}:{args[0]}")

    if not hasattr(_file_writes, "hooks"):
        _file_writes.hooks = []
        sys.addaudithook(lambda e, a: [h(e, a) for h in _file_writes.hooks])
    _file_writes.hooks.append(hook)
    state["on"] = True
    try:
        result = run()
    finally:
        state["on"] = False
        _file_writes.hooks.remove(hook)
    return result, writes


def test_uploads_are_never_spooled_to_disk(client, sample_xrays, tmp_path, monkeypatch):
    """A multi-MB real X-ray (upscaled, uncompressed PNG) stays in memory end to end."""
    import tempfile

    from flask import Flask, request
    from PIL import Image

    from tests.web_support import multipart

    with Image.open(sample_xrays["normal"][0]) as im:
        big = im.convert("L").resize((2800, 2800), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    big.save(buf, format="PNG", compress_level=0)
    data = buf.getvalue()
    assert 5 * 1024 * 1024 < len(data) < 10 * 1024 * 1024

    spool_dir = tmp_path / "tmp"
    spool_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool_dir))

    # Encode the multipart body ourselves: Werkzeug's test client would spool a large
    # body to a temp file on the *client* side and blur what the server does.
    body, content_type = multipart([("big.png", data)], content_type="image/png")
    response, writes = _file_writes(lambda: client.post("/predict", data=body, content_type=content_type))
    assert response.status_code == 200, response.data
    assert writes == [] and list(spool_dir.iterdir()) == []

    # Control: Werkzeug's default request class does spool the same upload to disk,
    # so the check above would catch a regression.
    plain = Flask("plain")
    plain.post("/")(lambda: str(len(request.files["file"].read())))
    response, writes = _file_writes(lambda: plain.test_client().post(
        "/", data=body, content_type=content_type))
    assert response.get_data(as_text=True) == str(len(data))
    assert writes, "the default Werkzeug request should have spooled to a temp file"
