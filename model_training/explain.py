"""Grad-CAM on the training side: the ``python -m model_training.explain`` CLI and the report
grid ``evaluate --explain-samples`` draws.

The Grad-CAM itself (the linear-head gradient, the heatmap, the overlay) is ``cxr.gradcam``,
shared with the web app; the model is loaded as the app loads it (``cxr.inference``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cxr.decode import decode_image
from cxr.errors import InputError
from cxr.explain import explain_gray, explain_upload
from cxr.gradcam import COLORMAPS, DEFAULT_OPACITY, MAX_SIDE, overlay
from cxr.metadata import CLASS_NAMES, FEATURES_LAYER, POSITIVE_CLASS, atomic_path

from .cli import CliError, add_backend_argument, run_cli


def head_type_of(model) -> str:
    """'gap' or 'flatten', read from a Keras classifier's layer names."""
    names = {layer.name for layer in model.layers}
    if "avg_pool" in names:
        return "gap"
    if "flatten" in names:
        return "flatten"
    raise ValueError("The model has neither an 'avg_pool' nor a 'flatten' head layer.")


def feature_source(model_path: str | Path, backend: str | None = None):
    """The served model as a feature source: ``cxr.inference.load_predictor`` (TensorFlow or
    ONNX Runtime, chosen as the app chooses, or by ``backend``)."""
    from cxr.inference import load_predictor

    return load_predictor(model_path, backend=backend)


# --------------------------------------------------------------------------- grid + CLI

def save_explain_grid(model_path, image_paths, out_png, labels=None, *, opacity: float = DEFAULT_OPACITY,
                      columns: int = 4, source=None) -> Path:
    """Save a grid of Grad-CAM overlays (one panel per image, titled with truth and prediction).

    Called by ``evaluate --explain-samples N``; ``labels`` are the true class names (or
    None). Returns ``out_png``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image_paths = [Path(p) for p in image_paths]
    if not image_paths:
        raise ValueError("save_explain_grid needs at least one image")
    if labels is not None and len(labels) != len(image_paths):
        raise ValueError("labels must match image_paths one to one")
    source = source or feature_source(model_path)
    ncols = min(columns, len(image_paths))
    nrows = -(-len(image_paths) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 4.0 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, path in enumerate(image_paths):
        gray = decode_image(path.read_bytes())
        ax = axes.flat[i]
        truth = f"true {_title_name(labels[i])} · " if labels is not None else ""
        try:
            exp = explain_gray(source, gray)
        except InputError as exc:  # the input gate refused it, as the app would
            ax.imshow(gray, cmap="gray")
            ax.set_title(f"{truth}refused: {exc.code}", fontsize=9)
            continue
        ax.imshow(overlay(gray, exp.heatmap, opacity=opacity))
        ax.set_title(f"{truth}pred {exp.label}\nP(Covid)={exp.probabilities[POSITIVE_CLASS]:.2f}",
                     fontsize=9)
    fig.suptitle(f"Grad-CAM ({FEATURES_LAYER}) of {Path(model_path).name} for the predicted class",
                 fontsize=10)
    fig.tight_layout()
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return out_png


def _title_name(label) -> str:
    text = str(label)
    for name in CLASS_NAMES:
        if text.lower() == name.lower():
            return name
    return text


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m model_training.explain",
        description="Write a Grad-CAM overlay PNG showing where the model looked in one X-ray "
                    "(PNG, JPEG or DICOM). Research demo, not a diagnosis.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", required=True, help="trained .h5 model (its .json sidecar beside it)")
    p.add_argument("--image", required=True, help="the X-ray to explain")
    p.add_argument("--out", required=True, help="where to write the overlay PNG")
    p.add_argument("--class", dest="class_name", choices=CLASS_NAMES, default=None,
                   help="class to explain (default: the predicted class)")
    p.add_argument("--opacity", type=float, default=DEFAULT_OPACITY,
                   help="heatmap opacity over the image, 0-1")
    p.add_argument("--max-side", type=int, default=MAX_SIDE, help="long side of the PNG, at most")
    p.add_argument("--colormap", choices=COLORMAPS, default="inferno",
                   help="perceptually uniform matplotlib colormap")
    add_backend_argument(p)
    args = p.parse_args(argv)
    if not 0.0 <= args.opacity <= 1.0:
        p.error("--opacity must be between 0 and 1")
    if args.max_side < 16:
        p.error("--max-side must be at least 16")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: explain_file(args))


def explain_file(args: argparse.Namespace) -> None:
    """The CLI's work: read ``--image``, explain it, write the overlay PNG, print the answer as JSON."""
    image = Path(args.image)
    if not image.is_file():
        raise CliError(f"--image {image}: no such file")
    try:
        source = feature_source(args.model, args.backend)
    except (FileNotFoundError, RuntimeError) as exc:
        raise CliError(str(exc)) from exc
    try:
        exp, gray = explain_upload(source, image.read_bytes(), args.class_name)
    except InputError as exc:  # undecodable, or refused by the input gate
        raise CliError(f"--image {image}: {exc}") from exc
    png = exp.overlay_png(gray, opacity=args.opacity, max_side=args.max_side, colormap=args.colormap)
    with atomic_path(args.out) as tmp:
        tmp.write_bytes(png)
    print(json.dumps({"label": exp.label, "probabilities": exp.probabilities,
                      "explained_class": exp.explained_class, "out": str(args.out)}))


if __name__ == "__main__":
    sys.exit(main())
