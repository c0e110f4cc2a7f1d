"""Report figures (matplotlib, headless Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from cxr.metadata import atomic_path  # noqa: E402


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


def confusion_matrix_png(cm: np.ndarray, class_names, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(cm, cmap="Blues")
    for (i, j), value in np.ndenumerate(cm):
        ax.text(j, i, str(value), ha="center", va="center",
                color="white" if value > cm.max() / 2 else "black", fontsize=13)
    ax.set_xticks(range(len(class_names)), class_names)
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix")
    _save(fig, path)


def roc_curve_png(y_covid, p_covid, auc: float, threshold: float, path: Path) -> None:
    fpr, tpr, thresholds = roc_curve(y_covid, p_covid)
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot(fpr, tpr, label=f"ResNet50 (AUC = {auc:.3f})")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    at = np.argmin(np.abs(thresholds - threshold))
    ax.plot(fpr[at], tpr[at], "o", color="crimson", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("1 - specificity (false positive rate)")
    ax.set_ylabel("sensitivity (Covid recall)")
    ax.set_title("ROC curve, Covid as positive")
    ax.legend(loc="lower right")
    _save(fig, path)


def training_curves_png(history: dict, path: Path, stage_starts=()) -> None:
    """Loss and accuracy/AUC per epoch; dotted lines mark where a new stage (--init-from) began."""
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for key, style in (("loss", "-"), ("val_loss", "--")):
        if key in history:
            axes[0].plot(epochs, history[key], style, marker="o", label=key)
    axes[0].set_title("loss")
    for key, style in (("accuracy", "-"), ("val_accuracy", "--"), ("auc", "-"), ("val_auc", "--")):
        if key in history:
            axes[1].plot(epochs, history[key], style, marker="o", label=key)
    axes[1].set_title("accuracy and ROC AUC")
    for ax in axes:
        for start in stage_starts:
            ax.axvline(start + 0.5, color="grey", linestyle=":")
        ax.set_xlabel("epoch")
        ax.legend()
    _save(fig, path)


def reliability_png(y_covid, curves: dict, path: Path, bins: int = 10) -> None:
    """Reliability diagram: share of Covid films against mean P(Covid) per equal-width bin,
    one line per named probability (e.g. raw and calibrated), with each one's ECE."""
    from cxr.calibration import expected_calibration_error

    y = np.asarray(y_covid, dtype=float)
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    for name, p in curves.items():
        p = np.asarray(p, dtype=float)
        index = np.minimum((p * bins).astype(int), bins - 1)
        used = [b for b in range(bins) if (index == b).any()]
        ax.plot([p[index == b].mean() for b in used], [y[index == b].mean() for b in used], marker="o",
                label=f"{name} (ECE {expected_calibration_error(y, p, bins):.3f})")
    ax.set_xlabel("mean P(Covid) in the bin")
    ax.set_ylabel("share of Covid films in the bin")
    ax.set_title(f"Reliability ({bins} equal-width bins)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    _save(fig, path)
