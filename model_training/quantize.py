"""The int8 twin of the ONNX export: faster on CPU, kept only when it decides like fp32.

    python -m model_training.export --model models/covid_resnet50.h5   # makes it after the fp32 export

ONNX Runtime's static quantisation (QDQ, per-channel int8 weights, uint8 activations) is
calibrated on siim **training** images through the serving preprocessing, then judged on siim
**val** against the fp32 export it came from. The twin ``<model>.int8.onnx`` is written only if

* the within-source AUC drops by at most ``MAX_AUC_DROP`` (0.005), and
* the decision (Covid/Normal at the default operating point, on calibrated P(Covid)) changes
  on at most ``MAX_FLIP_SHARE`` (1%) of the images.

Naive int8 is not free (measured on an earlier model: 3.3% of decisions flipped), so recipes
are tried in order until one passes (``RECIPES``; what each one measured is in the README);
when none does, ``<model>.int8.onnx.json`` records why and no graph, and the app serves fp32
(``cxr.onnx_status.int8_status``). Both files are keyed to the ``.h5``'s sha256 like the
export and the gate, so a new model never meets a stale twin.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cxr.calibration import DecisionRule
from cxr.metadata import atomic_path, read_metadata, sha256_file, write_json_atomic
from cxr.onnx_status import (
    INPUT_NAME,
    INT8_FORMAT,
    PROBS_OUTPUT,
    export_status,
    int8_meta_path,
    int8_path,
    int8_status,
    onnx_path,
)

MAX_AUC_DROP = 0.005
MAX_FLIP_SHARE = 0.01
CALIBRATION_PER_CLASS = 100  # siim train images per class the activation ranges are read from
CALIBRATION_SEED = 0
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "siim"
CLASSES = (("covid", 1), ("normal", 0))


class QuantizeError(Exception):
    """The twin could not be made at all (no export, no data); the app then serves fp32."""


@dataclass(frozen=True)
class Recipe:
    """One way to quantise: calibration method and the nodes left in fp32 (name fragments)."""

    name: str
    method: str  # onnxruntime.quantization.CalibrationMethod member: MinMax, Percentile, Entropy
    keep_fp32: tuple[str, ...] = ()
    percentile: float | None = None


RECIPES = {
    # Measured on the shipped model (siim val, 608 images): 5 flips (0.8%), AUC +0.0001.
    "minmax": Recipe("minmax", "MinMax"),
    # The last residual stage and the head in fp32: fewer flips, less speed-up.
    "minmax-fp32-conv5": Recipe("minmax-fp32-conv5", "MinMax", keep_fp32=("conv5_", "avg_pool", "predictions")),
}
DEFAULT_RECIPES = ("minmax", "minmax-fp32-conv5")


@dataclass
class Guard:
    """The int8 candidate against the fp32 export on the same images."""

    split: str
    images: int
    auc_fp32: float
    auc_int8: float
    flips: int
    max_abs_diff: float  # largest |calibrated P(Covid) int8 - fp32|
    operating_point: str
    threshold: float
    max_auc_drop: float = MAX_AUC_DROP
    max_flip_share: float = MAX_FLIP_SHARE
    passed: bool = field(init=False)
    why: str = field(init=False)

    def __post_init__(self):
        drop, share = self.auc_fp32 - self.auc_int8, self.flips / self.images
        problems = []
        if drop > self.max_auc_drop:
            problems.append(f"AUC dropped {drop:.4f} > {self.max_auc_drop}")
        if share > self.max_flip_share:
            problems.append(f"{self.flips} of {self.images} decisions changed "
                            f"({share:.1%} > {self.max_flip_share:.0%})")
        self.passed = not problems
        self.why = "; ".join(problems) or (f"AUC {self.auc_int8:.4f} vs {self.auc_fp32:.4f} (fp32), "
                                           f"{self.flips} of {self.images} decisions changed ({share:.1%})")


def quantize_twin(model_path: str | Path, *, data_dir: str | Path | None = None,
                  recipes: tuple[str, ...] = DEFAULT_RECIPES, calibration_per_class: int = CALIBRATION_PER_CLASS,
                  guard_per_class: int | None = None, limits: tuple[float, float] = (MAX_AUC_DROP, MAX_FLIP_SHARE),
                  log=print) -> Path | None:
    """Make ``<model>.int8.onnx`` from the current fp32 export; None when no recipe passed the guard.

    ``guard_per_class`` (default: every val image) and ``limits`` (AUC drop, share of decisions
    changed) exist for tests; the export uses the defaults."""
    model_path = Path(model_path)
    source_sha = sha256_file(model_path)
    valid, reason = export_status(model_path, source_sha)
    if not valid:
        raise QuantizeError(f"no fp32 export to quantise: {reason}")
    data_dir = Path(data_dir) if data_dir else DEFAULT_DATA_DIR
    for split in ("train", "val"):
        if not all((data_dir / split / c).is_dir() for c, _ in CLASSES):
            raise QuantizeError(f"{data_dir} has no {split}/{{covid,normal}}/ (siim layout) to calibrate and "
                                "check an int8 twin on (--int8-data-dir)")
    metadata = read_metadata(model_path)
    size = int(metadata["input_size"])
    rule = DecisionRule.from_metadata(metadata)

    log(f"int8: reading {2 * calibration_per_class} siim train images (calibration) and siim val (guard) ...")
    calibration, _ = load_split(data_dir / "train", size, per_class=calibration_per_class)
    val_x, val_y = load_split(data_dir / "val", size, per_class=guard_per_class)
    fp32 = onnx_path(model_path)
    p_fp32 = run_graph(fp32, val_x)

    attempts = []
    with tempfile.TemporaryDirectory(prefix="int8-", dir=model_path.parent) as work:
        prepared = Path(work) / "prepared.onnx"
        _prepare(fp32, prepared)
        for name in recipes:
            recipe = RECIPES[name]
            candidate = Path(work) / f"{name}.onnx"
            excluded = _quantize(prepared, candidate, calibration, recipe)
            guard = check(val_y, p_fp32, run_graph(candidate, val_x), rule, limits=limits)
            attempts.append({"recipe": asdict(recipe), "fp32_nodes": excluded, "guard": asdict(guard)})
            log(f"int8 recipe {name}: {'passed' if guard.passed else 'rejected'}: {guard.why}")
            if guard.passed:
                with atomic_path(int8_path(model_path)) as tmp:
                    tmp.write_bytes(candidate.read_bytes())
                break
        else:
            int8_path(model_path).unlink(missing_ok=True)

    passed = attempts[-1]["guard"]["passed"]
    graph = int8_path(model_path)
    record = {
        "format": INT8_FORMAT,
        "source": model_path.name,
        "source_sha256": source_sha,
        "fp32_onnx_sha256": sha256_file(fp32),
        "onnx": graph.name if passed else None,
        "onnx_sha256": sha256_file(graph) if passed else None,
        "quantization": {"format": "QDQ", "weights": "int8, per channel", "activations": "uint8",
                         "calibration": f"{2 * calibration_per_class} siim train images (seed {CALIBRATION_SEED})",
                         "data_dir": str(data_dir)},
        "recipe": attempts[-1]["recipe"]["name"],
        "guard": attempts[-1]["guard"],
        "attempts": attempts,
        "versions": _versions(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    write_json_atomic(int8_meta_path(model_path), record)
    if passed:
        log(f"Wrote {graph} ({graph.stat().st_size / 1e6:.1f} MB) and {int8_meta_path(model_path)}")
        return graph
    log(f"int8 twin not kept (the app serves fp32): {record['guard']['why']}; see {int8_meta_path(model_path)}")
    return None


def twin_is_settled(model_path: str | Path) -> bool:
    """True when this exact model already has a twin record (kept or rejected): nothing to redo."""
    sha = sha256_file(model_path)  # once: the .h5 is about 95 MB
    if int8_status(model_path, sha)[0]:
        return True
    try:
        record = json.loads(int8_meta_path(model_path).read_text())
    except (OSError, ValueError):
        return False
    return record.get("source_sha256") == sha and not record["guard"]["passed"]


def check(y, p_fp32, p_int8, rule: DecisionRule, split: str = "siim val",
          limits: tuple[float, float] = (MAX_AUC_DROP, MAX_FLIP_SHARE)) -> Guard:
    """The guard's figures: AUC both ways and decisions changed at the default operating point."""
    from sklearn.metrics import roc_auc_score

    point = rule.operating_point()
    c32, c8 = rule.calibration.apply(p_fp32), rule.calibration.apply(p_int8)
    return Guard(split=split, images=len(y), auc_fp32=round(float(roc_auc_score(y, p_fp32)), 5),
                 auc_int8=round(float(roc_auc_score(y, p_int8)), 5),
                 flips=int(((c32 >= point.threshold) != (c8 >= point.threshold)).sum()),
                 max_abs_diff=round(float(np.abs(c8 - c32).max()), 5),
                 operating_point=point.name, threshold=point.threshold, max_auc_drop=limits[0],
                 max_flip_share=limits[1])


def run_graph(path: Path, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """Raw P(Covid) from an ONNX graph (export or twin) for preprocessed images."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run([PROBS_OUTPUT], {INPUT_NAME: images[i:i + batch]})[0][:, 0]
                           for i in range(0, len(images), batch)])


def load_split(folder: Path, size: int, per_class: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed images and labels (1 = Covid) of a siim-layout split; ``per_class``: a seeded sample."""
    from cxr.preprocessing import load_image_file

    images, labels = [], []
    rng = np.random.default_rng(CALIBRATION_SEED)
    for name, label in CLASSES:
        files = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if per_class is not None and len(files) > per_class:
            files = sorted(rng.choice(files, per_class, replace=False))
        images += [load_image_file(p, size) for p in files]
        labels += [label] * len(files)
    return np.stack(images), np.asarray(labels)


def _prepare(source: Path, out: Path) -> None:
    """ONNX Runtime's recommended pre-processing: shape inference and graph optimisation, which
    folds each batch-norm Mul/Add into its convolution, so the weights are quantised once."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(source), str(out), skip_symbolic_shape=True)


def _quantize(prepared: Path, out: Path, images: np.ndarray, recipe: Recipe) -> int:
    """Static QDQ quantisation of ``prepared`` per ``recipe``; returns how many nodes stay fp32."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Batches(CalibrationDataReader):
        def __init__(self, batch: int = 8):
            self._batches = iter([{INPUT_NAME: images[i:i + batch]} for i in range(0, len(images), batch)])

        def get_next(self):
            return next(self._batches, None)

    nodes = [n.name for n in onnx.load(str(prepared)).graph.node]
    keep = [n for n in nodes if any(fragment in n for fragment in recipe.keep_fp32)]
    extra = {"CalibPercentile": recipe.percentile} if recipe.percentile else {}
    quantize_static(str(prepared), str(out), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=getattr(CalibrationMethod, recipe.method), nodes_to_exclude=keep,
                    extra_options=extra)
    return len(keep)


def _versions() -> dict:
    import onnx
    import onnxruntime as ort

    return {"onnx": onnx.__version__, "onnxruntime": ort.__version__, "numpy": np.__version__}
