"""``GET /metrics``: Prometheus metrics for drift and health, summed over every gunicorn worker.

For a model the signal that matters most is drift, not latency: the share of uploads the input
gate refuses (``cxr_refusals_total{code="not_a_chest_xray"}``), the share answered with
``in_distribution: false`` (``cxr_out_of_distribution_total``) and how P(Covid) moves
(``cxr_probability_covid``). Besides those: every 4xx code (``cxr_refusals_total``), the
labels per operating point, the latency per route and status, and the model's identity.
A batch counts each of its files, as ``/predict`` would have.

Several workers: gunicorn.conf.py points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder before
any worker starts; each worker writes its samples there (prometheus-client's multiprocess
mode, memory-mapped files) and ``/metrics``, answered by any one worker, sums them all. A dead
worker's counts stay (they happened); its ``cxr_model_info`` gauge leaves with it
(``child_exit`` in gunicorn.conf.py). Without the variable (the in-process app of the tests, a
script) the metrics are this process's own.

Nothing about an upload is kept beyond these counts; ``/metrics`` requires the API key when
``API_KEY`` is set. ``METRICS=false`` turns the recording off (the benchmark's baseline).
"""

from __future__ import annotations

import os

from flask import Blueprint, Flask, Response
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from app.errors import require_api_key
from app.outcomes import answers, elapsed_seconds, error_code
from app.pages import model_state
from app.request_log import route

# Seconds: fine where /predict answers (make bench: p50 ~20 ms alone, p95 ~0.3 s with 16 clients
# on 2 vCPU), coarse beyond; 1 s is a boundary for the README's p95 alert.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0)
PROBABILITY_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))  # 0.1 wide, up to 1.0

REQUEST_DURATION = Histogram("cxr_request_duration_seconds", "Time to answer a request, by route and status.",
                             ["route", "status"], buckets=LATENCY_BUCKETS)
PREDICTIONS = Counter("cxr_predictions_total", "Images classified, by label and operating point.",
                      ["label", "operating_point"])
REFUSALS = Counter("cxr_refusals_total", "4xx answers by error code (a batch counts each refused file).",
                   ["code"])
OUT_OF_DISTRIBUTION = Counter("cxr_out_of_distribution_total",
                              "Images classified with in_distribution: false (far from the training data).")
PROBABILITY_COVID = Histogram("cxr_probability_covid", "P(Covid) of each classified image.",
                              buckets=PROBABILITY_BUCKETS)
MODEL_INFO = Gauge("cxr_model_info", "The served model (value 1): sha256 prefix, input size, precision, backend.",
                   ["sha256", "input_size", "precision", "backend"], multiprocess_mode="livemax")

bp = Blueprint("metrics", __name__)


def record_answers(items: list[dict]) -> None:
    """Per image: its label under the operating point that decided it, P(Covid) and the drift
    flag; per failed batch file: its refusal code."""
    for item in items:
        if "error" in item:
            REFUSALS.labels(item["error"]["code"]).inc()
            continue
        PREDICTIONS.labels(item["label"], item.get("operating_point") or "default").inc()
        PROBABILITY_COVID.observe(item["probabilities"]["Covid"])
        if item.get("in_distribution") is False:
            OUT_OF_DISTRIBUTION.inc()


def _record(response):
    elapsed = elapsed_seconds()  # timed once per request, for the access log too (app.outcomes)
    if elapsed is not None:
        REQUEST_DURATION.labels(route(), str(response.status_code)).observe(elapsed)
    record_answers(answers())
    code = error_code()
    if code and 400 <= response.status_code < 500:
        REFUSALS.labels(code).inc()
    return response


def _note_model() -> None:
    """Set this worker's model identity (idempotent; the model loads after the worker starts)."""
    state = model_state()
    if state.ready:
        info = state.predictor.model_info()
        MODEL_INFO.labels(info["sha256"][:12], str(info["input_size"]), info["precision"],
                          info["backend"]).set(1)


def exposition() -> bytes:
    """The text exposition: every worker's samples summed in multiprocess mode, else this process's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


@bp.get("/metrics")
def metrics():
    """Prometheus text format; with ``API_KEY`` set, only for a request that presents the key."""
    require_api_key()
    _note_model()
    return Response(exposition(), content_type=CONTENT_TYPE_PLAIN_0_0_4)


def init_app(app: Flask) -> None:
    """The ``/metrics`` route always; the recording hooks unless ``METRICS`` is off."""
    app.register_blueprint(bp)
    if app.config["METRICS"]:
        app.after_request(_record)
