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
    # Threads of one forward pass (0 = all usable cores) and between graph branches.
    "INFERENCE_INTRA_OP_THREADS": 0,
    "INFERENCE_INTER_OP_THREADS": 1,
    # ONNX Runtime threads spin-wait for work (on) or sleep (off): spinning burns the core
    # another worker needs (measured: twice the latency on 2 shared cores).
    "INFERENCE_SPIN": False,
    # Most forward passes one process runs at once (0 = no limit: up to gunicorn's threads).
    "INFERENCE_CONCURRENCY": 0,
}

_PARSERS = {
    "MAX_UPLOAD_MB": lambda k, v: parse_float(k, v, positive=True),
    "LOAD_MODEL_ASYNC": parse_bool,
    "READY_WAIT_S": lambda k, v: parse_float(k, v),
    "BATCH_MAX_FILES": lambda k, v: parse_int(k, v, minimum=1),
    "BATCH_MAX_MB": lambda k, v: parse_float(k, v, positive=True),
    "INFERENCE_BACKEND": lambda k, v: parse_choice(k, v, ("auto", "onnx", "tensorflow")),
    "INFERENCE_INTRA_OP_THREADS": lambda k, v: parse_int(k, v, minimum=0),
    "INFERENCE_INTER_OP_THREADS": lambda k, v: parse_int(k, v, minimum=1),
    "INFERENCE_SPIN": parse_bool,
    "INFERENCE_CONCURRENCY": lambda k, v: parse_int(k, v, minimum=0),
}


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
    return config


def predictor_settings(config) -> dict:
    """What ``cxr.inference.load_predictor`` takes from the config: the backend and the threads."""
    from cxr.inference import ThreadSettings

    return {
        "backend": config["INFERENCE_BACKEND"],
        "threads": ThreadSettings.resolve(
            intra_op=config["INFERENCE_INTRA_OP_THREADS"], inter_op=config["INFERENCE_INTER_OP_THREADS"],
            spin=config["INFERENCE_SPIN"], concurrency=config["INFERENCE_CONCURRENCY"]),
    }
