"""Callbacks that make a long CPU training resumable with the same result as an unbroken run.

Keras' own BackupAndRestore brings back weights, optimizer and epoch, but not the state of
EarlyStopping/ModelCheckpoint nor the random layers' seeds, so a resumed run would drift
from an unbroken one. Here every epoch leaves a complete checkpoint: the training model
(with optimizer and seed-generator state), the best weights so far, and a ``state.json``
with the history and the callbacks' counters.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import keras
import numpy as np

from cxr.metadata import atomic_path, write_json_atomic

STATE_FILE = "state.json"
LAST_MODEL = "last.keras"
BEST_WEIGHTS = "best.weights.h5"


def read_state(checkpoint_dir: str | Path) -> dict | None:
    path = Path(checkpoint_dir) / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else None


class ReseedAugmentation(keras.callbacks.Callback):
    """Set every seed generator (augmentation, dropout) from (seed, epoch) at each epoch start.

    Keras does not checkpoint the random layers' positions in their streams in a way that
    survives rebuilding the pipeline, so we make them a pure function of the epoch instead.
    """

    def __init__(self, seed: int):
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch, logs=None):
        states = [v for v in self.model.variables if "seed_generator_state" in v.path]
        for i, var in enumerate(states):
            value = np.array([self.seed * 1_000_003 + epoch * 1009 + i, 0])
            var.assign(value.astype(var.dtype))


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping whose counters can be restored from a checkpoint's state."""

    def __init__(self, *args, resume_state: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._resume_state = resume_state

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self._resume_state:
            self.best = self._resume_state["best"]
            self.wait = self._resume_state["wait"]
            self.best_epoch = self._resume_state["best_epoch"]


class EpochCheckpoint(keras.callbacks.Callback):
    """Write the full resumable state after every epoch, atomically."""

    def __init__(self, checkpoint_dir, *, early_stopping, model_checkpoint, run_config, history=None,
                 images_per_epoch: int, log=print):
        super().__init__()
        self.dir = Path(checkpoint_dir)
        self.early_stopping = early_stopping
        self.model_checkpoint = model_checkpoint
        self.run_config = run_config
        self.history = history or {}
        self.images_per_epoch = images_per_epoch
        self.log = log
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._started
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self.history.setdefault("epoch_seconds", []).append(round(seconds, 2))
        self.history.setdefault("images_per_second", []).append(round(self.images_per_epoch / seconds, 3))
        with atomic_path(self.dir / LAST_MODEL) as tmp:
            self.model.save(tmp)
        es = self.early_stopping
        write_json_atomic(
            self.dir / STATE_FILE,
            {
                "completed_epochs": epoch + 1,
                "history": self.history,
                "early_stopping": {"best": _float(es.best), "wait": es.wait, "best_epoch": es.best_epoch},
                "model_checkpoint_best": _float(self.model_checkpoint.best),
                "config": self.run_config,
            },
        )
        self.log(f"  epoch {epoch + 1}: {seconds:.0f} s, {self.images_per_epoch / seconds:.2f} images/s; "
                 f"checkpoint saved to {self.dir}")


def _float(value):
    if value is None:
        return None
    value = float(value)
    return None if np.isinf(value) else value
