"""Grad-CAM on the real tiny model: the closed-form NumPy heatmap must equal the textbook
GradientTape Grad-CAM on the logits, and the overlay, grid and CLI must produce real PNGs."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cxr import gradcam
from cxr.decode import decode_image
from cxr.explain import explain_gray, explain_upload
from cxr.preprocessing import prepare_gray
from model_training import explain


@pytest.fixture(scope="module")
def source(tiny_model):
    """The app's own predictor (TensorFlow backend: tiny_model has no ONNX export)."""
    from cxr.inference import load_predictor

    return load_predictor(tiny_model, backend="tensorflow")


@pytest.fixture(scope="module")
def grays(sample_xrays):
    paths = sample_xrays["covid"][:2] + sample_xrays["normal"][:2]
    return [decode_image(p.read_bytes()) for p in paths]


def tape_gradcam(model, batch: np.ndarray, class_index: int) -> np.ndarray:
    """Reference Grad-CAM by automatic differentiation of the logit (softmax switched off)."""
    import keras
    import tensorflow as tf

    dense = model.get_layer("predictions")
    saved = dense.activation
    dense.activation = keras.activations.linear
    try:
        both = keras.Model(model.inputs, [model.get_layer("conv5_block3_out").output, model.output])
        with tf.GradientTape() as tape:
            features, logits = both(tf.constant(batch), training=False)
            score = logits[:, class_index]
        grads = tape.gradient(score, features).numpy()[0]
    finally:
        dense.activation = saved
    alpha = grads.mean(axis=(0, 1))
    cam = np.maximum((features.numpy()[0] * alpha).sum(axis=-1), 0)
    return cam / cam.max() if cam.max() > 0 else cam


def _features(model, batch):
    import keras

    return keras.Model(model.inputs, model.get_layer("conv5_block3_out").output)(batch, training=False).numpy()


def test_gradcam_equals_gradient_tape_gap_head(tiny_model, grays):
    from model_training.model import load_classifier

    model = load_classifier(tiny_model)
    assert explain.head_type_of(model) == "gap"
    kernel = model.get_layer("predictions").kernel.numpy()
    for gray in grays[::3]:
        batch = prepare_gray(gray, 64).array[np.newaxis]
        feats = _features(model, batch)
        for c in (0, 1):
            ours = gradcam.gradcam(feats, kernel, c, "gap")
            np.testing.assert_allclose(ours, tape_gradcam(model, batch, c), atol=1e-4)


def test_gradcam_equals_gradient_tape_flatten_head(grays):
    import keras

    from model_training.model import build_classifier

    keras.utils.set_random_seed(1)
    model = build_classifier(96, weights="none", head="flatten")
    assert explain.head_type_of(model) == "flatten"
    kernel = model.get_layer("predictions").kernel.numpy()
    batch = prepare_gray(grays[0], 96).array[np.newaxis]
    feats = _features(model, batch)
    assert feats.shape == (1, 3, 3, 2048)
    peaks = []
    for c in (0, 1):
        ours = gradcam.gradcam(feats, kernel, c, "flatten")
        ref = tape_gradcam(model, batch, c)
        np.testing.assert_allclose(ours, ref, atol=1e-4)
        peaks.append(ref.max())
    assert max(peaks) > 0  # at least one class map is not trivially all zero
    with pytest.raises(ValueError):
        gradcam.gradcam(feats, kernel, 0, "gap")  # the kernel's shape gives a wrong head away
    assert gradcam.head_type_for(kernel, feats.shape[1:], "gap") == "flatten"
    assert gradcam.head_type_for(kernel[:2048], feats.shape[1:], "flatten") == "gap"
    with pytest.raises(ValueError):
        gradcam.head_type_for(kernel[:100], feats.shape[1:])


def test_heatmap_shape_range_and_not_constant(source, grays):
    for gray in grays:
        exp = explain_gray(source, gray)
        assert exp.heatmap.shape == (2, 2)  # 64 px input / 32 = conv5 resolution
        assert exp.heatmap.dtype == np.float32
        assert exp.heatmap.min() >= 0 and exp.heatmap.max() <= 1
        assert exp.heatmap.max() == pytest.approx(1.0)
        assert exp.heatmap.max() > exp.heatmap.min()
        assert exp.explained_class == exp.label


def test_heatmap_changes_when_the_image_changes(source, grays):
    """Different X-rays (and a mirrored one) must not all give the same map."""
    images = grays + [np.ascontiguousarray(grays[0][:, ::-1])]
    maps = [explain_gray(source, g).heatmap for g in images]
    assert any(not np.allclose(maps[0], m) for m in maps[1:])


def test_requested_class_and_probabilities_match_the_predictor(tiny_model, source, grays):
    from cxr.inference import load_predictor

    predictor = load_predictor(tiny_model)
    gray = grays[0]
    plain = predictor.predict_prepared([prepare_gray(gray, predictor.input_size)])[0]
    covid = explain_gray(source, gray, "Covid")
    normal = explain_gray(source, gray, "Normal")
    assert covid.label == plain.label
    for name, p in plain.probabilities.items():
        assert covid.probabilities[name] == pytest.approx(p, abs=1e-5)
    assert (covid.explained_class, normal.explained_class) == ("Covid", "Normal")
    assert not np.allclose(covid.heatmap, normal.heatmap)
    with pytest.raises(ValueError):
        explain_gray(source, gray, "Pneumonia")


def explain_bytes(source, data: bytes):
    """The explanation of an upload and its overlay PNG, as the API draws it."""
    exp, gray = explain_upload(source, data)
    return exp, exp.overlay_png(gray)


def _png(gray: np.ndarray, size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(gray).resize(size, Image.Resampling.BILINEAR).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("size, expected", [((900, 600), (512, 341)), ((400, 700), (293, 512)),
                                            ((224, 224), (224, 224))])
def test_overlay_png_is_valid_with_the_upload_aspect(source, grays, size, expected):
    exp, png = explain_bytes(source, _png(grays[1], size))
    image = Image.open(io.BytesIO(png))
    image.verify()
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.mode == "RGB"
    assert image.size == expected
    rgb = np.asarray(image)
    assert rgb.std() > 10 and not np.array_equal(rgb[..., 0], rgb[..., 2])  # coloured, not blank


def test_opacity_blends_gray_and_colormap(grays):
    gray = grays[0]
    heat = np.array([[0.0, 0.25], [0.5, 1.0]], dtype=np.float32)
    plain = np.asarray(gradcam.overlay(gray, heat, opacity=0.0))
    assert np.array_equal(plain[..., 0], gray) and np.array_equal(plain[..., 2], gray)
    full = np.asarray(gradcam.overlay(gray, heat, opacity=1.0, colormap="viridis"))
    lut = gradcam.colormap_lut("viridis")
    assert (full[0, 0] == lut[0]).all() and (full[-1, -1] == lut[255]).all()
    with pytest.raises(ValueError):
        gradcam.overlay(gray, heat, opacity=1.5)


@pytest.mark.parametrize("name", gradcam.COLORMAPS)
def test_shipped_colormap_tables_equal_matplotlib(name):
    """Serving reads cxr/colormaps.npz (no matplotlib in requirements-serve.txt); the tables
    must be matplotlib's own, sampled at 256 steps."""
    from matplotlib import colormaps

    expected = np.rint(colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)
    table = gradcam.colormap_lut(name)
    assert table.dtype == np.uint8 and table.shape == (256, 3)
    assert np.array_equal(table, expected)


def test_dicom_upload_gives_the_same_overlay(source, sample_xrays):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    jpeg = sample_xrays["normal"][1].read_bytes()
    gray = decode_image(jpeg)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns = gray.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = ((255 - gray.astype(np.uint16)) * 257).astype("<u2").tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    assert explain_bytes(source, buf.getvalue())[1] == explain_bytes(source, jpeg)[1]


def test_save_explain_grid(tiny_model, sample_xrays, tmp_path, source):
    paths = sample_xrays["covid"][:3] + sample_xrays["normal"][:2]
    out = explain.save_explain_grid(tiny_model, paths, tmp_path / "grid" / "explain.png",
                                    labels=["covid"] * 3 + ["normal"] * 2, source=source)
    image = Image.open(out)
    assert image.format == "PNG"
    assert image.size[0] > image.size[1] > 300  # 4 columns x 2 rows of panels
    with pytest.raises(ValueError):
        explain.save_explain_grid(tiny_model, paths, tmp_path / "x.png", labels=["covid"], source=source)


def test_cli_help():
    result = subprocess.run([sys.executable, "-m", "model_training.explain", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for flag in ("--model", "--image", "--out", "--class", "--opacity"):
        assert flag in result.stdout


def test_cli_writes_the_overlay(tiny_model, sample_xrays, tmp_path, capsys):
    image = sample_xrays["covid"][0]
    out = tmp_path / "heatmap.png"
    rc = explain.main(["--model", str(tiny_model), "--image", str(image), "--out", str(out),
                       "--class", "Normal", "--opacity", "0.6"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["explained_class"] == "Normal" and set(summary["probabilities"]) == {"Covid", "Normal"}
    assert Image.open(out).size == (224, 224)
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    assert explain.main(["--model", str(tiny_model), "--image", str(bad), "--out", str(out)]) == 2
    assert "Accepted formats" in capsys.readouterr().err
