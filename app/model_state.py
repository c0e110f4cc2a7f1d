"""The per-worker model: loaded once at start-up, warmed up, then shared by all threads.

Loading happens in the worker process (never in the gunicorn master: TensorFlow is not
fork-safe), either in a background thread so ``/healthz`` answers while TensorFlow
imports, or synchronously for tests. ``/readyz`` reports 200 only once the model is
loaded *and* warmed up (``load_predictor`` runs one inference before returning).
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("cxr.model")


class ModelState:
    def __init__(self, model_path: str, backend: str = "auto", threads=None, precision: str = "auto"):
        self.model_path = str(model_path)
        self.backend = backend  # the predictor's settings, from the app's config (app.config)
        self.precision = precision
        self.threads = threads
        self.predictor = None
        self.error: str | None = None
        self.load_seconds: float | None = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        return self.predictor is not None

    @property
    def loading(self) -> bool:
        return not self._done.is_set()

    def start(self, background: bool) -> None:
        if background:
            self._thread = threading.Thread(target=self._load, name="model-loader", daemon=True)
            self._thread.start()
        else:
            self._load()

    def wait(self, timeout: float | None) -> bool:
        """Block until loading finished (or ``timeout``); True when the model is ready."""
        self._done.wait(timeout)
        return self.ready

    def _load(self) -> None:
        from cxr.inference import load_predictor  # TensorFlow import happens here, in the worker

        started = time.perf_counter()
        try:
            predictor = load_predictor(self.model_path, backend=self.backend, threads=self.threads,
                                       precision=self.precision)
        except Exception as exc:  # reported by /readyz; the process stays up for diagnosis
            self.error = f"{exc.__class__.__name__}: {exc}"
            log.error("model load failed: %s", self.error)
        else:
            self.load_seconds = time.perf_counter() - started
            self.predictor = predictor
            log.info("model ready: name=%s sha256=%s input_size=%s backend=%s precision=%s (%s) load_s=%.1f",
                     predictor.name, predictor.sha256[:12], predictor.input_size, predictor.backend,
                     predictor.precision, predictor.precision_reason, self.load_seconds)
            if predictor.gate is None:  # answers then say in_distribution: null
                log.warning("no input gate: %s; images that are not chest X-rays will be classified too",
                            predictor.gate_reason)
        finally:
            self._done.set()
