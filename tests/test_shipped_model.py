"""The model `make run` serves: present, the file its metadata and report describe, and
still classifying real test X-rays exactly as its evaluation report recorded."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from cxr.metadata import CLASS_NAMES, read_metadata, sha256_file

from .conftest import ROOT

MODEL = ROOT / "models" / "covid_resnet50.h5"
REPORT = ROOT / "reports" / "covid_resnet50"


def test_shipped_model_matches_its_recorded_sha256():
    meta = read_metadata(MODEL)
    assert meta["sha256"] == sha256_file(MODEL)
    assert meta["class_names"] == list(CLASS_NAMES)
    assert MODEL.stat().st_size < 100 * 1024 * 1024
    metrics = json.loads((REPORT / "metrics.json").read_text())
    assert metrics["model"]["sha256"] == meta["sha256"]
    assert metrics["threshold"] == meta["threshold"]


def test_shipped_model_reproduces_its_report(shipped_predictor, data_dir):
    with open(REPORT / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    picked = [r for r in rows if r["true_label"] == "Covid"][:4] + [r for r in rows if r["true_label"] == "Normal"][:4]
    assert len(picked) == 8
    for row in picked:
        # predictions.csv names files relative to the data folders' parent (siim/test/..., cxr/test/...)
        prediction = shipped_predictor.predict_upload((data_dir.parent / row["file"]).read_bytes())
        assert prediction.probabilities["Covid"] == pytest.approx(float(row["p_covid"]), abs=1e-4), row["file"]
        assert prediction.label == row["predicted_label"], row["file"]


def test_shipped_report_is_complete_and_in_range():
    metrics = json.loads((REPORT / "metrics.json").read_text())
    for key in ("roc_auc", "accuracy", "sensitivity", "specificity"):
        assert 0.5 < metrics[key] <= 1.0, key
    assert np.array(metrics["confusion_matrix"]).sum() == sum(metrics["n_images"].values())
    for name in ("confusion_matrix.png", "roc_curve.png", "training_curves.png"):
        assert (REPORT / name).stat().st_size > 1000, name
