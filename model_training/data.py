"""Finding the images of a split and feeding them to Keras, on any Keras 3 backend.

Layout of every data folder: ``DATA_DIR/{train,val,test}/{covid,normal}/*.{jpg,jpeg,png}``;
class folder names are matched case-insensitively and the class order is fixed by
:data:`metadata.CLASS_NAMES`, never by directory listing order. Training and evaluation
take several folders at once; the ``source`` column of each folder's ``metadata.csv``
travels with every image (the folder's name where there is none), because judging a
model per source is the only way to see whether it learned the disease or the hospital.

Batches come from :class:`ImageBatches`, a ``keras.utils.PyDataset`` over NumPy arrays
made by the one preprocessing (:func:`load_image_file`), so the same pipeline runs under
TensorFlow, JAX and torch and never imports TensorFlow itself.

The training order of every epoch is a pure function of ``(seed, epoch)``, so a run
resumed from a checkpoint sees exactly the batches an unbroken run would have seen.
"""

from __future__ import annotations

import csv
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from cxr.decode import decode_image
from cxr.errors import InputError
from cxr.metadata import CLASS_NAMES
from cxr.preprocessing import load_image_file

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
BALANCE_MODES = ("weights", "sampling", "source", "none")
# With --balance source: the share of an epoch given to sources that hold one class only
# (the rest goes to sources with both classes, where only the disease separates them).
SINGLE_CLASS_SOURCE_SHARE = 0.2


class DataError(Exception):
    """A problem with the data folder that training cannot work around."""


@dataclass
class SplitFiles:
    name: str
    paths: list[str]
    labels: np.ndarray  # int class indices into CLASS_NAMES
    skipped: list[tuple[str, str]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # metadata.csv `source` of each image
    folders: list[str] = field(default_factory=list)  # name of the data folder of each image
    excluded: list[str] = field(default_factory=list)  # left out on purpose (see list_split's exclude)

    def counts(self) -> dict[str, int]:
        return {c: int((self.labels == i).sum()) for i, c in enumerate(CLASS_NAMES)}

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, mask: np.ndarray) -> SplitFiles:
        keep = np.flatnonzero(mask)
        pick = lambda seq: [seq[i] for i in keep] if seq else []  # noqa: E731
        return SplitFiles(self.name, pick(self.paths), self.labels[keep], self.skipped,
                          pick(self.sources), pick(self.folders), self.excluded)

    def two_class_sources(self) -> list[str]:
        """Sources with images of both classes: the only ones a within-source metric exists for."""
        src = np.asarray(self.sources)
        return sorted(s for s in set(self.sources) if len(set(self.labels[src == s])) == len(CLASS_NAMES))


@dataclass
class OtherFiles:
    """Films of neither class (``siim_other``: indeterminate, atypical) with their folder's name."""

    paths: list[str]
    names: list[str]

    @property
    def labels(self) -> np.ndarray:  # placeholders, so eval_dataset can batch them
        return np.zeros(len(self.paths), dtype=np.int64)


def list_other(data_dir: str | Path, split: str, *, limit: int | None = None, seed: int = 0) -> OtherFiles:
    """Every image of ``data_dir/split/<name>/``, ``name`` being e.g. ``atypical`` (a stratified
    subset of ``limit`` with ``limit``)."""
    split_dir = Path(data_dir) / split
    if not split_dir.is_dir():
        raise DataError(f"Split folder {split_dir} does not exist.")
    groups = sorted(d for d in split_dir.iterdir() if d.is_dir())
    per_group = [sorted(str(p) for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) for d in groups]
    if not any(per_group):
        raise DataError(f"No images in the folders of {split_dir}.")
    if limit is not None:
        per_group = _stratified_subset(per_group, limit, seed)
    return OtherFiles([p for files in per_group for p in files],
                      [d.name for d, files in zip(groups, per_group) for _ in files])


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


def read_sources(data_dir: str | Path) -> dict[str, str]:
    """``relative file path -> source`` from the folder's metadata.csv (empty if it has none)."""
    meta = Path(data_dir) / "metadata.csv"
    if not meta.exists():
        return {}
    with open(meta, newline="") as handle:
        return {row["file"]: row.get("source") or "" for row in csv.DictReader(handle) if row.get("file")}


def disputed_files(overlap_csv: str | Path, data_dir: str | Path) -> set[str]:
    """Paths under ``data_dir`` labelled Covid there but read "Negative for Pneumonia" by SIIM.

    ``siim/cxr_overlap.csv`` pairs SIIM images with the same radiographs in cxr; where
    SIIM's radiologists saw a normal-looking film, the cxr Covid label (from PCR or the
    collection) cannot be learned from the image, so training leaves those files out.
    """
    path = Path(overlap_csv)
    if not path.exists():
        return set()
    with open(path, newline="") as handle:
        return {str(Path(data_dir) / row["cxr_file"]) for row in csv.DictReader(handle)
                if row["siim_label"] == "Negative for Pneumonia" and row["cxr_label"] == "covid"}


def siim_read_cxr_files(overlap_csv: str | Path, cxr_dir: str | Path, split: str = "train") -> SplitFiles:
    """The cxr images of ``split`` that are SIIM radiographs, labelled with SIIM's reading.

    ``siim/cxr_overlap.csv`` pairs them with SIIM's study labels: "Typical Appearance" is
    Covid and "Negative for Pneumonia" Normal, as in ``../siim``; indeterminate and atypical
    films are left out. Both classes come from the same hospitals through the same
    conversion, so they are fair same-source examples. Only for training: the cxr val and
    test images must stay out of it.
    """
    reading = {"Typical Appearance": 0, "Negative for Pneumonia": 1}
    cxr_dir = Path(cxr_dir)
    with open(overlap_csv, newline="") as handle:
        rows = sorted((row["cxr_file"], reading[row["siim_label"]]) for row in csv.DictReader(handle)
                      if row["cxr_split"] == split and row["siim_label"] in reading)
    rows = [(str(cxr_dir / f), label) for f, label in rows if (cxr_dir / f).is_file()]
    if not rows:
        raise DataError(f"No {split} image of {overlap_csv} found under {cxr_dir}.")
    return SplitFiles(split, [p for p, _ in rows], np.array([label for _, label in rows], dtype=np.int64),
                      sources=["siim_in_cxr"] * len(rows), folders=[cxr_dir.name] * len(rows))


def merge_splits(*parts: SplitFiles) -> SplitFiles:
    """One split made of several listings (e.g. a data folder plus relabelled overlap files)."""
    return SplitFiles(
        parts[0].name,
        [p for part in parts for p in part.paths],
        np.concatenate([part.labels for part in parts]),
        skipped=[s for part in parts for s in part.skipped],
        sources=[s for part in parts for s in part.sources],
        folders=[f for part in parts for f in part.folders],
        excluded=[e for part in parts for e in part.excluded],
    )


def list_split(
    data_dirs: str | Path | list,
    split: str,
    *,
    limit: int | None = None,
    seed: int = 0,
    check: bool = True,
    exclude: set[str] | None = None,
    log=print,
) -> SplitFiles:
    """List one split's images of one or several data folders.

    With ``check`` every file is decoded once and unreadable files are skipped with a
    warning (training must not crash hours in on one bad file); ``exclude`` leaves out
    files on purpose (listed in ``excluded``); ``limit`` takes a stratified subset of each folder.
    """
    dirs = [data_dirs] if isinstance(data_dirs, (str, Path)) else list(data_dirs)
    parts = [_list_one(Path(d), split, limit=limit, seed=seed, exclude=exclude or set()) for d in dirs]
    files = merge_splits(*parts)
    if check:
        reasons = _check_decodable(files.paths, split, log)
        files.skipped = [(p, reason) for p, reason in zip(files.paths, reasons) if reason]
        for path, reason in files.skipped:
            print(f"WARNING: skipping unreadable file {path}: {reason}", file=sys.stderr)
        skipped = files.skipped
        files = files.subset(np.array([not reason for reason in reasons], dtype=bool))
        files.skipped = skipped
        for d in dirs:
            folder = np.asarray(files.folders) == Path(d).name
            for i, class_name in enumerate(CLASS_NAMES):
                if not (files.labels[folder] == i).any():
                    raise DataError(f"No readable {class_name} images left in {Path(d) / split}.")
    return files


def _list_one(data_dir: Path, split: str, *, limit, seed, exclude) -> SplitFiles:
    split_dir = data_dir / split
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
    excluded = [p for files in per_class for p in files if p in exclude]
    per_class = [[p for p in files if p not in exclude] for files in per_class]
    if limit is not None:
        per_class = _stratified_subset(per_class, limit, seed)

    paths = [p for files in per_class for p in files]
    labels = np.concatenate([np.full(len(f), i, dtype=np.int64) for i, f in enumerate(per_class)])
    by_file = read_sources(data_dir)
    sources = [by_file.get(Path(p).relative_to(data_dir).as_posix()) or data_dir.name for p in paths]
    return SplitFiles(split, paths, labels, sources=sources, folders=[data_dir.name] * len(paths), excluded=excluded)


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


def epoch_order(labels: np.ndarray, epoch: int, seed: int, balance: str, sources=None) -> np.ndarray:
    """Indices of one epoch, a pure function of (seed, epoch).

    ``sampling`` gives class-balanced epochs: every minority image plus as many images drawn
    without replacement from each other class. ``source`` balances over (source, class):
    each source with both classes gives as many images of each class (its minority count),
    and sources with one class only share :data:`SINGLE_CLASS_SOURCE_SHARE` of the epoch,
    half Covid, half Normal, so no source's look can stand for a class.
    """
    rng = np.random.default_rng([seed, epoch])
    if balance == "source":
        return rng.permutation(_source_balanced(labels, np.asarray(sources), rng))
    if balance != "sampling":
        return rng.permutation(len(labels))
    groups = [np.flatnonzero(labels == i) for i in range(len(CLASS_NAMES))]
    n = min(len(g) for g in groups)
    picked = np.concatenate([rng.choice(g, size=n, replace=False) for g in groups])
    return rng.permutation(picked)


def _source_balanced(labels: np.ndarray, sources: np.ndarray, rng) -> np.ndarray:
    picked, single = [], {i: [] for i in range(len(CLASS_NAMES))}
    for source in sorted(set(sources)):
        groups = [np.flatnonzero((sources == source) & (labels == i)) for i in range(len(CLASS_NAMES))]
        if all(len(g) for g in groups):
            n = min(len(g) for g in groups)
            picked += [rng.choice(g, size=n, replace=False) for g in groups]
        else:
            for i, g in enumerate(groups):
                single[i].extend(g.tolist())
    paired = sum(len(p) for p in picked)
    if not paired:  # no source has both classes: fall back to class balance
        return epoch_order(labels, 0, int(rng.integers(1 << 31)), "sampling")
    per_class = int(paired * SINGLE_CLASS_SOURCE_SHARE / (1 - SINGLE_CLASS_SOURCE_SHARE) / len(CLASS_NAMES))
    if all(single.values()):
        per_class = min([per_class] + [len(g) for g in single.values()])
        picked += [rng.choice(np.array(g), size=per_class, replace=False) for g in single.values()]
    return np.concatenate(picked)


def steps_per_epoch(labels: np.ndarray, batch_size: int, balance: str, sources=None) -> int:
    per_epoch = len(epoch_order(labels, 0, 0, balance, sources))
    return max(1, per_epoch // batch_size)


class ImageBatches(keras.utils.PyDataset):
    """``(images, one-hot labels)`` batches of ``paths`` in the given order, preprocessed by
    :func:`load_image_file` in worker threads; ``transform`` (e.g. an occlusion) is applied
    to each image batch. A PyDataset, not tf.data, so training runs on any Keras backend."""

    def __init__(self, paths, labels, image_size: int, batch_size: int, *, drop_remainder: bool = False,
                 transform=None, cache: bool = False, workers: int = 2):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=8)
        self.paths = list(paths)
        self.labels = np.asarray(labels)
        self.image_size = image_size
        self.batch_size = batch_size
        self.drop_remainder = drop_remainder
        self.transform = transform
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if cache else None

    def __len__(self) -> int:
        n = len(self.paths) / self.batch_size
        return int(n) if self.drop_remainder else int(np.ceil(n))

    def __getitem__(self, index: int):
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        images = np.stack([load_image_file(p, self.image_size) for p in self.paths[part]])
        if self.transform is not None:
            images = self.transform(images)
        batch = images, np.eye(len(CLASS_NAMES), dtype=np.float32)[self.labels[part]]
        if self._cache is not None:
            self._cache[index] = batch
        return batch


def training_dataset(split: SplitFiles, image_size: int, batch_size: int, *, seed: int, first_epoch: int,
                     epochs: int, balance: str) -> ImageBatches:
    """Batches for epochs ``first_epoch..epochs-1`` in one sequence; each epoch exactly
    ``steps_per_epoch`` batches (Keras keeps one iterator across epochs when
    ``steps_per_epoch`` is given, so fit walks through it epoch after epoch)."""
    steps = steps_per_epoch(split.labels, batch_size, balance, split.sources)
    order = [epoch_order(split.labels, e, seed, balance, split.sources)[: steps * batch_size]
             for e in range(first_epoch, epochs)]
    order = np.concatenate(order) if order else np.zeros(0, dtype=np.int64)
    return ImageBatches(np.asarray(split.paths)[order], split.labels[order], image_size, batch_size,
                        drop_remainder=True)


def eval_dataset(split: SplitFiles, image_size: int, batch_size: int, *, cache: bool = False,
                 transform=None) -> ImageBatches:
    """Batches in file order (no shuffling, no augmentation) for validation and evaluation."""
    return ImageBatches(split.paths, split.labels, image_size, batch_size, cache=cache, transform=transform)
