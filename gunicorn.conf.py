"""Gunicorn settings for the X-ray classifier (``gunicorn -c gunicorn.conf.py app.wsgi:app``).

- One process per CPU-heavy model copy: ``WEB_CONCURRENCY`` workers (default 1), each with
  ``GUNICORN_THREADS`` threads (default 4) that run requests (TensorFlow and ONNX Runtime
  release the GIL while they compute); at most ``INFERENCE_CONCURRENCY`` of them run the
  model at once (0 = all of them).
- Slow clients: the worker is ``app.buffering_worker.BufferingThreadWorker``, gthread whose
  event loop receives each request completely (headers and body, non-blocking) before a
  thread sees it, within ``REQUEST_READ_TIMEOUT`` seconds (default 30, else 408). Waiting
  for bytes costs a socket and a buffer, never a thread, so trickling uploads cannot occupy
  the threads or the inference slots, and ``/healthz``/``/readyz`` (which also get two
  threads of their own) keep answering. Measured with bench/slow_clients.py (figures in
  bench/SLOW_CLIENTS.md): with stock gthread and 4 threads, 8 trickling uploads already left
  ``/healthz`` and ``/predict`` unanswered; with 64 gthread threads (the other design: many
  more I/O threads than inference slots) 32 were fine but 128 hung it again, since every slow
  client holds a thread (and its body); with this worker, 8, 32 and 128 of them leave
  ``/healthz`` and ``/predict`` as fast as on an idle server, and each ends with 408 at
  the deadline.
- Memory stays bounded with many open connections: at most ``worker_connections`` open
  connections per worker (``GUNICORN_WORKER_CONNECTIONS``, default 1000, kept under the
  open-file limit, which is raised to its hard limit here), at most 64 KiB of headers each,
  and request bodies in memory (received, queued or being served) at most
  ``REQUEST_BUFFER_MB`` (default 64) per worker: beyond it the loop stops reading bodies and
  TCP holds the senders back. ``GUNICORN_WORKER_CLASS`` overrides the worker (e.g.
  ``gthread`` for comparisons).
- No ``preload_app``: TensorFlow is not fork-safe (workers hang), so each worker imports
  ``app.wsgi`` after the fork and loads its own model there.
- ``timeout`` covers the model load (TensorFlow import + load + warm-up took ~10 s);
  ``graceful_timeout`` lets in-flight requests finish on SIGTERM.
- Gunicorn's access log stays off: the app logs method, path, status, sizes and latency
  itself, never file names (``app.access_log``).
"""

import importlib.util
import os
import resource
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cxr.settings import parse_float, parse_int, setting  # noqa: E402 - the one parser (standard library only)


def _buffering_worker():
    """The worker class, loaded from its file: ``import app.buffering_worker`` would run
    ``app/__init__`` (Flask, NumPy, ...) in the master, which should stay small and must never
    import TensorFlow. The module needs only gunicorn and the standard library. Its settings
    are read here, with the rest of the server's."""
    path = Path(__file__).resolve().parent / "app" / "buffering_worker.py"
    spec = importlib.util.spec_from_file_location("cxr_buffering_worker", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    worker = module.BufferingThreadWorker
    worker.request_read_timeout = setting(os.environ, "REQUEST_READ_TIMEOUT", module.DEFAULT_READ_TIMEOUT_S,
                                          parse_float, positive=True)
    worker.request_buffer_mb = setting(os.environ, "REQUEST_BUFFER_MB", module.DEFAULT_BUFFER_MB,
                                       parse_float, positive=True)
    return worker


def _open_files_limit() -> int:
    """Raise the soft open-file limit to the hard one (workers inherit it); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


_env = os.environ
bind = f"{setting(_env, 'HOST', '0.0.0.0')}:{setting(_env, 'PORT', 8080, parse_int, minimum=1)}"
worker_class = setting(_env, "GUNICORN_WORKER_CLASS", None) or _buffering_worker()
workers = setting(_env, "WEB_CONCURRENCY", 1, parse_int, minimum=1)
threads = setting(_env, "GUNICORN_THREADS", 4, parse_int, minimum=1)
# Each connection is one file descriptor; leave room for the model, logs and pipes.
worker_connections = max(16, min(setting(_env, "GUNICORN_WORKER_CONNECTIONS", 1000, parse_int, minimum=1),
                                 _open_files_limit() - 128))
timeout = setting(_env, "GUNICORN_TIMEOUT", 120, parse_int, minimum=1)
graceful_timeout = setting(_env, "GUNICORN_GRACEFUL_TIMEOUT", 30, parse_int, minimum=0)
keepalive = 5
preload_app = False
accesslog = None
errorlog = "-"
loglevel = setting(_env, "LOG_LEVEL", "info").lower()
# Bounded request lines/headers; the body limit is MAX_UPLOAD_MB, enforced by the app.
limit_request_line = 4094
limit_request_fields = 100

# Prometheus (app.metrics): every worker writes its samples into one folder that GET /metrics
# sums (prometheus-client's multiprocess mode). The variable is set in the master when it starts
# (on_starting: before any worker forks and imports prometheus_client, and not merely because
# this file was read, as the tests read it); a fresh folder per server start (an operator's own
# PROMETHEUS_MULTIPROC_DIR is used as given, and must be empty at start), removed at exit.
def on_starting(server):
    if not _env.get("PROMETHEUS_MULTIPROC_DIR"):
        _env["PROMETHEUS_MULTIPROC_DIR"] = _env["CXR_OWN_METRICS_DIR"] = tempfile.mkdtemp(prefix="cxr-metrics-")
    os.makedirs(_env["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)


def child_exit(server, worker):
    """A dead worker's live gauge (cxr_model_info) leaves the sums; its counts stay."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _env.get("CXR_OWN_METRICS_DIR") == _env.get("PROMETHEUS_MULTIPROC_DIR"):
        shutil.rmtree(_env["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
