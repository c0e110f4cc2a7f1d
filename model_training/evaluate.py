"""Score a trained model on a split and write an honest report.

    python -m model_training.evaluate --model models/covid_resnet50.h5 --data-dir ../shared/data/siim \
        --data-dir ../shared/data/cxr --split test --out reports/

What the original article got wrong and this does right: ROC AUC comes from predicted
probabilities (from hard labels it is only balanced accuracy), the decision threshold is
chosen on the *validation* split (``--target-recall``) and only then applied to test, and
every figure carries a bootstrap 95% confidence interval.

What a source cannot fake: metrics per data folder and per source, the **within-source**
AUC of every source that has both classes, and an **occlusion audit** (AUC with the lungs
hidden, and with the borders hidden). Where each source holds one class, as in cxr, a
pooled AUC measures how well the model tells hospitals apart; it is reported, not trusted.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import classification_report, confusion_matrix, roc_auc_score

from cxr.calibration import DecisionRule, expected_calibration_error
from cxr.metadata import CLASS_NAMES, read_metadata, update_metadata, write_json_atomic
from cxr.preprocessing import CAFFE_MEAN_BGR

from .calibrate import fit_decision, recall_threshold, youden_threshold
from .cli import log, run_cli
from .data import DataError, disputed_files, eval_dataset, list_other, list_split

DEFAULT_DATA_DIRS = ("../shared/data/siim", "../shared/data/cxr")
# The occlusion audit (issue 11): what a model scores with part of every image blacked out.
# A model that reads the lungs drops towards AUC 0.5 with the lungs hidden; one that reads
# the hospital's borders, text and exposure keeps its AUC there.
OCCLUSIONS = {
    "lungs_hidden": "centre 60% (rows and columns 20-80%) black",
    "borders_hidden": "everything outside rows 15-85% / columns 12-88% black",
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m model_training.evaluate",
        description="Evaluate a trained model on a data split of one or several data folders and write "
        "metrics.json (per folder, per source, within-source AUC, occlusion audit), predictions.csv "
        "and the confusion-matrix, ROC and training-curve plots.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", default="models/covid_resnet50.h5", help="trained .h5 model (sidecar .json beside it)")
    p.add_argument("--data-dir", action="append", default=None,
                   help="folder with the split/{covid,normal}/ layout; repeat for several. The first one's "
                   f"metrics are the headline (default: {' and '.join(DEFAULT_DATA_DIRS)})")
    p.add_argument("--split", default="test", help="split folder to score (train, val, test, or another name)")
    p.add_argument("--out", default="reports", help="report folder")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--target-recall", type=float, default=None,
                   help="choose the threshold on the val split (sources with both classes) reaching this Covid "
                   "recall, store it in the model metadata")
    p.add_argument("--calibrate", action="store_true",
                   help="first fit Platt calibration and the operating points (balanced, high_sensitivity) on the "
                   "val split of the sources with both classes and store them in the model's sidecar")
    p.add_argument("--other-dir", metavar="DIR", default=None,
                   help="also score this split of a folder of films that are neither class (e.g. "
                   "../shared/data/siim_other: indeterminate/ and atypical/) and report how often each is called Covid")
    p.add_argument("--youden", action="store_true",
                   help="instead of --target-recall: choose the threshold on the same val images that maximises "
                   "sensitivity + specificity (Youden's J)")
    p.add_argument("--disputed", default="../shared/data/siim/cxr_overlap.csv", metavar="CSV",
                   help="SIIM's cxr_overlap.csv: cxr Covid images read 'Negative for Pneumonia' by SIIM are "
                   "reported both with and without them ('' to skip)")
    p.add_argument("--no-occlusion", dest="occlusion", action="store_false",
                   help="skip the occlusion audit (it scores every image twice more)")
    p.add_argument("--limit", type=int, default=None, help="stratified subset of N images per folder (quick checks)")
    p.add_argument("--bootstrap", type=int, default=1000,
                   help="bootstrap resamples for 95%% confidence intervals (0 = none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--explain-samples", type=int, default=0, metavar="N",
                   help="also save a grid of N images of the split with Grad-CAM overlays")
    args = p.parse_args(argv)
    args.data_dir = args.data_dir or list(DEFAULT_DATA_DIRS)
    return args


def occluder(mode: str):
    """A batch transform that blacks out part of every preprocessed image (black = 0 gray,
    which is minus the caffe mean after preprocessing)."""
    black = -CAFFE_MEAN_BGR

    def apply(images: np.ndarray) -> np.ndarray:
        images = images.copy()
        n = images.shape[1]
        if mode == "lungs_hidden":
            a, b = round(0.2 * n), round(0.8 * n)
            images[:, a:b, a:b, :] = black
        elif mode == "borders_hidden":
            r0, r1, c0, c1 = round(0.15 * n), round(0.85 * n), round(0.12 * n), round(0.88 * n)
            keep = images[:, r0:r1, c0:c1, :].copy()
            images[:] = black
            images[:, r0:r1, c0:c1, :] = keep
        else:
            raise ValueError(f"unknown occlusion {mode}")
        return images

    return apply


def predict_covid(model, files, image_size: int, batch_size: int, transform=None) -> np.ndarray:
    """Covid probability for every file of a split, in file order."""
    batches = eval_dataset(files, image_size, batch_size, transform=transform)
    probs = model.predict(batches, verbose=2 if not sys.stdout.isatty() else 1)
    return np.asarray(probs)[:, 0].astype(float)


def choose_threshold(y_covid: np.ndarray, p_covid: np.ndarray, target_recall: float) -> float:
    """The highest threshold whose Covid recall still reaches ``target_recall``."""
    return recall_threshold(y_covid, p_covid, target_recall)


def binary_metrics(y_covid: np.ndarray, p_covid: np.ndarray, threshold: float) -> dict:
    pred = (p_covid >= threshold).astype(int)
    tp = int(((pred == 1) & (y_covid == 1)).sum())
    tn = int(((pred == 0) & (y_covid == 0)).sum())
    pos, neg = int((y_covid == 1).sum()), int((y_covid == 0).sum())
    out = {
        "accuracy": (tp + tn) / len(y_covid),
        "sensitivity": tp / pos if pos else float("nan"),
        "specificity": tn / neg if neg else float("nan"),
        "roc_auc": float(roc_auc_score(y_covid, p_covid)) if pos and neg else float("nan"),
    }
    return out


def bootstrap_ci(y_covid, p_covid, threshold, n: int, seed: int) -> dict:
    """Percentile 95% intervals, resampling images with replacement."""
    if n <= 0:
        return {}
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {}
    for _ in range(n):
        idx = rng.integers(0, len(y_covid), len(y_covid))
        for key, value in binary_metrics(y_covid[idx], p_covid[idx], threshold).items():
            samples.setdefault(key, []).append(value)
    return {k: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))] for k, v in samples.items()}


def group_metrics(labels, p_covid, threshold, *, bootstrap: int, seed: int) -> dict:
    """Headline metrics, confusion matrix and CIs of one group of images."""
    y_covid = (labels == 0).astype(int)
    pred_idx = np.where(p_covid >= threshold, 0, 1)
    return {
        **binary_metrics(y_covid, p_covid, threshold),
        "n_images": {c: int((labels == i).sum()) for i, c in enumerate(CLASS_NAMES)},
        "confusion_matrix": confusion_matrix(labels, pred_idx, labels=[0, 1]).tolist(),
        "ci95": bootstrap_ci(y_covid, p_covid, threshold, bootstrap, seed),
    }


def evaluate(args: argparse.Namespace) -> dict:
    """Score the split with the sidecar's calibration and operating points; write the report."""
    from .model import load_classifier

    model_path, out = Path(args.model), Path(args.out)
    data_dirs = [Path(d) for d in args.data_dir]
    out.mkdir(parents=True, exist_ok=True)
    model = load_classifier(model_path)
    size = int(read_metadata(model_path)["input_size"])
    if args.calibrate:
        fit_calibration(model, model_path, data_dirs, size, args)
    elif args.target_recall is not None or args.youden:
        select_threshold(model, model_path, data_dirs, size, args)
    meta = read_metadata(model_path)
    rule = DecisionRule.from_metadata(meta)

    log(f"Scoring the {args.split} split of {', '.join(map(str, data_dirs))} ...")
    files = list_split(data_dirs, args.split, limit=args.limit, seed=args.seed, log=log)
    p_raw = predict_covid(model, files, size, args.batch_size)
    p_covid = rule.calibration.apply(p_raw)
    occluded = {}
    if args.occlusion:
        for mode in OCCLUSIONS:
            log(f"Occlusion audit: {mode} ({OCCLUSIONS[mode]}) ...")
            occluded[mode] = rule.calibration.apply(
                predict_covid(model, files, size, args.batch_size, transform=occluder(mode)))
    disputed = set()
    for d in data_dirs:
        disputed |= disputed_files(args.disputed, d) if args.disputed else set()
    is_disputed = np.array([p in disputed for p in files.paths], dtype=bool)

    threshold = rule.operating_point().threshold
    metrics = split_metrics(files, p_covid, threshold, occluded, is_disputed, data_dirs, args)
    metrics["model"] = {"path": str(model_path), "name": meta.get("name"), "sha256": meta.get("sha256"),
                        "input_size": size, "calibration": meta.get("calibration")}
    metrics["class_imbalance"] = meta.get("data", {}).get("balance")
    metrics["default_operating_point"] = rule.default
    metrics["operating_points"] = operating_point_tables(files, p_covid, rule, args)
    primary = np.asarray(files.folders) == data_dirs[0].name
    y_covid = (files.labels == 0).astype(int)
    metrics["calibration"] = calibration_table(y_covid[primary], p_raw[primary], p_covid[primary], rule)
    if args.other_dir:
        metrics["other_findings"] = other_findings(model, size, files, p_covid, rule, args)
    write_json_atomic(out / "metrics.json", metrics)
    pred_idx = np.where(p_covid >= threshold, 0, 1)
    _write_predictions(out / "predictions.csv", files, p_covid, pred_idx, occluded, is_disputed)
    write_figures(metrics, meta, files, y_covid, p_raw, p_covid, primary, model_path, out, args)
    _print_summary(metrics, out)
    return metrics


def split_metrics(files, p_covid, threshold, occluded, is_disputed, data_dirs, args) -> dict:
    """The headline (first data folder), per folder, per source, within-source and the occlusion audit."""
    y_covid = (files.labels == 0).astype(int)
    folders = np.asarray(files.folders)
    primary = folders == data_dirs[0].name
    pred_idx = np.where(p_covid >= threshold, 0, 1)
    kw = dict(bootstrap=args.bootstrap, seed=args.seed)
    metrics = {
        "data_dirs": [str(d) for d in data_dirs],
        "split": args.split,
        "threshold": threshold,
        "headline": f"{data_dirs[0].name} {args.split} split (the first --data-dir)",
        **group_metrics(files.labels[primary], p_covid[primary], threshold, **kw),
        "skipped_unreadable": [p for p, _ in files.skipped],
        "confusion_matrix_labels": {"rows": "true " + "/".join(CLASS_NAMES),
                                    "cols": "predicted " + "/".join(CLASS_NAMES)},
        "classification_report": classification_report(
            files.labels[primary], pred_idx[primary], labels=[0, 1], target_names=list(CLASS_NAMES),
            output_dict=True, zero_division=0),
        "ci_method": f"percentile bootstrap over images, {args.bootstrap} resamples",
        "per_folder": {},
        "per_source": per_source(files.sources, files.labels, y_covid, p_covid, pred_idx, threshold),
        "within_source": {},
        "occlusion_audit": {"definitions": OCCLUSIONS, "per_folder": {}, "within_source": {}} if occluded else None,
    }
    for d in data_dirs:
        mask = folders == d.name
        entry = group_metrics(files.labels[mask], p_covid[mask], threshold, **kw)
        if (mask & is_disputed).any():
            keep = mask & ~is_disputed
            entry["without_disputed"] = {
                "left_out": int((mask & is_disputed).sum()),
                "why": "cxr Covid images that SIIM's radiologists read as 'Negative for Pneumonia'",
                **group_metrics(files.labels[keep], p_covid[keep], threshold, **kw),
            }
        metrics["per_folder"][d.name] = entry
        if occluded:
            metrics["occlusion_audit"]["per_folder"][d.name] = {
                "roc_auc": binary_metrics(y_covid[mask], p_covid[mask], threshold)["roc_auc"],
                **{mode: binary_metrics(y_covid[mask], p[mask], threshold)["roc_auc"] for mode, p in occluded.items()},
            }
    sources = np.asarray(files.sources)
    for source in files.two_class_sources():
        mask = sources == source
        metrics["within_source"][source] = group_metrics(files.labels[mask], p_covid[mask], threshold, **kw)
        if occluded:
            metrics["occlusion_audit"]["within_source"][source] = {
                mode: {"roc_auc": binary_metrics(y_covid[mask], p[mask], threshold)["roc_auc"],
                       "ci95": bootstrap_ci(y_covid[mask], p[mask], threshold, args.bootstrap, args.seed)["roc_auc"]
                       if args.bootstrap else None}
                for mode, p in occluded.items()
            }
    return metrics


def operating_point_tables(files, p_covid, rule: DecisionRule, args) -> dict:
    """Sensitivity and specificity (with CIs) at every operating point, per data folder and per
    source that holds both classes."""
    y_covid = (files.labels == 0).astype(int)
    groups = {f"folder {name}": np.asarray(files.folders) == name for name in dict.fromkeys(files.folders)}
    groups |= {f"source {name}": np.asarray(files.sources) == name for name in files.two_class_sources()}
    tables = {}
    for name, point in rule.operating_points.items():
        rows = {}
        for group, mask in groups.items():
            if len(set(y_covid[mask])) < 2:
                continue
            at = binary_metrics(y_covid[mask], p_covid[mask], point.threshold)
            ci = bootstrap_ci(y_covid[mask], p_covid[mask], point.threshold, args.bootstrap, args.seed)
            rows[group] = {k: at[k] for k in ("sensitivity", "specificity", "accuracy")} | {
                "ci95": {k: ci[k] for k in ("sensitivity", "specificity") if k in ci}}
        tables[name] = {"threshold": point.threshold, "description": point.description, "groups": rows}
    return tables


def calibration_table(y_covid, p_raw, p_covid, rule: DecisionRule) -> dict:
    """How well P(Covid) means what it says on the headline folder: ECE and means, raw and calibrated."""
    return {
        "method": rule.calibration.method,
        "bins": 10,
        "share_covid": float(np.mean(y_covid)),
        "raw": {"ece": expected_calibration_error(y_covid, p_raw), "mean_p_covid": float(np.mean(p_raw))},
        "calibrated": {"ece": expected_calibration_error(y_covid, p_covid), "mean_p_covid": float(np.mean(p_covid))},
    }


def other_findings(model, size, files, p_covid, rule: DecisionRule, args) -> dict:
    """What the model says on films that are neither class: ``siim_other``'s indeterminate and
    atypical films (mostly other disease) of the same split. How often each is called Covid at
    every operating point, and how well P(Covid) tells typical Covid films (the headline folder's
    Covid films of sources with both classes) from them."""
    other = list_other(args.other_dir, args.split, limit=args.limit, seed=args.seed)
    log(f"Scoring {len(other.paths)} {args.split} films of {args.other_dir} (not Covid/Normal) ...")
    p_other = rule.calibration.apply(predict_covid(model, other, size, args.batch_size))
    sources = np.asarray(files.sources)
    typical = p_covid[(files.labels == 0) & np.isin(sources, files.two_class_sources())]
    normal = p_covid[(files.labels == 1) & np.isin(sources, files.two_class_sources())]
    result = {"folder": str(args.other_dir), "split": args.split, "per_label": {}}
    for name in sorted(set(other.names)):
        p = p_other[np.asarray(other.names) == name]
        result["per_label"][name] = {
            "n": int(len(p)), "mean_p_covid": float(p.mean()),
            "called_covid": {point.name: float((p >= point.threshold).mean())
                             for point in rule.operating_points.values()},
            "auc_typical_covid_vs_this": _auc(typical, p),
            "auc_this_vs_normal": _auc(p, normal),
        }
    return result


def _auc(positive: np.ndarray, negative: np.ndarray) -> float:
    if not len(positive) or not len(negative):
        return float("nan")
    y = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    return float(roc_auc_score(y, np.r_[positive, negative]))


def write_figures(metrics, meta, files, y_covid, p_raw, p_covid, primary, model_path, out, args) -> None:
    from . import plots

    threshold = metrics["threshold"]
    plots.confusion_matrix_png(np.array(metrics["confusion_matrix"]), CLASS_NAMES, out / "confusion_matrix.png")
    plots.roc_curve_png(y_covid[primary], p_covid[primary], metrics["roc_auc"], threshold, out / "roc_curve.png")
    curves = {"calibrated": p_covid[primary], "raw network score": p_raw[primary]}
    if metrics["calibration"]["method"] == "none":
        curves = {"raw network score": p_raw[primary]}
    plots.reliability_png(y_covid[primary], curves, out / "reliability.png")
    if meta.get("history"):
        history, boundaries = full_history(meta)
        plots.training_curves_png(history, out / "training_curves.png", stage_starts=boundaries)
    if args.explain_samples:
        from .explain import save_explain_grid

        shown = files.subset(primary)
        picks = _explain_picks(shown, args.explain_samples)
        save_explain_grid(model_path, [shown.paths[i] for i in picks], out / "explain_samples.png",
                          labels=[CLASS_NAMES[shown.labels[i]] for i in picks])


def fit_calibration(model, model_path: Path, data_dirs, size: int, args) -> None:
    """Platt calibration and the operating points, fitted on val (``model_training.calibrate``),
    stored in the sidecar."""
    val, used = _within_source_val(data_dirs, args)
    log(f"Fitting calibration and operating points on the val split of {used} ({len(val.paths)} films) ...")
    y_val = (val.labels == 0).astype(int)
    fitted = fit_decision(y_val, predict_covid(model, val, size, args.batch_size), val_sources=used)
    update_metadata(model_path, **fitted)
    for name, point in fitted["operating_points"].items():
        log(f"  {name}: threshold {point['threshold']:.4f} (val sensitivity {point['val_sensitivity']:.3f}, "
            f"specificity {point['val_specificity']:.3f})")
    cal = fitted["calibration"]
    log(f"  Platt slope {cal['slope']:.3f}, intercept {cal['intercept']:.3f}; val ECE "
        f"{cal['val_ece_10_bins']['raw']:.3f} -> {cal['val_ece_10_bins']['calibrated']:.3f}")


def _within_source_val(data_dirs, args):
    val = list_split(data_dirs, "val", limit=args.limit, seed=args.seed, log=log)
    used = val.two_class_sources() or sorted(set(val.sources))
    return val.subset(np.isin(val.sources, used)), used


def select_threshold(model, model_path: Path, data_dirs, size: int, args) -> float:
    """Choose the threshold on the val images of sources with both classes, store it in the sidecar."""
    rule = "Youden's J" if args.youden else f"Covid recall >= {args.target_recall}"
    log(f"Choosing the threshold on the val split for {rule} ...")
    val, used = _within_source_val(data_dirs, args)
    y_val = (val.labels == 0).astype(int)
    p_val = predict_covid(model, val, size, args.batch_size)
    if args.youden:
        threshold = youden_threshold(y_val, p_val)
    else:
        threshold = choose_threshold(y_val, p_val, args.target_recall)
    at_val = binary_metrics(y_val, p_val, threshold)
    update_metadata(model_path, threshold=threshold, threshold_selection={
        "method": ("maximum of sensitivity + specificity (Youden's J) on the val split" if args.youden
                   else "highest threshold reaching the target Covid recall on the val split"),
        "target_recall": None if args.youden else args.target_recall,
        "val_sources": used,
        "val_sensitivity": at_val["sensitivity"],
        "val_specificity": at_val["specificity"],
        "val_roc_auc": at_val["roc_auc"],
    })
    log(f"  threshold {threshold:.4f} on val of {used} (sensitivity {at_val['sensitivity']:.3f}, "
        f"specificity {at_val['specificity']:.3f}); stored in {model_path.with_suffix('.json')}")
    return threshold


def full_history(meta: dict) -> tuple[dict, list[int]]:
    """Histories of every training stage (``--init-from`` chains), oldest first, concatenated."""
    stages = []
    while meta:
        stages.append(meta.get("history") or {})
        meta = meta.get("init_from")
    stages.reverse()
    keys = set().union(*stages)
    history = {k: [v for stage in stages for v in stage.get(k, [float("nan")] * len(stage.get("loss", [])))]
               for k in keys}
    starts, total = [], 0
    for stage in stages[:-1]:
        total += len(stage.get("loss", []))
        starts.append(total)
    return history, starts


def per_source(sources, labels, y_covid, p_covid, pred_idx, threshold) -> dict:
    """Accuracy per data source: with one source per class, this shows shortcut learning."""
    result = {}
    sources = np.asarray(sources)
    for name in sorted(set(sources)):
        mask = sources == name
        entry = {
            "n": int(mask.sum()),
            "label": "/".join(sorted({CLASS_NAMES[i] for i in labels[mask]})),
            "accuracy": float((pred_idx[mask] == labels[mask]).mean()),
            "mean_p_covid": float(p_covid[mask].mean()),
        }
        if len(set(y_covid[mask])) == 2:
            entry.update(binary_metrics(y_covid[mask], p_covid[mask], threshold))
        result[name] = entry
    return result


def _explain_picks(files, n: int) -> list[int]:
    """Half Covid, half Normal, spread evenly through each class's files."""
    picks = []
    for i in range(len(CLASS_NAMES)):
        idx = np.flatnonzero(files.labels == i)
        k = n // 2 + (n % 2 if i == 0 else 0)
        picks.extend(idx[np.linspace(0, len(idx) - 1, k).astype(int)].tolist() if k else [])
    return picks


def _write_predictions(path: Path, files, p_covid, pred_idx, occluded, is_disputed) -> None:
    """One row per image; ``file`` is relative to the data folders' parent (``siim/test/...``)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "true_label", "p_covid", "predicted_label", "source", "disputed",
                         *[f"p_covid_{mode}" for mode in occluded]])
        for i, file in enumerate(files.paths):
            rel = Path(file).relative_to(Path(file).parents[3]).as_posix()
            writer.writerow([rel, CLASS_NAMES[files.labels[i]], f"{p_covid[i]:.6f}", CLASS_NAMES[pred_idx[i]],
                             files.sources[i], int(is_disputed[i]), *[f"{p[i]:.6f}" for p in occluded.values()]])


def _print_summary(m: dict, out: Path) -> None:
    ci = m.get("ci95", {})

    def fmt(key):
        value = f"{m[key]:.4f}"
        return value + (f"  [{ci[key][0]:.4f}, {ci[key][1]:.4f}]" if key in ci else "")

    log("\n".join([
        "",
        f"{m['split']} split: {m['n_images']} at threshold {m['threshold']:.4f}  (95% CI)",
        f"  ROC AUC      {fmt('roc_auc')}",
        f"  accuracy     {fmt('accuracy')}",
        f"  sensitivity  {fmt('sensitivity')}  (Covid recall)",
        f"  specificity  {fmt('specificity')}  (Normal recall)",
        f"  confusion    {m['confusion_matrix']}  (rows true Covid/Normal)",
        *[f"  within-source {k}: AUC {v['roc_auc']:.4f} [{v['ci95'].get('roc_auc', [float('nan')] * 2)[0]:.4f}, "
          f"{v['ci95'].get('roc_auc', [float('nan')] * 2)[1]:.4f}]" for k, v in m["within_source"].items()],
        *[f"  {folder}: AUC {v['roc_auc']:.4f}" + (
            f", lungs hidden {m['occlusion_audit']['per_folder'][folder]['lungs_hidden']:.4f}, borders hidden "
            f"{m['occlusion_audit']['per_folder'][folder]['borders_hidden']:.4f}" if m["occlusion_audit"] else "")
          for folder, v in m["per_folder"].items()],
        *_decision_lines(m),
        f"Report written to {out}/",
    ]))


def _decision_lines(m: dict) -> list[str]:
    """Summary lines for calibration, the operating points and the films of neither class."""
    cal = m["calibration"]
    lines = [f"  calibration ({cal['method']}): ECE {cal['raw']['ece']:.4f} raw -> {cal['calibrated']['ece']:.4f}; "
             f"mean P(Covid) {cal['calibrated']['mean_p_covid']:.3f} vs share of Covid {cal['share_covid']:.3f}"]
    for name, table in m["operating_points"].items():
        for group, row in table["groups"].items():
            lines.append(f"  {name} (>= {table['threshold']:.3f}) {group}: sensitivity {row['sensitivity']:.3f}, "
                         f"specificity {row['specificity']:.3f}")
    for label, row in (m.get("other_findings") or {}).get("per_label", {}).items():
        called = ", ".join(f"{k} {v:.0%}" for k, v in row["called_covid"].items())
        lines.append(f"  {label} films (n={row['n']}) called Covid: {called}; AUC typical Covid vs {label} "
                     f"{row['auc_typical_covid_vs_this']:.3f}")
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: evaluate(args), errors=(DataError, FileNotFoundError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
