"""Gunicorn settings for the X-ray classifier (``gunicorn -c gunicorn.conf.py app.wsgi:app``).

- One process per CPU-heavy model copy: ``WEB_CONCURRENCY`` workers (default 1), each with
  ``GUNICORN_THREADS`` threads (default 4) so slow uploads and probes do not queue behind
  an inference (TensorFlow releases the GIL while it computes).
- No ``preload_app``: TensorFlow is not fork-safe (workers hang), so each worker imports
  ``app.wsgi`` after the fork and loads its own model there.
- ``timeout`` covers the model load (TensorFlow import + load + warm-up took ~10 s);
  ``graceful_timeout`` lets in-flight requests finish on SIGTERM.
- Gunicorn's access log stays off: the app logs method, path, status, sizes and latency
  itself, never file names (``app.access_log``).
"""

import os

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{int(os.environ.get('PORT', '8080'))}"
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = 5
preload_app = False
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
# Bounded request lines/headers; the body limit is MAX_UPLOAD_MB, enforced by the app.
limit_request_line = 4094
limit_request_fields = 100
