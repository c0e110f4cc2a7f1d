"""The input gate: is this a frontal chest X-ray at all, and is it like the training data?

A classifier that knows two classes puts everything into one of them (a temple photograph
came out "Covid, p = 0.996"), so every prediction first passes this gate. It reads what the
forward pass computes anyway, so it costs no second network:

* 99 statistics of the resized gray image (:func:`image_stats`: histogram, gradients,
  left-right symmetry, an 8x8 thumbnail) and two cues the gray model input has lost:
  colourfulness and the aspect ratio of the decoded image
  (:class:`cxr.preprocessing.PreparedImage`);
* the classifier's own pooled features (global average of ``conv5_block3_out``, which the
  ONNX export already returns for Grad-CAM).

Two scores come out, both from NumPy arithmetic on arrays fitted by ``model_training.gate``:

* **chest score** (a one-hidden-layer perceptron, 0..1, on the statistics and/or the
  features: ``model_training.gate`` picks by measurement; the shipped one reads the statistics
  only): below ``chest_threshold`` the image is refused with ``NotAChestXray`` (HTTP 422).
  A colourful image (``colour_limit``) is refused outright: no chest radiograph has colour.
* **shift score** (Mahalanobis distance of the pooled features to the chest X-rays the model
  was trained on, in a whitened PCA space): above ``shift_threshold`` the answer says
  ``in_distribution: false`` with a warning, because the result is less reliable there.
  Far beyond every chest X-ray it was fitted on (``refuse_shift_threshold``, when the gate
  has one) the image is refused as well: the classifier's features then say it is something
  else (a knee film came out "Covid 0.999" with the warning, before this rule).

The artefacts (``<model>.gate.npz`` + ``<model>.gate.json``) are keyed to the ``.h5``'s
sha256 like the ONNX export: a gate fitted for another model is never used (:func:`load_gate`).
They hold only arrays and JSON, loaded without pickle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import NotAChestXray
from .metadata import derived_artefact_status
from .preprocessing import PreparedImage

GATE_FORMAT = 1
ARRAYS = ("stats_mean", "stats_scale", "feat_mean", "feat_proj", "w1", "b1", "w2", "b2",
          "shift_mean", "shift_proj")
N_HIST = 16
THUMB = 8


def gate_paths(model_path: str | Path) -> tuple[Path, Path]:
    model_path = Path(model_path)
    return model_path.with_suffix(".gate.npz"), model_path.with_suffix(".gate.json")


def pooled(feature_map: np.ndarray) -> np.ndarray:
    """(N, h, w, C) last feature map -> (N, C) global average: what the ``gap`` head reads."""
    return np.asarray(feature_map, dtype=np.float32).mean(axis=(1, 2))


def image_stats(gray: np.ndarray, colourfulness: float, aspect: float) -> np.ndarray:
    """Hand-made statistics of one resized uint8 gray image (``PreparedImage.gray``) -> 1-D float32.

    What a chest film looks like beyond the network's features: a broad gray histogram, few
    flat areas, soft gradients, near left-right symmetry, no colour, roughly square. Built on
    one 256-bin count, so it costs ~0.1 ms per image on the request path.
    """
    g = np.asarray(gray, dtype=np.uint8)
    n = g.size
    counts = np.bincount(g.ravel(), minlength=256)
    levels = np.arange(256, dtype=np.float64)
    mean = float(counts @ levels) / n
    std = float(np.sqrt(max(counts @ (levels - mean) ** 2 / n, 0.0)))
    hist = counts.reshape(N_HIST, 256 // N_HIST).sum(axis=1) / n
    nonzero = hist[hist > 0]
    entropy = float(-(nonzero * np.log2(nonzero)).sum())
    wide = g.astype(np.int16)
    dx, dy = np.abs(np.diff(wide, axis=1)), np.abs(np.diff(wide, axis=0))
    centred = g.astype(np.float32) - np.float32(mean)
    power = float((centred * centred).sum())
    symmetry = float((centred * centred[:, ::-1]).sum()) / power if power > 1e-3 else 1.0
    s = g.shape[0] // THUMB * THUMB
    thumb = centred[:s, :s].reshape(THUMB, s // THUMB, THUMB, s // THUMB).mean(axis=(1, 3)) / (std + 1.0)
    return np.concatenate([
        [mean / 255, std / 255], _percentiles(counts, n) / 255, hist, [entropy / 4,
         counts[:3].sum() / n, counts[253:].sum() / n,
         float(dx.mean()) / 255, float(dy.mean()) / 255,
         float((dx > 40).mean()), float((dy > 40).mean()),
         symmetry, min(colourfulness, 1.0), float(np.log(aspect))],
        thumb.ravel(),
    ]).astype(np.float32)


PERCENTILES = np.array([1, 5, 25, 50, 75, 95, 99], dtype=np.float64)


def _percentiles(counts: np.ndarray, n: int) -> np.ndarray:
    """``np.percentile`` (linear) of the values behind a 256-bin count, without sorting."""
    position = (n - 1) * PERCENTILES / 100
    below = np.floor(position).astype(np.int64)
    cumulative = np.cumsum(counts)
    lower = np.searchsorted(cumulative, below, side="right")
    upper = np.searchsorted(cumulative, np.minimum(below + 1, n - 1), side="right")
    return lower + (position - below) * (upper - lower)


STATS_VERSION = 2  # bump when image_stats changes: cached statistics are then recomputed
STATS_DIM = 2 + 7 + N_HIST + 10 + THUMB * THUMB


@dataclass(frozen=True)
class Verdict:
    """The gate's reading of one image."""

    chest_score: float
    chest_threshold: float
    colourfulness: float
    colour_limit: float
    shift_score: float
    shift_threshold: float
    refuse_shift: float | None = None  # refuse beyond this distance (None: gates fitted without the rule)

    @property
    def far_from_chest_xrays(self) -> bool:
        return self.refuse_shift is not None and self.shift_score > self.refuse_shift

    @property
    def is_chest_xray(self) -> bool:
        return (self.chest_score >= self.chest_threshold and self.colourfulness <= self.colour_limit
                and not self.far_from_chest_xrays)

    @property
    def in_distribution(self) -> bool:
        return self.shift_score <= self.shift_threshold

    def refusal(self) -> NotAChestXray:
        if self.colourfulness > self.colour_limit:
            why = (f"it is in colour (colourfulness {self.colourfulness:.3f}, chest X-rays stay "
                   f"below {self.colour_limit:.3f})")
        elif self.chest_score >= self.chest_threshold:
            why = (f"the model's features put it far from every chest X-ray it learned from (distance "
                   f"{self.shift_score:.2f}, the limit is {self.refuse_shift:.2f})")
        else:
            why = (f"its chest X-ray score is {self.chest_score:.3f}, below the gate's "
                   f"threshold of {self.chest_threshold:.3f}")
        return NotAChestXray(
            "This does not look like a frontal chest X-ray, so the model will not classify it: "
            f"{why}. Upload a frontal (PA or AP) chest radiograph.")

    def warnings(self) -> list[dict]:
        if self.in_distribution:
            return []
        return [{
            "code": "out_of_distribution",
            "message": ("This X-ray differs from the images the model was trained on, so the "
                        "result is less reliable than the model card's figures."),
            "score": round(self.shift_score, 3),
            "threshold": round(self.shift_threshold, 3),
        }]


class Gate:
    """The fitted gate: arrays from ``<model>.gate.npz``, thresholds from its JSON record."""

    def __init__(self, arrays: dict[str, np.ndarray], record: dict):
        self.a = {k: np.asarray(arrays[k], dtype=np.float64) for k in ARRAYS}
        self.record = record
        self.chest_threshold = float(record["chest_threshold"])
        self.colour_limit = float(record["colour_limit"])
        self.shift_threshold = float(record["shift_threshold"])
        refuse = record.get("refuse_shift_threshold")
        self.refuse_shift = None if refuse is None else float(refuse)
        self._pcs = self.a["feat_proj"].shape[1]
        # A perceptron fitted on the statistics alone has zero weights for the features: skip them.
        self._stats_only = not np.any(self.a["w1"][: self._pcs])

    def inputs(self, features: np.ndarray, stats: np.ndarray) -> np.ndarray:
        """The perceptron's input: whitened principal components of the pooled features, then
        the standardised statistics."""
        a = self.a
        return np.concatenate([(features - a["feat_mean"]) @ a["feat_proj"],
                               (stats - a["stats_mean"]) / a["stats_scale"]], axis=1)

    def chest_scores(self, features: np.ndarray, stats: np.ndarray) -> np.ndarray:
        a = self.a
        if self._stats_only:
            z = (stats - a["stats_mean"]) / a["stats_scale"]
            hidden = np.maximum(z @ a["w1"][self._pcs:] + a["b1"], 0.0)
        else:
            hidden = np.maximum(self.inputs(features, stats) @ a["w1"] + a["b1"], 0.0)
        logits = np.clip(hidden @ a["w2"] + a["b2"], -40, 40)
        return 1.0 / (1.0 + np.exp(-logits))

    def shift_scores(self, features: np.ndarray) -> np.ndarray:
        w = (features - self.a["shift_mean"]) @ self.a["shift_proj"]
        return np.sqrt((w * w).mean(axis=1))  # RMS over components: ~1 for the training data

    def assess(self, feature_map: np.ndarray, images: list[PreparedImage]) -> list[Verdict]:
        """One verdict per image of a batch, from the batch's last feature map."""
        features = pooled(feature_map).astype(np.float64)
        stats = np.stack([image_stats(i.gray, i.colourfulness, i.aspect) for i in images]).astype(np.float64)
        chest, shift = self.chest_scores(features, stats), self.shift_scores(features)
        return [Verdict(float(c), self.chest_threshold, float(i.colourfulness), self.colour_limit,
                        float(s), self.shift_threshold, self.refuse_shift) for c, s, i in zip(chest, shift, images)]

def load_gate(model_path: str | Path, model_sha256: str | None = None) -> tuple[Gate | None, str]:
    """The gate fitted for exactly this ``.h5``, or (None, why not)."""
    npz, record_path = gate_paths(model_path)
    record, reason = derived_artefact_status(
        model_path, npz, record_path, kind="gate", fmt=GATE_FORMAT, digest_key="gate_sha256",
        make="python -m model_training.gate", model_sha256=model_sha256)
    if record is None:
        return None, reason
    with np.load(npz, allow_pickle=False) as arrays:
        return Gate({k: arrays[k] for k in ARRAYS}, record), "valid"
