"""Score X-ray files and folders on this machine, without the server: one CSV row per file.

    python -m model_training.predict --model models/covid_resnet50.h5 --out results.csv scans/ one.dcm

The model runs exactly as the web app runs it: ``cxr.inference.load_predictor`` (ONNX Runtime
when a current export sits beside the ``.h5``, else TensorFlow; ``--backend`` overrides), the
one preprocessing, and the batched forward pass ``/predict/batch`` uses
(``Predictor.predict_uploads``), ``--batch-size`` files at a time.

Folders are searched recursively in sorted order (hidden files and folders are skipped); every
file is tried whatever its name, since the format comes from the bytes (PNG, JPEG, DICOM). A
file that is not an image, or cannot be read, gets a row whose ``error`` is ``code: message``
(the codes of the API) and the run goes on; so does an image the input gate (``cxr.gate``)
refuses as not a chest X-ray (``not_a_chest_xray: ...``). Columns: ``file,label,
probability_covid,probability_normal,threshold,operating_point,in_distribution,error``:
P(Covid) is calibrated when the model's sidecar holds a calibration, the label is decided at
``--operating-point`` (default: the model's default, e.g. ``balanced``); ``in_distribution``
is ``false`` when the gate finds the X-ray unlike the training data (less reliable), empty
for a model without a gate. Without ``--out`` the CSV goes to standard output.

Exit status: 0 when it ran (even with error rows), 2 for bad arguments (a path or model that
does not exist, a model that cannot be loaded). Research demo, not a diagnosis.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

from .cli import CliError, add_backend_argument, run_cli

COLUMNS = ("file", "label", "probability_covid", "probability_normal", "threshold", "operating_point",
           "in_distribution", "error")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m model_training.predict",
        description="Classify chest X-rays (PNG, JPEG or DICOM files, and folders searched recursively) "
                    "as Covid or Normal with the app's own predictor, and write one CSV row per file. "
                    "Research demo, not a diagnosis.",
        epilog="Exit status: 0 when it ran (files that could not be scored get an 'error' row), "
               "2 for bad arguments.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="FILE_OR_FOLDER", help="X-ray files and folders to score")
    p.add_argument("--model", required=True, help="trained .h5 model (its .json sidecar beside it)")
    p.add_argument("--out", default=None,
                   help="CSV file to write (default: standard output; the summary then goes to standard error)")
    p.add_argument("--batch-size", type=int, default=16, help="files per forward pass")
    p.add_argument("--operating-point", default=None, metavar="NAME",
                   help="the model's named threshold that decides the label (e.g. balanced, high_sensitivity; "
                   "default: the model's default)")
    add_backend_argument(p)
    p.add_argument("--progress", choices=("auto", "on", "off"), default="auto",
                   help="progress bar on standard error (auto: when it is a terminal and there is more "
                        "than one batch)")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        p.error("--batch-size must be at least 1")
    missing = [path for path in args.paths if not (Path(path).is_file() or Path(path).is_dir())]
    if missing:
        p.error("no such file or folder: " + ", ".join(missing))
    if not Path(args.model).is_file():
        p.error(f"--model {args.model}: no such file")
    return args


def collect_files(paths) -> list[Path]:
    """The files to score, in order: given files as they are, folders walked recursively
    (sorted, hidden entries skipped); each file once."""
    files, seen = [], set()

    def add(path: Path) -> None:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            files.append(path)

    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            add(path)
            continue
        for root, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                candidate = Path(root) / name
                if not name.startswith(".") and candidate.is_file():
                    add(candidate)
    return files


class Progress:
    """A one-line bar on standard error: redrawn in place on a terminal, else a line per update."""

    def __init__(self, total: int, enabled: bool, stream=None):
        self.total, self.enabled = total, enabled
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.perf_counter()
        self.last = 0.0

    def update(self, done: int, errors: int, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not final and not self.tty and now - self.last < 1.0:
            return
        self.last = now
        width = 30
        filled = int(width * done / self.total) if self.total else width
        rate = done / max(now - self.started, 1e-9)
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} files, "
                f"{rate:.1f} files/s, {errors} errors")
        self.stream.write(("\r" + line) if self.tty else (line + "\n"))
        if final and self.tty:
            self.stream.write("\n")
        self.stream.flush()


def outcome_row(outcome, class_names) -> dict:
    """One file's CSV fields (all but ``file``) from its ``Predictor.predict_uploads`` outcome:
    a :class:`cxr.inference.Prediction`, or the ``InputError`` as ``code: message``. Shared
    with the Beam pipeline (``model_training.beam_predict``), so both write the same rows."""
    from cxr.errors import InputError

    if isinstance(outcome, InputError):
        return {"error": f"{outcome.code}: {outcome}"}
    covid, normal = (outcome.probabilities[name] for name in class_names)
    return {"label": outcome.label, "probability_covid": f"{covid:.6f}",
            "probability_normal": f"{normal:.6f}", "threshold": f"{outcome.threshold:g}",
            "operating_point": outcome.operating_point,
            "in_distribution": "" if outcome.in_distribution is None else str(outcome.in_distribution).lower()}


def unreadable_row(exc: OSError) -> dict:
    """The row of a file that could not be read at all (permissions, vanished, I/O error)."""
    return {"error": f"unreadable_file: {exc.strerror or exc.__class__.__name__}"}


def score(predictor, files: list[Path], writer, batch_size: int, progress: Progress,
          operating_point: str | None = None) -> dict:
    """Write one row per file; return counts by outcome."""
    counts = {"files": len(files), "errors": 0, **{name: 0 for name in predictor.class_names}}
    for start in range(0, len(files), batch_size):
        chunk = files[start:start + batch_size]
        rows: list[dict | None] = []
        payloads = []
        for path in chunk:
            try:
                payloads.append(path.read_bytes())
                rows.append(None)
            except OSError as exc:
                rows.append(unreadable_row(exc))
        outcomes = iter(predictor.predict_uploads(payloads, operating_point))
        for path, row in zip(chunk, rows):
            if row is None:
                row = outcome_row(next(outcomes), predictor.class_names)
                if "label" in row:
                    counts[row["label"]] += 1
            if "error" in row:
                counts["errors"] += 1
            writer.writerow({"file": str(path), **row})
        progress.update(min(start + batch_size, len(files)), counts["errors"])
    progress.update(len(files), counts["errors"], final=True)
    return counts


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: score_paths(args))


def score_paths(args: argparse.Namespace) -> dict:
    """The CLI's work: load the predictor as the app does, score every file, write the CSV
    atomically (or to stdout), print a one-line summary; returns the counts."""
    files = collect_files(args.paths)
    from cxr.calibration import UnknownOperatingPoint
    from cxr.inference import load_predictor
    from cxr.metadata import atomic_path

    try:
        predictor = load_predictor(args.model, backend=args.backend)
    except (OSError, ValueError, RuntimeError) as exc:
        raise CliError(f"--model {args.model}: {exc}") from exc
    try:
        predictor.decision.operating_point(args.operating_point)
    except UnknownOperatingPoint as exc:
        raise CliError(f"--operating-point: {exc}") from exc
    enabled = args.progress == "on" or (args.progress == "auto" and sys.stderr.isatty()
                                        and len(files) > args.batch_size)
    progress = Progress(len(files), enabled)
    started = time.perf_counter()
    if args.out:
        with atomic_path(args.out) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, COLUMNS, restval="")
            writer.writeheader()
            counts = score(predictor, files, writer, args.batch_size, progress, args.operating_point)
    else:
        writer = csv.DictWriter(sys.stdout, COLUMNS, restval="")
        writer.writeheader()
        counts = score(predictor, files, writer, args.batch_size, progress, args.operating_point)
        sys.stdout.flush()
    seconds = time.perf_counter() - started
    scored = counts["files"] - counts["errors"]
    labels = ", ".join(f"{counts[name]} {name}" for name in predictor.class_names)
    summary = (f"{scored} of {counts['files']} files scored ({labels}), {counts['errors']} errors, "
               f"in {seconds:.1f} s ({scored / max(seconds, 1e-9):.1f} images/s, {predictor.backend})"
               + (f"; wrote {args.out}" if args.out else ""))
    print(summary, file=sys.stdout if args.out else sys.stderr)
    return counts


if __name__ == "__main__":
    sys.exit(main())
