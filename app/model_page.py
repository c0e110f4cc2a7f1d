"""``GET /model``: what the served model is and how far to trust it, for people who use the page.

The page is built at request time from the files that describe the served model: its sidecar
(``<model>.json``: name, sha256, input size, training data, operating points), its evaluation
report (``MODEL_REPORT_DIR/metrics.json`` and the figures beside it), the input gate's report
(``MODEL_REPORT_DIR/gate/gate_report.json``) and the "Cannot" paragraph of ``MODEL_CARD``,
so it cannot drift from the model. Each report is shown only when it names the served model's
sha256 (the model card: when it quotes its first 12 hex digits); a missing or foreign report
is said so on the page instead of figures from another model. The figures (ROC, reliability,
confusion matrix) are served as images from ``/model/figures/<name>``, by an allowlist.

No training code is imported: the report files are read as JSON (``app`` never imports
``model_training``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from flask import Blueprint, abort, current_app, render_template, send_file
from markupsafe import Markup, escape

from app.pages import DISCLAIMER, display_name, model_state
from cxr.metadata import read_metadata

bp = Blueprint("model_page", __name__)

# The report's plots the page shows: file name -> what the image shows (its alt text).
FIGURES = {
    "roc_curve.png": "ROC curve of the test split",
    "reliability.png": "Reliability diagram: calibrated P(Covid) against the observed share of Covid films",
    "confusion_matrix.png": "Confusion matrix at the default operating point",
}


def _read_json(path: Path) -> dict | None:
    """The JSON file's content, or None when it is missing or unreadable (the page says so)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _report(path: Path, sha256: str) -> tuple[dict | None, str | None]:
    """(report, None) when ``path`` holds a report of the model ``sha256``, else (None, why not)."""
    report = _read_json(path)
    if report is None:
        return None, f"{path} is not on this server, so its figures cannot be shown."
    made_for = (report.get("model") or {}).get("sha256")
    if made_for != sha256:
        return None, (f"{path} was made for another model (sha256 {str(made_for)[:12]}), not the one "
                      f"served here ({sha256[:12]}), so its figures are not shown.")
    return report, None


def _markdown_inline(text: str) -> Markup:
    """The few inline Markdown forms the model card uses (bold, code, links) as safe HTML.

    Links become plain text, except the card's ``#input-gate`` anchor, which this page has too.
    """
    html = str(escape(text))
    html = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html)
    html = re.sub(r"`(.+?)`", r"<code>\1</code>", html)
    html = re.sub(r"\[(.+?)\]\(#input-gate\)", r'<a href="#input-gate">\1</a>', html)
    html = re.sub(r"\[(.+?)\]\((.+?)\)", r"\1", html)
    return Markup(html)


def card_bullet(card_text: str, lead: str = "**Cannot:**") -> str | None:
    """The model card's bullet that starts with ``lead`` (its continuation lines joined), or None."""
    lines = card_text.splitlines()
    for start, line in enumerate(lines):
        if line.startswith(f"- {lead}"):
            bullet = [line[2:].strip()]
            for more in lines[start + 1:]:
                if not more.startswith("  ") or more.lstrip().startswith("- "):
                    break
                bullet.append(more.strip())
            return " ".join(bullet)
    return None


def _cannot(card_path: Path, sha256: str) -> tuple[Markup | None, str | None]:
    try:
        text = card_path.read_text()
    except OSError:
        return None, f"{card_path} is not on this server."
    if sha256[:12] not in text:
        return None, f"{card_path} describes another model than the one served here ({sha256[:12]})."
    bullet = card_bullet(text)
    if bullet is None:
        return None, f"{card_path} has no 'Cannot' paragraph."
    return _markdown_inline(bullet), None


def _counts(per_class: dict) -> str:
    return ", ".join(f"{per_class.get(name, 0):,} {name}" for name in ("Covid", "Normal"))


def training_paragraph(meta: dict) -> str:
    """The training data in one paragraph, from the sidecar (no stage names: those are history)."""
    data = meta.get("data") or {}
    training = meta.get("training") or {}
    train = data.get("train") or {}
    sources = data.get("train_per_source") or {}
    parts = [f"{name} ({_counts(counts)})" for name, counts in sources.items()]
    stages, parent = 1, meta.get("init_from")
    while isinstance(parent, dict):
        stages, parent = stages + 1, parent.get("init_from")
    text = (f"Trained on {sum(train.values()):,} chest X-rays ({_counts(train)})"
            + (f" from {', '.join(parts)}" if parts else "") + ". ")
    val = data.get("val") or {}
    if val:
        watched = ", ".join(training.get("monitored_sources") or []) or "the validation split"
        text += (f"Validation: {sum(val.values()):,} films ({_counts(val)}); early stopping watched the "
                 f"ROC AUC within {watched}. ")
    if training:
        text += (f"{training.get('image_size', meta.get('input_size'))} px input, "
                 f"{training.get('epochs_run', '?')} epochs (best: epoch {training.get('best_epoch', '?')})")
        text += f", the last of {stages} training stages, each starting from the one before. " if stages > 1 else ". "
    calibration = meta.get("calibration") or {}
    if calibration.get("fitted_on"):
        text += f"P(Covid) calibrated ({calibration.get('method', '')}) on {calibration['fitted_on']}."
    return text.strip()


def _headline(metrics: dict) -> dict:
    """The test figures of the headline folder and each source's within-source AUC, with CIs."""
    ci = metrics.get("ci95") or {}
    rows = [(key, label, metrics.get(key), ci.get(key)) for key, label in (
        ("roc_auc", "ROC AUC"), ("sensitivity", "Sensitivity at the default operating point"),
        ("specificity", "Specificity at the default operating point"), ("accuracy", "Accuracy"))]
    calibration = metrics.get("calibration") or {}
    title = re.sub(r"\s*\([^)]*--[^)]*\)", "", metrics.get("headline", "test split"))  # no CLI flags
    return {"title": title, "n": metrics.get("n_images") or {},
            "rows": [r for r in rows if r[2] is not None],
            "within_source": [(name, m.get("roc_auc"), (m.get("ci95") or {}).get("roc_auc"), m.get("n_images") or {})
                              for name, m in (metrics.get("within_source") or {}).items()],
            "ece": (calibration.get("calibrated") or {}).get("ece"),
            "ece_raw": (calibration.get("raw") or {}).get("ece")}


def _operating_points(metrics: dict, meta: dict) -> list[dict]:
    """Each operating point: threshold, rule, and test sensitivity/specificity (with CIs) per group."""
    points = []
    for name, point in (metrics.get("operating_points") or {}).items():
        val = ((meta.get("operating_points") or {}).get(name)) or {}
        groups = [{"group": group, **figures} for group, figures in (point.get("groups") or {}).items()]
        points.append({"name": name, "threshold": point.get("threshold"), "description": point.get("description", ""),
                       "default": name == metrics.get("default_operating_point"), "groups": groups,
                       "val_sensitivity": val.get("val_sensitivity"), "val_specificity": val.get("val_specificity")})
    return points


def _occlusion(metrics: dict) -> dict:
    audit = metrics.get("occlusion_audit") or {}
    return {"definitions": audit.get("definitions") or {},
            "within_source": [(source, hide, figures.get("roc_auc"), figures.get("ci95"))
                              for source, kinds in (audit.get("within_source") or {}).items()
                              for hide, figures in kinds.items()],
            "per_folder": list((audit.get("per_folder") or {}).items())}


def _gate(gate: dict) -> dict:
    """The gate's thresholds and its test and unseen-source rows (accepted chest X-rays, refused others)."""
    tables = gate.get("tables") or {}
    return {"method": gate.get("method"), "chest_threshold": gate.get("chest_threshold"),
            "shift_threshold": gate.get("shift_threshold"),
            "chest": [r for r in tables.get("chest") or [] if r.get("split") == "test"],
            # Held-out files of the categories it learned, and each source it never saw (the unseen
            # categories' totals repeat their sources).
            "other": [r for r in tables.get("other") or [] if r.get("split") == "test"
                      or (r.get("split") == "unseen" and "(" in str(r.get("name")))],
            "unseen_hospitals": gate.get("unseen_hospitals") or []}


def model_facts(config, predictor=None) -> dict:
    """Everything the page shows, read now from the sidecar and the reports of the served model."""
    model_path = Path(config["MODEL_PATH"])
    meta = predictor.metadata if predictor is not None else read_metadata(model_path)
    sha256 = predictor.sha256 if predictor is not None else meta.get("sha256", "")
    report_dir = Path(config["MODEL_REPORT_DIR"])
    metrics, metrics_note = _report(report_dir / "metrics.json", sha256)
    gate, gate_note = _report(report_dir / "gate" / "gate_report.json", sha256)
    cannot, cannot_note = _cannot(Path(config["MODEL_CARD"]), sha256)
    facts = {"name": display_name(meta), "sha256": sha256, "version": sha256[:12],
             "input_size": meta.get("input_size"), "classes": meta.get("class_names") or [],
             "training": training_paragraph(meta), "metrics_note": metrics_note, "gate_note": gate_note,
             "cannot": cannot, "cannot_note": cannot_note, "report_dir": str(report_dir), "figures": []}
    if metrics is not None:
        facts.update(headline=_headline(metrics), operating_points=_operating_points(metrics, meta),
                     occlusion=_occlusion(metrics), other=(metrics.get("other_findings") or {}).get("per_label") or {},
                     figures=[(name, alt) for name, alt in FIGURES.items() if (report_dir / name).is_file()])
    if gate is not None:
        facts["gate"] = _gate(gate)
    return facts


def _served_predictor():
    state = model_state()
    return state.predictor if state.ready else None


@bp.get("/model")
def model_page():
    """The model page (HTML), generated from the sidecar and the reports on each request."""
    facts = model_facts(current_app.config, _served_predictor())
    return render_template("model.html", facts=facts, disclaimer=DISCLAIMER)


@bp.get("/model/figures/<name>")
def model_figure(name: str):
    """One plot of the served model's report (allowlisted names only; 404 for a foreign report)."""
    if name not in FIGURES:
        abort(404)
    facts = model_facts(current_app.config, _served_predictor())
    if name not in dict(facts["figures"]):
        abort(404)
    return send_file(Path(facts["report_dir"], name).resolve(), mimetype="image/png", max_age=300)
