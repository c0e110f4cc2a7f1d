"""Access log: method, path, status, sizes and latency; never file names or bytes.

Uploaded file names often carry patient names, so the log line is built only from the
fields below (the query string is left out as well). Gunicorn's own access log stays off.
"""

from __future__ import annotations

import logging
import sys
import time

from flask import Flask, g, request

log = logging.getLogger("cxr.access")
_HANDLER_FLAG = "_cxr_handler"


def configure_logging(level: str) -> None:
    """One stderr handler on the ``cxr`` logger (idempotent: tests create many apps)."""
    root = logging.getLogger("cxr")
    root.setLevel(level.upper())
    if not any(getattr(h, _HANDLER_FLAG, False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        setattr(handler, _HANDLER_FLAG, True)
        root.addHandler(handler)


def install_access_log(app: Flask) -> None:
    @app.before_request
    def _start_timer():
        g._cxr_started = time.perf_counter()

    @app.after_request
    def _log_request(response):
        started = g.get("_cxr_started")
        latency_ms = (time.perf_counter() - started) * 1000 if started else -1.0
        log.info(
            "method=%s path=%s status=%d req_bytes=%d resp_bytes=%s latency_ms=%.1f",
            request.method, request.path, response.status_code,
            request.content_length or 0,
            response.calculate_content_length() if not response.is_streamed else "-",
            latency_ms,
        )
        return response
