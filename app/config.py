"""Configuration from environment variables, with the defaults documented in the README.

Every setting is read once, when :func:`app.create_app` runs, so a test can pass a dict
that overrides any of them without touching ``os.environ``.
"""

from __future__ import annotations

import os

DEFAULTS = {
    # Path of the Keras .h5 model; its sidecar <model>.json must sit beside it.
    "MODEL_PATH": "models/covid_resnet50.h5",
    # Largest accepted request body, in megabytes (the API answers 413 above it).
    "MAX_UPLOAD_MB": 10,
    # Port gunicorn binds (read by gunicorn.conf.py; kept here so it is documented in one place).
    "PORT": 8080,
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
}

_CASTS = {"MAX_UPLOAD_MB": float, "PORT": int, "READY_WAIT_S": float, "BATCH_MAX_FILES": int,
          "BATCH_MAX_MB": float}
_BOOLS = {"LOAD_MODEL_ASYNC"}


def _cast(key: str, value):
    if value is None:
        return None
    if key in _BOOLS:
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)
    if key in _CASTS:
        return _CASTS[key](value)
    return value


def load_config(overrides: dict | None = None, environ=None) -> dict:
    """Defaults, then environment variables, then ``overrides`` (tests)."""
    environ = os.environ if environ is None else environ
    config = {}
    for key, default in DEFAULTS.items():
        value = environ.get(key, default)
        if key == "API_KEY" and value == "":
            value = None
        config[key] = _cast(key, value)
    for key, value in (overrides or {}).items():
        config[key] = _cast(key, value) if key in DEFAULTS else value
    return config
