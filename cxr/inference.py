"""Loading a predictor and the one compiled inference call each request makes (app, CLIs, bench).

Two backends run the same trained ``.h5``:

* ``onnx``: ONNX Runtime on ``<model>.onnx``, the export ``model_training.export`` derives
  from the ``.h5`` and verifies against Keras (``make export``, the Docker build); this module
  only checks that it is current (``cxr.onnx_status``) and never converts anything. About twice
  as fast as TensorFlow on CPU, ready in about a second, a third of the memory, and this module
  never imports TensorFlow for it.
* ``tensorflow``: the Keras model wrapped in a ``tf.function`` with a fixed input signature
  (``model.predict`` builds a data pipeline per call and costs about twice the forward pass).

``INFERENCE_BACKEND=auto`` (the default) picks ``onnx`` when an export whose recorded sha256
equals the ``.h5``'s exists, else ``tensorflow``; where TensorFlow is not installed (the
serving image, ``requirements-serve.txt``) a missing export is a clear load error instead.
On ``onnx``, ``precision`` picks the graph: ``auto`` serves the int8 twin when it is current
and passed its accuracy guard (``cxr.onnx_status.int8_status``), else fp32. Input size, class names and threshold come
from the model's own sidecar metadata. Both backends also expose the last convolutional
feature map and the Dense head's weights, which is all Grad-CAM needs.

Settings (values, never read from the environment here: the app's config, gunicorn's and the
CLIs' arguments pass them in; ``app.config`` documents the environment variables):

==================  =======  ==============================================================
``backend``         auto     ``auto``, ``onnx`` or ``tensorflow``
``precision``       auto     ``auto``, ``int8`` or ``fp32`` (int8: ONNX Runtime only)
``intra_op``        0        threads one forward pass uses; 0 = all usable cores
``inter_op``        1        independent graph branches run in parallel (ResNet50 is a chain:
                             1 avoids idle thread pools)
``spin``            False    ONNX Runtime threads spin-wait for work or sleep: spinning burns
                             the core another worker needs
``concurrency``     0        most forward passes one process runs at once (0 = no limit, i.e.
                             up to gunicorn's threads); 1 bounds memory
==================  =======  ==============================================================

Measured on the shared 2-core machine (bench/): spinning threads doubled the latency (the
cores are shared); with 4 gunicorn threads, letting concurrent passes share ONNX Runtime's
pool gave ~10% more throughput and a lower p95 than running them one at a time.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .calibration import DecisionRule, OperatingPoint
from .errors import InputError, NotAChestXray, UndecodableImage
from .gate import Gate, Verdict, load_gate
from .metadata import CLASS_NAMES, FEATURES_LAYER, HEAD_LAYER, decide, read_metadata, sha256_file
from .preprocessing import PreparedImage, prepare_image_bytes

BACKENDS = ("auto", "onnx", "tensorflow")
PRECISIONS = ("auto", "int8", "fp32")


@dataclass
class Prediction:
    label: str
    probabilities: dict[str, float]  # calibrated when the model has a calibration (cxr.calibration)
    threshold: float
    inference_ms: float
    verdict: Verdict | None = None  # the input gate's reading; None when the model has no gate
    warnings: list[dict] = field(default_factory=list)
    operating_point: str = "default"  # the named threshold that decided the label
    calibrated: bool = False

    @property
    def in_distribution(self) -> bool | None:
        return None if self.verdict is None else self.verdict.in_distribution

    def as_dict(self) -> dict:
        answer = {
            "label": self.label,
            "probabilities": self.probabilities,
            "threshold": self.threshold,
            "operating_point": self.operating_point,
            "calibrated": self.calibrated,
            "inference_ms": round(self.inference_ms, 2),
            "in_distribution": self.in_distribution,
            "warnings": self.warnings,
        }
        if self.verdict is not None:
            v = self.verdict
            answer["input_check"] = {"chest_score": round(v.chest_score, 4),
                                     "chest_threshold": round(v.chest_threshold, 4),
                                     "shift_score": round(v.shift_score, 3),
                                     "shift_threshold": round(v.shift_threshold, 3)}
        return answer


@dataclass(frozen=True)
class ThreadSettings:
    """Per-process thread pools (see the module docstring); :meth:`resolve` turns 0 into all cores."""

    intra_op: int
    inter_op: int
    spin: bool
    concurrency: int = 0  # 0 = no limit

    @classmethod
    def resolve(cls, intra_op: int = 0, inter_op: int = 1, spin: bool = False, concurrency: int = 0,
                ) -> ThreadSettings:
        return cls(intra_op=intra_op if intra_op > 0 else usable_cores(), inter_op=max(1, inter_op),
                   spin=bool(spin), concurrency=max(0, concurrency))


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class Predictor:
    """One loaded model plus its metadata; ``forward``/``forward_features`` are per backend."""

    backend = "base"
    precision = "fp32"
    precision_reason = "fp32 unless load_predictor chose the int8 twin"

    def __init__(self, model_path: str | Path, metadata: dict, sha256: str, threads: ThreadSettings | None = None):
        self.model_path = Path(model_path)
        self.metadata = metadata
        self.sha256 = sha256
        self.threads = threads or ThreadSettings.resolve()
        self.name = metadata.get("name", self.model_path.stem)
        self.input_size = int(metadata["input_size"])
        self.class_names = tuple(metadata.get("class_names", CLASS_NAMES))
        self.decision = DecisionRule.from_metadata(metadata)  # calibration + operating points
        self.threshold = self.decision.operating_point().threshold
        self.head_type = (metadata.get("training") or {}).get("head", "flatten")
        if self.class_names != CLASS_NAMES:
            raise ValueError(f"{model_path}: class order {self.class_names} differs from {CLASS_NAMES}")
        self._head_weights: tuple[np.ndarray, np.ndarray] | None = None
        # At most INFERENCE_CONCURRENCY forward passes at once (not to be confused with the input gate).
        self._slots = threading.BoundedSemaphore(self.threads.concurrency) if self.threads.concurrency else _NoLimit()
        self.gate: Gate | None = None  # the input gate (cxr.gate), set by load_predictor
        self.gate_reason = "not loaded"

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities (N, 2) for a preprocessed float32 batch (N, S, S, 3)."""
        raise NotImplementedError

    def forward_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (N, 2) and the ``conv5_block3_out`` feature map (N, h, w, 2048)."""
        raise NotImplementedError

    def head_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """Kernel and bias of the ``predictions`` Dense layer, read from the ``.h5`` with h5py.

        Reading the file directly keeps the ONNX backend free of TensorFlow. The kernel is
        (2048, 2) for the gap head and (h*w*2048, 2) for the flatten head.
        """
        if self._head_weights is None:
            self._head_weights = read_head_weights(self.model_path)
        return self._head_weights

    def model_info(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "input_size": self.input_size,
                "backend": self.backend, "precision": self.precision, "input_gate": self.gate is not None,
                "calibrated": self.decision.calibration.active,
                "operating_points": {name: round(p.threshold, 6) for name, p in self.decision.operating_points.items()},
                "default_operating_point": self.decision.default}

    # -- what callers use: named by what they take ---------------------------------------

    def prepare(self, data: bytes) -> PreparedImage:
        """Upload bytes -> the model input plus the gate's cues: the serving preprocessing
        (``cxr.preprocessing.prepare_image_bytes``)."""
        return prepare_image_bytes(data, self.input_size)

    def predict_upload(self, data: bytes, operating_point: str | None = None) -> Prediction:
        """One upload (PNG, JPEG or DICOM bytes) -> its :class:`Prediction`; raises the
        :class:`InputError` the bytes or the input gate call for."""
        self.decision.operating_point(operating_point)
        outcome = self.predict_prepared([self.prepare(data)], operating_point)[0]
        if isinstance(outcome, InputError):
            raise outcome
        return outcome

    def predict_uploads(self, payloads: Iterable[bytes], operating_point: str | None = None,
                        ) -> list[Prediction | InputError]:
        """Many uploads -> per item, in order, its :class:`Prediction` or the :class:`InputError`
        that item raised (the web app's ``/predict/batch`` and ``model_training.predict``).

        Every item is decoded and preprocessed exactly as :meth:`predict_upload` does, one at a
        time (only the small model inputs are kept); one bad item never stops the others: an
        unexpected decoder failure becomes that item's ``UndecodableImage``. The items that
        decode go through the model together, in one forward pass.
        """
        self.decision.operating_point(operating_point)
        results: list[Prediction | InputError | None] = []
        prepared, slots = [], []
        for data in payloads:
            try:
                image = self.prepare(data)
            except InputError as exc:
                results.append(exc)
                continue
            except Exception as exc:  # noqa: BLE001 - a broken file must not sink the batch
                error = UndecodableImage(f"The file could not be decoded ({exc.__class__.__name__}).")
                error.__cause__ = exc
                results.append(error)
                continue
            slots.append(len(results))
            results.append(None)
            prepared.append(image)
        for slot, outcome in zip(slots, self.predict_prepared(prepared, operating_point)):
            results[slot] = outcome
        return results

    def predict_prepared(self, images: Sequence[np.ndarray | PreparedImage],
                         operating_point: str | None = None) -> list[Prediction | NotAChestXray]:
        """Prepared images (model inputs) through ONE forward pass, in order; per image its
        :class:`Prediction` or the gate's :class:`NotAChestXray`.

        With an input gate the pass also returns the last feature map, which the gate reads
        (``cxr.gate``): no second network. Each prediction's ``inference_ms`` is its share of
        the pass plus the gate (the total time / N). A bare array counts as gray and square.
        An unknown ``operating_point`` raises :class:`cxr.calibration.UnknownOperatingPoint`
        before any work.
        """
        return [outcome for outcome, _ in self._run(images, operating_point, keep_features=False)]

    def predict_with_features(self, image: PreparedImage, operating_point: str | None = None,
                              ) -> tuple[Prediction, np.ndarray]:
        """One prepared image -> its :class:`Prediction` and its last feature map ``(h, w, C)``
        from the same forward pass (what Grad-CAM reads: ``cxr.explain``); raises
        :class:`NotAChestXray` when the input gate refuses the image."""
        outcome, features = self._run([image], operating_point, keep_features=True)[0]
        if isinstance(outcome, InputError):
            raise outcome
        return outcome, features

    # -- internals -------------------------------------------------------------------------

    def _run(self, images, operating_point, *, keep_features: bool) -> list[tuple]:
        point = self.decision.operating_point(operating_point)  # resolved once per pass
        if len(images) == 0:
            return []
        images = [i if isinstance(i, PreparedImage) else PreparedImage(i) for i in images]
        batch = np.stack([i.array for i in images]).astype(np.float32, copy=False)
        feature_map = None
        with self._slots:
            started = time.perf_counter()
            if self.gate is None and not keep_features:
                probs = self.forward(batch)
            else:
                probs, feature_map = self.forward_features(batch)
        verdicts = self.gate.assess(feature_map, images) if self.gate is not None else [None] * len(images)
        elapsed = (time.perf_counter() - started) * 1000 / len(images)
        return [(v.refusal() if v is not None and not v.is_chest_xray
                 else self._prediction(p, elapsed, v, point),
                 feature_map[k] if keep_features else None)
                for k, (p, v) in enumerate(zip(probs, verdicts))]

    def _prediction(self, probs: np.ndarray, inference_ms: float, verdict: Verdict | None,
                    point: OperatingPoint) -> Prediction:
        """The answer for one image's softmax: calibrated P(Covid), decided at the operating point."""
        p_covid = float(self.decision.calibration.apply(float(probs[0])))
        probabilities = {self.class_names[0]: p_covid, self.class_names[1]: 1.0 - p_covid}
        label = decide(probabilities, point.threshold, self.class_names)
        warnings = verdict.warnings() if verdict is not None else []
        return Prediction(label, probabilities, point.threshold, inference_ms, verdict, warnings,
                          operating_point=point.name, calibrated=self.decision.calibration.active)

    def warm_up(self) -> None:
        """One inference on a blank image, so the first user does not pay for tracing."""
        blank = np.zeros((1, self.input_size, self.input_size, 3), dtype=np.float32)
        self.forward(blank)
        self.forward_features(blank)


class _NoLimit:
    """Stands in for the semaphore when concurrent passes are not limited."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def read_head_weights(model_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    import h5py

    with h5py.File(model_path, "r") as f:
        group = f["model_weights"][HEAD_LAYER] if "model_weights" in f else f[HEAD_LAYER]
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs["weight_names"]]
        kernel = next(n for n in names if n.endswith("kernel"))
        bias = next(n for n in names if n.endswith("bias"))
        return np.asarray(group[kernel], dtype=np.float32), np.asarray(group[bias], dtype=np.float32)


def load_classifier(path: str | Path):
    """Load a saved Keras classifier for inference (no optimizer, no compile); imports Keras."""
    import keras

    return keras.models.load_model(path, compile=False)


class TensorFlowPredictor(Predictor):
    backend = "tensorflow"

    def __init__(self, model_path, metadata, sha256, threads=None):
        super().__init__(model_path, metadata, sha256, threads)
        import keras
        import tensorflow as tf

        try:  # only possible before TensorFlow's runtime starts (not in a process that trained)
            tf.config.threading.set_intra_op_parallelism_threads(self.threads.intra_op)
            tf.config.threading.set_inter_op_parallelism_threads(self.threads.inter_op)
        except RuntimeError:
            pass
        self.model = load_classifier(model_path)
        features_model = keras.Model(
            self.model.inputs, [self.model.output, self.model.get_layer(FEATURES_LAYER).output]
        )
        spec = tf.TensorSpec((None, self.input_size, self.input_size, 3), tf.float32)
        self._call = tf.function(lambda x: self.model(x, training=False), input_signature=[spec])
        self._call_features = tf.function(lambda x: features_model(x, training=False), input_signature=[spec])

    def forward(self, batch: np.ndarray) -> np.ndarray:
        return self._call(batch).numpy()

    def forward_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probs, features = self._call_features(batch)
        return probs.numpy(), features.numpy()


class OnnxPredictor(Predictor):
    """ONNX Runtime on the verified export (fp32) or its guarded int8 twin; imports nothing
    from TensorFlow. Grad-CAM and the input gate read the same forward pass as the label, so an
    explained answer always equals the plain one."""

    backend = "onnx"

    def __init__(self, model_path, metadata, sha256, threads=None, precision: str = "fp32"):
        super().__init__(model_path, metadata, sha256, threads)
        import onnxruntime as ort

        from .onnx_status import FEATURES_OUTPUT, INPUT_NAME, PROBS_OUTPUT, int8_path, onnx_path

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads.intra_op
        options.inter_op_num_threads = self.threads.inter_op
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.threads.spin else "0")
        options.log_severity_level = 3
        self.precision = precision
        self.onnx_path = int8_path(model_path) if precision == "int8" else onnx_path(model_path)
        self.session = ort.InferenceSession(str(self.onnx_path), options, providers=["CPUExecutionProvider"])
        self._input, self._probs, self._features = INPUT_NAME, PROBS_OUTPUT, FEATURES_OUTPUT

    def forward(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self._probs], {self._input: batch})[0]

    def forward_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probs, features = self.session.run([self._probs, self._features], {self._input: batch})
        return probs, features


def resolve_backend(model_path: str | Path, sha256: str, requested: str | None = "auto") -> tuple[str, str]:
    """Which backend serves ``model_path``: (backend, why). Raises for an unusable request."""
    from .onnx_status import export_status

    requested = (requested or "auto").strip().lower()
    if requested not in BACKENDS:
        raise ValueError(f"backend {requested!r}: choose one of {', '.join(BACKENDS)}")
    if requested == "tensorflow":
        _require_tensorflow("backend tensorflow requested")
        return "tensorflow", "backend tensorflow requested"
    valid, reason = export_status(model_path, sha256)
    if valid:
        return "onnx", f"valid ONNX export for sha256 {sha256[:12]}"
    if requested == "onnx":
        raise RuntimeError(f"backend onnx requested but {reason}")
    _require_tensorflow(f"no usable ONNX export ({reason})")
    return "tensorflow", reason


def _require_tensorflow(why: str) -> None:
    """The TensorFlow fallback needs TensorFlow; the serving environment has none, so say so
    plainly (the app reports it at /readyz and in its log) instead of an ImportError deep down."""
    if importlib.util.find_spec("tensorflow") is None:
        raise RuntimeError(f"{why}, and TensorFlow is not installed in this environment (the serving image "
                           "runs only the ONNX export): build it with `make export` or "
                           "`python -m model_training.export --model <model.h5>` before serving")


def resolve_precision(model_path: str | Path, sha256: str, backend: str, requested: str | None = "auto",
                      ) -> tuple[str, str]:
    """Which graph the chosen backend runs: (``int8`` or ``fp32``, why). ``auto`` takes the int8
    twin only when it is current and passed its accuracy guard; asking for ``int8`` without one
    is an error, so a misconfiguration never silently serves something else."""
    from .onnx_status import int8_status

    requested = (requested or "auto").strip().lower()
    if requested not in PRECISIONS:
        raise ValueError(f"precision {requested!r}: choose one of {', '.join(PRECISIONS)}")
    if requested == "fp32":
        return "fp32", "precision fp32 requested"
    if backend != "onnx":
        if requested == "int8":
            raise RuntimeError(f"precision int8 needs the onnx backend, not {backend}")
        return "fp32", f"the {backend} backend runs fp32"
    valid, reason = int8_status(model_path, sha256)
    if valid:
        return "int8", f"int8 twin passed its accuracy guard for sha256 {sha256[:12]}"
    if requested == "int8":
        raise RuntimeError(f"precision int8 requested but {reason}")
    return "fp32", reason


def load_predictor(model_path: str | Path, backend: str | None = "auto", gate: bool = True,
                   threads: ThreadSettings | None = None, precision: str | None = "auto") -> Predictor:
    """Load the model at ``model_path`` with its sidecar metadata and warm it up.

    ``backend`` is ``auto``, ``onnx`` or ``tensorflow``; the choice and its reason end up in
    ``predictor.backend`` and ``predictor.backend_reason``; likewise ``precision`` (``auto``,
    ``int8``, ``fp32``) in ``predictor.precision`` and ``predictor.precision_reason``. The input
    gate fitted for this exact model (``<model>.gate.npz``, :func:`cxr.gate.load_gate`) is loaded
    when there is one (``gate=False``: never, e.g. while fitting a new gate); ``predictor.gate_reason`` says why not.
    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"Model file {model_path} not found (set MODEL_PATH).")
    metadata = read_metadata(model_path)
    sha = sha256_file(model_path)
    chosen, reason = resolve_backend(model_path, sha, backend)
    bits, bits_reason = resolve_precision(model_path, sha, chosen, precision)
    if chosen == "onnx":
        predictor = OnnxPredictor(model_path, metadata, sha, threads, precision=bits)
    else:
        predictor = TensorFlowPredictor(model_path, metadata, sha, threads)
    predictor.backend_reason = reason
    predictor.precision_reason = bits_reason
    if gate:
        predictor.gate, predictor.gate_reason = load_gate(model_path, sha)
    else:
        predictor.gate_reason = "disabled"
    predictor.warm_up()
    return predictor
