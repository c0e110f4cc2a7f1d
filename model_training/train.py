"""Train the Covid/Normal ResNet50 and write a self-describing ``.h5`` model.

    python -m model_training.train --data-dir ../shared/data/siim --out models/covid_resnet50.h5 --weights none

Reads top to bottom like the keras.io examples: data -> model -> callbacks -> fit -> save.
Every epoch leaves a checkpoint in ``<out>.ckpt/``; ``--resume`` continues from it with
the same result as an unbroken run.

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
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from cxr.metadata import (CLASS_NAMES, DEFAULT_THRESHOLD, atomic_path, read_metadata, sha256_file, sidecar_path,
                          write_json_atomic)
from cxr.preprocessing import PREPROCESSING_MODE

from .data import BALANCE_MODES, DataError, disputed_files, list_split
from .model import AUGMENTATIONS

# Settings a resumed run may change; everything else comes from the checkpoint.
RESUME_OVERRIDABLE = ("epochs", "patience", "out")
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
    p.add_argument("--flip", action="store_true", help="add random horizontal flips (off: a flipped chest X-ray is anatomically wrong)")
    p.add_argument("--patience", type=int, default=5, help="early-stopping patience in epochs (on val AUC)")
    p.add_argument("--limit", type=int, default=None, help="use a stratified subset of N training (and N validation) images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init-from", metavar="MODEL", default=None, help="start from the weights of a trained .h5 classifier")
    p.add_argument("--checkpoint-dir", default=None, help="per-epoch checkpoints (default: <out without .h5>.ckpt/)")
    p.add_argument("--resume", action="store_true", help="continue the run checkpointed in --checkpoint-dir")
    p.add_argument("--restart", action="store_true", help="discard an unfinished checkpoint and start over")
    p.add_argument("--threads", type=int, default=0, help="TensorFlow intra-op threads (0 = all cores)")
    args = p.parse_args(argv)
    args.data_dir = args.data_dir or [DEFAULT_DATA_DIR]
    return args


def log(message: str) -> None:
    print(message, flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        train(args)
    except KeyboardInterrupt:
        log("interrupted; rerun with --resume to continue from the last finished epoch")
        return 130
    except Exception as exc:
        from .model import WeightsUnavailable

        if isinstance(exc, (WeightsUnavailable, DataError, ValueError, FileExistsError)):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise
    return 0


def train(args: argparse.Namespace) -> Path:
    from .callbacks import read_state

    out = Path(args.out)
    if out.suffix != ".h5":
        raise ValueError(f"--out must end in .h5 (got {out})")
    ckpt_dir = Path(args.checkpoint_dir) if args.checkpoint_dir else out.with_suffix(".ckpt")
    state = read_state(ckpt_dir)
    if state and args.restart:
        shutil.rmtree(ckpt_dir)
        state = None
    if state and not args.resume and not state.get("finished"):
        raise FileExistsError(
            f"{ckpt_dir} holds an unfinished run ({state['completed_epochs']} epochs done): "
            "pass --resume to continue it or --restart to discard it."
        )
    if state and not args.resume:
        shutil.rmtree(ckpt_dir)  # a finished run's checkpoint; this is a new run
        state = None
    if args.resume and state:
        overrides = {k: getattr(args, k) for k in RESUME_OVERRIDABLE}
        config = {"augment": "basic", **state["config"]}  # checkpoints older than --augment had basic only
        args = argparse.Namespace(**{**vars(parse_args([])), **config, **overrides, "resume": True, "restart": False})
        if isinstance(args.data_dir, str):  # checkpoints older than repeatable --data-dir
            args.data_dir = [args.data_dir]
        log(f"Resuming {ckpt_dir}: {state['completed_epochs']} of {args.epochs} epochs done.")
    elif args.resume:
        log(f"No checkpoint in {ckpt_dir}; starting a new run.")
        state = None

    import keras

    from . import data as data_mod
    from .callbacks import BEST_WEIGHTS, LAST_MODEL, EpochCheckpoint, ReseedAugmentation, ResumableEarlyStopping
    from .model import build_classifier, build_training_model, compile_model, load_classifier

    keras.utils.set_random_seed(args.seed)
    if keras.backend.backend() == "tensorflow":  # only then: other backends run without TensorFlow
        import tensorflow as tf

        if args.threads:
            tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.experimental.enable_op_determinism()

    # Model first: an offline --weights imagenet must fail before minutes of data scanning.
    first_epoch = state["completed_epochs"] if state else 0
    if state:
        train_model = keras.models.load_model(ckpt_dir / LAST_MODEL)
        classifier = train_model.get_layer("covid_resnet50")
    else:
        classifier = build_classifier(
            args.image_size, weights=args.weights, head=args.head, dropout=args.dropout,
            fine_tune_from=args.fine_tune_from,
        )
        if args.init_from:
            classifier.set_weights(load_classifier(args.init_from).get_weights())
        train_model = build_training_model(classifier, seed=args.seed, flip=args.flip,
                                           augment=getattr(args, "augment", "basic"))

    train_files, val_files, monitored = read_data(args)
    per_epoch = len(data_mod.epoch_order(train_files.labels, 0, args.seed, args.balance, train_files.sources))
    batch_size = min(args.batch_size, per_epoch)
    steps = data_mod.steps_per_epoch(train_files.labels, batch_size, args.balance, train_files.sources)
    if not state:
        lr = args.learning_rate
        if args.lr_schedule == "cosine":
            lr = keras.optimizers.schedules.CosineDecay(args.learning_rate, decay_steps=steps * args.epochs, alpha=0.01)
        compile_model(train_model, lr, weight_decay=args.weight_decay)

    train_ds = data_mod.training_dataset(
        train_files, args.image_size, batch_size, seed=args.seed,
        first_epoch=first_epoch, epochs=args.epochs, balance=args.balance,
    )
    val_ds = data_mod.eval_dataset(val_files, args.image_size, batch_size, cache=True)
    class_weight = data_mod.class_weights(train_files.labels) if args.balance == "weights" else None

    # Monitor validation ROC AUC: on imbalanced data accuracy rewards predicting the larger
    # class, while AUC ranks the two classes independently of any threshold. The val set
    # holds only sources with both classes (read_data), so this AUC is within-source.
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    model_checkpoint = keras.callbacks.ModelCheckpoint(
        ckpt_dir / BEST_WEIGHTS, monitor="val_auc", mode="max", save_best_only=True,
        save_weights_only=True,
        initial_value_threshold=state["model_checkpoint_best"] if state else None,
    )
    early_stopping = ResumableEarlyStopping(
        monitor="val_auc", mode="max", patience=args.patience,
        resume_state=state["early_stopping"] if state else None,
    )
    run_config = {k: v for k, v in vars(args).items() if k not in ("resume", "restart")}
    epoch_checkpoint = EpochCheckpoint(
        ckpt_dir, early_stopping=early_stopping, model_checkpoint=model_checkpoint,
        run_config=run_config, history=state["history"] if state else None,
        images_per_epoch=steps * batch_size, log=log,
    )
    callbacks = [ReseedAugmentation(args.seed), model_checkpoint, early_stopping,
                 keras.callbacks.TerminateOnNaN(), epoch_checkpoint]

    log(f"Training {args.image_size}px ResNet50 ({args.weights} weights, {args.head} head), "
        f"{steps} steps x {batch_size} per epoch, epochs {first_epoch + 1}..{args.epochs}")
    started = time.perf_counter()
    if first_epoch < args.epochs and not (state and state.get("stopped_early")):
        train_model.fit(
            train_ds, validation_data=val_ds, epochs=args.epochs, initial_epoch=first_epoch,
            steps_per_epoch=steps, class_weight=class_weight, callbacks=callbacks, shuffle=False,
            verbose=1 if sys.stdout.isatty() else 2,
        )
    history = epoch_checkpoint.history
    if not history.get("val_auc"):
        raise ValueError("No epoch finished, so there is no model to save.")

    if (ckpt_dir / BEST_WEIGHTS).exists():
        train_model.load_weights(ckpt_dir / BEST_WEIGHTS)
    with atomic_path(out) as tmp:
        classifier.save(tmp)
    digest = sha256_file(out)
    aucs = history["val_auc"]
    best_epoch = max(range(len(aucs)), key=aucs.__getitem__)
    stopped_early = len(aucs) < args.epochs
    meta = {
        "name": out.stem,
        "format": "keras-h5",
        "sha256": digest,
        "input_size": args.image_size,
        "class_names": list(CLASS_NAMES),
        "positive_class": CLASS_NAMES[0],
        "preprocessing": {
            "module": "cxr.preprocessing",
            "mode": PREPROCESSING_MODE,
            "steps": "magic-byte decode, EXIF orientation, 8-bit gray, bilinear square resize, gray->3 channels, caffe mean subtraction",
        },
        "threshold": DEFAULT_THRESHOLD,
        "threshold_selection": "default 0.5; set by evaluate --target-recall on the validation split",
        "training": {
            **run_config,
            "batch_size": batch_size,
            "steps_per_epoch": steps,
            "epochs_run": len(aucs),
            "best_epoch": best_epoch + 1,
            "best_val_auc": aucs[best_epoch],
            "best_val_loss": history["val_loss"][best_epoch],
            "stopped_early": stopped_early,
            "wall_seconds": round(sum(history["epoch_seconds"]), 1),
            "images_per_second": round(
                len(aucs) * steps * batch_size / max(1e-9, sum(history["epoch_seconds"])), 3),
            "class_weight": class_weight,
            "monitor": "val_auc",
            "monitored_sources": monitored,
            "backend": keras.backend.backend(),
        },
        "data": {
            "data_dirs": [str(d) for d in args.data_dir],
            "train": train_files.counts(),
            "val": val_files.counts(),
            "train_per_source": _source_counts(train_files),
            "val_per_source": _source_counts(val_files),
            "excluded_disputed": len(train_files.excluded) + len(val_files.excluded),
            "skipped_unreadable": [p for p, _ in train_files.skipped + val_files.skipped],
            "balance": args.balance,
        },
        "history": history,
        "init_from": _previous_stage(args.init_from),
        "versions": _versions(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_json_atomic(sidecar_path(out), meta)
    write_json_atomic(ckpt_dir / "state.json", {**_read_json(ckpt_dir / "state.json"), "finished": True,
                                                "stopped_early": stopped_early})
    _summary(meta, out, time.perf_counter() - started)
    return out


def read_data(args: argparse.Namespace):
    """Train and val files of every data folder, and the sources the val AUC is computed on.

    Validation keeps only the sources that hold both classes when there are any: with one
    source per class, a val AUC measures how well the model tells hospitals apart.
    """
    log(f"Reading {', '.join(map(str, args.data_dir))} ...")
    exclude = set()
    for d in args.data_dir:
        exclude |= disputed_files(args.disputed, d) if args.disputed else set()
    train_files = list_split(args.data_dir, "train", limit=args.limit, seed=args.seed, exclude=exclude, log=log)
    val_files = list_split(args.data_dir, "val", limit=args.limit, seed=args.seed, exclude=exclude, log=log)
    monitored = val_files.two_class_sources()
    if monitored and len(monitored) < len(set(val_files.sources)):
        val_files = val_files.subset(np.isin(val_files.sources, monitored))
    log(f"  train: {train_files.counts()} from {_source_counts(train_files)}")
    log(f"  val: {val_files.counts()} (AUC monitored on sources {monitored or 'all, none has both classes'})")
    log(f"  left out as disputed: {len(train_files.excluded) + len(val_files.excluded)}; "
        f"skipped unreadable: {len(train_files.skipped) + len(val_files.skipped)}")
    return train_files, val_files, monitored


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
    import json

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
        f"Epochs       {t['epochs_run']} run, best {t['best_epoch']}" + (" (stopped early)" if t["stopped_early"] else ""),
        f"Best val     AUC {t['best_val_auc']:.4f}, loss {t['best_val_loss']:.4f}",
        f"Time         {t['wall_seconds'] / 60:.1f} min of epochs, {t['images_per_second']:.2f} images/s; "
        f"this process {seconds / 60:.1f} min",
        "Next         python -m model_training.evaluate --model " + str(out) + " --split test --out reports/",
        "=" * 64,
    ]
    log("\n".join(lines))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
