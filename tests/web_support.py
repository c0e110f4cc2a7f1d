"""Helpers shared by the web tests: one in-process app per model, real servers.

``cached_app`` loads the model once per test session (it takes seconds), whichever test
module asks first. ``GunicornServer`` runs the real ``gunicorn -c gunicorn.conf.py
app.wsgi:app`` on a free loopback port; ``ThreadedServer`` serves the in-process app
over real HTTP (for the browser test) without paying for another model load.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def cached_app(model_path: str):
    from app import create_app

    return create_app({"MODEL_PATH": model_path, "LOAD_MODEL_ASYNC": False})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GunicornServer:
    """A real gunicorn master + workers, always stopped by the caller (``stop``)."""

    def __init__(self, model_path, log_path: Path, workers=1, threads=2, extra_env=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.log_path = Path(log_path)
        env = dict(os.environ)
        env.update({
            "MODEL_PATH": str(model_path), "HOST": "127.0.0.1", "PORT": str(self.port),
            "WEB_CONCURRENCY": str(workers), "GUNICORN_THREADS": str(threads),
            "LOG_LEVEL": "INFO", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1",
        })
        env.update(extra_env or {})
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app.wsgi:app"],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ready_count(self) -> int:
        return self.log_text().count("model ready:")

    def worker_pids(self) -> list[int]:
        import psutil

        return sorted(c.pid for c in psutil.Process(self.proc.pid).children())

    def wait_ready(self, expected_loads: int | None = None, timeout: float = 240.0) -> None:
        """Until every worker logged 'model ready' and /readyz answers 200."""
        expected_loads = self.workers if expected_loads is None else expected_loads
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            if self.ready_count() >= expected_loads:
                try:
                    if requests.get(self.url + "/readyz", timeout=5).status_code == 200:
                        return
                except requests.RequestException:
                    pass
            time.sleep(0.3)
        raise TimeoutError(f"gunicorn not ready after {timeout}s:\n{self.log_text()[-3000:]}")

    def terminate(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)

    def stop(self, timeout: float = 45.0) -> int | None:
        try:
            self.terminate()
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(10)
        finally:
            self._log.close()


class ThreadedServer:
    """The in-process app behind Werkzeug's threaded HTTP server, on a free loopback port."""

    def __init__(self, app):
        from werkzeug.serving import make_server

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(10)
