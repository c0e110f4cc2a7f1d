"""Training runs on any Keras 3 backend: a tiny real training under JAX, without TensorFlow,
whose .h5 the TensorFlow app then serves (issue 11: the GPU machine has JAX, not TensorFlow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from .conftest import ROOT

pytestmark = pytest.mark.slow

# Runs the project's CLI under JAX on a Python where TensorFlow cannot be imported, as on
# the GPU machine (Keras itself looks for TensorFlow when saving and does without it).
_JAX_TRAIN = """
import sys

class NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            print("TENSORFLOW_IMPORT_ATTEMPT", name, file=sys.stderr)
            raise ImportError("TensorFlow is not installed on this machine")

sys.meta_path.insert(0, NoTensorFlow())
from model_training import train
rc = train.main(sys.argv[1:])
import keras
assert keras.backend.backend() == "jax", keras.backend.backend()
print("TENSORFLOW_MODULES", sum(m.split(".")[0] == "tensorflow" for m in sys.modules))
sys.exit(rc)
"""


@pytest.fixture(scope="module")
def jax_model(tmp_path_factory):
    pytest.importorskip("jax")
    out = tmp_path_factory.mktemp("jax") / "jax_resnet50.h5"
    siim = ROOT.parent / "shared" / "data" / "siim"
    cxr = ROOT.parent / "shared" / "data" / "cxr"
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", _JAX_TRAIN, "--data-dir", str(siim), "--data-dir", str(cxr), "--out", str(out),
         "--weights", "none", "--image-size", "32", "--epochs", "1", "--limit", "32", "--batch-size", "8",
         "--head", "gap", "--balance", "source", "--seed", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "TENSORFLOW_MODULES 0" in result.stdout
    return out, result.stdout


def test_jax_training_writes_a_model_without_tensorflow(jax_model):
    out, stdout = jax_model
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["training"]["backend"] == "jax" and meta["versions"]["backend"] == "jax"
    assert "tensorflow" not in meta["versions"]
    # validation watched the source with both classes only (siim), not cxr's one-class sources
    assert meta["training"]["monitored_sources"] == ["siim"]
    assert set(meta["data"]["val_per_source"]) == {"siim"}
    assert {"siim", "rsna"} <= set(meta["data"]["train_per_source"])


def test_jax_trained_model_is_served_by_the_tensorflow_app(jax_model, sample_xrays):
    import keras

    from cxr.preprocessing import load_image_file

    out, _ = jax_model
    assert keras.backend.backend() == "tensorflow"
    from cxr.inference import load_predictor

    predictor = load_predictor(out, backend="tensorflow")
    model = keras.models.load_model(out, compile=False)
    path = sample_xrays["covid"][0]
    prediction = predictor.predict_upload(path.read_bytes())
    direct = model.predict(load_image_file(path, 32)[None], verbose=0)[0]
    assert prediction.probabilities["Covid"] == pytest.approx(float(direct[0]), abs=1e-5)
    assert np.isclose(sum(prediction.probabilities.values()), 1.0, atol=1e-5)
