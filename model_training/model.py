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
from keras import layers

from cxr.inference import load_classifier  # noqa: F401 - the one loader, re-exported for training
from cxr.metadata import CLASS_NAMES, HEAD_LAYER

HEADS = ("flatten", "gap")
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


def augmentation(seed: int, flip: bool = False) -> keras.Sequential:
    """Zoom 0.2 plus small affine jitter (rotation, shift) as in the original article.

    Horizontal flip is off unless asked for: a flipped chest X-ray puts the heart on the
    wrong side, an image the model never meets in practice. (RandomShear is left out:
    Keras 3.15 writes a config for it that it cannot read back.)
    """
    steps = [
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


def build_training_model(classifier: keras.Model, *, seed: int, flip: bool) -> keras.Model:
    size = classifier.input_shape[1]
    inputs = keras.Input((size, size, 3), name="image")
    outputs = classifier(augmentation(seed, flip)(inputs))
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
