"""The training pipeline end to end, on real X-rays, plus the properties it promises:
one preprocessing, fixed class order, skipped corrupt files, clear offline errors,
atomic writes and a resume that equals an unbroken run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from cxr.metadata import CLASS_NAMES, atomic_path, read_metadata, sha256_file
from cxr.preprocessing import load_image_file, prepare_image_bytes
from model_training import data, evaluate, train

from .conftest import ROOT, TINY_SIZE


def _run_cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def _mini_dataset(root: Path, source: Path, folders=("Normal", "COVID"), per_class=3) -> Path:
    """A data folder with real X-rays; folder names deliberately in odd case and order."""
    for split in ("train", "val"):
        for folder in folders:
            target = root / split / folder
            target.mkdir(parents=True)
            label = folder.lower()
            for path in sorted((source / split / label).glob("*.jpg"))[:per_class]:
                shutil.copy(path, target / path.name)
    return root


def _h5_weights(path: Path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(path) as f:
        f["model_weights"].visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return out


# --- end to end ---------------------------------------------------------------------

def test_trained_model_loads_and_predicts_both_classes(tiny_model, sample_xrays):
    import keras

    model = keras.models.load_model(tiny_model, compile=False)
    batch = np.stack([load_image_file(p, TINY_SIZE) for paths in sample_xrays.values() for p in paths])
    probs = model.predict(batch, verbose=0)
    assert probs.shape == (len(batch), 2)
    assert np.all((probs >= 0) & (probs <= 1))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)

    meta = read_metadata(tiny_model)
    assert meta["class_names"] == list(CLASS_NAMES)
    assert meta["input_size"] == TINY_SIZE
    assert meta["sha256"] == sha256_file(tiny_model)
    assert meta["preprocessing"]["mode"] == "caffe"
    assert 0 < meta["threshold"] < 1
    assert meta["training"]["epochs_run"] == 1
    assert meta["data"]["train"]["Covid"] > 0 and meta["data"]["train"]["Normal"] > 0
    assert {"tensorflow", "keras", "numpy"} <= set(meta["versions"])


def test_evaluate_writes_every_report_file(tiny_model, data_dir, tmp_path):
    model = tmp_path / "m.h5"  # a copy: --target-recall rewrites the sidecar's threshold
    shutil.copy(tiny_model, model)
    shutil.copy(tiny_model.with_suffix(".json"), model.with_suffix(".json"))
    out = tmp_path / "report"
    rc = evaluate.main(["--model", str(model), "--data-dir", str(data_dir), "--split", "test",
                        "--limit", "40", "--out", str(out), "--target-recall", "0.9", "--bootstrap", "50"])
    assert rc == 0
    for name in ("metrics.json", "predictions.csv", "confusion_matrix.png", "roc_curve.png", "training_curves.png"):
        assert (out / name).stat().st_size > 0, name
    m = json.loads((out / "metrics.json").read_text())
    for key in ("accuracy", "roc_auc", "sensitivity", "specificity"):
        assert 0 <= m[key] <= 1, key
        lo, hi = m["ci95"][key]
        assert lo <= hi
    assert sum(m["n_images"].values()) == np.array(m["confusion_matrix"]).sum()
    assert set(m["classification_report"]) >= {"Covid", "Normal", "accuracy"}
    assert m["threshold"] == read_metadata(model)["threshold"]
    assert read_metadata(model)["threshold_selection"]["target_recall"] == 0.9
    assert "per_source" in m and "rsna" in m["per_source"]


def test_threshold_reaches_target_recall_on_val():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.3, 0.2, 0.7, 0.1, 0.05, 0.25])
    t = evaluate.choose_threshold(y, p, 0.75)
    assert t == pytest.approx(0.3)
    assert evaluate.binary_metrics(y, p, t)["sensitivity"] >= 0.75


# --- one preprocessing ----------------------------------------------------------------

def test_training_pipeline_and_serving_path_give_the_same_array(data_dir):
    files = data.list_split(data_dir, "val", limit=6, check=False)
    served = [prepare_image_bytes(Path(p).read_bytes(), 48).array for p in files.paths]
    evaluated = np.concatenate([np.asarray(x) for x, _ in data.eval_dataset(files, 48, 4)])
    np.testing.assert_array_equal(evaluated, np.stack(served))
    # the training batches are the same arrays, in the epoch's order
    order = data.epoch_order(files.labels, 0, 0, "weights")
    batches = data.training_dataset(files, 48, 3, seed=0, first_epoch=0, epochs=1, balance="weights")
    trained = np.concatenate([np.asarray(x) for x, _ in batches])
    np.testing.assert_array_equal(trained, np.stack(served)[order[: len(trained)]])


def test_preprocessing_is_keras_caffe_preprocess_input(sample_xrays):
    from keras.applications.resnet50 import preprocess_input
    from PIL import Image

    path = sample_xrays["covid"][0]
    ours = load_image_file(path, 224)
    gray = np.asarray(Image.open(path).convert("L"), dtype=np.float32)  # the file is 224x224 already
    rgb = np.stack([gray] * 3, axis=-1)
    np.testing.assert_allclose(ours, preprocess_input(rgb[None].copy())[0], atol=1e-4)


# --- data folder handling -------------------------------------------------------------

def test_class_order_is_fixed_and_folder_case_does_not_matter(tmp_path, data_dir):
    root = _mini_dataset(tmp_path / "d", data_dir, folders=("NORMAL", "Covid"))
    files = data.list_split(root, "train")
    assert [Path(p).parent.name for p in files.paths[:1]] == ["Covid"]
    assert files.counts() == {"Covid": 3, "Normal": 3}
    assert all(("Covid" in p) == (label == CLASS_NAMES.index("Covid")) for p, label in zip(files.paths, files.labels))


def test_corrupt_files_are_skipped_with_a_warning(tmp_path, data_dir, capsys):
    root = _mini_dataset(tmp_path / "d", data_dir)
    bad = root / "train" / "COVID" / "broken.jpg"
    bad.write_bytes((data_dir / "train" / "covid").glob("*.jpg").__next__().read_bytes()[:300])
    (root / "train" / "COVID" / "notes.jpg").write_text("not an image")
    files = data.list_split(root, "train")
    assert len(files.skipped) == 2 and str(bad) in [p for p, _ in files.skipped]
    assert files.counts()["Covid"] == 3
    assert "skipping unreadable file" in capsys.readouterr().err


def test_empty_class_folder_is_a_clear_error(tmp_path, data_dir):
    root = _mini_dataset(tmp_path / "d", data_dir)
    for f in (root / "train" / "COVID").iterdir():
        f.unlink()
    result = _run_cli("model_training.train", "--data-dir", str(root), "--weights", "none",
                      "--image-size", "32", "--out", str(tmp_path / "m.h5"))
    assert result.returncode == 2
    assert "contains no images" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "m.h5").exists()


# --- weights -----------------------------------------------------------------------------

def test_offline_imagenet_fails_fast_with_advice(tmp_path):
    result = _run_cli("model_training.train", "--weights", "imagenet", "--out", str(tmp_path / "m.h5"),
                      env={"KERAS_HOME": str(tmp_path / "keras")}, timeout=120)
    assert result.returncode == 2
    assert "--weights none" in result.stderr and "Traceback" not in result.stderr


def test_local_weights_file_is_loaded_and_frozen(tmp_path):
    import keras

    from model_training.model import build_classifier

    base = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "resnet50_notop.weights.h5"
    base.save_weights(path)
    model = build_classifier(32, weights=str(path), head="gap")
    np.testing.assert_array_equal(model.get_layer("conv1_conv").get_weights()[0],
                                  base.get_layer("conv1_conv").get_weights()[0])
    assert not model.get_layer("conv5_block3_3_conv").trainable
    assert model.get_layer("predictions").trainable
    tuned = build_classifier(32, weights=str(path), head="gap", fine_tune_from="conv5_block1_1_conv")
    assert tuned.get_layer("conv5_block3_3_conv").trainable and not tuned.get_layer("conv4_block6_out").trainable


def test_random_weights_train_the_whole_network():
    from model_training.model import build_classifier

    model = build_classifier(32, weights="none")
    assert all(layer.trainable for layer in model.layers)
    with pytest.raises(ValueError, match="needs pretrained weights"):
        build_classifier(32, weights="none", fine_tune_from="conv5_block1_1_conv")


def test_missing_weights_file_is_a_clear_error(tmp_path):
    result = _run_cli("model_training.train", "--weights", str(tmp_path / "nope.h5"), "--out", str(tmp_path / "m.h5"))
    assert result.returncode == 2 and "no such file" in result.stderr


# --- resume and atomic writes --------------------------------------------------------------

def test_resumed_run_equals_an_unbroken_run(tiny_model, data_dir, tmp_path):
    """The tiny model's 1-epoch run, resumed for a 2nd epoch, must equal a 2-epoch run."""
    common = ["--data-dir", str(data_dir), "--weights", "none", "--image-size", str(TINY_SIZE), "--epochs", "2",
              "--limit", "64", "--batch-size", "16", "--head", "gap", "--seed", "0"]
    ckpt = tmp_path / "resumed.ckpt"
    shutil.copytree(tiny_model.with_suffix(".ckpt"), ckpt)
    assert train.main([*common, "--out", str(tmp_path / "resumed.h5"), "--checkpoint-dir", str(ckpt), "--resume"]) == 0
    assert train.main([*common, "--out", str(tmp_path / "unbroken.h5")]) == 0

    resumed, unbroken = read_metadata(tmp_path / "resumed.h5"), read_metadata(tmp_path / "unbroken.h5")
    assert resumed["history"]["loss"] == unbroken["history"]["loss"]
    assert resumed["history"]["val_auc"] == unbroken["history"]["val_auc"]
    a, b = _h5_weights(tmp_path / "resumed.h5"), _h5_weights(tmp_path / "unbroken.h5")
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_unfinished_checkpoint_is_not_overwritten_silently(tiny_model, tmp_path):
    ckpt = tmp_path / "m.ckpt"
    shutil.copytree(tiny_model.with_suffix(".ckpt"), ckpt)
    state = json.loads((ckpt / "state.json").read_text())
    state.pop("finished", None)
    (ckpt / "state.json").write_text(json.dumps(state))
    with pytest.raises(FileExistsError, match="--resume"):
        train.train(train.parse_args(["--out", str(tmp_path / "m.h5"), "--weights", "none"]))


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "model.h5"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half-writ")
            raise RuntimeError("crash mid-save")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.h5"]


@pytest.mark.parametrize("module", ["model_training.train", "model_training.evaluate"])
def test_cli_help(module):
    result = _run_cli(module, "--help")
    assert result.returncode == 0 and "usage:" in result.stdout


# --- several data folders, sources, source-balanced epochs (issue 11) ---------------------

SIIM_DIR = ROOT.parent / "shared" / "data" / "siim"


def test_several_data_folders_carry_their_sources(data_dir):
    files = data.list_split([SIIM_DIR, data_dir], "val", limit=40, check=False)
    assert set(files.folders) == {"siim", "cxr"}
    by_folder = {f: {s for s, g in zip(files.sources, files.folders) if g == f} for f in ("siim", "cxr")}
    assert by_folder["siim"] == {"siim"} and "rsna" in by_folder["cxr"]
    # only siim holds both classes within one source: the only within-source metric there is
    assert files.two_class_sources() == ["siim"]


def test_source_balanced_epochs_are_dominated_by_same_source_pairs():
    labels = np.array([0] * 30 + [1] * 20 + [0] * 50 + [1] * 200)
    sources = np.array(["siim"] * 50 + ["c19rdb"] * 50 + ["rsna"] * 200)
    order = data.epoch_order(labels, 3, 0, "source", sources)
    np.testing.assert_array_equal(order, data.epoch_order(labels, 3, 0, "source", sources))  # pure function
    picked_src, picked_lab = sources[order], labels[order]
    siim = picked_src == "siim"
    assert (picked_lab[siim] == 0).sum() == (picked_lab[siim] == 1).sum() == 20
    # one-class sources: a fixed share, as many Covid as Normal, so their look says nothing about the class
    assert (picked_src == "c19rdb").sum() == (picked_src == "rsna").sum() == 5
    assert len(set(order)) == len(order)


def test_disputed_cxr_covid_images_are_listed_from_the_overlap_file(data_dir):
    disputed = data.disputed_files(SIIM_DIR / "cxr_overlap.csv", data_dir)
    assert len(disputed) == 187  # 133 train + 28 val + 26 test images (SOURCES.md of siim)
    assert all("/covid/" in p and Path(p).exists() for p in disputed)
    files = data.list_split(data_dir, "test", check=False, exclude=disputed)
    assert len(files.excluded) == 26 and not set(files.paths) & disputed
