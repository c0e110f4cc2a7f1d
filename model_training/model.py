"""The network: a ResNet50 base, a small classification head, and training-only augmentation.

Two models share the same layers:

* the *classifier* (input: preprocessed image, output: softmax over CLASS_NAMES) is what
  gets saved to ``.h5`` and served; its ResNet50 layers are top-level, so
  ``conv5_block3_out`` is reachable for Grad-CAM and the ONNX export is a plain graph;
* the *training model* puts the augmentation layers in front of it, as in the keras.io
  examples, so augmentation runs only while training and never ships.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from keras import layers

from cxr.inference import load_classifier  # noqa: F401 - the one loader, re-exported for training
from cxr.metadata import CLASS_NAMES, HEAD_LAYER
from cxr.preprocessing import CAFFE_MEAN_BGR

HEADS = ("flatten", "gap")
AUGMENTATIONS = ("basic", "robust", "none")
IMAGENET_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"


class WeightsUnavailable(Exception):
    """The requested base weights cannot be had (offline, or a missing file)."""


@keras.saving.register_keras_serializable(package="cxr")
class CovidAUC(keras.metrics.AUC):
    """ROC AUC of the Covid probability alone (column 0 of the one-hot targets).

    Keras' plain AUC on two softmax columns would pool both columns, which is not the
    number the report gives.
    """

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true[:, 0], y_pred[:, 0], sample_weight=sample_weight)


def resolve_weights(weights: str) -> str | None:
    """Map the CLI's --weights to what keras.applications expects, failing early and clearly."""
    if weights == "none":
        return None
    if weights == "imagenet":
        return "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsUnavailable(
            f"--weights {weights}: no such file. Give 'imagenet', 'none', or the path of a "
            f"ResNet50 no-top weights file (for example ~/.keras/models/{IMAGENET_FILE})."
        )
    return str(path)


@keras.saving.register_keras_serializable(package="cxr")
class SourceCueJitter(layers.Layer):
    """Take away the cheap cues that tell hospitals apart: black frames, gamma, contrast.

    Every source has its own borders (collimation, burnt-in text, padding), exposure and
    contrast curve; a network rewarded for recognising them learns the hospital, not the
    lungs. Per image and with random strength: a black frame of up to ``frame`` of the
    side on each edge (half the images), a gamma in [1/(1+gamma), 1+gamma] and a contrast
    factor in [1-contrast, 1+contrast] around the image mean. Works on the caffe-
    preprocessed input (gray in all three channels), with backend-agnostic ops only.
    """

    def __init__(self, frame=0.12, gamma=0.4, contrast=0.3, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.frame, self.gamma, self.contrast, self.seed = frame, gamma, contrast, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=True):
        if not training:
            return x
        ops = keras.ops
        mean = ops.convert_to_tensor(CAFFE_MEAN_BGR.tolist(), dtype=x.dtype)
        gray = ops.clip((x + mean) / 255.0, 0.0, 1.0)
        n, size = ops.shape(x)[0], x.shape[1]
        rand = lambda lo, hi, shape=(n, 1, 1, 1): keras.random.uniform(  # noqa: E731
            shape, lo, hi, seed=self.seed_generator, dtype=x.dtype)
        gray = ops.power(gray + 1e-6, ops.exp(rand(-1.0, 1.0) * float(np.log1p(self.gamma))))
        image_mean = ops.mean(gray, axis=(1, 2, 3), keepdims=True)
        gray = ops.clip((gray - image_mean) * rand(1 - self.contrast, 1 + self.contrast) + image_mean, 0.0, 1.0)
        edges = rand(0.0, self.frame * size, (n, 4))
        at = ops.cast(ops.arange(size), x.dtype)
        rows, cols = ops.reshape(at, (1, size, 1, 1)), ops.reshape(at, (1, 1, size, 1))
        e = [ops.reshape(edges[:, i], (n, 1, 1, 1)) for i in range(4)]
        inside = (rows >= e[0]) & (rows < size - e[1]) & (cols >= e[2]) & (cols < size - e[3])
        keep = inside | (rand(0.0, 1.0) < 0.5)
        gray = ops.where(keep, gray, ops.zeros_like(gray))
        return gray * 255.0 - mean

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "frame": self.frame, "gamma": self.gamma,
                "contrast": self.contrast, "seed": self.seed}


def augmentation(seed: int, flip: bool = False, kind: str = "basic") -> keras.Sequential:
    """Zoom 0.2 plus small affine jitter (rotation, shift) as in the original article;
    ``robust`` adds :class:`SourceCueJitter` (frames, gamma, contrast) in front; ``none`` is
    the identity.

    Zoom in cuts the borders as a random crop would. Horizontal flip is off unless asked
    for: a flipped chest X-ray puts the heart on the wrong side, an image the model never
    meets in practice. (RandomShear is left out: Keras 3.15 writes a config for it that it
    cannot read back.)
    """
    if kind not in AUGMENTATIONS:
        raise ValueError(f"augmentation must be one of {AUGMENTATIONS}")
    if kind == "none":  # e.g. the data-parallel test on virtual CPU devices (model_training/distribute.py)
        return keras.Sequential([layers.Identity()], name="augmentation")
    steps = [SourceCueJitter(seed=seed + 10, name="source_cue_jitter")] if kind == "robust" else []
    steps += [
        layers.RandomZoom(0.2, fill_mode="constant", seed=seed),
        layers.RandomRotation(0.03, fill_mode="constant", seed=seed + 1),
        layers.RandomTranslation(0.05, 0.05, fill_mode="constant", seed=seed + 2),
    ]
    if flip:
        steps.append(layers.RandomFlip("horizontal", seed=seed + 3))
    return keras.Sequential(steps, name="augmentation")


def build_classifier(
    image_size: int,
    *,
    weights: str = "imagenet",
    head: str = "flatten",
    dropout: float = 0.3,
    fine_tune_from: str | None = None,
    name: str = "covid_resnet50",
) -> keras.Model:
    """ResNet50 base + head. A pretrained base is frozen (up to ``fine_tune_from``); a
    randomly initialised one is always fully trainable, since a frozen random base learns nothing."""
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}")
    resolved = resolve_weights(weights)
    inputs = keras.Input((image_size, image_size, 3), name="image")
    try:
        base = keras.applications.ResNet50(include_top=False, weights=resolved, input_tensor=inputs)
    except Exception as exc:  # keras raises a bare Exception for download failures
        if resolved == "imagenet" and "URL fetch failure" in str(exc):
            raise WeightsUnavailable(
                "Could not download the ImageNet weights for ResNet50 (no internet?). "
                "Use --weights none to train from scratch, or --weights PATH with a local copy "
                f"of {IMAGENET_FILE} (Keras also looks in ~/.keras/models/ first)."
            ) from None
        raise

    if resolved is not None:
        _freeze_base(base, fine_tune_from)
    elif fine_tune_from:
        raise ValueError("--fine-tune-from needs pretrained weights; with --weights none the whole network trains.")

    x = base.output
    if head == "gap":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(dropout, name="head_dropout")(x)
    else:
        x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(len(CLASS_NAMES), activation="softmax", name=HEAD_LAYER, dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)


def _freeze_base(base: keras.Model, fine_tune_from: str | None) -> None:
    if not fine_tune_from:
        base.trainable = False
        return
    names = [layer.name for layer in base.layers]
    if fine_tune_from not in names:
        raise ValueError(f"--fine-tune-from {fine_tune_from}: no such layer in ResNet50 (e.g. conv5_block1_1_conv).")
    start = names.index(fine_tune_from)
    for i, layer in enumerate(base.layers):
        layer.trainable = i >= start


def build_training_model(classifier: keras.Model, *, seed: int, flip: bool, augment: str = "basic") -> keras.Model:
    size = classifier.input_shape[1]
    inputs = keras.Input((size, size, 3), name="image")
    outputs = classifier(augmentation(seed, flip, augment)(inputs))
    return keras.Model(inputs, outputs, name="training_model")


def compile_model(model: keras.Model, learning_rate, *, weight_decay: float = 0.0) -> None:
    if weight_decay:
        optimizer = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay)
    else:
        optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
    model.compile(
        optimizer=optimizer,
        loss="categorical_crossentropy",
        metrics=["accuracy", CovidAUC(name="auc")],
    )
