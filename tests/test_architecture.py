"""The house's doors as a test: ``lint-imports`` checks the contracts in ``.importlinter``.

``app/`` and ``model_training/`` import the core ``cxr/``, never each other; the core imports
neither side, nor Flask, nor the exporter; no package has an import circle. The second test
breaks each rule in a copy of the tree and proves the check then fails, so it cannot pass
by checking nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "cxr", "model_training")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    tool = Path(sys.executable).with_name("lint-imports")
    assert tool.exists(), "import-linter not installed (pip install -r requirements-dev.txt)"
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([str(tool), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_import_contracts_are_kept():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_app_never_imports_model_training():
    """The issue's own check: ``grep -rE '^(from|import) model_training' app/`` finds nothing."""
    offenders = [f"{path.relative_to(ROOT)}: {line.strip()}" for path in (ROOT / "app").rglob("*.py")
                 for line in path.read_text().splitlines()
                 if line.lstrip().startswith(("from model_training", "import model_training"))]
    assert not offenders


@pytest.mark.parametrize("module, line, broken", [
    ("app/pages.py", "import model_training.export", "The web app ships no training code"),
    ("cxr/metadata.py", "import flask", "The core imports neither side"),
    ("cxr/gradcam.py", "from app import config", "One house"),
    ("model_training/data.py", "from app import routes", "One house"),
    ("cxr/preprocessing.py", "import keras", "Only the TensorFlow backend's loader"),
    ("cxr/images.py", "from cxr import decode", "Inside the core"),  # a circle: decode imports images
    ("app/pages.py", "from app import routes", "Inside the app"),  # the old errors <-> routes circle
    ("model_training/model.py", "from model_training import train", "Inside model_training"),
])
def test_a_forbidden_import_breaks_the_check(tmp_path, module, line, broken):
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / ".importlinter", tmp_path / ".importlinter")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}  # added by the test\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout[-3000:]
    assert broken in " ".join(broken_contracts(result.stdout)), result.stdout[-3000:]


def broken_contracts(report: str) -> list[str]:
    """Names of the contracts ``lint-imports`` reports BROKEN (its long names wrap)."""
    summary = " ".join(report.split("dependencies.", 1)[-1].split("Contracts:", 1)[0].split())
    return [name.strip(" -") for name, verdict in re.findall(r"(.+?) (KEPT|BROKEN)", summary) if verdict == "BROKEN"]
