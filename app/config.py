"""Configuration from environment variables, with the defaults documented in the README.

Every setting is read once, when :func:`app.create_app` runs, and parsed by the one shared
parser (``cxr.settings``); a test (or a script) passes a dict that overrides any of them
without touching ``os.environ``, and the overrides are parsed the same way. The model's
settings go on to the core as values (:func:`predictor_settings`): the core reads no
environment variable. gunicorn's own settings (``PORT``, ``WEB_CONCURRENCY``, ...) are read by
``gunicorn.conf.py``.
"""

from __future__ import annotations

import os

from cxr.settings import parse_bool, parse_choice, parse_float, parse_int

MB = 1024 * 1024
DEFAULT_MAX_UPLOAD_MB = 10

DEFAULTS = {
    # Path of the Keras .h5 model; its sidecar <model>.json must sit beside it.
    "MODEL_PATH": "models/covid_resnet50.h5",
    # What GET /model reads besides the sidecar: the model's evaluation report (metrics.json, the
    # plots, gate/gate_report.json) and the model card's "Cannot" paragraph (app.model_page).
    "MODEL_REPORT_DIR": "reports/covid_resnet50",
    "MODEL_CARD": "MODEL_CARD.md",
    # Largest accepted request body, in megabytes (the API answers 413 above it).
    "MAX_UPLOAD_MB": DEFAULT_MAX_UPLOAD_MB,
    "LOG_LEVEL": "INFO",
    # When set, POST /predict (and the page's form) require this key.
    "API_KEY": None,
    # Load the model in a background thread (True: /healthz answers at once) or inside
    # create_app (False: handy for tests and scripts).
    "LOAD_MODEL_ASYNC": True,
    # How long a /predict request waits for a model still loading before answering 503;
    # covers a freshly (re)started worker, so a restart does not turn into 5xx for clients.
    "READY_WAIT_S": 30.0,
    # POST /predict/batch: most files in one request, and the largest whole request body in
    # megabytes (each file is also held to MAX_UPLOAD_MB); 413 above either.
    "BATCH_MAX_FILES": 16,
    "BATCH_MAX_MB": 50,
    # The predictor (cxr.inference): auto serves the verified ONNX export when it is current,
    # else TensorFlow; onnx or tensorflow force one.
    "INFERENCE_BACKEND": "auto",
    # Which ONNX graph: auto serves the int8 twin when it is current and passed its accuracy
    # guard (make export), else fp32; int8 without a valid twin fails at start-up (/readyz says why).
    "INFERENCE_PRECISION": "auto",
    # Threads of one forward pass (0 = all usable cores) and between graph branches.
    "INFERENCE_INTRA_OP_THREADS": 0,
    "INFERENCE_INTER_OP_THREADS": 1,
    # ONNX Runtime threads spin-wait for work (on) or sleep (off): spinning burns the core
    # another worker needs (measured: twice the latency on 2 shared cores).
    "INFERENCE_SPIN": False,
    # Most forward passes one process runs at once (0 = no limit: up to gunicorn's threads).
    "INFERENCE_CONCURRENCY": 0,
    # Operating it (issue 23): the request log as `text` or `json` (unset: json on App Engine,
    # recognised by GAE_SERVICE, else text); Prometheus recording for GET /metrics (app.metrics);
    # the per-client limit on the prediction routes, e.g. "60/minute" (unset: none), its
    # counters' storage (memory:// per worker, or redis://host:6379 shared) and how many proxies
    # in front append to X-Forwarded-For (0: the header is ignored) (app.limits).
    "LOG_FORMAT": "text",
    "METRICS": True,
    "RATE_LIMIT": None,
    "RATE_LIMIT_STORAGE_URI": "memory://",
    "TRUSTED_PROXIES": 0,
}

_PARSERS = {
    "MAX_UPLOAD_MB": lambda k, v: parse_float(k, v, positive=True),
    "LOAD_MODEL_ASYNC": parse_bool,
    "READY_WAIT_S": lambda k, v: parse_float(k, v),
    "BATCH_MAX_FILES": lambda k, v: parse_int(k, v, minimum=1),
    "BATCH_MAX_MB": lambda k, v: parse_float(k, v, positive=True),
    "INFERENCE_BACKEND": lambda k, v: parse_choice(k, v, ("auto", "onnx", "tensorflow")),
    "INFERENCE_PRECISION": lambda k, v: parse_choice(k, v, ("auto", "int8", "fp32")),
    "INFERENCE_INTRA_OP_THREADS": lambda k, v: parse_int(k, v, minimum=0),
    "INFERENCE_INTER_OP_THREADS": lambda k, v: parse_int(k, v, minimum=1),
    "INFERENCE_SPIN": parse_bool,
    "INFERENCE_CONCURRENCY": lambda k, v: parse_int(k, v, minimum=0),
    "LOG_FORMAT": lambda k, v: parse_choice(k, v, ("text", "json")),
    "METRICS": parse_bool,
    "RATE_LIMIT": lambda k, v: _parse_rate(k, v),
    "TRUSTED_PROXIES": lambda k, v: parse_int(k, v, minimum=0),
}


def _parse_rate(key: str, value) -> str | None:
    """A Flask-Limiter limit string ("60/minute", "5 per second; 100/hour"); empty: no limit."""
    from limits import parse_many

    text = str(value).strip()
    if not text:
        return None
    try:
        parse_many(text)
    except ValueError:
        raise ValueError(f"{key}={value!r} is not a rate limit (e.g. 60/minute)") from None
    return text


def _parse(key: str, value):
    if value is None or key not in _PARSERS:
        return value
    return _PARSERS[key](key, value)


def load_config(overrides: dict | None = None, environ=None) -> dict:
    """Defaults, then environment variables, then ``overrides`` (tests); every value parsed."""
    environ = os.environ if environ is None else environ
    config = {}
    for key, default in DEFAULTS.items():
        value = environ.get(key, default)
        if value == "":
            value = None if key == "API_KEY" else default
        config[key] = _parse(key, value)
    for key, value in (overrides or {}).items():
        config[key] = _parse(key, value)
    if environ.get("GAE_SERVICE") and not environ.get("LOG_FORMAT") and "LOG_FORMAT" not in (overrides or {}):
        config["LOG_FORMAT"] = "json"  # on App Engine (it sets GAE_SERVICE), whose log reader parses JSON
    return config


def predictor_settings(config) -> dict:
    """What ``cxr.inference.load_predictor`` takes from the config: backend, precision, threads."""
    from cxr.inference import ThreadSettings

    return {
        "backend": config["INFERENCE_BACKEND"],
        "precision": config["INFERENCE_PRECISION"],
        "threads": ThreadSettings.resolve(
            intra_op=config["INFERENCE_INTRA_OP_THREADS"], inter_op=config["INFERENCE_INTER_OP_THREADS"],
            spin=config["INFERENCE_SPIN"], concurrency=config["INFERENCE_CONCURRENCY"]),
    }
