"""Score an archive of X-rays on Apache Beam: the predict CLI's rows, on as many workers as the runner has.

    python -m model_training.beam_predict --input scans/ --output results --model models/covid_resnet50.h5
    python -m model_training.beam_predict --input 'gs://bucket/pacs/**' --output gs://bucket/out/results \\
        --model gs://bucket/models/covid_resnet50.h5 --runner DataflowRunner --project P --region R \\
        --temp_location gs://bucket/tmp --sdk_container_image REGION-docker.pkg.dev/P/cxr/beam-worker:TAG

``make archive-score IN=<folder> OUT=<csv>`` runs it in its own virtualenv (``.venv-beam``,
``requirements-beam.txt``): Beam's pinned dependencies stay out of the app's and training's.

The pipeline: match the files (a folder is searched recursively, hidden files and folders
skipped, as the predict CLI does; a glob or a ``gs://`` pattern is taken as it is), read each
file's bytes, then Beam's ``RunInference`` with :class:`CxrModelHandler`, an ONNX Runtime model
handler whose model is the core's own predictor (``cxr.inference.load_predictor(backend="onnx")``
on the verified export). Its batch goes through ``Predictor.predict_uploads``, exactly what the
predict CLI and the app's ``/predict/batch`` call: the same decoding (PNG, JPEG, DICOM), input
gate, calibration and operating point, so the rows are the CLI's (``predict.outcome_row``).
Beam's stock ``OnnxModelHandlerNumpy`` is not used: it returns the raw graph outputs, and the
gate, Platt calibration and decision rule would then be written a second time.

Outputs: ``<prefix>.csv`` (the predict CLI's columns; one row per file, sorted by file; file
names are the matched paths, absolute or ``gs://``), or with ``--shards N`` (or 0: the runner
decides) ``<prefix>-SSSSS-of-NNNNN.csv`` in no particular order (for archives too large for one
writer); and ``<prefix>.summary.json``: files, scored, counts per label, refusals (the input
gate's ``not_a_chest_xray`` and ``lateral_view``), errors (refusals included, as the CLI counts
them) and errors by code. A bad file is a row with its error, never a failed pipeline.

Every argument this parser does not know is a Beam pipeline option (``--runner``,
``--direct_num_workers``, ``--direct_running_mode``, ``--project``, ...); DirectRunner by default.
Exit status: 0 when the pipeline ran (even with error rows), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from .cli import CliError, run_cli
from .predict import COLUMNS, outcome_row, unreadable_row

REFUSAL_CODES = ("not_a_chest_xray", "lateral_view")  # the model declines to read these
GLOB_CHARS = set("*?[")


def parse_args(argv=None) -> tuple[argparse.Namespace, list[str]]:
    """Our arguments, and the rest: Beam's pipeline options."""
    p = argparse.ArgumentParser(
        prog="python -m model_training.beam_predict",
        description="Classify an archive of chest X-rays (PNG, JPEG or DICOM) as Covid or Normal on "
                    "Apache Beam, with the predict CLI's model, rows and columns. Research demo, not a diagnosis.",
        epilog="Any other --option is a Beam pipeline option, e.g. --runner DataflowRunner --project P "
               "--region R --temp_location gs://B/tmp --sdk_container_image IMAGE, or on this machine "
               "--direct_num_workers 2 --direct_running_mode multi_processing (default runner: DirectRunner). "
               "Exit status: 0 when the pipeline ran (unscorable files get an 'error' row), 2 for bad arguments.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--input", required=True, metavar="FOLDER_OR_PATTERN",
                   help="a folder (searched recursively), a file, or a glob / gs:// pattern (quote it)")
    p.add_argument("--output", required=True, metavar="PREFIX",
                   help="writes PREFIX.csv and PREFIX.summary.json (a trailing .csv is dropped); may be gs://")
    p.add_argument("--model", required=True,
                   help="trained .h5 with its .json sidecar and a current ONNX export beside it "
                        "(make model-runtime); may be gs:// (the gate and export are copied with it)")
    p.add_argument("--batch-size", type=int, default=16, help="most files per forward pass")
    p.add_argument("--operating-point", default=None, metavar="NAME",
                   help="the model's named threshold that decides the label (default: the model's default)")
    p.add_argument("--shards", type=int, default=1,
                   help="CSV files to write: 1 = PREFIX.csv sorted by file; N > 1 or 0 (runner decides) = "
                        "unsorted shards PREFIX-SSSSS-of-NNNNN.csv")
    p.add_argument("--precision", choices=("auto", "int8", "fp32"), default="auto",
                   help="auto: the int8 twin when it passed its accuracy guard (as the predict CLI and the app "
                        "decide), else fp32")
    p.add_argument("--intra-op-threads", type=int, default=0,
                   help="ONNX Runtime threads per worker process (0 = all usable cores; with several "
                        "worker processes on one machine, cores / workers)")
    args, beam_args = p.parse_known_args(argv)
    if args.batch_size < 1:
        p.error("--batch-size must be at least 1")
    if args.shards < 0:
        p.error("--shards must be 0 or more")
    if args.output.endswith(".csv"):
        args.output = args.output[:-4]
    if not is_remote(args.input) and not GLOB_CHARS & set(args.input) and not os.path.exists(args.input):
        p.error(f"--input {args.input}: no such file or folder")
    if not is_remote(args.model) and not Path(args.model).is_file():
        p.error(f"--model {args.model}: no such file")
    return args, beam_args


def is_remote(path: str) -> bool:
    return "://" in path


def input_pattern(raw: str) -> tuple[str, str | None]:
    """(pattern to match, folder root or None): a local folder becomes ``<abs>/**``."""
    if not is_remote(raw) and os.path.isdir(raw):
        root = os.path.abspath(raw)
        return os.path.join(root, "**"), root
    return (raw if is_remote(raw) or GLOB_CHARS & set(raw) else os.path.abspath(raw)), None


def visible(path: str, root: str | None) -> bool:
    """The predict CLI skips hidden files, and inside a folder hidden folders too."""
    parts = (os.path.relpath(path, root).split(os.sep) if root else [path.rsplit("/", 1)[-1]])
    return not any(part.startswith(".") for part in parts)


# -- the model: the core's ONNX Runtime predictor inside Beam's RunInference -------------------

MODEL_SUFFIXES = (".h5", ".json", ".onnx", ".onnx.json", ".int8.onnx", ".int8.onnx.json", ".gate.npz", ".gate.json")
OPTIONAL_SUFFIXES = (".int8.onnx", ".int8.onnx.json", ".gate.npz", ".gate.json")


def localize_model(model: str, folder: str) -> str:
    """A gs:// (or any Beam filesystem) model: copy it and its sidecar, export and gate into
    ``folder``; ``load_predictor`` reads local files. A local path is used where it is."""
    if not is_remote(model):
        return model
    stem = model[:-3] if model.endswith(".h5") else model
    for suffix in MODEL_SUFFIXES:
        source = stem + suffix
        if suffix in OPTIONAL_SUFFIXES and not FileSystems.exists(source):
            continue  # no gate or int8 twin: served without them, as the app does
        with FileSystems.open(source) as src, open(os.path.join(folder, "model" + suffix), "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
    return os.path.join(folder, "model.h5")


class CxrModelHandler(ModelHandler):
    """Beam ``ModelHandler`` over ``cxr.inference``: ONNX Runtime on the verified export.

    Examples are a file's bytes; a batch goes through ``Predictor.predict_uploads`` (decode,
    gate, one forward pass, calibration, operating point) and each result is that file's CSV
    fields (``predict.outcome_row``), a decoding error or refusal included.
    """

    def __init__(self, model: str, batch_size: int, operating_point: str | None, intra_op_threads: int = 0,
                 precision: str = "auto"):
        # Full batches like the CLI's (Beam's adaptive default starts at 1); a bundle's last is smaller.
        super().__init__(min_batch_size=batch_size, max_batch_size=batch_size)
        self.model, self.operating_point, self.intra_op_threads = model, operating_point, intra_op_threads
        self.precision = precision

    def load_model(self):
        from cxr.inference import ThreadSettings, load_predictor

        path = localize_model(self.model, tempfile.mkdtemp(prefix="cxr-model-"))
        return load_predictor(path, backend="onnx", threads=ThreadSettings.resolve(intra_op=self.intra_op_threads),
                              precision=self.precision)

    def run_inference(self, batch, model, inference_args=None):
        outcomes = model.predict_uploads(batch, self.operating_point)
        return [PredictionResult(None, outcome_row(outcome, model.class_names), model.sha256[:12])
                for outcome in outcomes]

    def get_num_bytes(self, batch) -> int:
        return sum(len(item) for item in batch)

    def get_metrics_namespace(self) -> str:
        return "cxr_beam_predict"


# -- the pipeline's steps ---------------------------------------------------------------------


class ReadBytes(beam.DoFn):
    """(path, bytes) for each matched file; a file that cannot be read is its error row."""

    UNREADABLE = "unreadable"

    def process(self, readable):
        path = readable.metadata.path
        try:
            yield path, readable.read()
        except OSError as exc:
            yield beam.pvalue.TaggedOutput(self.UNREADABLE, {"file": path, **unreadable_row(exc)})


class Summarize(beam.CombineFn):
    """Counts per label, refusals and errors (by code) over all rows."""

    def create_accumulator(self):
        return {"files": 0, "scored": 0, "labels": {}, "refused": 0, "errors": 0, "errors_by_code": {}}

    def add_input(self, acc, row):
        acc["files"] += 1
        if row.get("error"):
            code = row["error"].split(":", 1)[0]
            acc["errors"] += 1
            acc["refused"] += code in REFUSAL_CODES
            acc["errors_by_code"][code] = acc["errors_by_code"].get(code, 0) + 1
        else:
            acc["scored"] += 1
            acc["labels"][row["label"]] = acc["labels"].get(row["label"], 0) + 1
        return acc

    def merge_accumulators(self, accumulators):
        total = self.create_accumulator()
        for acc in accumulators:
            for key in ("files", "scored", "refused", "errors"):
                total[key] += acc[key]
            for key in ("labels", "errors_by_code"):
                for name, n in acc[key].items():
                    total[key][name] = total[key].get(name, 0) + n
        return total

    def extract_output(self, acc):
        return acc


def csv_line(row: dict) -> str:
    buffer = io.StringIO()
    csv.DictWriter(buffer, COLUMNS, restval="", lineterminator="").writerow(row)
    return buffer.getvalue()


def write_atomically(path: str, text: str) -> None:
    """Write ``text`` to ``path`` (local or gs://) under a temporary name, then rename it."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with FileSystems.create(tmp) as handle:
        handle.write(text.encode())
    FileSystems.rename([tmp], [path])


def write_sorted_csv(rows: list[dict], path: str) -> None:
    """The predict CLI's file: its csv writer (so its line endings), rows sorted by file."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, COLUMNS, restval="")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: r["file"]))
    write_atomically(path, buffer.getvalue())


def build(pipeline: beam.Pipeline, args: argparse.Namespace) -> None:
    """match -> read -> RunInference (decode, gate, forward, calibrate) -> CSV rows + summary."""
    pattern, root = input_pattern(args.input)
    handler = KeyedModelHandler(CxrModelHandler(args.model, args.batch_size, args.operating_point,
                                                args.intra_op_threads, args.precision))
    read = (pipeline
            | "Match" >> fileio.MatchFiles(pattern)
            | "Skip hidden" >> beam.Filter(lambda m: visible(m.path, root))
            # Without it, reading and scoring fuse with the one-element match and run on one
            # worker (measured: --direct_num_workers 2 used one process; Dataflow would too).
            | "Spread" >> beam.Reshuffle()
            | "Open" >> fileio.ReadMatches(skip_directories=True)
            | "Read" >> beam.ParDo(ReadBytes()).with_outputs(ReadBytes.UNREADABLE, main="ok"))
    scored = (read.ok
              | "Score" >> RunInference(handler)
              | "Row" >> beam.MapTuple(lambda path, result: {"file": path, **result.inference}))
    rows = (scored, read[ReadBytes.UNREADABLE]) | "All rows" >> beam.Flatten()
    if args.shards == 1:
        _ = (rows | "Gather" >> beam.combiners.ToList()
             | "Write CSV" >> beam.Map(write_sorted_csv, args.output + ".csv"))
    else:
        _ = (rows | "Format" >> beam.Map(csv_line)
             | "Write shards" >> beam.io.WriteToText(args.output, ".csv", num_shards=args.shards,
                                                     header=",".join(COLUMNS)))
    _ = (rows | "Summarize" >> beam.CombineGlobally(Summarize())
         | "Write summary" >> beam.Map(lambda s: write_atomically(args.output + ".summary.json",
                                                                  json.dumps(s, indent=2, sort_keys=True))))


def check_model(args: argparse.Namespace) -> None:
    """Fail before the pipeline starts (exit 2) for a local model the workers could not serve."""
    if is_remote(args.model):
        return
    from cxr.calibration import DecisionRule, UnknownOperatingPoint
    from cxr.metadata import read_metadata
    from cxr.onnx_status import export_status, int8_status

    valid, reason = export_status(args.model)
    if not valid:
        raise CliError(f"--model {args.model}: no current ONNX export ({reason}); run make model-runtime")
    if args.precision == "int8" and not (twin := int8_status(args.model))[0]:
        raise CliError(f"--precision int8: {twin[1]}")
    try:
        DecisionRule.from_metadata(read_metadata(args.model)).operating_point(args.operating_point)
    except UnknownOperatingPoint as exc:
        raise CliError(f"--operating-point: {exc}") from exc


def run(args: argparse.Namespace, beam_args: list[str]) -> dict:
    """Build and run the pipeline, wait for it, print and return the summary."""
    check_model(args)
    started = time.perf_counter()
    with beam.Pipeline(options=PipelineOptions(beam_args)) as pipeline:
        build(pipeline, args)
    seconds = time.perf_counter() - started
    with FileSystems.open(args.output + ".summary.json") as handle:
        summary = json.loads(handle.read())
    labels = ", ".join(f"{n} {name}" for name, n in sorted(summary["labels"].items()))
    print(f"{summary['scored']} of {summary['files']} files scored ({labels or 'none'}), "
          f"{summary['refused']} refused, {summary['errors']} errors, in {seconds:.1f} s "
          f"({summary['files'] / max(seconds, 1e-9):.1f} files/s); wrote {args.output}"
          f"{'.csv' if args.shards == 1 else '-*.csv'} and {args.output}.summary.json", flush=True)
    return summary


def main(argv=None) -> int:
    args, beam_args = parse_args(argv)
    return run_cli(lambda: run(args, beam_args))


if __name__ == "__main__":
    # Import ourselves under our package name: Beam pickles the DoFns and the model handler,
    # and classes of ``__main__`` would travel by value instead of by an importable name.
    from model_training.beam_predict import main as _main

    sys.exit(_main())
