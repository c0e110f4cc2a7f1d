"""The images the input gate is fitted and judged on, split reproducibly.

* Chest X-rays: every image of the classifier's data folders (``--data-dir``, their own
  train/val/test splits and ``metadata.csv`` sources); 30% of the train images also give a
  mild variant (crop, gamma, contrast), so films processed a little differently still pass.
* Real non-chest images: ``../shared/data/non_cxr`` (category folders + ``metadata.csv`` with
  the repository each file came from). They never enter the repository. Every train-split
  file also gives :data:`VARIANTS_PER_IMAGE` random views of itself (``synthetic.variant``). Some repositories
  are held out whole (:data:`UNSEEN_SOURCES`, at least one per category) to measure the gate on
  kinds of images it never saw; the files of the others go 60/20/20 to train/val/test by a
  hash of the file name, so the split never depends on listing order or on a random state.
* Synthetic negatives (``model_training.synthetic``) with disjoint seeds per split.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

from model_training import synthetic

# Whole repositories the gate never trains on: its "kinds never seen" figures.
UNSEEN_SOURCES = {
    "other_radiograph": ("Rohan-145/KneeOA_Analysis", "ronocara/Thesis-MURA"),
    "ct_mri": ("serafb/RadiologyMC-dataset",),
    "other_medical": ("hamdan92/retinal-vessel-segmentation", "pengyzhang/cell_seg_matlab"),
    "photo": ("Dr-StegWizard/CoverImages",),
    "document_screen": ("tesseract-ocr/test",),
}
CHEST_VARIANT_SHARE = 0.3  # this share of train chest X-rays also gives one mild variant
VARIANTS_PER_IMAGE = 4  # extra views of every train-split non-chest file (synthetic.variant)
SYNTHETIC_SEEDS = {"train": range(0, 150), "val": range(1000, 1015), "test": range(2000, 2020)}


@dataclass(frozen=True)
class Item:
    """One image for the gate: where it came from and how to read it."""

    group: str      # "chest" or "other"
    category: str   # chest: its data folder ("cxr", "siim"); other: non_cxr category or "synthetic:<kind>"
    source: str     # chest: metadata source; other: repository, or "synthetic"
    split: str      # train | val | test | unseen
    path: str = ""  # a file, or "" for a synthetic image
    seed: int = -1
    augment: int = -1  # >= 0: the file's variant with this seed (synthetic.variant; mild for chest X-rays)

    def read(self) -> bytes:
        if not self.path:
            return synthetic.make(self.category.split(":", 1)[1], self.seed)
        data = Path(self.path).read_bytes()
        return data if self.augment < 0 else synthetic.variant(data, self.augment, mild=self.group == "chest")

    @property
    def label(self) -> int:
        """1 = chest X-ray (the gate's positive class), 0 = anything else."""
        return int(self.group == "chest")


def _bucket(name: str) -> int:
    """0..99 from the file name alone: splits that never depend on listing order or a random state."""
    return int(hashlib.sha1(name.encode()).hexdigest(), 16) % 100


def hash_split(name: str) -> str:
    bucket = _bucket(name)
    return "train" if bucket < 60 else ("val" if bucket < 80 else "test")


def chest_items(data_dirs, limit: int | None = None) -> list[Item]:
    # Imported here: model_training.data imports Keras (and so TensorFlow), which the gate's
    # CLI otherwise never needs (it runs the ONNX export).
    from model_training.data import SPLITS, list_split

    items = []
    for data_dir in data_dirs:
        folder = Path(data_dir).name
        for split in SPLITS:
            files = list_split(data_dir, split, limit=limit, seed=0, log=lambda *_: None)
            for path, source in zip(files.paths, files.sources):
                items.append(Item("chest", folder, source, split, path))
                if split == "train" and _bucket(Path(path).name) < CHEST_VARIANT_SHARE * 100:
                    items.append(Item("chest", folder, source, split, path, augment=0))
    return items


def non_cxr_items(root: str | Path, per_category: int | None = None) -> list[Item]:
    root = Path(root)
    if not (root / "metadata.csv").is_file():
        raise FileNotFoundError(f"{root / 'metadata.csv'} not found: --non-cxr must name the non-chest "
                                "collection (category folders + metadata.csv, e.g. ../shared/data/non_cxr)")
    with open(root / "metadata.csv", newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["file"])
    items, taken = [], {}
    for row in rows:
        category, repo = row["category"], row["repository"]
        if per_category is not None:
            if taken.get(category, 0) >= per_category:
                continue
            taken[category] = taken.get(category, 0) + 1
        split = "unseen" if repo in UNSEEN_SOURCES.get(category, ()) else hash_split(row["file"])
        items.append(Item("other", category, repo, split, str(root / row["file"])))
        if split == "train":
            items += [Item("other", category, repo, split, str(root / row["file"]), augment=v)
                      for v in range(VARIANTS_PER_IMAGE)]
    return items


def synthetic_items(per_split: dict[str, range] | None = None) -> list[Item]:
    per_split = per_split or SYNTHETIC_SEEDS
    return [Item("other", f"synthetic:{kind}", "synthetic", split, seed=seed)
            for split, seeds in per_split.items() for kind in synthetic.KINDS for seed in seeds]
