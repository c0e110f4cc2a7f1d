"""Operating it (issue 23): ``GET /metrics`` summed over two gunicorn workers, and the JSON request
log, against the real server serving the shipped model (with its input gate) as ``make run`` does."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

import tests.xray_inputs as X
from tests.gate_inputs import MODEL, sample_photos
from tests.web_support import GunicornServer, cached_app, serving

pytestmark = pytest.mark.slow
SECRET_NAME = "Jane_Doe_1970-01-01_chest.jpg"
CLIENT_ID = "3f2a9c1e-7b4d-4e8a-9c0f-1a2b3c4d5e6f"  # a UUID, as client libraries send
PROBABILITY_EDGES = [round(0.1 * i, 1) for i in range(1, 11)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = GunicornServer(MODEL, tmp_path_factory.mktemp("metrics") / "server.log", workers=2, threads=2,
                         extra_env={"LOG_FORMAT": "json"})
    yield from serving(srv)


@pytest.fixture(scope="module")
def xrays(sample_xrays) -> list[bytes]:
    return [p.read_bytes() for p in sample_xrays["covid"][:3] + sample_xrays["normal"][:3]]


def scrape(url: str, **headers) -> dict[tuple, float]:
    """``/metrics`` as {(sample name, sorted labels): value}."""
    response = requests.get(url + "/metrics", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def delta(after: dict, before: dict, name: str, **labels) -> float:
    key = (name, tuple(sorted((k, str(v)) for k, v in labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def post(url: str, data: bytes, name: str = SECRET_NAME, **headers) -> requests.Response:
    """A multipart upload on a new connection each time, so that both workers take requests."""
    return requests.post(url + "/predict", files={"file": (name, data, "image/jpeg")},
                         data={"note": "Jane Doe, born 1970"}, headers=headers, timeout=120)


def worker_counts(server, metric: str) -> dict[int, float]:
    """Per worker: its own samples of ``metric`` from its file in PROMETHEUS_MULTIPROC_DIR."""
    pids = server.worker_pids()
    # The master made the folder after it started (gunicorn.conf.py), so /proc's environ lacks it.
    folder, = {p.parent for pid in pids for p in Path(tempfile.gettempdir()).glob(f"cxr-metrics-*/*_{pid}.db")}
    counts = {}
    for pid in pids:
        path = folder / f"counter_{pid}.db"
        families = MultiProcessCollector.merge([str(path)]) if path.exists() else []
        counts[pid] = sum(s.value for f in families if f.name == metric for s in f.samples
                          if s.name == metric + "_total")
    return counts


def test_metrics_count_exactly_what_was_asked_summed_over_two_workers(server, xrays):
    url = server.url
    before = scrape(url)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda data: post(url, data), xrays * 2))
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
    answers = [r.json() for r in answers]
    photo = post(url, sample_photos()["china.jpg"], "photo.jpg")
    truncated = post(url, X.truncated(xrays[0]), "cut.jpg")
    assert photo.status_code == 422 and photo.json()["error"]["code"] == "not_a_chest_xray"
    assert truncated.status_code == 422 and truncated.json()["error"]["code"] == "undecodable_image"
    after = scrape(url)

    k = len(answers)
    by_label = Counter((a["label"], a["operating_point"]) for a in answers)
    for (label, point), count in by_label.items():
        assert delta(after, before, "cxr_predictions_total", label=label, operating_point=point) == count
    assert sum(v - before.get(key, 0.0) for key, v in after.items() if key[0] == "cxr_predictions_total") == k
    assert delta(after, before, "cxr_refusals_total", code="not_a_chest_xray") == 1
    assert delta(after, before, "cxr_refusals_total", code="undecodable_image") == 1
    assert sum(v - before.get(key, 0.0) for key, v in after.items() if key[0] == "cxr_refusals_total") == 2
    assert delta(after, before, "cxr_out_of_distribution_total") == sum(a["in_distribution"] is False
                                                                        for a in answers)
    covid = [a["probabilities"]["Covid"] for a in answers]
    assert delta(after, before, "cxr_probability_covid_count") == k
    assert math.isclose(delta(after, before, "cxr_probability_covid_sum"), sum(covid), abs_tol=1e-9)
    for edge in PROBABILITY_EDGES:  # cumulative buckets, 0.1 wide
        assert delta(after, before, "cxr_probability_covid_bucket", le=edge) == sum(p <= edge for p in covid)
    duration = "cxr_request_duration_seconds_count"
    assert delta(after, before, duration, route="/predict", status=200) == k
    assert delta(after, before, duration, route="/predict", status=422) == 2
    info = answers[0]["model"]
    assert after[("cxr_model_info", tuple(sorted({
        "sha256": info["sha256"][:12], "input_size": str(info["input_size"]),
        "precision": info.get("precision", "fp32"), "backend": info["backend"]}.items())))] == 1

    # Summed over both workers: each one's own file holds part of the count, /metrics the whole.
    per_worker = worker_counts(server, "cxr_predictions")
    assert len(per_worker) == 2 and all(v > 0 for v in per_worker.values()), per_worker
    assert sum(per_worker.values()) == sum(v for key, v in after.items() if key[0] == "cxr_predictions_total")

    # A batch counts each file: two X-rays and a photograph.
    batch = requests.post(url + "/predict/batch", timeout=120, files=[
        ("files", ("a.jpg", xrays[0])), ("files", ("b.jpg", xrays[3])),
        ("files", ("c.jpg", sample_photos()["flower.jpg"]))])
    assert batch.status_code == 200
    items = batch.json()["results"]
    final = scrape(url)
    assert sum(v - after.get(key, 0.0) for key, v in final.items() if key[0] == "cxr_predictions_total") == 2
    assert delta(final, after, "cxr_refusals_total", code="not_a_chest_xray") == 1
    assert delta(final, after, "cxr_probability_covid_count") == 2
    assert items[2]["error"]["code"] == "not_a_chest_xray"
    assert delta(final, after, duration, route="/predict/batch", status=200) == 1


def test_json_request_log_one_object_per_request_and_no_file_name(server, xrays):
    url = server.url
    given = post(url, xrays[0], **{"X-Request-ID": CLIENT_ID})
    assert given.status_code == 200 and given.headers["X-Request-ID"] == CLIENT_ID
    trace = post(url, xrays[1], **{"X-Cloud-Trace-Context": "0123456789abcdef0123456789ABCDEF/42;o=1"})
    assert trace.headers["X-Request-ID"] == "0123456789abcdef0123456789abcdef"
    forged = post(url, b"plain text", **{"X-Request-ID": "Jane Doe 1970"})  # not a hex id: replaced
    generated = forged.headers["X-Request-ID"]
    assert forged.status_code == 422 and len(generated) == 32 and "Jane" not in generated
    named = post(url, xrays[2], **{"X-Request-ID": "Jane_Doe-19700101"})
    assert named.status_code == 200 and "Jane" not in named.headers["X-Request-ID"]
    health = requests.get(url + "/healthz", timeout=10)
    assert len(health.headers["X-Request-ID"]) == 32

    text = server.log_text()
    assert SECRET_NAME not in text and "Jane" not in text and "1970" not in text
    assert b"\xff\xd8" not in server.log_path.read_bytes()
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    access = {r["request_id"]: r for r in records if r["logger"] == "cxr.access"}
    assert all(Counter(r["request_id"] for r in records if r["logger"] == "cxr.access")[rid] == 1
               for rid in (CLIENT_ID, generated))
    first = access[CLIENT_ID]
    answer = given.json()
    assert {"time", "severity", "method", "route", "status", "duration_ms", "model_sha256"} <= set(first)
    assert (first["method"], first["route"], first["status"]) == ("POST", "/predict", 200)
    assert (first["label"], first["in_distribution"]) == (answer["label"], answer["in_distribution"])
    assert first["model_sha256"] == answer["model"]["sha256"][:12] and first["duration_ms"] > 0
    assert access["0123456789abcdef0123456789abcdef"]["status"] == 200
    assert access[generated]["error"] == "not_an_image" and "label" not in access[generated]
    assert access[health.headers["X-Request-ID"]]["route"] == "/healthz"
    # Every line the app wrote parses as JSON (gunicorn's own start/stop lines are text).
    app_lines = [line for line in text.splitlines() if "cxr." in line]
    assert app_lines and all(line.startswith("{") for line in app_lines), app_lines[:3]


@pytest.fixture(scope="module")
def shipped_app():
    return cached_app(str(MODEL))


def test_metrics_honour_the_api_key(shipped_app):
    client = shipped_app.test_client()
    shipped_app.config["API_KEY"] = "s3cret"
    try:
        refused = client.get("/metrics")
        assert refused.status_code == 401 and refused.get_json()["error"]["code"] == "unauthorized"
        assert client.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.get("/metrics", headers={"X-API-Key": "s3cret"}).status_code == 200
    finally:
        shipped_app.config["API_KEY"] = None
    assert client.get("/metrics").status_code == 200


def test_log_format_is_json_on_app_engine_unless_set():
    from app.config import load_config

    assert load_config(environ={})["LOG_FORMAT"] == "text"
    assert load_config(environ={"GAE_SERVICE": "default"})["LOG_FORMAT"] == "json"
    assert load_config(environ={"GAE_SERVICE": "default", "LOG_FORMAT": "text"})["LOG_FORMAT"] == "text"
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        load_config(environ={"LOG_FORMAT": "xml"})
    assert os.environ.get("PROMETHEUS_MULTIPROC_DIR") is None  # the tests' own process: single-process mode
