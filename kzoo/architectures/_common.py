"""Steps every builder shares, as keras.applications words and orders them: the input-shape rules, the
input, the classifier-activation check, the top / pooling, padding. ``_factory`` strings them together
with the weights (checked and loaded there).

Messages are kept identical to keras.applications so code that matched on them keeps working.
"""

from __future__ import annotations

import os
import warnings

import keras
from keras import layers

IMAGENET = "imagenet"


def is_weights_path(weights) -> bool:
    return isinstance(weights, (str, os.PathLike)) and os.path.exists(os.fspath(weights))


WEIGHTS_ERROR = (
    "The `weights` argument should be either "
    "`None` (random initialization), 'imagenet' "
    "(pre-training on ImageNet), "
    "or the path to the weights file to be loaded.  Received: "
    "weights={weights}"
)
CLASSES_ERROR = (
    "If using `weights='{weights}'` with `include_top=True`, "
    "`classes` should be {num_classes}.  "
    "Received classes={classes}"
)


def obtain_input_shape(input_shape, default_size, min_size, require_flatten, pretrained):
    """keras.applications' input-shape rules (``imagenet_utils.obtain_input_shape``), same messages."""
    data_format = keras.config.image_data_format()
    channels_first = data_format == "channels_first"
    if not pretrained and input_shape and len(input_shape) == 3:
        channels = input_shape[0] if channels_first else input_shape[-1]
        if channels not in {1, 3}:
            warnings.warn(
                "This model usually expects 1 or 3 input channels. "
                "However, it was passed an input_shape "
                f"with {channels} input channels.",
                stacklevel=3,
            )
        default_shape = (channels, default_size, default_size) if channels_first else (
            default_size, default_size, channels)
    else:
        default_shape = (3, default_size, default_size) if channels_first else (default_size, default_size, 3)
    if pretrained and require_flatten:
        if input_shape is not None and tuple(input_shape) != default_shape:
            raise ValueError(
                "When setting `include_top=True` "
                "and loading `imagenet` weights, "
                f"`input_shape` should be {default_shape}.  "
                f"Received: input_shape={input_shape}"
            )
        return default_shape
    if input_shape:
        if len(input_shape) != 3:
            raise ValueError("`input_shape` must be a tuple of three integers.")
        channels = input_shape[0] if channels_first else input_shape[-1]
        spatial = input_shape[1:] if channels_first else input_shape[:2]
        if channels != 3 and pretrained:
            raise ValueError(f"The input must have 3 channels; Received `input_shape={input_shape}`")
        if any(s is not None and s < min_size for s in spatial):
            raise ValueError(
                f"Input size must be at least {min_size}x{min_size}; Received: input_shape={input_shape}"
            )
    elif require_flatten:
        input_shape = default_shape
    else:
        input_shape = (3, None, None) if channels_first else (None, None, 3)
    if require_flatten and None in input_shape:
        raise ValueError(
            "If `include_top` is True, you should specify a static `input_shape`. "
            f"Received: input_shape={input_shape}"
        )
    return tuple(input_shape)


def make_input(input_tensor, input_shape):
    """The model input: a fresh ``Input``, or the user's tensor (wrapped if it is not a Keras tensor)."""
    if input_tensor is None:
        return layers.Input(shape=input_shape)
    if not keras.backend.is_keras_tensor(input_tensor):
        return layers.Input(tensor=input_tensor, shape=input_shape)
    return input_tensor


def model_inputs(input_tensor, img_input):
    """Keras ties the model to whatever produced ``input_tensor`` (its source inputs)."""
    if input_tensor is None:
        return img_input
    return keras.utils.get_source_inputs(input_tensor)


def validate_activation(classifier_activation, weights):
    if weights is None:
        return
    activation = keras.activations.get(classifier_activation)
    if activation not in {keras.activations.get("softmax"), keras.activations.get(None)}:
        raise ValueError(
            "Only `None` and `softmax` activations are allowed "
            "for the `classifier_activation` argument when using "
            "pretrained weights, with `include_top=True`; Received: "
            # Keras prints the resolved activation (a function), not the argument.
            f"classifier_activation={activation}"
        )


def pooling_head(x, pooling, avg_name="avg_pool", max_name="max_pool"):
    """The ``include_top=False`` pooling option, with keras.applications' layer names."""
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name=avg_name)(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name=max_name)(x)
    return x


def correct_pad(x, kernel_size):
    """Zero padding that makes a stride-2 VALID conv sample like TF's SAME (keras.applications' rule).

    Odd spatial sizes get the same padding on both sides; even (or unknown) ones one row/column less
    at the top/left.
    """
    spatial = x.shape[2:4] if keras.config.image_data_format() == "channels_first" else x.shape[1:3]
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    odd_h = spatial[0] is not None and spatial[0] % 2 == 1
    odd_w = spatial[1] is not None and spatial[1] % 2 == 1
    return ((kh // 2 - (0 if odd_h else 1), kh // 2), (kw // 2 - (0 if odd_w else 1), kw // 2))


def bn_axis() -> int:
    return 1 if keras.config.image_data_format() == "channels_first" else -1
