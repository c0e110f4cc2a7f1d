"""The Beam archive pipeline (``model_training.beam_predict``) against the predict CLI, on the
shipped model and real X-rays plus bad files: same rows, same probabilities (1e-4), same errors.

Beam lives in its own virtualenv (``.venv-beam``, ``make beam-venv``; ``make test`` builds it
first), so these tests run it as a user does: a subprocess of that interpreter, DirectRunner.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.gate_inputs import sample_photos
from tests.xray_inputs import plain_png, text_named_png, truncated

ROOT = Path(__file__).resolve().parents[1]
BEAM_PYTHON = ROOT / ".venv-beam" / "bin" / "python"
SIIM_TEST = ROOT.parent / "shared" / "data" / "siim" / "test"
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def beam_python() -> Path:
    """The Beam virtualenv, built by the Makefile target when a clean clone lacks it (~2 min)."""
    if not (ROOT / ".venv-beam" / ".beam").exists():
        subprocess.run(["make", "beam-venv"], cwd=ROOT, check=True, timeout=1200)
    return BEAM_PYTHON


def beam(beam_python, *args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([str(beam_python), "-m", "model_training.beam_predict", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def predict_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "model_training.predict", "--progress", "off", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def rows_by_file(path: Path) -> dict[str, dict]:
    with path.open(newline="") as handle:
        return {os.path.realpath(row["file"]): row for row in csv.DictReader(handle)}


def archive(folder: Path, sample_xrays) -> Path:
    """Real X-rays (JPEG, PNG, DICOM, in a subfolder too) and the bad files an archive holds."""
    from tests.test_dicom import make_dicom

    (folder / "sub").mkdir(parents=True)
    for label in ("covid", "normal"):
        for path in sorted((SIIM_TEST / label).glob("*.jpg"))[:3]:
            shutil.copy(path, folder / path.name)
    xray = sample_xrays["normal"][0]
    (folder / "sub" / "as_png.png").write_bytes(plain_png(xray))
    gray = np.asarray(Image.open(xray).convert("L"))
    (folder / "sub" / "scan.dcm").write_bytes(make_dicom(gray))
    (folder / "truncated.jpg").write_bytes(truncated(xray.read_bytes(), 0.3))
    (folder / "notes.png").write_bytes(text_named_png())
    (folder / "photograph.jpg").write_bytes(sample_photos()["china.jpg"])
    (folder / "empty.dcm").write_bytes(b"")
    (folder / ".hidden.jpg").write_bytes(xray.read_bytes())  # skipped by both, as hidden
    return folder


def test_help_names_the_pipeline_options(beam_python):
    result = beam(beam_python, "--help", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--input" in result.stdout and "DataflowRunner" in result.stdout and "--direct_num_workers" in result.stdout


def test_bad_arguments_exit_2_before_any_pipeline(beam_python, tmp_path, shipped_runtime):
    missing = beam(beam_python, "--input", tmp_path / "nowhere", "--output", tmp_path / "o", "--model", shipped_runtime,
                   timeout=120)
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr
    model = tmp_path / "copy.h5"  # a model without its ONNX export
    shutil.copy(shipped_runtime, model)
    shutil.copy(shipped_runtime.with_suffix(".json"), model.with_suffix(".json"))
    no_export = beam(beam_python, "--input", tmp_path, "--output", tmp_path / "o", "--model", model, timeout=120)
    assert no_export.returncode == 2 and "make model-runtime" in no_export.stderr


def test_pipeline_equals_the_predict_cli_row_for_row(beam_python, shipped_runtime, tmp_path, sample_xrays):
    folder = archive(tmp_path / "archive", sample_xrays)
    cli = predict_cli("--model", shipped_runtime, "--out", tmp_path / "cli.csv", folder)
    assert cli.returncode == 0, cli.stderr[-3000:]
    result = beam(beam_python, "--input", folder, "--output", tmp_path / "beam.csv", "--model", shipped_runtime)
    assert result.returncode == 0, result.stderr[-3000:]
    expected, got = rows_by_file(tmp_path / "cli.csv"), rows_by_file(tmp_path / "beam.csv")
    assert set(got) == set(expected) and len(got) == 12 and not any(".hidden" in name for name in got)
    for name, row in expected.items():
        other = got[name]
        for column in ("label", "threshold", "operating_point", "in_distribution", "error"):
            assert other[column] == row[column], (name, column)
        for column in ("probability_covid", "probability_normal"):
            if row[column]:
                assert abs(float(other[column]) - float(row[column])) <= TOLERANCE, (name, column)
    errors = {Path(name).name: row["error"].split(":")[0] for name, row in got.items() if row["error"]}
    assert errors == {"truncated.jpg": "undecodable_image", "notes.png": "not_an_image",
                      "photograph.jpg": "not_a_chest_xray", "empty.dcm": "empty_input"}
    assert got[str(folder / "sub" / "scan.dcm")]["label"] in ("Covid", "Normal")
    summary = json.loads((tmp_path / "beam.summary.json").read_text())
    labels = {label: sum(r["label"] == label for r in expected.values()) for label in ("Covid", "Normal")}
    assert summary == {"files": 12, "scored": 8, "labels": labels, "refused": 1, "errors": 4,
                       "errors_by_code": {"undecodable_image": 1, "not_an_image": 1, "not_a_chest_xray": 1,
                                          "empty_input": 1}}
    rows = list(csv.DictReader((tmp_path / "beam.csv").open(newline="")))
    assert [r["file"] for r in rows] == sorted(r["file"] for r in rows)  # one file, sorted by file
    assert "8 of 12 files scored" in result.stdout and "1 refused, 4 errors" in result.stdout


@pytest.mark.slow
def test_a_few_hundred_files_on_two_worker_processes(beam_python, shipped_runtime, tmp_path):
    """``--direct_num_workers 2`` in multi_processing mode finishes with a row per file (the
    speed is measured by bench/archive_scoring.py, never asserted)."""
    folder = tmp_path / "many"
    folder.mkdir()
    files = sorted(SIIM_TEST.glob("*/*.jpg"))[:200]
    for path in files:
        (folder / path.name).symlink_to(path.resolve())
    result = beam(beam_python, "--input", folder, "--output", tmp_path / "many", "--model", shipped_runtime,
                  "--direct_num_workers", "2", "--direct_running_mode", "multi_processing",
                  "--intra-op-threads", "1", "--shards", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    shards = sorted(tmp_path.glob("many-*-of-00002.csv"))
    rows = [row for shard in shards for row in csv.DictReader(shard.open(newline=""))]
    assert len(shards) == 2 and len(rows) == len(files) == 200
    assert {Path(r["file"]).name for r in rows} == {p.name for p in files}
    assert all(r["error"] == "" and r["label"] in ("Covid", "Normal") for r in rows)
    summary = json.loads((tmp_path / "many.summary.json").read_text())
    assert summary["files"] == summary["scored"] == 200


def test_the_dataflow_worker_image_recipe_lints_clean():
    """Dockerfile.beam is not built here (no Docker daemon): hadolint checks the recipe."""
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), "Dockerfile.beam"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "apache/beam_python3.11_sdk:2.78.0" in (ROOT / "Dockerfile.beam").read_text()
    assert "apache-beam[gcp]==2.78.0" in (ROOT / "requirements-beam.txt").read_text()
