"""The API for programs (issue 13): ``GET /openapi.json``, ``POST /predict/batch`` (in process and
under a real gunicorn) and the ``python -m model_training.predict`` CLI run as a user runs it."""

from __future__ import annotations

import contextlib
import csv
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

import tests.xray_inputs as X
from cxr.decode import decode_image
from tests.test_dicom import make_dicom
from tests.web_support import ROOT, GunicornServer, multipart

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture(scope="module")
def spec(app):
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    return response.get_json()


@pytest.fixture(scope="module")
def xrays(sample_xrays):
    """Four real X-rays, two per class, as (name, bytes)."""
    paths = sample_xrays["covid"][:2] + sample_xrays["normal"][:2]
    return [(p.name, p.read_bytes()) for p in paths]


def validator(spec: dict, schema: str) -> Draft202012Validator:
    """A JSON Schema validator for one of the document's component schemas."""
    return Draft202012Validator({"$ref": f"#/components/schemas/{schema}", "components": spec["components"]})


@contextlib.contextmanager
def settings(app, **values):
    """Change settings of the shared in-process app for one block (they are read per request)."""
    old = {key: app.config[key] for key in values}
    app.config.update(values)
    try:
        yield
    finally:
        app.config.update(old)


# ---------------------------------------------------------------------------- /openapi.json

def test_openapi_is_valid_and_describes_exactly_the_routes(app, spec):
    validate(spec)  # openapi-spec-validator: a valid OpenAPI 3.1 document
    assert spec["openapi"].startswith("3.1")
    routes = {(re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule), method.lower())
              for rule in app.url_map.iter_rules() if rule.endpoint != "static"
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(path, method) for path, item in spec["paths"].items() for method in item
                  if method in HTTP_METHODS}
    assert routes == documented
    predict = spec["paths"]["/predict"]["post"]
    assert {p["name"] for p in predict["parameters"]} == {"explain", "class", "operating_point"}
    assert {"200", "400", "401", "413", "415", "422", "503"} <= set(predict["responses"])
    batch = spec["paths"]["/predict/batch"]["post"]
    assert "files" in batch["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert "too_many_files" in batch["responses"]["413"]["description"]
    assert {"bearerAuth", "apiKeyHeader"} <= set(spec["components"]["securitySchemes"])
    assert {} in predict["security"]  # no API_KEY configured: the key is optional here


def test_every_error_code_in_the_code_is_documented(spec):
    from app.errors import INPUT_STATUS
    from app.openapi import error_codes

    documented = set(spec["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"])
    raised = set()
    for path in (ROOT / "app").glob("*.py"):
        text = path.read_text()
        for status, code in re.findall(r'ApiError\(\s*(\d{3}),\s*"([a-z_]+)"', text):
            raised.add(code)
            assert error_codes()[code][0] == int(status), (path.name, code)
        raised |= set(re.findall(r'error_item\(\s*"([a-z_]+)"', text))
    assert {"no_file", "unauthorized", "not_ready", "too_many_files", "batch_too_large"} <= raised
    assert raised | set(INPUT_STATUS) <= documented


def test_api_key_makes_the_key_required_in_the_document(app):
    from app.openapi import openapi_document

    document = openapi_document({**app.config, "API_KEY": "s3cret"})
    validate(document)
    assert {} not in document["paths"]["/predict/batch"]["post"]["security"]
    assert "s3cret" not in str(document)


def test_real_answers_match_the_documented_schemas(client, spec, xrays):
    name, data = xrays[0]
    checks = [
        ("PredictAnswer", client.post("/predict", data={"file": (io.BytesIO(data), name)})),
        ("PredictAnswer", client.post("/predict?explain=true&class=Normal", data=data, content_type="image/jpeg")),
        ("BatchAnswer", client.post("/predict/batch", data={"files": [(io.BytesIO(data), name),
                                                                      (io.BytesIO(b"plain text"), "n.txt")]})),
        ("Error", client.post("/predict", data=b"plain text")),
        ("Ready", client.get("/readyz")),
        ("Health", client.get("/healthz")),
    ]
    for schema, response in checks:
        errors = [e.message for e in validator(spec, schema).iter_errors(response.get_json())]
        assert not errors, (schema, errors)
    explained = checks[1][1].get_json()
    assert explained["explained_class"] == "Normal" and explained["heatmap_png"]


# ---------------------------------------------------------------------------- /predict/batch in process

def test_batch_is_one_forward_pass_and_equals_single_predictions(app, client, xrays):
    predictor = app.extensions["cxr_model"].predictor
    passes = []
    original = predictor.forward

    def counting_forward(batch):
        passes.append(batch.shape[0])
        return original(batch)

    files = [(io.BytesIO(d), n) for n, d in xrays]
    files.insert(2, (io.BytesIO(b"GIF89a" + bytes(64)), "anim.gif"))
    files.append((io.BytesIO(b""), "empty.png"))
    predictor.forward = counting_forward
    try:
        response = client.post("/predict/batch", data={"files": files})
    finally:
        del predictor.forward
    assert response.status_code == 200, response.data
    assert passes == [len(xrays)]  # the four X-rays, together; the two bad files never reach the model
    body = response.get_json()
    results = body["results"]
    assert [r.get("error", {}).get("code") for r in results] == [None, None, "unsupported_media_type", None,
                                                                  None, "empty_input"]
    assert set(body) == {"results", "model", "disclaimer"} and body["model"]["input_size"] == 64
    images = [r for r in results if "error" not in r]
    for (name, data), item in zip(xrays, images):
        single = client.post("/predict", data=data, content_type="image/jpeg").get_json()
        assert item["label"] == single["label"], name
        for cls in ("Covid", "Normal"):
            assert item["probabilities"][cls] == pytest.approx(single["probabilities"][cls], abs=1e-4)
        assert set(single) - set(item) == {"model", "disclaimer"}  # the same per-image fields


def test_batch_requests_that_fail_as_a_whole(app, client, xrays):
    one = xrays[0][1]

    def post(query="", **kwargs):
        return client.post("/predict/batch" + query, **kwargs)

    def code(response):
        return response.status_code, response.get_json()["error"]["code"]

    assert code(post(data=one, content_type="image/jpeg")) == (400, "no_file")
    assert code(post(data={"file": (io.BytesIO(one), "a.jpg")})) == (400, "no_file")
    assert code(post("?explain=true", data={"files": (io.BytesIO(one), "a.jpg")})) == (400, "explain_not_supported")
    assert code(post("?explain=maybe", data={"files": (io.BytesIO(one), "a.jpg")})) == (400, "bad_request")
    assert post("?explain=false", data={"files": (io.BytesIO(one), "a.jpg")}).status_code == 200
    assert code(client.get("/predict/batch")) == (405, "method_not_allowed")
    with settings(app, BATCH_MAX_FILES=2):
        response = post(data={"files": [(io.BytesIO(one), f"{i}.jpg") for i in range(3)]})
        assert code(response) == (413, "too_many_files")
        assert "BATCH_MAX_FILES" in response.get_json()["error"]["message"]
        flood = {f"field{i}": "x" for i in range(20)}  # more parts than files + EXTRA_PARTS
        assert code(post(data={"files": (io.BytesIO(one), "a.jpg"), **flood})) == (413, "too_many_files")
        assert post(data={"files": [(io.BytesIO(one), f"{i}.jpg") for i in range(2)]}).status_code == 200
    with settings(app, BATCH_MAX_MB=len(one) * 2.5 / 2**20):
        response = post(data={"files": [(io.BytesIO(one), f"{i}.jpg") for i in range(3)]})
        assert code(response) == (413, "batch_too_large") and "BATCH_MAX_MB" in response.get_json()["error"]["message"]
    with settings(app, API_KEY="s3cret"):
        assert code(post(data={"files": (io.BytesIO(one), "a.jpg")})) == (401, "unauthorized")
        ok = post(data={"files": (io.BytesIO(one), "a.jpg")}, headers={"X-API-Key": "s3cret"})
        assert ok.status_code == 200 and "label" in ok.get_json()["results"][0]


def test_a_file_over_max_upload_mb_fails_alone(app, client, sample_xrays):
    jpeg = sample_xrays["covid"][0].read_bytes()
    png = X.plain_png(sample_xrays["covid"][0])
    limit = (len(jpeg) + len(png)) / 2
    assert len(jpeg) < limit < len(png)
    with settings(app, MAX_UPLOAD_MB=limit / 2**20):
        results = client.post("/predict/batch", data={"files": [(io.BytesIO(png), "big.png"),
                                                                (io.BytesIO(jpeg), "small.jpg")]}).get_json()["results"]
    assert results[0]["error"]["code"] == "payload_too_large" and "MAX_UPLOAD_MB" in results[0]["error"]["message"]
    assert results[1]["label"] in ("Covid", "Normal")


# ---------------------------------------------------------------------------- /predict/batch under gunicorn

@pytest.mark.slow
def test_batch_over_real_gunicorn(tiny_onnx_model, tmp_path, xrays):
    """The way a client uses it: requests' multipart with ``files`` repeated, against gunicorn
    serving as ``make run`` does (ONNX Runtime, the export being current)."""
    dicom = make_dicom(decode_image(xrays[1][1]))
    server = GunicornServer(tiny_onnx_model, tmp_path / "server.log", workers=1, threads=2,
                            extra_env={"BATCH_MAX_FILES": "8", "BATCH_MAX_MB": "0.5"})
    try:
        server.wait_ready()
        url = server.url
        singles = [requests.post(url + "/predict", files={"file": (n, d)}, timeout=60).json() for n, d in xrays]
        uploads = [("files", (n, d, "image/jpeg")) for n, d in xrays]
        uploads.insert(1, ("files", ("notes.txt", b"not an X-ray", "text/plain")))
        uploads.append(("files", ("scan.dcm", dicom, "application/dicom")))
        response = requests.post(url + "/predict/batch", files=uploads, timeout=60)
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"] == "application/json"
        assert response.json()["model"]["backend"] == "onnx"
        results = response.json()["results"]
        assert len(results) == 6
        assert results[1] == {"error": {"code": "not_an_image", "message": results[1]["error"]["message"]}}
        answers = [results[0], *results[2:5]]
        for single, item in zip(singles, answers):
            assert item["label"] == single["label"]
            assert item["threshold"] == single["threshold"]
            for cls in ("Covid", "Normal"):
                assert item["probabilities"][cls] == pytest.approx(single["probabilities"][cls], abs=1e-4)
        # The DICOM made from the second X-ray's pixels answers as that X-ray did.
        assert results[5]["probabilities"]["Covid"] == pytest.approx(singles[1]["probabilities"]["Covid"], abs=1e-4)

        too_many = requests.post(url + "/predict/batch", files=[("files", (f"{i}.jpg", xrays[0][1]))
                                                                  for i in range(9)], timeout=60)
        assert too_many.status_code == 413 and too_many.json()["error"]["code"] == "too_many_files"
        big, count = bytes(200_000), 4  # 0.8 MB in all: over BATCH_MAX_MB, within BATCH_MAX_FILES
        too_large = requests.post(url + "/predict/batch", files=[("files", (f"{i}.png", big))
                                                                   for i in range(count)], timeout=60)
        assert too_large.status_code == 413 and too_large.json()["error"]["code"] == "batch_too_large"
        # Chunked (no Content-Length): the stream limit catches it while reading.
        body, content_type = multipart([(f"f{i}", big) for i in range(count)], field="files",
                                        content_type="application/octet-stream")
        chunked = requests.post(url + "/predict/batch", data=iter([body[i:i + 65536]
                                                                    for i in range(0, len(body), 65536)]),
                                headers={"Content-Type": content_type}, timeout=60)
        assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "batch_too_large"
        spec = requests.get(url + "/openapi.json", timeout=30).json()
        assert "/predict/batch" in spec["paths"]
        assert "8 files" in spec["paths"]["/predict/batch"]["post"]["description"]
    finally:
        rc = server.stop()
    assert rc == 0, server.log_text()[-2000:]


# ---------------------------------------------------------------------------- the predict CLI

def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "model_training.predict", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_predict_cli_scores_a_folder(tiny_onnx_model, tmp_path, sample_xrays):
    """The CLI on a folder, checked against the app's own predictor for the same model (ONNX
    Runtime, since a current export sits beside it: what the app would serve)."""
    from cxr.inference import load_predictor

    folder = tmp_path / "scans"
    (folder / "covid").mkdir(parents=True)
    (folder / "normal" / "deeper").mkdir(parents=True)
    (folder / ".hidden").mkdir()
    jpegs = sample_xrays["covid"][:2] + sample_xrays["normal"][:1]
    for path in jpegs[:2]:
        (folder / "covid" / path.name).write_bytes(path.read_bytes())
    (folder / "normal" / "deeper" / jpegs[2].name).write_bytes(jpegs[2].read_bytes())
    (folder / "normal" / "as.png").write_bytes(X.plain_png(jpegs[2]))
    (folder / "patient.dcm").write_bytes(make_dicom(decode_image(jpegs[0].read_bytes())))
    (folder / "notes.txt").write_text("not an X-ray\n")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / ".DS_Store").write_bytes(b"\0\1junk")
    (folder / ".hidden" / "x.jpg").write_bytes(jpegs[0].read_bytes())
    out = tmp_path / "results.csv"

    result = run_cli("--model", tiny_onnx_model, "--out", out, "--batch-size", "3", "--progress", "on", folder)
    assert result.returncode == 0, result.stderr[-3000:]
    with out.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == ["file", "label", "probability_covid", "probability_normal", "threshold",
                                     "operating_point", "in_distribution", "error"]
        rows = {row["file"]: row for row in reader}
    names = {Path(file).relative_to(folder).as_posix() for file in rows}
    assert names == {"covid/" + jpegs[0].name, "covid/" + jpegs[1].name, "normal/deeper/" + jpegs[2].name,
                     "normal/as.png", "patient.dcm", "notes.txt", "empty.jpg"}
    by_name = {name: rows[str(folder / name)] for name in names}
    assert by_name["notes.txt"]["error"].startswith("not_an_image: ") and by_name["notes.txt"]["label"] == ""
    assert by_name["empty.jpg"]["error"].startswith("empty_input: ")

    predictor = load_predictor(tiny_onnx_model)
    assert predictor.backend == "onnx"
    for name, source in [("covid/" + jpegs[0].name, jpegs[0]), ("covid/" + jpegs[1].name, jpegs[1]),
                         ("normal/deeper/" + jpegs[2].name, jpegs[2]), ("patient.dcm", jpegs[0]),
                         ("normal/as.png", jpegs[2])]:
        row = by_name[name]
        served = predictor.predict_upload(source.read_bytes())  # what /predict answers
        assert row["error"] == "" and row["label"] == served.label, name
        assert float(row["probability_covid"]) == pytest.approx(served.probabilities["Covid"], abs=1e-4), name
        assert float(row["probability_normal"]) == pytest.approx(served.probabilities["Normal"], abs=1e-4), name
        assert float(row["threshold"]) == pytest.approx(served.threshold)
    summary = result.stdout.strip().splitlines()
    assert len(summary) == 1 and summary[0].startswith("5 of 7 files scored") and "2 errors" in summary[0]
    assert "onnx" in summary[0]
    assert "7/7 files" in result.stderr  # the progress bar's last state

    # Without --out: the CSV on standard output, the summary on standard error.
    piped = run_cli("--model", tiny_onnx_model, "--progress", "off", folder / "notes.txt", jpegs[0])
    assert piped.returncode == 0, piped.stderr[-3000:]
    lines = piped.stdout.strip().splitlines()
    assert lines[0] == "file,label,probability_covid,probability_normal,threshold,operating_point,in_distribution,error"
    assert len(lines) == 3
    assert "1 of 2 files scored" in piped.stderr


def test_predict_cli_help_and_bad_arguments(tiny_model, tmp_path):
    helped = run_cli("--help")
    assert helped.returncode == 0 and "FILE_OR_FOLDER" in helped.stdout and "--out" in helped.stdout
    missing = run_cli("--model", tiny_model, tmp_path / "nowhere")
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr
    no_model = run_cli("--model", tmp_path / "none.h5", tmp_path)
    assert no_model.returncode == 2 and "--model" in no_model.stderr
    assert run_cli("--model", tiny_model).returncode == 2  # no FILE_OR_FOLDER
    assert run_cli("--model", tiny_model, "--batch-size", "0", tmp_path).returncode == 2
