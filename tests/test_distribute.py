"""``train --distribute data-parallel`` on two virtual CPU devices (JAX backend): it trains, says
2 devices in its log and sidecar, its .h5 is served by the TensorFlow app, and its first epoch
matches a one-device run of the same global batch.

Tolerance, from measurement: one step per epoch (the global batch holds the whole tiny epoch),
so the epoch's training loss is the first forward pass (measured: 2e-6 relative apart; allowed
1e-4) and its validation loss follows one all-reduced Adam update (measured 1.4e-4; allowed
1e-3). Over several steps Adam turns float reduction-order noise into visible differences
(3 steps of batch 8: 2% apart), so longer runs match in distribution, not digit for digit.
``--augment none``: Keras's affine augmentation layers inside ResNet50 hung XLA's CPU
all-reduce on 2 virtual devices of this 2-core machine (README, "Training on several
accelerators"); ``--dropout 0``: no random draw in the comparison (whether a sharded run draws
the same dropout mask was not checked).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from model_training.distribute import process_slice

from .conftest import ROOT

pytestmark = pytest.mark.slow
TINY = ["--weights", "none", "--image-size", "32", "--epochs", "1", "--limit", "32", "--batch-size", "64",
        "--head", "gap", "--balance", "source", "--seed", "0", "--augment", "none", "--dropout", "0"]


def train_jax(out, devices: int, *extra) -> subprocess.CompletedProcess:
    pytest.importorskip("jax")
    siim, cxr = ROOT.parent / "shared" / "data" / "siim", ROOT.parent / "shared" / "data" / "cxr"
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    result = subprocess.run([sys.executable, "-m", "model_training.train", "--data-dir", str(siim), "--data-dir",
                             str(cxr), "--out", str(out), *TINY, *extra],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("distribute")
    parallel = train_jax(folder / "parallel.h5", 2, "--distribute", "data-parallel")
    train_jax(folder / "one.h5", 1)
    return folder, parallel.stdout


def sidecar(path) -> dict:
    return json.loads(path.with_suffix(".json").read_text())


def test_two_devices_in_the_log_and_the_sidecar(runs):
    folder, log = runs
    assert "Distribution: data-parallel over 2 cpu devices (1 process), global batch 64 = 32 per device" in log
    meta = sidecar(folder / "parallel.h5")
    assert meta["training"]["distribute"] == "data-parallel" and meta["training"]["backend"] == "jax"
    assert meta["training"]["distribution"] == {"strategy": "data-parallel", "devices": 2, "device_kind": "cpu",
                                                "processes": 1, "global_batch": 64, "per_device_batch": 32}
    assert sidecar(folder / "one.h5")["training"]["distribution"]["strategy"] == "none"


def test_first_epoch_matches_one_device_of_the_same_global_batch(runs):
    folder, _ = runs
    parallel, one = sidecar(folder / "parallel.h5")["history"], sidecar(folder / "one.h5")["history"]
    assert sidecar(folder / "parallel.h5")["training"]["steps_per_epoch"] == 1
    assert parallel["loss"][0] == pytest.approx(one["loss"][0], rel=1e-4)  # the first forward pass
    assert parallel["val_loss"][0] == pytest.approx(one["val_loss"][0], rel=1e-3)  # after one update


def test_the_data_parallel_model_is_served_by_the_tensorflow_app(runs, sample_xrays):
    """The .h5 of a JAX data-parallel run, served by the real Flask app on TensorFlow."""
    import keras

    from tests.web_support import cached_app

    folder, _ = runs
    assert keras.backend.backend() == "tensorflow"
    client = cached_app(str(folder / "parallel.h5")).test_client()
    response = client.post("/predict", data={"file": (io.BytesIO(sample_xrays["covid"][0].read_bytes()), "x.jpg")},
                           content_type="multipart/form-data")
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["label"] in ("Covid", "Normal") and sum(body["probabilities"].values()) == pytest.approx(1, abs=1e-5)


def test_a_batch_needs_the_jax_backend_and_whole_devices(tmp_path):
    """Clear errors: data-parallel on the TensorFlow backend, and a batch the devices cannot split."""
    siim = ROOT.parent / "shared" / "data" / "siim"
    result = subprocess.run([sys.executable, "-m", "model_training.train", "--data-dir", str(siim), "--out",
                             str(tmp_path / "m.h5"), *TINY, "--distribute", "data-parallel"],
                            cwd=ROOT, env={**os.environ, "KERAS_BACKEND": "tensorflow"}, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2 and "KERAS_BACKEND=jax" in result.stderr


def test_each_host_feeds_its_own_rows_of_the_global_batch():
    """Several hosts (not run here): process i of n feeds rows [i*ceil(N/n), (i+1)*ceil(N/n))."""
    assert [process_slice(8, i, 2) for i in range(2)] == [slice(0, 4), slice(4, 8)]
    rows = [list(range(10))[process_slice(10, i, 4)] for i in range(4)]
    assert sum(rows, []) == list(range(10))
