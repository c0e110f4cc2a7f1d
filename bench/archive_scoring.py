"""Archive scoring throughput (issue 25): the predict CLI beside the Beam pipeline on this machine.

    .venv/bin/python bench/archive_scoring.py [--files 300]

The same real X-rays (siim test, linked into a temporary folder) scored by
``python -m model_training.predict`` and by ``python -m model_training.beam_predict`` on the
DirectRunner, in-process and with 2 worker processes; wall time of each whole command (start-up
and model load included), as a user would time it. Writes bench/archive_results.json; the
README quotes it. Both write the same rows (tests/test_beam_predict.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "covid_resnet50.h5"
SIIM_TEST = ROOT.parent / "shared" / "data" / "siim" / "test"
BEAM_PYTHON = ROOT / ".venv-beam" / "bin" / "python"
RUNS = {
    "predict CLI (ONNX Runtime, 1 process)": None,
    "Beam DirectRunner, in-process": [],
    "Beam DirectRunner, 2 worker processes x 1 thread": [
        "--direct_num_workers", "2", "--direct_running_mode", "multi_processing", "--intra-op-threads", "1"],
    "Beam DirectRunner, 2 worker processes x all cores": [
        "--direct_num_workers", "2", "--direct_running_mode", "multi_processing"],
}


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True, timeout=1800)
    return time.perf_counter() - started


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=300)
    args = p.parse_args()
    files = sorted(SIIM_TEST.glob("*/*.jpg"))[: args.files]
    results = {"files": len(files), "machine_cores": len(os.sched_getaffinity(0)),
               "load_average_before": os.getloadavg(), "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "archive"
        folder.mkdir()
        for path in files:
            (folder / path.name).symlink_to(path.resolve())
        for name, beam_args in RUNS.items():
            if beam_args is None:
                command = [sys.executable, "-m", "model_training.predict", "--model", str(MODEL), "--progress", "off",
                           "--out", f"{tmp}/cli.csv", str(folder)]
            else:
                command = [str(BEAM_PYTHON), "-m", "model_training.beam_predict", "--input", str(folder),
                           "--output", f"{tmp}/beam", "--model", str(MODEL), *beam_args]
            seconds = timed(command)
            results["runs"][name] = {"seconds": round(seconds, 1), "images_per_second": round(len(files) / seconds, 1)}
            print(f"{name}: {seconds:.1f} s, {len(files) / seconds:.1f} images/s", flush=True)
    results["load_average_after"] = os.getloadavg()
    (ROOT / "bench" / "archive_results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
