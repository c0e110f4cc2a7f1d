"""``GET /model`` (issue 24) without a browser: a model whose report is missing or was made for
another model gets a page that says so, never another model's figures; the plots are served by
allowlisted names only. ``expected_figures`` reads what the page must show from the report files
(tests/test_browser_model_page.py compares it with the page in Chromium).
"""

from __future__ import annotations

import json
import re

from tests.gate_inputs import MODEL
from tests.web_support import ROOT

REPORT = ROOT / "reports" / "covid_resnet50"


def _f(value) -> str:
    return f"{value:.3f}"


def _ci(pair) -> str:
    return f"{pair[0]:.3f}–{pair[1]:.3f}"


def expected_figures() -> dict[str, str]:
    """What the page must show for each ``data-metric``, read here from the report files."""
    metrics = json.loads((REPORT / "metrics.json").read_text())
    gate = json.loads((REPORT / "gate" / "gate_report.json").read_text())
    want = {}
    for key in ("roc_auc", "sensitivity", "specificity", "accuracy"):
        want[key], want[f"{key}.ci"] = _f(metrics[key]), _ci(metrics["ci95"][key])
    for source, m in metrics["within_source"].items():
        want[f"within.{source}"], want[f"within.{source}.ci"] = _f(m["roc_auc"]), _ci(m["ci95"]["roc_auc"])
    want["ece"] = _f(metrics["calibration"]["calibrated"]["ece"])
    want["ece_raw"] = _f(metrics["calibration"]["raw"]["ece"])
    for name, point in metrics["operating_points"].items():
        want[f"op.{name}.threshold"] = _f(point["threshold"])
        for group, g in point["groups"].items():
            for what in ("sensitivity", "specificity"):
                want[f"op.{name}.{group}.{what}"] = _f(g[what])
                want[f"op.{name}.{group}.{what}.ci"] = _ci(g["ci95"][what])
    audit = metrics["occlusion_audit"]
    for source, kinds in audit["within_source"].items():
        for hide, g in kinds.items():
            want[f"occlusion.{source}.{hide}"], want[f"occlusion.{source}.{hide}.ci"] = _f(g["roc_auc"]), _ci(g["ci95"])
    for folder, g in audit["per_folder"].items():
        for hide in ("lungs_hidden", "borders_hidden"):
            want[f"occlusion.folder.{folder}.{hide}"] = _f(g[hide])
    for label, g in metrics["other_findings"]["per_label"].items():
        for name, share in g["called_covid"].items():
            want[f"other.{label}.{name}"] = f"{share * 100:.0f}%"
    for key in ("chest_threshold", "shift_threshold"):
        want[f"gate.{key}"] = _f(gate[key])
    for row in gate["tables"]["other"]:
        if row["split"] == "test" or (row["split"] == "unseen" and "(" in row["name"]):
            want[f"gate.refused.{row['split']}.{row['name']}"] = f"{row['refusal'] * 100:.0f}%"
    for row in gate["tables"]["chest"]:
        if row["split"] == "test":
            want[f"gate.accepted.{row['name']}"] = f"{row['acceptance'] * 100:.2f}%"
    return want


def strip_markdown(text: str) -> str:
    text = re.sub(r"\[(.+?)\]\(.+?\)", r"\1", text)
    return re.sub(r"\s+", " ", text.replace("**", "").replace("`", "")).strip()


def test_model_page_for_a_model_without_its_report(client, tiny_model):
    """The tiny test model: the shipped report and card belong to another model, so no figures."""
    page = client.get("/model")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "was made for another model" in html and "data-metric" not in html
    assert "describes another model" in html
    assert json.loads(tiny_model.with_suffix(".json").read_text())["sha256"][:12] in html
    assert client.get("/model/figures/roc_curve.png").status_code == 404  # not the tiny model's plot


def test_model_page_when_the_report_is_missing(tmp_path):
    from app import create_app

    app = create_app({"MODEL_PATH": str(MODEL), "LOAD_MODEL_ASYNC": False,
                      "MODEL_REPORT_DIR": str(tmp_path / "nothing"), "MODEL_CARD": str(tmp_path / "no_card.md")})
    client = app.test_client()
    html = client.get("/model").get_data(as_text=True)
    assert html.count("is not on this server") == 3  # metrics.json, the gate report, the model card
    assert client.get("/model/figures/roc_curve.png").status_code == 404
    assert client.get("/model/figures/..%2Fmetrics.json").status_code == 404


def test_shipped_model_page_figures_served(tmp_path):
    """The shipped report's plots are served as PNG by their allowlisted names only."""
    from tests.web_support import cached_app

    client = cached_app(str(MODEL)).test_client()
    for name in ("roc_curve.png", "reliability.png", "confusion_matrix.png"):
        response = client.get(f"/model/figures/{name}")
        assert response.status_code == 200 and response.mimetype == "image/png"
        assert response.data == (REPORT / name).read_bytes()
    assert client.get("/model/figures/training_curves.png").status_code == 404
    assert client.get("/model/figures/metrics.json").status_code == 404
