"""Shared fixtures: the real data set, and a real (tiny) model trained by our own CLI.

Nothing here is mocked: the tiny model is a real ResNet50 trained for one epoch on real
X-rays at 64 px, so that every test runs the code paths users run, in seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("CXR_DATA_DIR", ROOT.parent / "shared" / "data" / "cxr"))
TINY_SIZE = 64


def pytest_configure(config):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not (DATA_DIR / "train").is_dir():
        raise pytest.UsageError(f"The real data set is missing: {DATA_DIR} (expected ../shared/data/cxr).")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA_DIR


@pytest.fixture(scope="session")
def sample_xrays(data_dir) -> dict[str, list[Path]]:
    """A few real test-split X-rays per class (sorted, so every run uses the same ones)."""
    return {
        label: sorted((data_dir / "test" / label).glob("*.jpg"))[:4]
        for label in ("covid", "normal")
    }


@pytest.fixture(scope="session")
def shipped_predictor():
    """The shipped model (``models/covid_resnet50.h5``) on the TensorFlow backend, loaded once."""
    from cxr.inference import load_predictor

    return load_predictor(ROOT / "models" / "covid_resnet50.h5", backend="tensorflow")


@pytest.fixture(scope="session")
def shipped_runtime() -> Path:
    """The shipped model with its ONNX export and int8 twin, as ``make model-runtime`` leaves it
    (a no-op when current; a clean clone builds them once, about a minute)."""
    import subprocess
    import sys

    model = ROOT / "models" / "covid_resnet50.h5"
    result = subprocess.run([sys.executable, "-m", "model_training.export", "--model", str(model), "--if-missing"],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, data_dir) -> Path:
    """Train a real 64 px ResNet50 for one epoch on 64 real images with the project's CLI."""
    from model_training import train

    out = tmp_path_factory.mktemp("tiny") / "tiny_resnet50.h5"
    rc = train.main([
        "--data-dir", str(data_dir), "--out", str(out), "--weights", "none",
        "--image-size", str(TINY_SIZE), "--epochs", "1", "--limit", "64", "--batch-size", "16",
        "--head", "gap", "--seed", "0",
    ])
    assert rc == 0 and out.exists()
    return out


@pytest.fixture(scope="module")
def app(tiny_model):
    """The real Flask app (``create_app``) serving ``tiny_model``, as in Flask's tutorial; one
    instance per model path (``tests.web_support.cached_app``), so the model loads once."""
    from tests.web_support import cached_app

    return cached_app(str(tiny_model))


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def tiny_onnx_model(tmp_path_factory, tiny_model, data_dir) -> Path:
    """A copy of ``tiny_model`` in its own folder with a verified ONNX export beside it.

    A copy, so that tests of the TensorFlow-only path can keep using ``tiny_model`` as is.
    """
    import shutil

    from model_training.export import export

    folder = tmp_path_factory.mktemp("tiny_onnx")
    model = folder / tiny_model.name
    shutil.copy2(tiny_model, model)
    shutil.copy2(tiny_model.with_suffix(".json"), model.with_suffix(".json"))
    export(model, data_dir=data_dir, images=4)
    return model
