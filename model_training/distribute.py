"""Data-parallel training on every visible accelerator: ``train --distribute data-parallel``.

Keras 3's distribution API on the JAX backend (``keras.distribution.DataParallel``): the
model's variables are replicated on every device of a 1-D mesh, each global batch is split
along its first axis across the devices, and the gradients are reduced by XLA; no collective
is written here. ``--batch-size`` stays the *global* batch, so a run on N devices computes the
same steps as a one-device run of the same batch (tests/test_distribute.py checks the first
epoch's loss). The global batch must divide by the device count.

Learning rate for larger batches (not applied automatically: the flags say what runs): to keep
each device as busy as one device was, grow the global batch k-fold and scale the learning
rate with it, linearly for SGD (Goyal et al. 2017, "Accurate, Large Minibatch SGD") or by
sqrt(k) for Adam/AdamW (this project's optimizer), with a warm-up and the cosine schedule.

Several hosts (a TPU pod slice, several GPU machines): run the same command on every host with
Keras's own variables ``KERAS_DISTRIBUTION_JOB_ADDRESSES`` (the coordinator's ``ip:port``),
``KERAS_DISTRIBUTION_NUM_PROCESSES`` and ``KERAS_DISTRIBUTION_PROCESS_ID``; when the process
count is set, :func:`setup` calls ``keras.distribution.initialize`` (which calls
``jax.distributed.initialize``) before JAX computes anything; on a Cloud TPU VM the three can be
left out of the initialisation, which JAX reads from the TPU environment, by setting
``KERAS_DISTRIBUTION_NUM_PROCESSES`` alone. Each process then feeds its own slice of every
global batch (:class:`ProcessShard`). Only the one-host path is tested here (two virtual CPU
devices).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import keras

STRATEGIES = ("none", "data-parallel")


@dataclass(frozen=True)
class Distribution:
    """What the sidecar records under ``training.distribution``."""

    strategy: str
    devices: int
    device_kind: str
    processes: int = 1
    global_batch: int | None = None
    per_device_batch: int | None = None

    def record(self) -> dict:
        return asdict(self)


def setup(strategy: str, global_batch: int) -> Distribution:
    """Set Keras's global distribution (before any model is built); return what was set."""
    if strategy == "none":
        try:
            kind = _device_kind(keras.distribution.list_devices()[:1])
        except Exception:  # noqa: BLE001 - a backend without Keras's distribution API still trains on one device
            kind = "unknown"
        return Distribution("none", 1, kind)
    if keras.backend.backend() != "jax":
        raise ValueError(f"--distribute {strategy} runs on the JAX backend (set KERAS_BACKEND=jax; "
                         f"this process has {keras.backend.backend()})")
    if os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES"):  # several hosts: Keras's variables, read by Keras
        keras.distribution.initialize()
    devices = keras.distribution.list_devices()
    if global_batch % len(devices):
        raise ValueError(f"--batch-size {global_batch} does not divide across {len(devices)} devices")
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    import jax

    return Distribution("data-parallel", len(devices), _device_kind(devices), jax.process_count(),
                        global_batch, global_batch // len(devices))


def _device_kind(devices) -> str:
    return str(devices[0]).split(":")[0] if devices else "cpu"


def process_slice(n: int, index: int, count: int) -> slice:
    """The rows of an ``n``-row global batch that process ``index`` of ``count`` feeds."""
    per = -(-n // count)
    return slice(min(index * per, n), min((index + 1) * per, n))


class ProcessShard(keras.utils.PyDataset):
    """A dataset whose every batch is cut to this process's rows (several hosts only: Keras's
    JAX trainer assembles the global batch from each process's local part)."""

    def __init__(self, dataset, index: int, count: int):
        super().__init__(workers=dataset.workers, use_multiprocessing=dataset.use_multiprocessing,
                         max_queue_size=dataset.max_queue_size)
        self.dataset, self.index, self.count = dataset, index, count

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        batch = self.dataset[i]
        part = process_slice(len(batch[0]), self.index, self.count)
        return tuple(item[part] for item in batch)

    def on_epoch_end(self):
        self.dataset.on_epoch_end()


def shard_for_process(dataset):
    """``dataset`` itself on one host, else its :class:`ProcessShard` for this process."""
    if keras.backend.backend() != "jax":
        return dataset
    import jax

    if jax.process_count() == 1:
        return dataset
    return ProcessShard(dataset, jax.process_index(), jax.process_count())
