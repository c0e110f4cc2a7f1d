"""The model's facts: sidecar metadata (``<model>.json``), class order, graph names, the
decision rule, sha256 and atomic file writes.

The app needs nothing but the ``.h5`` and this sidecar to serve a model: input size,
class order, preprocessing mode and decision threshold all live here, so they can never
drift from what training used. The graph names (the last feature map Grad-CAM reads, the
Dense head) and the "Covid when p >= threshold" rule are declared once, here, for the
model builder, the exporter, both inference backends and Grad-CAM. Nothing in this module
imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

CLASS_NAMES = ("Covid", "Normal")  # index 0 = Covid, index 1 = Normal; fixed, never inferred
POSITIVE_CLASS = "Covid"
DEFAULT_THRESHOLD = 0.5
FEATURES_LAYER = "conv5_block3_out"  # ResNet50's last feature map: Grad-CAM and the ONNX export read it
HEAD_LAYER = "predictions"  # the Dense softmax head


def decide(probabilities: dict[str, float], threshold: float, class_names=CLASS_NAMES) -> str:
    """The label: the positive class (Covid) exactly when its probability reaches ``threshold``."""
    if probabilities[POSITIVE_CLASS] >= threshold:
        return POSITIVE_CLASS
    return next(c for c in class_names if c != POSITIVE_CLASS)


def sidecar_path(model_path: str | Path) -> Path:
    return Path(model_path).with_suffix(".json")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(final_path: str | Path):
    """Yield a temporary path beside ``final_path``; rename it into place only on success.

    A crash or exception mid-write leaves the previous file (or nothing) at
    ``final_path``, never a truncated one.
    """
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{final_path.stem}.", suffix=".tmp" + final_path.suffix, dir=final_path.parent
    )
    os.close(fd)
    os.chmod(tmp_name, 0o644)  # mkstemp makes 0600, which would hide the file from other users
    try:
        yield Path(tmp_name)
        os.replace(tmp_name, final_path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def write_json_atomic(path: str | Path, payload: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")


def read_metadata(model_path: str | Path) -> dict:
    path = sidecar_path(model_path)
    if not path.exists():
        raise FileNotFoundError(
            f"Model metadata {path} not found next to {model_path}; "
            "train with model_training.train, which writes it."
        )
    return json.loads(path.read_text())


def update_metadata(model_path: str | Path, **changes) -> dict:
    meta = read_metadata(model_path)
    meta.update(changes)
    write_json_atomic(sidecar_path(model_path), meta)
    return meta


def model_name(model_path: str | Path) -> str:
    return Path(model_path).stem


def derived_artefact_status(model_path: str | Path, artefact: Path, record_path: Path, *, kind: str,
                            fmt: int, digest_key: str, make: str, model_sha256: str | None = None
                            ) -> tuple[dict | None, str]:
    """Is ``artefact`` (made from the ``.h5`` by ``make``, described by the JSON ``record_path``)
    the one for exactly this model? Returns (record, "valid") or (None, why not).

    The ONNX export and the input gate are both keyed this way: the record names the format,
    the ``.h5``'s sha256 (``source_sha256``) and the artefact's own sha256 (``digest_key``), so
    a new model never meets a stale artefact and a replaced or truncated one is not trusted.
    """
    if not artefact.is_file() or not record_path.is_file():
        return None, f"no {kind} next to {model_path} (run: {make} --model {model_path})"
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError) as exc:
        return None, f"{record_path} unreadable: {exc}"
    if record.get("format") != fmt:
        return None, f"{record_path} has {kind} format {record.get('format')}, expected {fmt}"
    if record.get("source_sha256") != (model_sha256 or sha256_file(model_path)):
        return None, f"stale {kind}: {artefact} was made from another model (sha256 mismatch)"
    if record.get(digest_key) != sha256_file(artefact):
        return None, f"{artefact} does not match the sha256 recorded in {record_path}"
    return record, "valid"
