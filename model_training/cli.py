"""The one ``main()`` scaffold of the training-side command lines.

Every CLI in this package (train, evaluate, export, gate, explain, predict) ends the same way:

    from .cli import CliError, run_cli

    def main(argv=None) -> int:
        args = parse_args(argv)            # argparse: bad flags exit 2 with usage, as always
        return run_cli(lambda: evaluate(args), errors=(DataError, FileNotFoundError, ValueError))

    if __name__ == "__main__":
        sys.exit(main())

What ``run_cli`` guarantees, so the CLIs agree:

* exit 0 when the body returns;
* exit 2 with one line ``error: <message>`` on stderr for the *known* errors: the ``errors``
  the CLI names (bad input, missing files, data problems) and :class:`CliError`, which a body
  raises for a message of its own (``raise CliError(f"--image {path}: no such file")``).
  2 is argparse's own code for a usage error, so a wrong flag and a wrong file read the same;
* exit 130 on Ctrl-C (128 + SIGINT, what a shell reports), after an optional hint such as
  "rerun with --resume";
* anything else is a bug: it propagates with its traceback (exit 1).

Output goes through :func:`log` (print + flush), so progress lines appear at once when stdout
is a pipe or a log file. TensorFlow's C++ log level defaults to 2 (errors only; an explicit
``TF_CPP_MIN_LOG_LEVEL`` wins): the package's ``__init__`` calls :func:`quiet_tensorflow`
because the CLI modules import Keras at their top, before ``main()`` runs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

TF_LOG_LEVEL = "2"  # TF_CPP_MIN_LOG_LEVEL: 0 all, 1 no INFO, 2 no WARNING, 3 no ERROR
EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 2, 130


class CliError(Exception):
    """A known failure whose message is the whole story: printed as ``error: <message>``."""


def quiet_tensorflow() -> None:
    """Default TensorFlow's C++ logging to errors only; must run before TensorFlow is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", TF_LOG_LEVEL)


def add_backend_argument(parser) -> None:
    """``--backend``, defaulting to ``INFERENCE_BACKEND`` (parsed by the shared ``cxr.settings``,
    as the app parses it), else ``auto``: ONNX Runtime when a verified export sits beside the model."""
    from cxr.settings import parse_choice, setting

    choices = ("auto", "tensorflow", "onnx")
    parser.add_argument("--backend", choices=choices,
                        default=setting(os.environ, "INFERENCE_BACKEND", "auto", parse_choice, choices=choices),
                        help="inference backend (default: INFERENCE_BACKEND, else auto: ONNX Runtime when a "
                             "current export sits beside the model)")


def log(message: str) -> None:
    """One progress line on stdout, flushed at once (pipes and log files buffer otherwise)."""
    print(message, flush=True)


def fail(message: object) -> int:
    """Print ``error: <message>`` on stderr and return the error exit code."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    return EXIT_ERROR


def run_cli(
    body: Callable[[], object],
    *,
    errors: tuple[type[BaseException], ...] = (),
    on_interrupt: str | None = None,
) -> int:
    """Run a CLI's ``body`` and turn its outcome into an exit code (see the module docstring)."""
    quiet_tensorflow()
    try:
        body()
    except KeyboardInterrupt:
        if on_interrupt:
            log(on_interrupt)
        return EXIT_INTERRUPTED
    except (CliError, *errors) as exc:
        return fail(exc)
    return EXIT_OK
