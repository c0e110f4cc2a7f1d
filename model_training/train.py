"""Train the Covid/Normal ResNet50 and write a self-describing ``.h5`` model.

    python -m model_training.train --data-dir ../shared/data/siim --out models/covid_resnet50.h5 --weights none

``train()`` reads top to bottom like the keras.io examples, one named step each: resolve the
run (new, or resume the checkpoint) -> model -> data -> callbacks -> fit -> save the model and
write its sidecar. The settings arrive once, as a typed :class:`TrainConfig` built from the
command line. Every epoch leaves a checkpoint in ``<out>.ckpt/``; ``--resume`` continues from
it with the same result as an unbroken run.

Runs on any Keras 3 backend (``KERAS_BACKEND=tensorflow|jax|torch``): the data come from a
NumPy ``PyDataset`` and TensorFlow is imported only when it is the backend, so the same
command trains on a GPU machine that has JAX and no TensorFlow.

Model selection watches the validation AUC of the sources that hold both classes
(``siim``): where each source has one class, a pooled AUC rewards recognising the
hospital, which is exactly what the model must not learn.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from cxr.metadata import (
    CLASS_NAMES,
    DEFAULT_THRESHOLD,
    atomic_path,
    read_metadata,
    sha256_file,
    sidecar_path,
    write_json_atomic,
)
from cxr.preprocessing import PREPROCESSING_MODE

from .cli import log, run_cli
from .data import BALANCE_MODES, DataError, SplitFiles, disputed_files, list_split, merge_splits, siim_read_cxr_files
from .distribute import STRATEGIES, Distribution
from .model import AUGMENTATIONS, WeightsUnavailable

# Settings a resumed run may change; everything else comes from the checkpoint.
RESUME_OVERRIDABLE = ("epochs", "patience", "out", "distribute")
# Flags that say how to start, not what to train: not part of the run's recorded settings.
RUN_CONTROL = ("resume", "restart")
DEFAULT_DATA_DIR = "../shared/data/siim"
DEFAULT_DISPUTED = "../shared/data/siim/cxr_overlap.csv"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m model_training.train",
        description="Train a ResNet50 Covid/Normal chest X-ray classifier and save it as .h5 "
        "with a sidecar <model>.json holding everything the web app needs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data-dir", action="append", default=None,
                   help="folder with train/val/test/{covid,normal}/ images; repeat to train on several "
                   f"(default: {DEFAULT_DATA_DIR})")
    p.add_argument("--disputed", default=DEFAULT_DISPUTED, metavar="CSV",
                   help="SIIM's cxr_overlap.csv: cxr Covid images that SIIM's radiologists read as "
                   "'Negative for Pneumonia' are left out of training and validation ('' keeps them)")
    p.add_argument("--siim-read-cxr", metavar="CXR_DIR", default=None,
                   help="also train on the cxr train images that are SIIM radiographs, labelled with SIIM's "
                   "reading from --disputed's CSV (Typical: Covid, Negative: Normal); never cxr val/test")
    p.add_argument("--precision", choices=("float32", "mixed_bfloat16"), default="float32",
                   help="mixed_bfloat16 computes in bfloat16 with float32 weights (fast on CPUs with AMX or "
                   "AVX-512 BF16); the saved model is float32 either way")
    p.add_argument("--out", default="models/covid_resnet50.h5", help="where to write the trained model (.h5)")
    p.add_argument("--weights", default="imagenet",
                   help="ResNet50 base weights: 'imagenet' (downloads once; needs internet), 'none' "
                   "(random init, whole network trains) or the path of a local no-top weights file")
    p.add_argument("--image-size", type=int, default=224, help="square input size in pixels")
    p.add_argument("--epochs", type=int, default=30, help="maximum number of epochs (early stopping may end sooner)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                   help="cosine decays the learning rate to 1%% over all epochs")
    p.add_argument("--weight-decay", type=float, default=0.0, help="use AdamW with this decoupled weight decay")
    p.add_argument("--head", choices=("flatten", "gap"), default="flatten",
                   help="flatten + dense (as in the original article) or global average pooling + dropout + dense")
    p.add_argument("--dropout", type=float, default=0.3, help="dropout before the dense layer (gap head only)")
    p.add_argument("--fine-tune-from", metavar="LAYER", default=None,
                   help="with pretrained weights, unfreeze the base from this layer on (e.g. conv5_block1_1_conv)")
    p.add_argument("--balance", choices=BALANCE_MODES, default="weights",
                   help="class imbalance: inverse-frequency class weights, class-balanced epochs, epochs balanced "
                   "over (source, class) with sources holding both classes dominating, or nothing")
    p.add_argument("--augment", choices=AUGMENTATIONS, default="robust",
                   help="basic: zoom, rotation, shift; robust: also random black frames, gamma and contrast "
                   "jitter, which take away the borders and exposure that tell hospitals apart")
    p.add_argument("--flip", action="store_true",
                   help="add random horizontal flips (off: a flipped chest X-ray is anatomically wrong)")
    p.add_argument("--patience", type=int, default=5, help="early-stopping patience in epochs (on val AUC)")
    p.add_argument("--limit", type=int, default=None,
                   help="use a stratified subset of N training (and N validation) images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init-from", metavar="MODEL", default=None,
                   help="start from the weights of a trained .h5 classifier")
    p.add_argument("--checkpoint-dir", default=None, help="per-epoch checkpoints (default: <out without .h5>.ckpt/)")
    p.add_argument("--resume", action="store_true", help="continue the run checkpointed in --checkpoint-dir")
    p.add_argument("--restart", action="store_true", help="discard an unfinished checkpoint and start over")
    p.add_argument("--threads", type=int, default=0, help="TensorFlow intra-op threads (0 = all cores)")
    p.add_argument("--distribute", choices=STRATEGIES, default="none",
                   help="data-parallel: on the JAX backend, replicate the model on every visible device and "
                        "split each global --batch-size batch across them (keras.distribution.DataParallel; "
                        "model_training/distribute.py: learning rate for larger batches, several hosts)")
    args = p.parse_args(argv)
    args.data_dir = args.data_dir or [DEFAULT_DATA_DIR]
    return args


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of one run, typed. Built once: from the command line (:meth:`from_args`) or,
    on ``--resume``, from the checkpoint (:meth:`resumed`). The defaults live in ``parse_args``.

    The fields follow the flags' order, so :meth:`record` (the settings without ``--resume`` and
    ``--restart``) is what checkpoints store as ``config`` and sidecars as ``training``.
    """

    data_dir: list[str]
    disputed: str
    siim_read_cxr: str | None
    precision: str
    out: str
    weights: str
    image_size: int
    epochs: int
    batch_size: int
    learning_rate: float
    lr_schedule: str
    weight_decay: float
    head: str
    dropout: float
    fine_tune_from: str | None
    balance: str
    augment: str
    flip: bool
    patience: int
    limit: int | None
    seed: int
    init_from: str | None
    checkpoint_dir: str | None
    resume: bool
    restart: bool
    threads: int
    distribute: str

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrainConfig:
        return cls.from_mapping(vars(args))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> TrainConfig:
        """From a complete mapping of settings; keys that are no field are left out."""
        values = dict(values)
        if isinstance(values["data_dir"], str):  # checkpoints older than repeatable --data-dir
            values["data_dir"] = [values["data_dir"]]
        return cls(**{f.name: values[f.name] for f in fields(cls)})

    def resumed(self, saved: Mapping[str, Any]) -> TrainConfig:
        """The checkpointed run's settings ``saved``, with those a resume may change taken from self.

        A checkpoint written before a flag existed lacks it, and the flag's default applies;
        except ``--augment``, whose absence means the only augmentation there was then: basic.
        """
        overrides = {k: getattr(self, k) for k in RESUME_OVERRIDABLE}
        defaults = vars(parse_args([]))
        return TrainConfig.from_mapping({**defaults, "augment": "basic", **saved, **overrides,
                                         "resume": True, "restart": False})

    def record(self) -> dict[str, Any]:
        """The run's settings as JSON values: a checkpoint's ``config``, a sidecar's ``training``."""
        return {k: v for k, v in asdict(self).items() if k not in RUN_CONTROL}


@dataclass
class Run:
    """Where a run writes, and the checkpoint state it continues from (None: a new run)."""

    config: TrainConfig
    out: Path
    checkpoint_dir: Path
    state: dict | None
    distribution: Distribution | None = None  # set by setup_backend

    @property
    def first_epoch(self) -> int:
        return self.state["completed_epochs"] if self.state else 0


@dataclass
class Splits:
    """The train and val files, and the sources the val AUC is computed on."""

    train: SplitFiles
    val: SplitFiles
    monitored: list[str]


@dataclass
class Batches:
    """What ``fit`` consumes: the two datasets, their batch size and steps, the class weights."""

    train: Any  # keras.utils.PyDataset
    val: Any
    batch_size: int
    steps: int
    class_weight: dict[int, float] | None


def main(argv=None) -> int:
    config = TrainConfig.from_args(parse_args(argv))
    return run_cli(lambda: train(config), errors=(WeightsUnavailable, DataError, ValueError, FileExistsError),
                   on_interrupt="interrupted; rerun with --resume to continue from the last finished epoch")


def train(config: TrainConfig | argparse.Namespace) -> Path:
    """Train one model and write ``config.out`` (``.h5``) and its sidecar; return its path.

    ``parse_args()``'s Namespace is accepted too and turned into a :class:`TrainConfig` once.
    """
    if isinstance(config, argparse.Namespace):
        config = TrainConfig.from_args(config)
    run = resolve_run(config)
    run.distribution = setup_backend(run.config)
    # Model first: an offline --weights imagenet must fail before minutes of data scanning.
    train_model, classifier = make_model(run)
    splits = read_data(run.config)
    batches = make_batches(run, splits)
    if not run.state:  # a resumed model comes back compiled, with its optimizer's state
        compile_for(train_model, run.config, batches.steps)
    callbacks, epoch_checkpoint = make_callbacks(run, batches)
    started = time.perf_counter()
    history = fit(run, train_model, batches, callbacks, epoch_checkpoint)
    digest = save_best_classifier(run, train_model, classifier)
    meta = sidecar(run, splits, batches, history, digest)
    write_sidecar(run, meta)
    _summary(meta, run.out, time.perf_counter() - started)
    return run.out


def resolve_run(config: TrainConfig) -> Run:
    """Check ``--out``; then a new run, or the checkpoint's run continued (``--resume``).

    An unfinished checkpoint is never discarded silently: ``--restart`` discards it. A finished
    run's checkpoint is replaced by the new run.
    """
    from .callbacks import read_state

    out = Path(config.out)
    if out.suffix != ".h5":
        raise ValueError(f"--out must end in .h5 (got {out})")
    ckpt_dir = Path(config.checkpoint_dir) if config.checkpoint_dir else out.with_suffix(".ckpt")
    state = read_state(ckpt_dir)
    if state and config.restart:
        shutil.rmtree(ckpt_dir)
        state = None
    if state and not config.resume and not state.get("finished"):
        raise FileExistsError(
            f"{ckpt_dir} holds an unfinished run ({state['completed_epochs']} epochs done): "
            "pass --resume to continue it or --restart to discard it."
        )
    if state and not config.resume:
        shutil.rmtree(ckpt_dir)  # a finished run's checkpoint; this is a new run
        state = None
    if state:
        config = config.resumed(state["config"])
        log(f"Resuming {ckpt_dir}: {state['completed_epochs']} of {config.epochs} epochs done.")
    elif config.resume:
        log(f"No checkpoint in {ckpt_dir}; starting a new run.")
    return Run(config, out, ckpt_dir, state)


def setup_backend(config: TrainConfig) -> Distribution:
    """Seed every generator; on TensorFlow, set the threads and make ops deterministic; set the
    distribution (``--distribute``) before any variable exists."""
    import keras

    from .distribute import setup as setup_distribution

    keras.utils.set_random_seed(config.seed)
    if keras.backend.backend() == "tensorflow":  # only then: other backends run without TensorFlow
        import tensorflow as tf

        if config.threads:
            tf.config.threading.set_intra_op_parallelism_threads(config.threads)
        tf.config.experimental.enable_op_determinism()
    distribution = setup_distribution(config.distribute, config.batch_size)
    if distribution.strategy != "none":
        log(f"Distribution: {distribution.strategy} over {distribution.devices} {distribution.device_kind} devices "
            f"({distribution.processes} process{'es' if distribution.processes > 1 else ''}), global batch "
            f"{distribution.global_batch} = {distribution.per_device_batch} per device")
    return distribution


def make_model(run: Run):
    """The training model (augmentation + classifier) and the classifier inside it.

    Loaded from the checkpoint when resuming, else built (``--init-from``: with a trained
    model's weights). The classifier is built under ``--precision``; the augmentation always
    in float32, so gray levels stay exact.
    """
    import keras

    from .callbacks import LAST_MODEL
    from .model import build_classifier, build_training_model, load_classifier

    c = run.config
    keras.mixed_precision.set_global_policy(c.precision)
    if run.state:
        train_model = keras.models.load_model(run.checkpoint_dir / LAST_MODEL)
        classifier = train_model.get_layer("covid_resnet50")
    else:
        classifier = build_classifier(c.image_size, weights=c.weights, head=c.head, dropout=c.dropout,
                                      fine_tune_from=c.fine_tune_from)
        if c.init_from:
            classifier.set_weights(load_classifier(c.init_from).get_weights())
        keras.mixed_precision.set_global_policy("float32")  # augmentation in float32: gray levels stay exact
        train_model = build_training_model(classifier, seed=c.seed, flip=c.flip, augment=c.augment)
    keras.mixed_precision.set_global_policy("float32")
    return train_model, classifier


def read_data(config: TrainConfig) -> Splits:
    """Train and val files of every data folder, and the sources the val AUC is computed on.

    Validation keeps only the sources that hold both classes when there are any: with one
    source per class, a val AUC measures how well the model tells hospitals apart.
    """
    log(f"Reading {', '.join(map(str, config.data_dir))} ...")
    exclude = set()
    for d in config.data_dir:
        exclude |= disputed_files(config.disputed, d) if config.disputed else set()
    train_files = list_split(config.data_dir, "train", limit=config.limit, seed=config.seed, exclude=exclude,
                             log=log)
    if config.siim_read_cxr:
        train_files = merge_splits(train_files, siim_read_cxr_files(config.disputed, config.siim_read_cxr))
    val_files = list_split(config.data_dir, "val", limit=config.limit, seed=config.seed, exclude=exclude, log=log)
    monitored = val_files.two_class_sources()
    if monitored and len(monitored) < len(set(val_files.sources)):
        val_files = val_files.subset(np.isin(val_files.sources, monitored))
    log(f"  train: {train_files.counts()} from {_source_counts(train_files)}")
    log(f"  val: {val_files.counts()} (AUC monitored on sources {monitored or 'all, none has both classes'})")
    log(f"  left out as disputed: {len(train_files.excluded) + len(val_files.excluded)}; "
        f"skipped unreadable: {len(train_files.skipped) + len(val_files.skipped)}")
    return Splits(train_files, val_files, monitored)


def make_batches(run: Run, splits: Splits) -> Batches:
    """The datasets: training batches balanced by ``--balance`` from the run's first epoch on,
    validation batches cached (the same images every epoch)."""
    from . import data as data_mod
    from .distribute import shard_for_process

    c, files = run.config, splits.train
    per_epoch = len(data_mod.epoch_order(files.labels, 0, c.seed, c.balance, files.sources))
    batch_size = min(c.batch_size, per_epoch)
    devices = run.distribution.devices if run.distribution else 1
    if batch_size % devices:
        raise ValueError(f"an epoch holds {per_epoch} images: batch {batch_size} does not divide across "
                         f"{devices} devices (lower --batch-size)")
    steps = data_mod.steps_per_epoch(files.labels, batch_size, c.balance, files.sources)
    train_ds = data_mod.training_dataset(
        files, c.image_size, batch_size, seed=c.seed,
        first_epoch=run.first_epoch, epochs=c.epochs, balance=c.balance,
    )
    val_ds = data_mod.eval_dataset(splits.val, c.image_size, batch_size, cache=True)
    class_weight = data_mod.class_weights(files.labels) if c.balance == "weights" else None
    return Batches(shard_for_process(train_ds), shard_for_process(val_ds), batch_size, steps, class_weight)


def compile_for(train_model, config: TrainConfig, steps: int) -> None:
    """Adam(W) with a constant learning rate, or cosine decay to 1% over all epochs."""
    import keras

    from .model import compile_model

    lr = config.learning_rate
    if config.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=steps * config.epochs,
                                                    alpha=0.01)
    compile_model(train_model, lr, weight_decay=config.weight_decay)


def make_callbacks(run: Run, batches: Batches):
    """Best-weights checkpoint and early stopping on val AUC, per-epoch resumable checkpoint.

    Monitor validation ROC AUC: on imbalanced data accuracy rewards predicting the larger
    class, while AUC ranks the two classes independently of any threshold. The val set
    holds only sources with both classes (read_data), so this AUC is within-source.
    Returns the callbacks for ``fit`` and the epoch checkpoint, which keeps the history.
    """
    import keras

    from .callbacks import BEST_WEIGHTS, EpochCheckpoint, ReseedAugmentation, ResumableEarlyStopping

    state = run.state
    run.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    model_checkpoint = keras.callbacks.ModelCheckpoint(
        run.checkpoint_dir / BEST_WEIGHTS, monitor="val_auc", mode="max", save_best_only=True,
        save_weights_only=True,
        initial_value_threshold=state["model_checkpoint_best"] if state else None,
    )
    early_stopping = ResumableEarlyStopping(
        monitor="val_auc", mode="max", patience=run.config.patience,
        resume_state=state["early_stopping"] if state else None,
    )
    epoch_checkpoint = EpochCheckpoint(
        run.checkpoint_dir, early_stopping=early_stopping, model_checkpoint=model_checkpoint,
        run_config=run.config.record(), history=state["history"] if state else None,
        images_per_epoch=batches.steps * batches.batch_size, log=log,
    )
    callbacks = [ReseedAugmentation(run.config.seed), model_checkpoint, early_stopping,
                 keras.callbacks.TerminateOnNaN(), epoch_checkpoint]
    return callbacks, epoch_checkpoint


def fit(run: Run, train_model, batches: Batches, callbacks: list, epoch_checkpoint) -> dict[str, list]:
    """Train the epochs that are left; return the whole run's history (resumed epochs included)."""
    c = run.config
    log(f"Training {c.image_size}px ResNet50 ({c.weights} weights, {c.head} head), "
        f"{batches.steps} steps x {batches.batch_size} per epoch, epochs {run.first_epoch + 1}..{c.epochs}")
    if run.first_epoch < c.epochs and not (run.state and run.state.get("stopped_early")):
        train_model.fit(
            batches.train, validation_data=batches.val, epochs=c.epochs, initial_epoch=run.first_epoch,
            steps_per_epoch=batches.steps, class_weight=batches.class_weight, callbacks=callbacks, shuffle=False,
            verbose=1 if sys.stdout.isatty() else 2,
        )
    history = epoch_checkpoint.history
    if not history.get("val_auc"):
        raise ValueError("No epoch finished, so there is no model to save.")
    return history


def save_best_classifier(run: Run, train_model, classifier) -> str:
    """Save the best epoch's classifier (not the last) to ``out`` atomically; return its sha256.

    Saved as a plain float32 graph, whatever the training precision.
    """
    from .callbacks import BEST_WEIGHTS
    from .model import build_classifier

    c = run.config
    if (run.checkpoint_dir / BEST_WEIGHTS).exists():
        train_model.load_weights(run.checkpoint_dir / BEST_WEIGHTS)
    if c.precision != "float32":  # serve a plain float32 graph, whatever the training precision
        saved = build_classifier(c.image_size, weights="none", head=c.head, dropout=c.dropout)
        saved.set_weights(classifier.get_weights())
        classifier = saved
    with atomic_path(run.out) as tmp:
        classifier.save(tmp)
    return sha256_file(run.out)


def sidecar(run: Run, splits: Splits, batches: Batches, history: dict, digest: str) -> dict:
    """The model's ``.json``: what serving needs (input, classes, preprocessing, threshold), and
    how it was trained (settings, data, history, the stage it started from, versions)."""
    import keras

    c, aucs = run.config, history["val_auc"]
    best_epoch = max(range(len(aucs)), key=aucs.__getitem__)
    seconds = sum(history["epoch_seconds"])
    return {
        "name": run.out.stem,
        "format": "keras-h5",
        "sha256": digest,
        "input_size": c.image_size,
        "class_names": list(CLASS_NAMES),
        "positive_class": CLASS_NAMES[0],
        "preprocessing": {
            "module": "cxr.preprocessing",
            "mode": PREPROCESSING_MODE,
            "steps": "magic-byte decode, EXIF orientation, 8-bit gray, bilinear square resize, gray->3 channels, "
                     "caffe mean subtraction",
        },
        "threshold": DEFAULT_THRESHOLD,
        "threshold_selection": "default 0.5; set by evaluate --target-recall on the validation split",
        "training": {
            **c.record(),
            "batch_size": batches.batch_size,
            "steps_per_epoch": batches.steps,
            "epochs_run": len(aucs),
            "best_epoch": best_epoch + 1,
            "best_val_auc": aucs[best_epoch],
            "best_val_loss": history["val_loss"][best_epoch],
            "stopped_early": len(aucs) < c.epochs,
            "wall_seconds": round(seconds, 1),
            "images_per_second": round(len(aucs) * batches.steps * batches.batch_size / max(1e-9, seconds), 3),
            "class_weight": batches.class_weight,
            "monitor": "val_auc",
            "monitored_sources": splits.monitored,
            "backend": keras.backend.backend(),
            "distribution": run.distribution.record() if run.distribution else None,
        },
        "data": {
            "data_dirs": [str(d) for d in c.data_dir],
            "train": splits.train.counts(),
            "val": splits.val.counts(),
            "train_per_source": _source_counts(splits.train),
            "val_per_source": _source_counts(splits.val),
            "excluded_disputed": len(splits.train.excluded) + len(splits.val.excluded),
            "skipped_unreadable": [p for p, _ in splits.train.skipped + splits.val.skipped],
            "balance": c.balance,
        },
        "history": history,
        "init_from": _previous_stage(c.init_from),
        "versions": _versions(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def write_sidecar(run: Run, meta: dict) -> None:
    """Write the sidecar beside the model, then mark the checkpoint's run finished."""
    write_json_atomic(sidecar_path(run.out), meta)
    state_file = run.checkpoint_dir / "state.json"
    write_json_atomic(state_file, {**_read_json(state_file), "finished": True,
                                   "stopped_early": meta["training"]["stopped_early"]})


def _source_counts(files) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for source, label in zip(files.sources, files.labels):
        entry = out.setdefault(source, {c: 0 for c in CLASS_NAMES})
        entry[CLASS_NAMES[label]] += 1
    return out


def _previous_stage(init_from: str | None) -> dict | None:
    """Keep the history of the model we started from, so reports show the whole training."""
    if not init_from:
        return None
    try:
        prev = read_metadata(init_from)
    except FileNotFoundError:
        return {"path": str(init_from)}
    keep = ("name", "sha256", "input_size", "training", "history", "init_from")
    return {"path": str(init_from), **{k: prev[k] for k in keep if k in prev}}


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def _versions() -> dict:
    import importlib

    import keras
    import PIL

    backend = keras.backend.backend()
    return {"python": platform.python_version(), "keras": keras.__version__, "backend": backend,
            backend: importlib.import_module(backend).__version__,  # the backend is imported already
            "numpy": np.__version__, "pillow": PIL.__version__}


def _summary(meta: dict, out: Path, seconds: float) -> None:
    t, d = meta["training"], meta["data"]
    lines = [
        "",
        "=" * 64,
        f"Model        {out}  ({out.stat().st_size / 1e6:.1f} MB, sha256 {meta['sha256'][:12]}...)",
        f"Metadata     {sidecar_path(out)}",
        f"Data         train {d['train']}  val {d['val']}  skipped {len(d['skipped_unreadable'])}",
        f"Imbalance    {d['balance']}" + (f" {t['class_weight']}" if t["class_weight"] else ""),
        f"Settings     {t['image_size']}px, weights={t['weights']}, head={t['head']}, batch {t['batch_size']}, "
        f"lr {t['learning_rate']} ({t['lr_schedule']}), seed {t['seed']}",
        f"Epochs       {t['epochs_run']} run, best {t['best_epoch']}"
        + (" (stopped early)" if t["stopped_early"] else ""),
        f"Best val     AUC {t['best_val_auc']:.4f}, loss {t['best_val_loss']:.4f}",
        f"Time         {t['wall_seconds'] / 60:.1f} min of epochs, {t['images_per_second']:.2f} images/s; "
        f"this process {seconds / 60:.1f} min",
        "Next         python -m model_training.evaluate --model " + str(out) + " --split test --out reports/",
        "=" * 64,
    ]
    log("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
