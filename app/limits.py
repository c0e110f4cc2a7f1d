"""Rate limiting of the prediction routes (Flask-Limiter), and the client address behind proxies.

``RATE_LIMIT`` (e.g. ``60/minute``; unset: no limit, and nothing here runs) is one budget per
client shared by ``POST /predict``, ``POST /predict/batch`` and the form (``POST /``): a batch
is one request. Probes, ``/metrics``, ``/openapi.json``, the page and static files are never
limited. Over the limit: 429 ``rate_limited`` in the API's error shape, with ``Retry-After``.

The client is the socket's peer address. Behind App Engine's front end that is a proxy, so
``TRUSTED_PROXIES`` (a count, default 0) tells how many proxies in front of the app append to
``X-Forwarded-For``; Werkzeug's ``ProxyFix`` then takes the address that many hops from the
right. With 0 the header is ignored: a direct client could write anything into it.

Counters live in ``RATE_LIMIT_STORAGE_URI``: ``memory://`` (default) keeps them in each worker,
so with W workers and N instances a client may get up to W x N times the limit, depending on
where its requests land; ``redis://host:6379`` (Memorystore on Google Cloud) shares them across
workers and instances. When Redis cannot be reached, each worker falls back to its own memory
counters (logged) rather than refusing or waving through every request.
"""

from __future__ import annotations

import math
import time

from flask import Flask, request
from flask_limiter import Limiter, RateLimitExceeded
from werkzeug.middleware.proxy_fix import ProxyFix

from app.errors import error_response

# The routes that run the model (blueprint "web" in app.routes): the only ones limited.
LIMITED_ENDPOINTS = frozenset({"web.predict", "web.predict_batch", "web.index_form"})


def client_address() -> str:
    """The client's address (after ``ProxyFix`` when proxies are trusted): the limit's key."""
    return request.remote_addr or "unknown"


def _exempt() -> bool:
    return request.endpoint not in LIMITED_ENDPOINTS


def _retry_after(limiter: Limiter) -> str:
    """Whole seconds until the client's window resets: at least 1, at most the window (Redis gives
    the reset time in whole seconds, which can round past it)."""
    current = limiter.current_limit
    if current is None:
        return "1"
    window = current.limit.get_expiry()
    return str(max(1, min(window, math.ceil(current.reset_at - time.time()))))


def init_app(app: Flask) -> Limiter | None:
    """``ProxyFix`` for ``TRUSTED_PROXIES``; a limiter on the prediction routes when ``RATE_LIMIT`` is set."""
    proxies = app.config["TRUSTED_PROXIES"]
    if proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies)
    rate = app.config["RATE_LIMIT"]
    if not rate:
        return None
    limiter = Limiter(client_address, app=app, application_limits=[rate],
                      application_limits_exempt_when=_exempt, storage_uri=app.config["RATE_LIMIT_STORAGE_URI"],
                      strategy="fixed-window", in_memory_fallback_enabled=True, headers_enabled=False,
                      key_prefix="cxr")

    @app.errorhandler(RateLimitExceeded)
    def _rate_limited(exc: RateLimitExceeded):
        return error_response(429, "rate_limited",
                              f"Too many requests: at most {exc.limit.limit} per client (RATE_LIMIT); "
                              "retry after Retry-After seconds.", {"Retry-After": _retry_after(limiter)})

    return limiter
