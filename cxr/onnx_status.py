"""Is the ONNX export beside a ``.h5`` current? The names and checks serving needs, no tf2onnx.

``model_training.export`` makes ``<model>.onnx`` and ``<model>.onnx.json`` (the ``.h5``'s
sha256 it was made from, the graph's sha256, the verification against Keras); the Makefile
and the Docker build run it. Serving only reads the record and compares digests
(:func:`export_status`), so a new model never meets a stale export and the predictor never
converts anything. Cheap and TensorFlow-free.

The export may also write an int8 twin, ``<model>.int8.onnx`` with ``<model>.int8.onnx.json``
(``model_training.quantize``): kept only when its accuracy guard passed against the fp32
export on siim val; :func:`int8_status` says whether it may be served.
"""

from __future__ import annotations

import json
from pathlib import Path

from .metadata import FEATURES_LAYER, derived_artefact_status

EXPORT_FORMAT = 1
INT8_FORMAT = 1
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
    meta, reason = derived_artefact_status(
        model_path, onnx_path(model_path), export_meta_path(model_path), kind="export", fmt=EXPORT_FORMAT,
        digest_key="onnx_sha256", make="python -m model_training.export", model_sha256=model_sha256)
    if meta is None:
        return False, reason
    verification = meta.get("verification") or {}
    if not verification.get("passed"):
        return False, f"{export_meta_path(model_path)} does not record a passed verification"
    return True, "valid"


def int8_path(model_path: str | Path) -> Path:
    return Path(model_path).with_suffix(".int8.onnx")


def int8_meta_path(model_path: str | Path) -> Path:
    return Path(model_path).with_suffix(".int8.onnx.json")


def int8_status(model_path: str | Path, model_sha256: str | None = None) -> tuple[bool, str]:
    """May the int8 twin serve this exact ``.h5``? Returns (valid, reason).

    Valid when its record names this model's sha256 and the graph's own, and its accuracy
    guard passed. A twin the guard rejected leaves a record without a graph: the reason says
    which limit it broke.
    """
    model_path = Path(model_path)
    record_path = int8_meta_path(model_path)
    if record_path.is_file() and not int8_path(model_path).is_file():
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError) as exc:
            return False, f"{record_path} unreadable: {exc}"
        guard = record.get("guard") or {}
        if not guard.get("passed", True):
            return False, f"int8 twin rejected by its accuracy guard: {guard.get('why', 'see ' + str(record_path))}"
    meta, reason = derived_artefact_status(
        model_path, int8_path(model_path), record_path, kind="int8 twin", fmt=INT8_FORMAT,
        digest_key="onnx_sha256", make="python -m model_training.export", model_sha256=model_sha256)
    if meta is None:
        return False, reason
    if not (meta.get("guard") or {}).get("passed"):
        return False, f"{record_path} does not record a passed accuracy guard"
    return True, "valid"


def read_export_meta(model_path: str | Path) -> dict:
    return json.loads(export_meta_path(model_path).read_text())
