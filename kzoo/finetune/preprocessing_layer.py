"""The input scaling a backbone was trained with, as a layer saved inside the model, and how to tell
which scaling a backbone expects."""

from __future__ import annotations

import re

import keras
from keras import layers, ops

#: The registry's vocabulary. ``tf``/``caffe``/``torch`` as keras.applications; ``rgb_mean`` is
#: TF-slim's vgg_preprocessing (RGB order, mean pixel subtracted, no scaling); ``unit`` is x / 255;
#: ``none`` means the backbone rescales its own input (EfficientNet, ConvNeXt, MobileNetV3).
from kzoo.preprocessing import MODEL_MODES as PREPROCESSING_MODES  # one home for modes and constants
from kzoo.preprocessing import SLIM_RGB_MEAN as _SLIM_RGB_MEAN

# keras.applications model names (``model.name``), lower-cased with non-alphanumerics removed.
_MODE_BY_KERAS_NAME = [
    (r"^(efficientnet|convnext|mobilenetv3)", "none"),
    (r"^densenet", "torch"),
    (r"^resnet\d+v2", "tf"),
    (r"^(vgg\d+|resnet\d+)$", "caffe"),
    (r"^(mobilenet|xception|inception|nasnet)", "tf"),
]


@keras.saving.register_keras_serializable(package="kzoo")
class ImagePreprocessing(layers.Layer):
    """Raw RGB images in [0, 255] -> the input scaling a backbone was trained with.

    Being a layer, it is saved with the model: whoever loads the model feeds raw pixels.
    """

    # Saved models record the class's module: the package path, as before the split into modules,
    # so the files do not change and load in kzoo versions of either layout.
    __module__ = "kzoo.finetune"

    def __init__(self, mode="tf", **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESSING_MODES:
            raise ValueError(f"Unknown preprocessing mode {mode!r}; expected one of {PREPROCESSING_MODES}.")
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "none":
            return x
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "rgb_mean":
            channels_first = keras.config.image_data_format() == "channels_first"
            shape = (1, 3, 1, 1) if channels_first else (1, 1, 1, 3)
            return x - ops.reshape(ops.convert_to_tensor(_SLIM_RGB_MEAN, dtype=x.dtype), shape)
        from kzoo.preprocessing import preprocess_input

        return preprocess_input(x, mode=self.mode)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def preprocessing_mode(backbone) -> str:
    """The preprocessing mode for a model name or a keras.applications / kzoo model.

    Raises ``ValueError`` (asking for ``preprocessing=``) when it cannot tell: guessing wrong would
    train on wrongly scaled inputs without any error.
    """
    if isinstance(backbone, str):
        from kzoo import index

        name = index.normalise(backbone)
        if name in index.MODELS and index.MODELS[name].preprocessing in PREPROCESSING_MODES:
            return index.MODELS[name].preprocessing
        registered = _registry_modes(name)  # the registry records how each model's weights expect input
        if len(registered) == 1:
            return registered.pop()
    else:
        key = re.sub(r"[^a-z0-9]", "", backbone.name.lower())
        for pattern, mode in _MODE_BY_KERAS_NAME:
            if re.search(pattern, key):
                return mode
        name = backbone.name
    raise ValueError(
        f"Cannot tell which preprocessing the backbone {name!r} expects. Pass "
        f"preprocessing= one of {PREPROCESSING_MODES} (or include_preprocessing=False if your data is "
        "already preprocessed)."
    )


def _registry_modes(name: str) -> set:
    """The preprocessing the registry records for this model's weights (a set: tags may disagree)."""
    try:
        from kzoo.registry import list_weights

        return {e.preprocessing for e in list_weights(name) if e.preprocessing in PREPROCESSING_MODES}
    except Exception:  # registry unavailable or malformed: the table below still answers
        return set()
