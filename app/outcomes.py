"""What a request answered, noted on ``flask.g`` for the metrics and the request log.

The routes note every classified image or failed batch item (:func:`note_answers`, the dicts the
API answers with), the error handler notes a failed request's code (:func:`note_error`);
``app.metrics`` and ``app.access_log`` read them once the response is made. One place, so the
two cannot count differently. Only codes, labels, flags and scores are ever read from them:
never bytes, file names or form fields.
"""

from __future__ import annotations

import time

from flask import g


def note_start() -> None:
    """When this request began (one ``before_request`` hook, ``app.access_log``): the log's
    duration and the metrics' latency are the same measurement."""
    g.cxr_started = time.perf_counter()


def elapsed_seconds() -> float | None:
    started = g.get("cxr_started")
    return None if started is None else time.perf_counter() - started


def note_answers(items: list[dict]) -> None:
    """Per image: its answer (``label``, ``probabilities``, ...) or a batch item's ``{"error": ...}``."""
    g.setdefault("cxr_answers", []).extend(items)


def note_error(code: str) -> None:
    """The stable error code this request is answered with (``app.errors.error_response``)."""
    g.cxr_error_code = code


def answers() -> list[dict]:
    return g.get("cxr_answers", [])


def error_code() -> str | None:
    return g.get("cxr_error_code")
