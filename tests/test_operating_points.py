"""Calibrated P(Covid) and named operating points, end to end: fitted by the evaluation CLI on
real validation X-rays, stored in the sidecar, applied by the core for the API, the batch route,
the page and the predict CLI."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cxr.calibration import Calibration, DecisionRule, UnknownOperatingPoint, expected_calibration_error
from model_training import evaluate, predict

SIIM_OTHER = Path(__file__).resolve().parents[2] / "shared" / "data" / "siim_other"


@pytest.fixture(scope="module")
def calibrated(tiny_model, data_dir, tmp_path_factory):
    """A copy of the tiny model whose sidecar got calibration and operating points from
    ``evaluate --calibrate``, and the report that run wrote."""
    folder = tmp_path_factory.mktemp("calibrated")
    model = folder / "m.h5"
    shutil.copy(tiny_model, model)
    shutil.copy(tiny_model.with_suffix(".json"), model.with_suffix(".json"))
    args = ["--model", str(model), "--data-dir", str(data_dir), "--split", "test", "--limit", "40",
            "--out", str(folder / "report"), "--calibrate", "--bootstrap", "20", "--no-occlusion"]
    if SIIM_OTHER.is_dir():
        args += ["--other-dir", str(SIIM_OTHER)]
    assert evaluate.main(args) == 0
    return model, folder / "report"


@pytest.fixture(scope="module")
def calibrated_client(calibrated):
    from tests.web_support import cached_app

    return cached_app(str(calibrated[0])).test_client()


def sidecar(model: Path) -> dict:
    return json.loads(model.with_suffix(".json").read_text())


def test_calibration_is_monotonic_and_identity_without_a_fit():
    p = np.linspace(0.01, 0.99, 50)
    assert np.all(np.diff(Calibration("platt", 0.7, 0.4).apply(p)) > 0)
    assert Calibration().apply(0.3) == 0.3
    assert expected_calibration_error([1, 0, 1, 0], [1.0, 0.0, 1.0, 0.0]) == 0.0
    assert expected_calibration_error([1, 1, 0, 0], [0.55, 0.55, 0.55, 0.55]) == pytest.approx(0.05)


def test_a_sidecar_without_operating_points_has_one_default_point():
    rule = DecisionRule.from_metadata({"threshold": 0.42})
    assert rule.names == ["default"] and rule.operating_point().threshold == 0.42
    assert not rule.calibration.active
    with pytest.raises(UnknownOperatingPoint, match="default"):
        rule.operating_point("screening")


def test_evaluate_calibrate_stores_calibration_and_operating_points(calibrated):
    model, report = calibrated
    meta = sidecar(model)
    assert meta["calibration"]["method"] == "platt"
    points = meta["operating_points"]
    assert set(points) == {"balanced", "high_sensitivity"} and meta["default_operating_point"] == "balanced"
    assert points["high_sensitivity"]["val_sensitivity"] >= 0.92
    assert meta["threshold"] == points["balanced"]["threshold"]
    metrics = json.loads((report / "metrics.json").read_text())
    assert set(metrics["operating_points"]) == {"balanced", "high_sensitivity"}
    assert metrics["threshold"] == points["balanced"]["threshold"]
    cal = metrics["calibration"]
    assert cal["method"] == "platt" and 0 <= cal["calibrated"]["ece"] <= 1
    assert (report / "reliability.png").stat().st_size > 0
    if SIIM_OTHER.is_dir():
        findings = metrics["other_findings"]["per_label"]
        assert set(findings) == {"atypical", "indeterminate"}
        assert set(findings["atypical"]["called_covid"]) == {"balanced", "high_sensitivity"}


def test_predict_answers_with_the_calibrated_probability_and_the_point_used(calibrated, calibrated_client,
                                                                            sample_xrays):
    model, _ = calibrated
    meta = sidecar(model)
    image = sample_xrays["covid"][0].read_bytes()
    for name in ("balanced", "high_sensitivity"):
        response = calibrated_client.post(f"/predict?operating_point={name}", data=image,
                                          content_type="application/octet-stream")
        assert response.status_code == 200, response.get_json()
        answer = response.get_json()
        threshold = meta["operating_points"][name]["threshold"]
        assert answer["operating_point"] == name and answer["calibrated"] is True
        assert answer["threshold"] == pytest.approx(threshold)
        assert (answer["label"] == "Covid") == (answer["probabilities"]["Covid"] >= answer["threshold"])
    default = calibrated_client.post("/predict", data={"file": (io.BytesIO(image), "x.jpg")}).get_json()
    assert default["operating_point"] == "balanced"
    assert default["model"]["operating_points"].keys() == {"balanced", "high_sensitivity"}


def test_the_calibrated_probability_is_platt_of_the_network_score(calibrated, calibrated_client, sample_xrays):
    from cxr.inference import load_predictor

    model, _ = calibrated
    predictor = load_predictor(model, backend="tensorflow")
    image = sample_xrays["normal"][0].read_bytes()
    raw = float(predictor.forward(predictor.prepare(image).array[np.newaxis])[0, 0])
    raw = min(max(raw, 1e-7), 1 - 1e-7)  # the tiny model saturates; the core clips the logit there too
    cal = sidecar(model)["calibration"]
    expected = 1 / (1 + np.exp(-(cal["slope"] * np.log(raw / (1 - raw)) + cal["intercept"])))
    answer = calibrated_client.post("/predict", data=image, content_type="image/jpeg").get_json()
    assert answer["probabilities"]["Covid"] == pytest.approx(expected, abs=1e-4)
    assert answer["probabilities"]["Normal"] == pytest.approx(1 - expected, abs=1e-4)


def test_an_unknown_operating_point_is_a_400_listing_the_valid_ones(calibrated_client, sample_xrays):
    image = sample_xrays["covid"][0].read_bytes()
    for response in (
        calibrated_client.post("/predict?operating_point=screening", data=image, content_type="image/jpeg"),
        calibrated_client.post("/predict", data={"file": (io.BytesIO(image), "x.jpg"), "operating_point": "x"}),
        calibrated_client.post("/predict/batch?operating_point=screening",
                               data={"files": [(io.BytesIO(image), "a.jpg")]}),
    ):
        assert response.status_code == 400
        error = response.get_json()["error"]
        assert error["code"] == "unknown_operating_point"
        assert error["operating_points"] == ["balanced", "high_sensitivity"]
        assert "balanced" in error["message"]


def test_batch_and_form_take_the_operating_point(calibrated, calibrated_client, sample_xrays):
    threshold = sidecar(calibrated[0])["operating_points"]["high_sensitivity"]["threshold"]
    files = [(io.BytesIO(p.read_bytes()), p.name) for p in sample_xrays["covid"][:2]]
    batch = calibrated_client.post("/predict/batch", data={"files": files, "operating_point": "high_sensitivity"})
    assert batch.status_code == 200
    for item in batch.get_json()["results"]:
        assert item["operating_point"] == "high_sensitivity" and item["threshold"] == pytest.approx(threshold)
    page = calibrated_client.post("/", data={"file": (io.BytesIO(sample_xrays["covid"][0].read_bytes()), "x.jpg"),
                                             "operating_point": "high_sensitivity"})
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'data-testid="operating-point-used">high sensitivity<' in html
    assert "P(Covid) is a calibrated probability" in html
    assert 'name="operating_point"' in calibrated_client.get("/").get_data(as_text=True)


def test_predict_cli_takes_the_operating_point(calibrated, sample_xrays, capsys):
    model, _ = calibrated
    files = [str(p) for p in sample_xrays["normal"][:2]]
    assert predict.main([*files, "--model", str(model), "--operating-point", "high_sensitivity"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["operating_point"] for r in rows] == ["high_sensitivity"] * 2
    assert predict.main([*files, "--model", str(model), "--operating-point", "nope"]) == 2
    assert "balanced, high_sensitivity" in capsys.readouterr().err
