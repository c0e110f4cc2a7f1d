"""`bench/serving.py --quick` still runs end to end (figures are not asserted: bench/ holds targets)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_bench_quick_runs(tiny_onnx_model, tmp_path, data_dir):
    result = subprocess.run(
        [sys.executable, "bench/serving.py", "--quick", "--model", str(tiny_onnx_model), "--data-dir", str(data_dir),
         "--out-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())
    onnx = results["forward"]["onnx"]
    assert onnx["backend"] == "onnx" and not onnx["tensorflow_imported"]
    assert onnx["forward"]["median_ms"] > 0 and onnx["preprocess"]["median_ms"] > 0
    http = results["http"]["onnx"]
    assert http["backend"] == "onnx" and http["ready_s"] > 0 and http["worker_peak_rss_mb"] > 0
    for level in ("c1", "c4", "c16"):
        assert http[level]["requests"] > 0 and http[level]["errors"] == 0, http[level]
    for size in (1, 4, 8, 16):  # /predict/batch (issue 13)
        run = http["batch"][f"b{size}"]
        assert run["batch_size"] == size and run["requests"] > 0 and run["errors"] == 0, run
        assert run["images"] == run["requests"] * size and run["images_per_s"] > 0
        single = run["single"]  # single /predict calls in the interleaved windows
        assert single["requests"] > 0 and single["errors"] == 0 and run["over_single"] > 0, single
    assert results["baseline"]["per_image"]["median_ms"] > 0
    assert {"http_p50_over_forward", "baseline_over_ours", "forward_over_floor_onnx"} <= set(results["ratios"])
    report = (tmp_path / "RESULTS.md").read_text()
    assert "Load average" in report and results["machine"]["cpu"] in report
    assert "## Batch prediction (issue 13)" in report and "\n| 16 | " in report
    assert "batch_b16_over_single_c1" in results["ratios"]
    ops = results["ops"]  # metrics + JSON logs on against off (issue 23)
    assert ops["errors"] == 0 and ops["json_log_lines"] > 0 and ops["on"]["n"] == ops["off"]["n"] > 0, ops
    assert "## Metrics and JSON request logs (issue 23)" in report
