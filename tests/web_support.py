"""Helpers shared by the web tests: one in-process app per model, real servers.

``cached_app`` loads the model once per test session (it takes seconds), whichever test
module asks first. ``GunicornServer`` runs the real ``gunicorn -c gunicorn.conf.py
app.wsgi:app`` on a free loopback port (for the tests and ``bench/``); ``multipart`` encodes
upload bodies by hand (tests and ``bench/serving.py``); ``ThreadedServer`` serves the in-process app
over real HTTP (for the browser test) without paying for another model load.
``TricklingUploads`` plays many slow-loris clients at once (tests and bench/slow_clients.py).
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import tempfile
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
    """A loopback port free at the time of asking."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


BOUNDARY = "cxr-test-boundary-7f3a"


def multipart(files, *, field: str = "file", content_type: str = "image/jpeg",
              boundary: str = BOUNDARY) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body and its ``Content-Type`` header, encoded by hand: what a
    browser or ``curl -F field=@name`` sends for ``files``, (filename, data) pairs, one part
    each under the one ``field`` (``/predict/batch`` repeats ``files``). Encoded once up front,
    so benchmarks keep the client's CPU out of their latency and tests control every byte."""
    parts = [(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n"
              f"Content-Type: {content_type}\r\n\r\n").encode() + data + b"\r\n" for name, data in files]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


# What ``make run`` starts; the launcher runs it as ``python -m gunicorn`` with the same interpreter.
GUNICORN_COMMAND = ("gunicorn", "-c", "gunicorn.conf.py", "app.wsgi:app")


class GunicornServer:
    """``make run``'s server (gunicorn -c gunicorn.conf.py app.wsgi:app), a real master and its
    workers on a free loopback port, for the tests and the benchmarks; always stopped by the
    caller (``stop``, or leaving a ``with`` block).

    ``workers`` and ``threads`` set ``WEB_CONCURRENCY`` and ``GUNICORN_THREADS``; None keeps
    ``gunicorn.conf.py``'s own defaults, as ``make run`` does. ``extra_env`` overrides any
    variable. The log goes to ``log_path`` (None: a temporary file, removed by ``stop``).
    ``start=False`` creates it stopped, for ``start()`` later; ``python`` runs it from another
    virtualenv (default: the tests' own).
    """

    def __init__(self, model_path, log_path: Path | None = None, workers: int | None = 1, threads: int | None = 2,
                 extra_env=None, *, start: bool = True, python: str | Path | None = None):
        # Another virtualenv's python: the lean serving one. CXR_SERVE_PYTHON runs every server
        # test from it (README, "int8 inference ...": which suites were run that way).
        self.python = str(python or os.environ.get("CXR_SERVE_PYTHON") or sys.executable)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self._own_log = log_path is None
        if log_path is None:
            handle, log_path = tempfile.mkstemp(prefix="gunicorn-", suffix=".log")
            os.close(handle)
        self.log_path = Path(log_path)
        layout = {"WEB_CONCURRENCY": workers, "GUNICORN_THREADS": threads}
        self.env = {
            **os.environ, "MODEL_PATH": str(model_path), "HOST": "127.0.0.1", "PORT": str(self.port),
            **{k: str(v) for k, v in layout.items() if v is not None},
            "LOG_LEVEL": "INFO", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self._log = None
        if start:
            self.start()

    def start(self) -> None:
        self._log = open(self.log_path, "wb")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [self.python, "-m", *GUNICORN_COMMAND], cwd=ROOT, env=self.env, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ready_count(self) -> int:
        return self.log_text().count("model ready:")

    def worker_pids(self) -> list[int]:
        import psutil

        return sorted(c.pid for c in psutil.Process(self.proc.pid).children())

    def wait_ready(self, expected_loads: int | None = None, timeout: float = 240.0, poll: float = 0.3) -> float:
        """Until ``expected_loads`` workers (default: every one set) logged 'model ready' and
        /readyz answers 200; returns the seconds since the start (the benchmark's ready time)."""
        expected_loads = (self.workers or 0) if expected_loads is None else expected_loads
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            if self.ready_count() >= expected_loads:
                try:
                    if requests.get(self.url + "/readyz", timeout=5).status_code == 200:
                        return time.perf_counter() - self.started
                except requests.RequestException:
                    pass
            time.sleep(poll)
        raise TimeoutError(f"gunicorn not ready after {timeout}s:\n{self.log_text()[-3000:]}")

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)

    def stop(self, timeout: float = 45.0) -> int | None:
        if self.proc is None:
            return None
        try:
            self.terminate()
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(10)
        finally:
            self._log.close()
            if self._own_log:
                self.log_path.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serving(server: GunicornServer):
    """For a module fixture: ``yield from serving(GunicornServer(...))`` waits until it is ready,
    yields it, and on teardown checks that it stopped cleanly (exit 0: a graceful shutdown)."""
    try:
        server.wait_ready()
        yield server
    finally:
        rc = server.stop()
        assert rc == 0, server.log_text()[-2000:]


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


class TricklingUploads:
    """``count`` slow-loris clients on loopback, driven by one thread.

    ``mode="body"``: each connection sends the headers of a ``declared``-byte upload to
    ``path``, then one body byte every ``interval`` seconds, never finishing;
    ``mode="headers"``: it sends a request line and trickles one never-ending header;
    ``mode="idle"``: it connects and sends nothing. ``results()`` says how each one
    ended: ``status`` (an HTTP status it received, e.g. 408), ``closed`` (the server closed
    without answering), ``reset`` (the server reset it) or ``open`` (still going), with the
    seconds from connecting to that end.
    """

    def __init__(self, port: int, count: int, declared: int = 1 << 20, interval: float = 1.0,
                 path: str = "/predict", host: str = "127.0.0.1", mode: str = "body"):
        import selectors

        self.count, self.interval, self.mode = count, interval, mode
        self.selector = selectors.DefaultSelector()
        self.conns = []
        head = {
            "body": (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\n"
                     f"Content-Length: {declared}\r\n\r\n").encode(),
            "headers": f"POST {path} HTTP/1.1\r\nHost: {host}\r\nX-Slow: ".encode(),
            "idle": b"",
        }[mode]
        self.byte = b"a" if mode == "headers" else b"\x00"
        for _ in range(count):
            sock = socket.create_connection((host, port), timeout=10)
            if head:
                sock.sendall(head)
            sock.setblocking(False)
            conn = {"sock": sock, "started": time.monotonic(), "sent": len(head), "response": b"",
                    "outcome": "open", "ended_s": None}
            self.conns.append(conn)
            self.selector.register(sock, selectors.EVENT_READ, conn)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _end(self, conn, outcome: str) -> None:
        conn["outcome"] = outcome
        conn["ended_s"] = round(time.monotonic() - conn["started"], 2)
        try:
            self.selector.unregister(conn["sock"])
        except (KeyError, ValueError):
            pass
        conn["sock"].close()

    def _receive(self, conn) -> None:
        try:
            data = conn["sock"].recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = None
        if data:
            conn["response"] += data
            return
        status = _status_of(conn["response"])
        self._end(conn, str(status) if status else ("reset" if data is None else "closed"))

    def _run(self) -> None:
        next_byte = time.monotonic() + self.interval
        while not self._stop.is_set():
            timeout = max(0.0, next_byte - time.monotonic())
            events = self.selector.select(min(timeout, 0.2)) if self.selector.get_map() else []
            with self._lock:
                for key, _ in events:
                    if key.data["outcome"] == "open":
                        self._receive(key.data)
                if time.monotonic() >= next_byte:
                    next_byte += self.interval
                    for conn in self.conns:
                        if conn["outcome"] != "open":
                            continue
                        if _status_of(conn["response"]) or self.mode == "idle":
                            continue  # answered: wait for the close, send nothing more
                        try:
                            conn["sent"] += conn["sock"].send(self.byte)
                        except BlockingIOError:
                            pass
                        except OSError:
                            self._end(conn, "reset")
            if not self.selector.get_map():
                time.sleep(0.05)

    def open_count(self) -> int:
        with self._lock:
            return sum(c["outcome"] == "open" for c in self.conns)

    def wait_all_ended(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.open_count():
                return True
            time.sleep(0.1)
        return False

    def results(self) -> list[dict]:
        with self._lock:
            out = []
            for c in self.conns:
                status = _status_of(c["response"])
                outcome = c["outcome"]
                if outcome == "open" and status:
                    outcome = f"{status} (still open)"
                out.append({"outcome": outcome, "ended_s": c["ended_s"], "sent": c["sent"],
                            "body": c["response"].partition(b"\r\n\r\n")[2][:300]})
            return out

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        with self._lock:
            for conn in self.conns:
                if conn["outcome"] == "open":
                    conn["sock"].close()
        self.selector.close()


def _status_of(response: bytes) -> int | None:
    """The status of the last complete final response line in ``response``, skipping 1xx."""
    status = None
    for line in response.split(b"\r\n"):
        if line.startswith(b"HTTP/1."):
            parts = line.split(b" ", 2)
            if len(parts) >= 2 and parts[1].isdigit() and not parts[1].startswith(b"1"):
                status = int(parts[1])
    return status
