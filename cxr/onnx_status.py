"""Is the ONNX export beside a ``.h5`` current? The names and checks serving needs, no tf2onnx.

``model_training.export`` makes ``<model>.onnx`` and ``<model>.onnx.json`` (the ``.h5``'s
sha256 it was made from, the graph's sha256, the verification against Keras); the Makefile
and the Docker build run it. Serving only reads the record and compares digests
(:func:`export_status`), so a new model never meets a stale export and the predictor never
converts anything. Cheap and TensorFlow-free.
"""

from __future__ import annotations

import json
from pathlib import Path

from .metadata import FEATURES_LAYER, sha256_file

EXPORT_FORMAT = 1
# The ONNX graph's interface: input (N,S,S,3) float32, outputs (N,2) and the last feature map.
INPUT_NAME = "image"
PROBS_OUTPUT = "probabilities"
FEATURES_OUTPUT = FEATURES_LAYER


def onnx_path(model_path: str | Path) -> Path:
    return Path(model_path).with_suffix(".onnx")


def export_meta_path(model_path: str | Path) -> Path:
    return Path(model_path).with_suffix(".onnx.json")


def export_status(model_path: str | Path, model_sha256: str | None = None) -> tuple[bool, str]:
    """Is there a usable export for this exact ``.h5``? Returns (valid, reason).

    Cheap and TensorFlow-free: reads the export's JSON and compares sha256 digests (of the
    ``.h5``, and of the ``.onnx`` so a replaced or truncated graph is not trusted either).
    """
    model_path = Path(model_path)
    graph, meta_file = onnx_path(model_path), export_meta_path(model_path)
    if not graph.is_file() or not meta_file.is_file():
        return False, f"no export next to {model_path} (run: python -m model_training.export --model {model_path})"
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as exc:
        return False, f"{meta_file} unreadable: {exc}"
    if meta.get("format") != EXPORT_FORMAT:
        return False, f"{meta_file} has export format {meta.get('format')}, expected {EXPORT_FORMAT}"
    sha = model_sha256 or sha256_file(model_path)
    if meta.get("source_sha256") != sha:
        return False, f"stale export: {graph} was made from another model (sha256 mismatch)"
    if meta.get("onnx_sha256") != sha256_file(graph):
        return False, f"{graph} does not match the sha256 recorded in {meta_file}"
    verification = meta.get("verification") or {}
    if not verification.get("passed"):
        return False, f"{meta_file} does not record a passed verification"
    return True, "valid"


def read_export_meta(model_path: str | Path) -> dict:
    return json.loads(export_meta_path(model_path).read_text())
