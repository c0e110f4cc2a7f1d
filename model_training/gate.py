"""Fit the input gate for a trained classifier, compare methods, write its artefacts and report.

    python -m model_training.gate --model models/covid_resnet50.h5 \
        --data-dir ../shared/data/cxr --data-dir ../shared/data/siim \
        --non-cxr ../shared/data/non_cxr --out reports/covid_resnet50/gate

The gate (``cxr.gate``) reads the classifier's own pooled features plus image statistics, so
it must be fitted again whenever the classifier changes (``make gate``, ~3 minutes on 2 cores):
its artefacts carry the ``.h5``'s sha256 and serving ignores a stale gate. Steps:

1. every image (chest X-rays of the data folders, real non-chest images, synthetic
   negatives; ``model_training.gate_data``) goes through the serving preprocessing and one
   forward pass; the pooled features and statistics are kept (``--cache`` keeps them on disk);
2. candidate methods are fitted on the train split (:data:`CANDIDATES`): a one-hidden-layer
   perceptron and a logistic regression on the features, the statistics or both, and the
   unsupervised Mahalanobis distance to the chest X-rays;
3. each candidate's threshold accepts ``--accept`` of the val chest X-rays; each perceptron is
   also refitted without each large chest X-ray source in turn, to see how it accepts a
   hospital it never saw; the best sum of val refusal and worst left-out acceptance wins (val
   only: the test split and the unseen sources are kept for the report);
4. the domain-shift threshold is the ``--shift-quantile`` of val chest X-ray distances;
5. ``<model>.gate.npz`` and ``<model>.gate.json`` are written (temp name, then rename), and the
   report (``gate_report.json`` + ``gate_report.md``): refusal per category and per held-out
   source, acceptance and shift warnings per chest X-ray source, with counts.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from cxr.errors import InputError
from cxr.gate import ARRAYS, GATE_FORMAT, STATS_DIM, STATS_VERSION, Gate, gate_paths, image_stats, pooled
from cxr.metadata import atomic_path, read_metadata, sha256_file, write_json_atomic
from cxr.preprocessing import prepare_image_bytes

from .cli import log, run_cli
from .gate_data import UNSEEN_SOURCES, Item, chest_items, non_cxr_items, synthetic_items

FEATURE_PCS = 64   # pooled features -> this many principal components for the regression
SHIFT_PCS = 32     # whitened components of the Mahalanobis (domain-shift) distance
# Candidates: a one-hidden-layer perceptron (shippable) and a logistic regression (compared) on
# the features, the statistics or both, and the unsupervised Mahalanobis distance.
CANDIDATES = ("mlp-combined", "mlp-stats", "mlp-features", "lr-combined", "lr-stats", "mahalanobis")
HIDDEN, MLP_ALPHA, LR_C = 64, 1e-2, 0.01


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m model_training.gate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--model", required=True, help="the classifier (.h5) to fit the gate for")
    p.add_argument("--data-dir", action="append", default=None,
                   help="chest X-ray data folder (repeat); default: ../shared/data/cxr and ../shared/data/siim")
    p.add_argument("--non-cxr", default="../shared/data/non_cxr", help="real non-chest images (default: %(default)s)")
    p.add_argument("--out", default=None, help="report folder (default: reports/<model name>/gate)")
    p.add_argument("--method", choices=("auto",) + tuple(c for c in CANDIDATES if c.startswith("mlp-")),
                   default="auto", help="auto (default): the perceptron with the best sum of val refusal of "
                                        "non-chest images and val acceptance of a left-out hospital")
    p.add_argument("--accept", type=float, default=0.999,
                   help="share of val chest X-rays the gate must accept (default: %(default)s)")
    p.add_argument("--shift-quantile", type=float, default=0.99,
                   help="val chest X-rays below the domain-shift threshold (default: %(default)s)")
    p.add_argument("--refuse-shift-margin", type=float, default=1.25,
                   help="also refuse images whose feature distance exceeds this many times the largest distance "
                        "of any train or val chest X-ray (0: no such refusal; default: %(default)s)")
    p.add_argument("--cache", default=None, help="npz file keeping the extracted features between runs")
    p.add_argument("--limit", type=int, default=None,
                   help="at most this many chest X-rays per split and data folder, and non-chest images "
                        "per category (quick runs and tests)")
    p.add_argument("--batch-size", type=int, default=64)
    return p.parse_args(argv)


# ---------------------------------------------------------------- features

def _prepare(item: Item, size: int):
    try:
        return prepare_image_bytes(item.read(), size)
    except InputError as exc:
        return exc


def extract(predictor, items: list[Item], batch_size: int) -> dict[str, np.ndarray]:
    """Pooled features and statistics of every item, exactly as serving computes them."""
    n = len(items)
    features = np.zeros((n, 2048), np.float32)
    stats, colour = np.zeros((n, STATS_DIM), np.float32), np.zeros(n, np.float32)
    ok, errors = np.zeros(n, bool), {}
    started, done = time.time(), 0
    with ThreadPoolExecutor(2) as pool:
        for start in range(0, n, batch_size):
            chunk = list(range(start, min(n, start + batch_size)))
            prepared = list(pool.map(lambda i: _prepare(items[i], predictor.input_size), chunk))
            good = [(i, p) for i, p in zip(chunk, prepared) if not isinstance(p, InputError)]
            for i, p in zip(chunk, prepared):
                if isinstance(p, InputError):
                    errors[i] = p.code
            if good:
                _, fmap = predictor.forward_features(np.stack([p.array for _, p in good]))
                rows = [i for i, _ in good]
                features[rows] = pooled(fmap)
                stats[rows] = np.stack([image_stats(p.gray, p.colourfulness, p.aspect) for _, p in good])
                colour[rows] = [p.colourfulness for _, p in good]
                ok[rows] = True
            done += len(chunk)
            if done % (batch_size * 20) == 0 or done == n:
                rate = done / max(time.time() - started, 1e-6)
                log(f"  features: {done}/{n} images ({rate:.0f}/s, ~{(n - done) / rate:.0f} s left)")
    return {"features": features, "stats": stats, "ok": ok, "colour": colour,
            "errors": np.array([errors.get(i, "") for i in range(n)])}


def item_keys(items: list[Item], model_sha: str) -> np.ndarray:
    return np.array([f"{model_sha[:16]}|s{STATS_VERSION}|{it.group}|{it.category}|{it.source}|{it.split}|{it.path}"
                     f"|{it.seed}|{it.augment}" for it in items])


FIELDS = ("features", "stats", "ok", "colour", "errors")


def cached_extract(predictor, items, args) -> dict[str, np.ndarray]:
    """:func:`extract`, reusing the rows ``--cache`` already holds for the same model and item."""
    keys = item_keys(items, predictor.sha256)
    old = {}
    if args.cache and Path(args.cache).is_file():
        with np.load(args.cache, allow_pickle=False) as z:
            old = {k: z[k] for k in ("keys", *FIELDS)}
    row_of = {k: i for i, k in enumerate(old.get("keys", []))}
    missing = [i for i, k in enumerate(keys) if k not in row_of]
    log(f"features: {len(items) - len(missing)} images from the cache, {len(missing)} through "
        f"{predictor.name} ({predictor.backend}) ...")
    new = extract(predictor, [items[i] for i in missing], args.batch_size) if missing else None
    data = {}
    for field in FIELDS:
        template = (new or old)[field]
        column = np.zeros((len(items),) + template.shape[1:], dtype=template.dtype if field != "errors" else "<U32")
        for i, k in enumerate(keys):
            if k in row_of:
                column[i] = old[field][row_of[k]]
        if new is not None:
            column[missing] = new[field]
        data[field] = column
    if args.cache and missing:
        with atomic_path(args.cache) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, keys=keys, **data)
    return data


# ---------------------------------------------------------------- fitting

def balanced_rows(rows: np.ndarray, y: np.ndarray, seed: int = 0) -> np.ndarray:
    """The train rows with the non-chest images drawn again until both classes are as many
    (chest X-rays outnumber them ~20 to 1; the perceptron has no class weights)."""
    pos, neg = rows[y[rows] == 1], rows[y[rows] == 0]
    return np.concatenate([pos, np.random.default_rng(seed).choice(neg, len(pos))])


def fit_scorer(kind: str, z: np.ndarray, y: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> dict:
    """One candidate's weights in the gate's form (hidden layer, output); a logistic
    regression is a perceptron whose hidden layer is the identity, reported for comparison."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    if kind == "mlp":
        picked = balanced_rows(rows, y)
        model = MLPClassifier((HIDDEN,), alpha=MLP_ALPHA, max_iter=500, random_state=0)
        model.fit(z[picked][:, cols], y[picked])
        w1 = np.zeros((z.shape[1], HIDDEN))
        w1[cols] = model.coefs_[0]
        return {"w1": w1, "b1": model.intercepts_[0], "w2": model.coefs_[1][:, 0],
                "b2": np.array(model.intercepts_[1][0])}
    model = LogisticRegression(C=LR_C, class_weight="balanced", max_iter=5000).fit(z[rows][:, cols], y[rows])
    return {"linear": True, "coef": _embed(model.coef_[0], cols), "intercept": float(model.intercept_[0])}


def _embed(values: np.ndarray, cols: np.ndarray) -> np.ndarray:
    full = np.zeros(len(cols))
    full[cols] = values
    return full


def scores_of(weights: dict, z: np.ndarray) -> np.ndarray:
    if weights.get("linear"):
        logits = z @ weights["coef"] + weights["intercept"]
    else:
        logits = np.maximum(z @ weights["w1"] + weights["b1"], 0) @ weights["w2"] + weights["b2"]
    return 1.0 / (1.0 + np.exp(-np.clip(logits, -40, 40)))


def fit(data, items: list[Item], args) -> dict:
    """Fit every candidate on train, pick thresholds on val; returns the arrays and choices."""
    from sklearn.decomposition import PCA

    split = np.array([it.split for it in items])
    y = np.array([it.label for it in items])
    source = np.array([f"{it.category}/{it.source}" if it.group == "chest" else "" for it in items])
    ok = data["ok"]
    train, val = (split == "train") & ok, (split == "val") & ok
    feats, stats = data["features"].astype(np.float64), data["stats"].astype(np.float64)

    pca = PCA(min(FEATURE_PCS, int(train.sum()) - 1), random_state=0).fit(feats[train])
    feat_mean, feat_proj = pca.mean_, pca.components_.T / np.sqrt(pca.explained_variance_)
    stats_mean, stats_scale = stats[train].mean(0), stats[train].std(0) + 1e-6
    chest_train = train & (y == 1)
    shift = PCA(min(SHIFT_PCS, int(chest_train.sum()) - 1), random_state=0).fit(feats[chest_train])
    shift_mean, shift_proj = shift.mean_, shift.components_.T / np.sqrt(shift.explained_variance_)
    arrays = {"stats_mean": stats_mean, "stats_scale": stats_scale, "feat_mean": feat_mean,
              "feat_proj": feat_proj, "shift_mean": shift_mean, "shift_proj": shift_proj}
    blank = Gate({**arrays, "w1": np.zeros((1, 1)), "b1": np.zeros(1), "w2": np.zeros(1), "b2": np.zeros(())},
                 {"chest_threshold": 0.5, "colour_limit": 1.0, "shift_threshold": 1.0})
    z = blank.inputs(feats, stats)
    width = z.shape[1]
    n_pcs = feat_proj.shape[1]
    columns = {"combined": np.ones(width, bool), "features": np.arange(width) < n_pcs,
               "stats": np.arange(width) >= n_pcs}

    def threshold_for(scores, keep=None):
        chest_val = val & (y == 1) & (True if keep is None else keep)
        return float(np.quantile(scores[chest_val], 1 - args.accept))

    candidates = {}
    for name in CANDIDATES:
        if name == "mahalanobis":
            continue
        kind, inputs = name.split("-", 1)
        weights = fit_scorer(kind, z, y, np.flatnonzero(train), columns[inputs])
        scores = scores_of(weights, z)
        threshold = threshold_for(scores)
        candidates[name] = {"weights": weights, "scores": scores, "threshold": threshold,
                            "val_refusal": float((scores[val & (y == 0)] < threshold).mean())}
        if kind == "mlp":  # how it accepts a hospital it never saw, on val (selection uses it)
            candidates[name]["unseen_hospital_val"] = min(
                (_held_out_acceptance(kind, z, y, columns[inputs], train, val & (source == held), source != held,
                                      threshold_for) for held in held_out_sources(source, val, y)), default=None)
    distance = blank.shift_scores(feats)
    maha = -distance  # higher = more like the training chest X-rays
    threshold = threshold_for(maha)
    candidates["mahalanobis"] = {"scores": maha, "threshold": threshold,
                                 "val_refusal": float((maha[val & (y == 0)] < threshold).mean())}
    shift_threshold = float(np.quantile(distance[val & (y == 1)], args.shift_quantile))
    seen_chest = (train | val) & (y == 1)
    refuse_shift = (float(args.refuse_shift_margin * distance[seen_chest].max())
                    if args.refuse_shift_margin > 0 else None)
    chest_colour = data["colour"][(y == 1) & ok & (split != "test")]
    colour_limit = float(max(0.05, 1.5 * chest_colour.max()))
    return {"arrays": arrays, "candidates": candidates, "distance": distance, "z": z, "columns": columns,
            "source": source,
            "shift_threshold": shift_threshold, "refuse_shift": refuse_shift, "colour_limit": colour_limit,
            "threshold_for": threshold_for}


def held_out_sources(source: np.ndarray, rows: np.ndarray, y: np.ndarray, min_images: int = 50) -> list[str]:
    """The chest X-ray sources with at least ``min_images`` among ``rows``."""
    names, counts = np.unique(source[rows & (y == 1)], return_counts=True)
    return [str(n) for n, c in zip(names, counts) if c >= min_images]


def _held_out_acceptance(kind, z, y, cols, train, scored, keep, threshold_for) -> float:
    """Refit without one source's chest X-rays (``keep`` false: train and val), then the share of
    ``scored`` (that source's images) the gate accepts."""
    weights = fit_scorer(kind, z, y, np.flatnonzero(train & keep), cols)
    scores = scores_of(weights, z)
    return float((scores[scored] >= threshold_for(scores, keep)).mean())


def choose(fitted: dict, method: str) -> str:
    """``auto``: the perceptron with the best sum of val refusal (non-chest images) and val
    acceptance of the worst hospital it was refitted without: both matter, neither is test data."""
    shippable = {k: v for k, v in fitted["candidates"].items() if k.startswith("mlp-")}
    if method != "auto":
        return method
    return max(shippable, key=lambda k: shippable[k]["val_refusal"] + (shippable[k]["unseen_hospital_val"] or 0.0))


def unseen_hospitals(items: list[Item], fitted: dict, chosen: str) -> list[dict]:
    """How the chosen method accepts chest X-rays from a hospital it never saw: for each chest
    source with at least 50 test images, refit without that source's images (train and val)
    and score its test images."""
    split = np.array([it.split for it in items])
    y = np.array([it.label for it in items])
    source, ok = fitted["source"], np.ones(len(items), bool)
    kind, inputs = chosen.split("-", 1)
    rows = []
    for held in held_out_sources(source, split == "test", y):
        test = (split == "test") & (source == held)
        rate = _held_out_acceptance(kind, fitted["z"], y, fitted["columns"][inputs], (split == "train") & ok,
                                    test, source != held, fitted["threshold_for"])
        rows.append({"source": held, "n": int(test.sum()), "accepted": int(round(rate * test.sum())),
                     "acceptance": round(rate, 4)})
        log(f"  unseen hospital {held}: {rows[-1]['accepted']}/{rows[-1]['n']} accepted")
    return rows


# ---------------------------------------------------------------- report

def refused_mask(data, scores, threshold, colour_limit) -> np.ndarray:
    """Refused by the chest score, the colour limit or the decoder (an upload that errors is
    refused too); the far-shift rule comes on top (:func:`far_mask`)."""
    return ~data["ok"] | (scores < threshold) | (data["colour"] > colour_limit)


def far_mask(data, fitted: dict) -> np.ndarray:
    """Decoded images beyond the far-shift refusal distance (none when the rule is off)."""
    if fitted["refuse_shift"] is None:
        return np.zeros(len(data["ok"]), bool)
    return data["ok"] & (fitted["distance"] > fitted["refuse_shift"])


def tables(items: list[Item], data, fitted: dict, chosen: str) -> dict:
    cand = fitted["candidates"][chosen]
    far = far_mask(data, fitted)
    without_far = refused_mask(data, cand["scores"], cand["threshold"], fitted["colour_limit"])
    refused = without_far | far
    shifted = data["ok"] & (fitted["distance"] > fitted["shift_threshold"])
    compare = {name: refused_mask(data, c["scores"], c["threshold"], fitted["colour_limit"])
               for name, c in fitted["candidates"].items()}
    rows = defaultdict(list)
    for i, it in enumerate(items):
        if it.group == "chest":
            rows[("chest", it.split, f"{it.category}/{it.source}")].append(i)
            rows[("chest", it.split, f"{it.category} (all)")].append(i)
        else:
            rows[("other", it.split, it.category)].append(i)
            if it.split == "unseen":
                rows[("other", "unseen", f"{it.category} ({it.source})")].append(i)
    out = {"chest": [], "other": []}
    for (group, split, name), idx in sorted(rows.items()):
        idx = np.array(idx)
        row = {"split": split, "name": name, "n": int(len(idx))}
        if group == "chest":
            row["accepted"] = int((~refused[idx]).sum())
            row["acceptance"] = round(float((~refused[idx]).mean()), 4)
            row["shift_warnings"] = int(shifted[idx].sum())
            row["shift_rate"] = round(float(shifted[idx].mean()), 4)
        else:
            row["refused"] = int(refused[idx].sum())
            row["refusal"] = round(float(refused[idx].mean()), 4)
            row["decoder_refused"] = int((~data["ok"][idx]).sum())
            row["refused_only_for_distance"] = int((refused[idx] & ~without_far[idx]).sum())
        row["by_method"] = {name: round(float((m[idx] if group == "other" else ~m[idx]).mean()), 4)
                            for name, m in compare.items()}
        out[group].append(row)
    return out


def _fmt(value) -> str:
    return "off" if value is None else f"{value:.3f}"


def write_markdown(path: Path, report: dict) -> None:
    lines = [f"# Input gate report: {report['model']['name']}", "",
             f"Model sha256 `{report['model']['sha256'][:12]}`, method **{report['method']}**, "
             f"chest threshold {report['chest_threshold']:.4f}, colour limit {report['colour_limit']:.3f}, "
             f"shift threshold {report['shift_threshold']:.3f}, far-shift refusal above "
             f"{_fmt(report.get('refuse_shift_threshold'))} (a margin over the largest distance of any train or "
             "val chest X-ray; `refused only for distance` counts the images this rule alone refused).", "",
             "Candidates, each with the threshold that accepts "
             f"{report['accept_target']:.1%} of the val chest X-rays (mlp: one hidden layer of {HIDDEN}; lr: logistic "
             "regression; combined = the classifier's pooled features + image statistics; mahalanobis: distance "
             "of the pooled features to the training chest X-rays, no negatives used):", "",
             "| method | val refusal of non-chest images | val acceptance, worst hospital left out of the fit |",
             "|---|---|---|"]
    for name, c in report["candidates"].items():
        worst = c.get("unseen_hospital_val")
        lines.append(f"| {name} | {c['val_refusal']:.3f} | {'' if worst is None else f'{worst:.3f}'} |")
    methods = list(report["candidates"])
    head = " | ".join(methods)
    lines += ["", "## Non-chest images: refusal rate (test = held-out files of seen sources; "
              "unseen = sources never trained on)", "",
              f"| split | category | n | refused | rate | refused only for distance | {head} |",
              "|---|---|---|---|---|---|" + "---|" * len(methods)]
    for r in report["tables"]["other"]:
        if r["split"] in ("test", "unseen"):
            by = " | ".join(f"{r['by_method'][m]:.3f}" for m in methods)
            lines.append(f"| {r['split']} | {r['name']} | {r['n']} | {r['refused']} | {r['refusal']:.3f} | "
                         f"{r.get('refused_only_for_distance', 0)} | {by} |")
    lines += ["", "## Chest X-rays: acceptance and domain-shift warnings per source (test split)", "",
              "| folder/source | n | accepted | rate | shift warnings | rate |", "|---|---|---|---|---|---|"]
    for r in report["tables"]["chest"]:
        if r["split"] == "test":
            lines.append(f"| {r['name']} | {r['n']} | {r['accepted']} | {r['acceptance']:.4f} | "
                         f"{r['shift_warnings']} | {r['shift_rate']:.3f} |")
    lines += ["", "## Chest X-rays from a hospital the gate never saw", "",
              "The chosen method refitted without one source's chest X-rays (train and val), then scored on that "
              "source's test images. (The classifier itself did see these sources.)", "",
              "| held-out source | n | accepted | rate |", "|---|---|---|---|"]
    for r in report["unseen_hospitals"]:
        lines.append(f"| {r['source']} | {r['n']} | {r['accepted']} | {r['acceptance']:.4f} |")
    lines += ["", f"Gate cost per image (statistics + scores, NumPy): {report['cost_ms_per_image']:.2f} ms.", ""]
    path.write_text("\n".join(lines))


def write_gate(model_path: Path, arrays: dict, record: dict) -> None:
    npz, record_path = gate_paths(model_path)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{k: np.asarray(arrays[k], np.float32) for k in ARRAYS})
    with atomic_path(npz) as tmp:
        Path(tmp).write_bytes(buffer.getvalue())
    record["gate_sha256"] = sha256_file(npz)
    write_json_atomic(record_path, record)


def run(args) -> dict:
    from cxr.inference import load_predictor

    model_path = Path(args.model)
    data_dirs = args.data_dir or ["../shared/data/cxr", "../shared/data/siim"]
    out = Path(args.out or Path("reports") / model_path.stem / "gate")
    predictor = load_predictor(model_path, gate=False)  # the features, not an old gate
    items = chest_items(data_dirs, args.limit) + non_cxr_items(args.non_cxr, args.limit) + synthetic_items()
    data = cached_extract(predictor, items, args)
    fitted = fit(data, items, args)
    chosen = choose(fitted, args.method)
    cand = fitted["candidates"][chosen]
    arrays = {**fitted["arrays"], **cand["weights"]}
    record = {
        "format": GATE_FORMAT, "source_sha256": predictor.sha256, "model": read_metadata(model_path).get("name"),
        "method": chosen, "hidden": HIDDEN, "alpha": MLP_ALPHA, "feature_pcs": FEATURE_PCS, "shift_pcs": SHIFT_PCS,
        "chest_threshold": cand["threshold"], "colour_limit": fitted["colour_limit"],
        "shift_threshold": fitted["shift_threshold"], "accept_target": args.accept,
        "shift_quantile": args.shift_quantile, "unseen_sources": UNSEEN_SOURCES,
        "refuse_shift_threshold": fitted["refuse_shift"], "refuse_shift_margin": args.refuse_shift_margin,
    }
    write_gate(model_path, arrays, record)
    gate = Gate(arrays, record)
    cost = gate_cost_ms(gate, predictor)
    report = {"model": predictor.model_info(), "method": chosen, "chest_threshold": cand["threshold"],
              "colour_limit": fitted["colour_limit"], "shift_threshold": fitted["shift_threshold"],
              "refuse_shift_threshold": fitted["refuse_shift"], "accept_target": args.accept,
              "candidates": {k: {key: v[key] for key in ("val_refusal", "unseen_hospital_val", "threshold") if key in v}
                             for k, v in fitted["candidates"].items()},
              "tables": tables(items, data, fitted, chosen), "cost_ms_per_image": cost,
              "unseen_hospitals": unseen_hospitals(items, fitted, chosen),
              "counts": {"items": len(items), "decoder_errors": int((~data["ok"]).sum())}}
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "gate_report.json", report)
    write_markdown(out / "gate_report.md", report)
    log(f"gate: method {chosen}, chest threshold {cand['threshold']:.4f}, shift threshold "
        f"{fitted['shift_threshold']:.3f}; wrote {gate_paths(model_path)[0]} and {out / 'gate_report.md'}")
    return report


def gate_cost_ms(gate: Gate, predictor) -> float:
    """NumPy time the gate adds to one request (the forward pass it reads is paid anyway)."""
    from cxr.preprocessing import PreparedImage

    rng = np.random.default_rng(0)
    image = PreparedImage(rng.normal(0, 50, (predictor.input_size,) * 2 + (3,)).astype(np.float32))
    side = max(1, predictor.input_size // 32)  # ResNet50's last feature map
    fmap = rng.random((1, side, side, 2048)).astype(np.float32)
    gate.assess(fmap, [image])
    started = time.perf_counter()
    for _ in range(50):
        gate.assess(fmap, [image])
    return (time.perf_counter() - started) * 1000 / 50


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: run(args), errors=(FileNotFoundError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
