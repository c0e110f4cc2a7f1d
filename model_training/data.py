"""Finding the images of a split and feeding them to Keras as tf.data pipelines.

Layout: ``DATA_DIR/{train,val,test}/{covid,normal}/*.{jpg,jpeg,png}``; class folder
names are matched case-insensitively and the class order is fixed by
:data:`metadata.CLASS_NAMES`, never by directory listing order.

The training order of every epoch is a pure function of ``(seed, epoch)``, so a run
resumed from a checkpoint sees exactly the batches an unbroken run would have seen.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxr.decode import decode_image
from cxr.errors import InputError
from cxr.metadata import CLASS_NAMES
from cxr.preprocessing import load_image_file

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
BALANCE_MODES = ("weights", "sampling", "none")


class DataError(Exception):
    """A problem with the data folder that training cannot work around."""


@dataclass
class SplitFiles:
    name: str
    paths: list[str]
    labels: np.ndarray  # int class indices into CLASS_NAMES
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {c: int((self.labels == i).sum()) for i, c in enumerate(CLASS_NAMES)}

    def __len__(self) -> int:
        return len(self.paths)


def find_class_dir(split_dir: Path, class_name: str) -> Path:
    matches = [d for d in split_dir.iterdir() if d.is_dir() and d.name.lower() == class_name.lower()]
    if not matches:
        raise DataError(
            f"{split_dir} has no '{class_name.lower()}' folder (expected one folder per class: "
            f"{', '.join(c.lower() for c in CLASS_NAMES)}; case does not matter)."
        )
    if len(matches) > 1:
        raise DataError(f"{split_dir} has several folders for class {class_name}: {matches}")
    return matches[0]


def list_split(
    data_dir: str | Path,
    split: str,
    *,
    limit: int | None = None,
    seed: int = 0,
    check: bool = True,
    log=print,
) -> SplitFiles:
    """List one split's images; with ``check`` every file is decoded once and unreadable
    files are skipped with a warning (training must not crash hours in on one bad file)."""
    split_dir = Path(data_dir) / split
    if not split_dir.is_dir():
        raise DataError(f"Split folder {split_dir} does not exist (expected {'/'.join(SPLITS)} under {data_dir}).")
    per_class: list[list[str]] = []
    for class_name in CLASS_NAMES:
        class_dir = find_class_dir(split_dir, class_name)
        files = sorted(
            str(p) for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise DataError(f"Class folder {class_dir} contains no images (.jpg, .jpeg or .png).")
        per_class.append(files)

    if limit is not None:
        per_class = _stratified_subset(per_class, limit, seed)

    paths = [p for files in per_class for p in files]
    labels = np.concatenate([np.full(len(f), i, dtype=np.int64) for i, f in enumerate(per_class)])
    skipped: list[tuple[str, str]] = []
    if check:
        ok = _check_decodable(paths, split, log)
        skipped = [(p, reason) for p, reason in zip(paths, ok) if reason]
        for path, reason in skipped:
            print(f"WARNING: skipping unreadable file {path}: {reason}", file=sys.stderr)
        keep = np.array([not reason for reason in ok], dtype=bool)
        paths = [p for p, k in zip(paths, keep) if k]
        labels = labels[keep]
        for i, class_name in enumerate(CLASS_NAMES):
            if not (labels == i).any():
                raise DataError(f"No readable {class_name} images left in {split_dir}.")
    return SplitFiles(split, paths, labels, skipped)


def _stratified_subset(per_class: list[list[str]], limit: int, seed: int) -> list[list[str]]:
    total = sum(len(f) for f in per_class)
    rng = np.random.default_rng(seed)
    out = []
    for files in per_class:
        n = min(len(files), max(1, round(limit * len(files) / total)))
        chosen = sorted(rng.choice(len(files), size=n, replace=False))
        out.append([files[i] for i in chosen])
    return out


def _check_one(path: str) -> str:
    try:
        decode_image(Path(path).read_bytes())
        return ""
    except InputError as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot read file ({exc})"


def _check_decodable(paths: list[str], split: str, log) -> list[str]:
    reasons: list[str] = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for i, reason in enumerate(pool.map(_check_one, paths, chunksize=64), 1):
            reasons.append(reason)
            if i % 2000 == 0:
                log(f"  checked {i}/{len(paths)} {split} images")
    return reasons


def class_weights(labels: np.ndarray) -> dict[int, float]:
    """Inverse-frequency weights so both classes weigh the same in the loss."""
    n = len(labels)
    return {i: n / (len(CLASS_NAMES) * max(1, int((labels == i).sum()))) for i in range(len(CLASS_NAMES))}


def epoch_order(labels: np.ndarray, epoch: int, seed: int, balance: str) -> np.ndarray:
    """Indices of one epoch, a pure function of (seed, epoch).

    ``sampling`` gives class-balanced epochs: every minority image plus as many images drawn
    without replacement from each other class, so an epoch is shorter and balanced.
    """
    rng = np.random.default_rng([seed, epoch])
    if balance != "sampling":
        return rng.permutation(len(labels))
    groups = [np.flatnonzero(labels == i) for i in range(len(CLASS_NAMES))]
    n = min(len(g) for g in groups)
    picked = np.concatenate([rng.choice(g, size=n, replace=False) for g in groups])
    return rng.permutation(picked)


def steps_per_epoch(labels: np.ndarray, batch_size: int, balance: str) -> int:
    per_epoch = len(epoch_order(labels, 0, 0, balance))
    return max(1, per_epoch // batch_size)


def _loader(image_size: int):
    import tensorflow as tf

    def load(path):
        return load_image_file(path.decode() if isinstance(path, bytes) else path, image_size)

    def tf_load(path, label):
        image = tf.numpy_function(load, [path], tf.float32, stateful=False)
        image.set_shape((image_size, image_size, 3))
        return image, tf.one_hot(label, len(CLASS_NAMES))

    return tf_load


def training_dataset(
    split: SplitFiles,
    image_size: int,
    batch_size: int,
    *,
    seed: int,
    first_epoch: int,
    epochs: int,
    balance: str,
):
    """Batches for epochs ``first_epoch..epochs-1``; each epoch exactly ``steps_per_epoch`` batches."""
    import tensorflow as tf

    steps = steps_per_epoch(split.labels, batch_size, balance)
    order = [epoch_order(split.labels, e, seed, balance)[: steps * batch_size] for e in range(first_epoch, epochs)]
    order = np.concatenate(order) if order else np.zeros(0, dtype=np.int64)
    paths = np.asarray(split.paths)[order]
    labels = split.labels[order]
    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    ds = ds.map(_loader(image_size), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def eval_dataset(split: SplitFiles, image_size: int, batch_size: int, *, cache: bool = False):
    """Batches in file order (no shuffling, no augmentation) for validation and evaluation."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((np.asarray(split.paths), split.labels))
    ds = ds.map(_loader(image_size), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache:
        ds = ds.cache()
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
