"""Access log: one line per request, as text (``LOG_FORMAT=text``) or JSON (``LOG_FORMAT=json``).

Uploaded file names often carry patient names, so the line is built only from the fields of
``app.request_log`` (method, route, status, sizes, latency, request id, and the answer's error
code, label and ``in_distribution``); the query string is left out as well. Gunicorn's own
access log stays off. In JSON mode every ``cxr`` logger writes JSON lines, so a log reader
(Cloud Logging on App Engine) gets one structured entry per line.
"""

from __future__ import annotations

import logging
import sys

from flask import Flask, request

from app.outcomes import answers, elapsed_seconds, error_code, note_start
from app.pages import model_state
from app.request_log import RECORD_ATTR, JsonFormatter, outcome_fields, request_id, route

log = logging.getLogger("cxr.access")
_HANDLER_FLAG = "_cxr_handler"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(level: str, fmt: str = "text") -> None:
    """One stderr handler on the ``cxr`` logger (idempotent: tests create many apps), writing
    ``fmt``: ``text`` lines or ``json`` objects."""
    root = logging.getLogger("cxr")
    root.setLevel(level.upper())
    handler = next((h for h in root.handlers if getattr(h, _HANDLER_FLAG, False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        setattr(handler, _HANDLER_FLAG, True)
        root.addHandler(handler)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))


def _model_sha() -> str | None:
    state = model_state()
    return state.predictor.sha256[:12] if state.ready else None


def install_access_log(app: Flask) -> None:
    """Time each request, echo its id in ``X-Request-ID`` and log it in ``LOG_FORMAT``."""
    as_json = app.config["LOG_FORMAT"] == "json"

    app.before_request(note_start)

    @app.after_request
    def _log_request(response):
        elapsed = elapsed_seconds()
        latency_ms = elapsed * 1000 if elapsed is not None else -1.0
        rid = request_id()
        response.headers["X-Request-ID"] = rid
        rule = route()
        outcome = outcome_fields(answers(), error_code())
        if as_json:
            fields = {"request_id": rid, "method": request.method, "route": rule, "status": response.status_code,
                      "duration_ms": round(latency_ms, 1), **outcome, "model_sha256": _model_sha(),
                      "_trace": request.headers.get("X-Cloud-Trace-Context")}
            log.info("%s %s %d", request.method, rule, response.status_code, extra={RECORD_ATTR: fields})
            return response
        log.info(
            "method=%s path=%s status=%d req_bytes=%d resp_bytes=%s latency_ms=%.1f request_id=%s%s",
            request.method, rule, response.status_code,
            request.content_length or 0,
            response.calculate_content_length() if not response.is_streamed else "-",
            latency_ms, rid, "".join(f" {k}={v}" for k, v in outcome.items() if k != "batch"),
        )
        return response
