"""One error format for the API and a friendly page for the browser form.

API clients get ``{"error": {"code": ..., "message": ...}}`` with the matching status;
the HTML form (``POST /``) and browser navigations get the same message in a page.
Input errors come from the core (``cxr.errors.InputError`` carries a stable code); the
HTTP status for each code is decided here, in :data:`INPUT_STATUS`.
"""

from __future__ import annotations

import logging

from flask import Flask, current_app, jsonify, make_response, render_template, request
from werkzeug.exceptions import HTTPException

from app.outcomes import note_error
from app.pages import render_index
from app.security import key_matches, presented_key
from cxr.errors import InputError

log = logging.getLogger("cxr.errors")

API_PATHS = ("/predict", "/predict/batch", "/healthz", "/readyz", "/openapi.json", "/metrics")

# Werkzeug's status codes -> our stable machine-readable codes.
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable_entity",
    429: "rate_limited",
    500: "internal_error",
    503: "not_ready",
}

# The core's input error codes -> the status the API answers with (others: 422).
INPUT_STATUS = {
    "empty_input": 400,
    "image_too_large": 413,
    "unsupported_media_type": 415,
    "undecodable_image": 422,
    "image_too_small": 422,
    "not_an_image": 422,
    "not_a_chest_xray": 422,
    "lateral_view": 422,
}


def input_status(exc: InputError) -> int:
    """The HTTP status for an input error: 400, 413, 415 or 422, by its code."""
    return INPUT_STATUS.get(exc.code, 422)


class ApiError(Exception):
    """An error raised by our own views, rendered as JSON or as the friendly page."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None,
                 details: dict | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.details = details or {}  # extra fields of the JSON error, e.g. the valid choices


def require_api_key(form_field: str | None = None) -> None:
    """401 ``unauthorized`` unless the request presents ``API_KEY`` (when one is set): the
    prediction routes, the form and ``/metrics`` all ask the same way."""
    if not key_matches(current_app.config["API_KEY"], presented_key(form_field)):
        raise ApiError(401, "unauthorized",
                       "A valid API key is required (Authorization: Bearer <key> or X-API-Key).",
                       {"WWW-Authenticate": 'Bearer realm="cxr-covid"'})


def wants_html() -> bool:
    """The no-JS form and browser navigations get HTML; everything else JSON."""
    if request.path in API_PATHS:
        return False
    if request.path == "/" and request.method == "POST":
        return True
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "text/html"


def error_response(status: int, code: str, message: str, headers: dict | None = None,
                   details: dict | None = None):
    note_error(code)  # for the metrics and the request log (app.outcomes)
    if wants_html():
        if request.path == "/":  # the form page shows its own errors
            response = render_index(error=message, status=status)
        else:
            response = render_template("error.html", status=status, message=message), status
        response = make_response(response)
    else:
        response = jsonify({"error": {"code": code, "message": message, **(details or {})}})
        response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.headers, exc.details)

    @app.errorhandler(InputError)
    def _input_error(exc: InputError):
        return error_response(input_status(exc), exc.code, str(exc))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 413:
            limit = app.config["MAX_UPLOAD_MB"]
            message = f"The upload is larger than the {limit:g} MB limit (MAX_UPLOAD_MB)."
        headers = {}
        if status == 405:
            allow = exc.get_response().headers.get("Allow")
            if allow:
                headers["Allow"] = allow
            message = f"{request.method} is not allowed on {request.path}."
        return error_response(status, HTTP_CODES.get(status, "http_error"), message, headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        # Log the type and traceback only: never the request body or the upload's name.
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "Internal error; the request was not processed.")
