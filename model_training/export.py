"""Derive an ONNX Runtime copy of a trained ``.h5`` classifier, verified on real X-rays.

    python -m model_training.export --model models/covid_resnet50.h5

The ``.h5`` stays the artifact training writes and the app is configured with. ONNX
Runtime runs the same network about twice as fast as TensorFlow on CPU and starts in a
second without importing TensorFlow, so the app serves this derived copy when it is valid:

* ``<model>.onnx``       the graph, inputs ``image`` (N,S,S,3) float32, outputs
                         ``probabilities`` (N,2) and ``conv5_block3_out`` (N,h,w,2048), the
                         last feature map, so Grad-CAM works on either backend;
* ``<model>.onnx.json``  the ``.h5``'s sha256 it was made from, versions, and the measured
                         largest probability difference against Keras on real X-rays;
* ``<model>.int8.onnx``  (and ``.int8.onnx.json``) the int8 twin, made from the fp32 graph and
                         kept only when it decides like it on siim val (``model_training.quantize``;
                         ``--no-int8`` skips it, and without siim data it is skipped with a note).

The export fails (and writes nothing) when that difference exceeds the tolerance. The app
only compares the recorded sha256 with the ``.h5``'s (``cxr.onnx_status.export_status``, where
the graph's input and output names live too), so a new model never meets a stale export.
Building the export (tf2onnx) is a training-side tool: the Makefile and the Docker build's
export stage run it; the served image holds ``cxr/`` and not this package. Only ``export``
(and its steps: ``serving_function`` -> ``convert`` -> ``verify`` -> write the graph and
``export_record``) imports TensorFlow.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

from cxr.metadata import FEATURES_LAYER, atomic_path, read_metadata, sha256_file, write_json_atomic
from cxr.onnx_status import (
    EXPORT_FORMAT,
    FEATURES_OUTPUT,
    INPUT_NAME,
    PROBS_OUTPUT,
    export_meta_path,
    export_status,
    onnx_path,
)

from .cli import quiet_tensorflow, run_cli
from .quantize import DEFAULT_DATA_DIR as INT8_DATA_DIR
from .quantize import QuantizeError, quantize_twin, twin_is_settled

TOLERANCE = 1e-4
OPSET = 17
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cxr"
DEFAULT_IMAGES = 8
VERIFICATION_DIR = "verification"  # models/verification/: a few real X-rays shipped with the model


class ExportError(Exception):
    """The export could not be made or did not match the Keras model."""


def default_data_dir(model_path: str | Path) -> Path:
    """Where to find real X-rays to verify on: $CXR_DATA_DIR, ../shared/data/cxr, or
    ``verification/`` beside the model (what a container has, without the data set)."""
    candidates = [os.environ.get("CXR_DATA_DIR"), DEFAULT_DATA_DIR, Path(model_path).parent / VERIFICATION_DIR]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return DEFAULT_DATA_DIR


def sample_images(data_dir: str | Path, count: int) -> list[Path]:
    """A fixed, class-balanced handful of real X-rays (test split when present)."""
    data_dir = Path(data_dir)
    split = next((data_dir / s for s in ("test", "val", "train") if (data_dir / s).is_dir()), data_dir)
    per_class = [sorted((split / c).glob("*.jpg")) for c in ("covid", "normal")]
    if not any(per_class):
        per_class = [sorted(p for p in split.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))]
    picked: list[Path] = []
    i = 0
    while len(picked) < count and any(i < len(files) for files in per_class):
        picked += [files[i] for files in per_class if i < len(files)]
        i += 1
    if not picked:
        raise ExportError(f"no X-ray images found under {data_dir} to verify the export on")
    return picked[:count]


@dataclass
class Verification:
    """Keras against ONNX Runtime on the same real X-rays."""

    files: list[Path]
    probs_shape: tuple[int, ...]  # per image, from ONNX Runtime
    features_shape: tuple[int, ...]
    prob_diff: float  # largest |p_keras - p_onnx|
    feature_diff: float
    feature_scale: float  # largest |feature| (Keras), to read feature_diff against
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.prob_diff <= self.tolerance


def export(
    model_path: str | Path,
    *,
    data_dir: str | Path | None = None,
    images: int = DEFAULT_IMAGES,
    tolerance: float = TOLERANCE,
    opset: int = OPSET,
    int8: bool = False,
    int8_data_dir: str | Path | None = None,
    log=print,
) -> Path:
    """Convert ``model_path`` to ONNX, verify it against Keras, write both files atomically;
    with ``int8``, then try the int8 twin (calibrated and guarded on ``int8_data_dir``, siim)."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ExportError(f"model {model_path} not found")
    size = int(read_metadata(model_path)["input_size"])
    source_sha = sha256_file(model_path)
    data_dir = Path(data_dir) if data_dir else default_data_dir(model_path)
    quiet_tensorflow()

    serve, spec = serving_function(model_path, size)
    proto = convert(serve, spec, size, opset, log=log, source=model_path)
    check = verify(proto, serve, sample_images(data_dir, images), size, tolerance)
    log(f"Verified on {len(check.files)} real X-rays: max |p_keras - p_onnx| = {check.prob_diff:.2e} "
        f"(tolerance {tolerance:g}); features max diff {check.feature_diff:.2e} of scale {check.feature_scale:.2e}")
    if not check.passed:
        raise ExportError(
            f"ONNX export of {model_path} differs from Keras by {check.prob_diff:.3g} > {tolerance:g}; not written"
        )

    graph = onnx_path(model_path)
    with atomic_path(graph) as tmp:
        tmp.write_bytes(proto.SerializeToString())
    write_json_atomic(export_meta_path(model_path),
                      export_record(model_path, source_sha, graph, size, opset, data_dir, check))
    log(f"Wrote {graph} ({graph.stat().st_size / 1e6:.1f} MB) and {export_meta_path(model_path)}")
    if int8:
        make_int8_twin(model_path, int8_data_dir, log=log)
    return graph


def make_int8_twin(model_path: str | Path, data_dir: str | Path | None = None, *, log=print) -> Path | None:
    """The int8 twin (``model_training.quantize``); a twin that cannot be made is a note, not a
    failure: the fp32 export stands and the app serves it."""
    try:
        return quantize_twin(model_path, data_dir=data_dir, log=log)
    except QuantizeError as exc:
        log(f"int8 twin not made (the app serves fp32): {exc}")
        return None


def serving_function(model_path: Path, size: int):
    """The classifier as a ``tf.function`` from images to (probabilities, last feature map), and
    its input signature: what tf2onnx converts and the verification runs on the Keras side."""
    import keras
    import tensorflow as tf

    from cxr.inference import load_classifier

    classifier = load_classifier(model_path)
    two_outputs = keras.Model(
        classifier.inputs, [classifier.output, classifier.get_layer(FEATURES_LAYER).output]
    )
    spec = tf.TensorSpec((None, size, size, 3), tf.float32, name=INPUT_NAME)

    @tf.function(input_signature=[spec])
    def serve(image):
        probs, features = two_outputs(image, training=False)
        return probs, features

    return serve, spec


def convert(serve, spec, size: int, opset: int, *, log=print, source: Path | None = None):
    """tf2onnx's ONNX graph of ``serve``, with stable input/output names, checked by ONNX."""
    import onnx
    import tf2onnx

    log(f"Converting {source} ({size}px) to ONNX opset {opset} with tf2onnx {tf2onnx.__version__} ...")
    proto, _ = tf2onnx.convert.from_function(serve, input_signature=[spec], opset=opset)
    _name_outputs(proto, size)
    onnx.checker.check_model(proto)
    return proto


def verify(proto, serve, files: list[Path], size: int, tolerance: float) -> Verification:
    """Run Keras and ONNX Runtime on the same real X-rays and measure how far apart they are."""
    import numpy as np
    import onnxruntime as ort
    import tensorflow as tf

    from cxr.preprocessing import load_image_file

    batch = np.stack([load_image_file(p, size) for p in files])
    keras_probs, keras_features = (t.numpy() for t in serve(tf.constant(batch)))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    ort_probs, ort_features = session.run([PROBS_OUTPUT, FEATURES_OUTPUT], {INPUT_NAME: batch})
    return Verification(
        files=files,
        probs_shape=tuple(ort_probs.shape[1:]),
        features_shape=tuple(ort_features.shape[1:]),
        prob_diff=float(np.max(np.abs(ort_probs - keras_probs))),
        feature_diff=float(np.max(np.abs(ort_features - keras_features))),
        feature_scale=float(np.max(np.abs(keras_features))) or 1.0,
        tolerance=tolerance,
    )


def export_record(model_path: Path, source_sha: str, graph: Path, size: int, opset: int, data_dir: Path,
                  check: Verification) -> dict:
    """``<model>.onnx.json``: the ``.h5`` it was made from, the graph's interface, the verification."""
    return {
        "format": EXPORT_FORMAT,
        "source": model_path.name,
        "source_sha256": source_sha,
        "onnx": graph.name,
        "onnx_sha256": sha256_file(graph),
        "input": {"name": INPUT_NAME, "shape": [None, size, size, 3], "dtype": "float32"},
        "outputs": {
            PROBS_OUTPUT: list(check.probs_shape),
            FEATURES_OUTPUT: list(check.features_shape),
        },
        "opset": opset,
        "verification": {
            "data_dir": str(data_dir),
            "images": [str(p.relative_to(data_dir)) for p in check.files],
            "max_abs_prob_diff": check.prob_diff,
            "max_abs_feature_diff": check.feature_diff,
            "feature_scale": check.feature_scale,
            "tolerance": check.tolerance,
            "passed": check.passed,
        },
        "versions": _versions(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _versions() -> dict:
    import keras
    import numpy as np
    import onnx
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx

    return {
        "python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
        "tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__,
        "numpy": np.__version__,
    }


def _name_outputs(proto, size: int) -> None:
    """Give the graph stable names: input ``image``, outputs ``probabilities`` and the features.

    tf2onnx names outputs after TensorFlow's Identity tensors; which is which is told by the
    last dimension (2 classes against 2048 channels).
    """
    graph = proto.graph
    if len(graph.output) != 2:
        raise ExportError(f"expected 2 graph outputs, got {len(graph.output)}")
    renames = {}
    for out in graph.output:
        last = out.type.tensor_type.shape.dim[-1].dim_value
        renames[out.name] = PROBS_OUTPUT if last == 2 else FEATURES_OUTPUT
    if sorted(renames.values()) != sorted([PROBS_OUTPUT, FEATURES_OUTPUT]):
        raise ExportError(f"could not tell the outputs apart: {renames}")
    renames[graph.input[0].name] = INPUT_NAME
    for value in list(graph.input) + list(graph.output):
        value.name = renames.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]


def ensure_export(model_path: str | Path, *, log=print, **kwargs) -> Path:
    """Make the export unless a valid one for this exact ``.h5`` exists; return its path.

    For ``make export``/``make run``, the Dockerfile and the end of training: a no-op
    (a sha256 comparison) when the export is current.
    """
    valid, reason = export_status(model_path)
    if not valid:
        log(f"Exporting: {reason}")
        return export(model_path, log=log, **kwargs)
    log(f"{onnx_path(model_path)} is current for {model_path}")
    if kwargs.get("int8") and not twin_is_settled(model_path):
        make_int8_twin(model_path, kwargs.get("int8_data_dir"), log=log)
    return onnx_path(model_path)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m model_training.export",
        description="Convert a trained .h5 classifier to ONNX (<model>.onnx + <model>.onnx.json) for the "
        "fast ONNX Runtime backend, verified against Keras on real X-rays.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", default=os.environ.get("MODEL_PATH", "models/covid_resnet50.h5"),
                   help="the trained .h5 (default: $MODEL_PATH or models/covid_resnet50.h5)")
    p.add_argument("--data-dir", default=None,
                   help="folder of real X-rays to verify on (its test/{covid,normal}/ split, or any images); "
                   "default: $CXR_DATA_DIR, else ../shared/data/cxr, else verification/ beside the model")
    p.add_argument("--images", type=int, default=DEFAULT_IMAGES, help="how many X-rays to verify on")
    p.add_argument("--tolerance", type=float, default=TOLERANCE,
                   help="largest allowed |probability difference| between Keras and ONNX Runtime")
    p.add_argument("--opset", type=int, default=OPSET, help="ONNX opset")
    p.add_argument("--if-missing", action="store_true",
                   help="do nothing when a valid export for this exact .h5 already exists (and its int8 "
                   "twin was kept or rejected already)")
    p.add_argument("--int8", action=argparse.BooleanOptionalAction, default=True,
                   help="also make the int8 twin, kept only if it decides like fp32 on siim val")
    p.add_argument("--int8-data-dir", default=str(INT8_DATA_DIR),
                   help="siim-layout folder: train/ calibrates the int8 twin, val/ guards it")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    make = ensure_export if args.if_missing else export
    return run_cli(lambda: make(args.model, data_dir=args.data_dir, images=args.images, tolerance=args.tolerance,
                                opset=args.opset, int8=args.int8, int8_data_dir=args.int8_data_dir),
                   errors=(ExportError, FileNotFoundError))


if __name__ == "__main__":
    sys.exit(main())
