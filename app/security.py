"""Response security headers and the optional API key.

The Content-Security-Policy allows only our own static files (no inline script or style,
no CDN); ``img-src`` also allows ``blob:`` for the local upload preview and ``data:`` for
a returned heatmap PNG. Results and uploads are health data, so nothing is cached.
"""

from __future__ import annotations

import hmac

from flask import Flask, request

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def add_security_headers(app: Flask) -> None:
    @app.after_request
    def _headers(response):
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        if not request.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
        return response


def presented_key(form_field: str | None = None) -> str | None:
    """The key from ``Authorization: Bearer``, ``X-API-Key`` or (the no-JS form) a form field."""
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    if "X-API-Key" in request.headers:
        return request.headers["X-API-Key"].strip()
    if form_field is not None:
        return form_field.strip()
    return None


def key_matches(expected: str | None, presented: str | None) -> bool:
    """True when no key is configured, else a constant-time comparison."""
    if not expected:
        return True
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))
