"""EfficientNetV2 B0-B3, S, M, L (Tan & Le, 2021), weight-compatible with ``keras.applications.efficientnet_v2``.

Each variant is a row of ``VARIANTS`` (width / depth coefficient, which stage table; the default size is the
index row's);
the stage tables are ``STAGES``. Stages whose ``fused`` flag is set use Fused-MBConv blocks (one full
3x3 conv instead of expand 1x1 + depthwise), the others MBConv blocks. Layer names, weighted-layer
order and weight shapes are those of keras.applications. ``weights`` is None, 'imagenet', another registry
tag for the model, or a .h5 / .weights.h5 path; the builders are put together by ``efficientnet.build``.

``include_preprocessing=True`` puts the input scaling in the model, as Keras does: the B variants use
EfficientNet V1's ImageNet mean / std (``Rescaling(1/255)`` + a ``Normalization`` with fixed, weightless
statistics), S / M / L map [0, 255] to [-1, 1]. Keras decides this from the model *name*; kzoo from the
variant (the two agree for every name Keras accepts: Keras looks its stage table up by name, so another
``name=`` fails there with a KeyError, while kzoo accepts any name).
"""

from __future__ import annotations

import math

from keras import layers

from kzoo import index
from kzoo.architectures import _common
from kzoo.architectures.efficientnet import CONV_INIT, build, squeeze_excite  # shared with v1
from kzoo.preprocessing import decode_predictions, passthrough_preprocess_input as preprocess_input  # noqa: F401

__all__ = ["EfficientNetV2B0", "EfficientNetV2B1", "EfficientNetV2B2", "EfficientNetV2B3",
           "EfficientNetV2S", "EfficientNetV2M", "EfficientNetV2L"]

# One stage per row: kernel, repeats, filters_in, filters_out, expand_ratio, se_ratio, strides, fused.
_B_STAGES = (
    (3, 1, 32, 16, 1, 0, 1, True),
    (3, 2, 16, 32, 4, 0, 2, True),
    (3, 2, 32, 48, 4, 0, 2, True),
    (3, 3, 48, 96, 4, 0.25, 2, False),
    (3, 5, 96, 112, 6, 0.25, 1, False),
    (3, 8, 112, 192, 6, 0.25, 2, False),
)
STAGES = {
    "b": _B_STAGES,
    "s": (
        (3, 2, 24, 24, 1, 0, 1, True),
        (3, 4, 24, 48, 4, 0, 2, True),
        (3, 4, 48, 64, 4, 0, 2, True),
        (3, 6, 64, 128, 4, 0.25, 2, False),
        (3, 9, 128, 160, 6, 0.25, 1, False),
        (3, 15, 160, 256, 6, 0.25, 2, False),
    ),
    "m": (
        (3, 3, 24, 24, 1, 0, 1, True),
        (3, 5, 24, 48, 4, 0, 2, True),
        (3, 5, 48, 80, 4, 0, 2, True),
        (3, 7, 80, 160, 4, 0.25, 2, False),
        (3, 14, 160, 176, 6, 0.25, 1, False),
        (3, 18, 176, 304, 6, 0.25, 2, False),
        (3, 5, 304, 512, 6, 0.25, 1, False),
    ),
    "l": (
        (3, 4, 32, 32, 1, 0, 1, True),
        (3, 7, 32, 64, 4, 0, 2, True),
        (3, 7, 64, 96, 4, 0, 2, True),
        (3, 10, 96, 192, 4, 0.25, 2, False),
        (3, 19, 192, 224, 6, 0.25, 1, False),
        (3, 25, 224, 384, 6, 0.25, 2, False),
        (3, 7, 384, 640, 6, 0.25, 1, False),
    ),
}

# variant: (width coefficient, depth coefficient, stage table)
VARIANTS = {
    "b0": (1.0, 1.0, "b"),
    "b1": (1.0, 1.1, "b"),
    "b2": (1.1, 1.2, "b"),
    "b3": (1.2, 1.4, "b"),
    "s": (1.0, 1.0, "s"),
    "m": (1.0, 1.0, "m"),
    "l": (1.0, 1.0, "l"),
}

DROPOUT_RATE = 0.2
DROP_CONNECT_RATE = 0.2
DEPTH_DIVISOR = 8
MIN_DEPTH = 8
BN_MOMENTUM = 0.9
ACTIVATION = "swish"
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)

# keras.applications.efficientnet_v2's wording (its first message really lacks the space before "Received").
WEIGHTS_ERROR = (
    "The `weights` argument should be either "
    "`None` (random initialization), `imagenet` "
    "(pre-training on ImageNet), "
    "or the path to the weights file to be loaded."
    "Received: weights={weights}"
)
CLASSES_ERROR = 'If using `weights="imagenet"` with `include_top` as true, `classes` should be 1000'


def round_filters(filters, width):
    """Scale a channel count by ``width``, rounded to a multiple of 8 (V2 has no 10% rule)."""
    rounded = max(MIN_DEPTH or DEPTH_DIVISOR, int(filters * width + DEPTH_DIVISOR / 2) // DEPTH_DIVISOR * DEPTH_DIVISOR)
    return int(rounded)


def round_repeats(repeats, depth):
    return int(math.ceil(depth * repeats))


def _bn(x, name):
    return layers.BatchNormalization(axis=_common.bn_axis(), momentum=BN_MOMENTUM, name=name)(x)


def _conv(x, filters, kernel, strides, name, activation=None):
    return layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                         kernel_initializer=CONV_INIT, activation=activation, name=name)(x)


def _shortcut(x, inputs, filters_in, filters_out, strides, drop_rate, prefix):
    if strides == 1 and filters_in == filters_out:
        if drop_rate:  # stochastic depth; the first block has rate 0 and no Dropout layer
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{prefix}drop")(x)
        x = layers.add([x, inputs], name=f"{prefix}add")
    return x


def mbconv_block(x, *, filters_in, filters_out, kernel, strides, expand_ratio, se_ratio, drop_rate, prefix):
    """Expand 1x1, depthwise kxk, squeeze-excite, project 1x1."""
    inputs = x
    filters = filters_in * expand_ratio
    if expand_ratio != 1:
        x = _conv(x, filters, 1, 1, f"{prefix}expand_conv")
        x = _bn(x, f"{prefix}expand_bn")
        x = layers.Activation(ACTIVATION, name=f"{prefix}expand_activation")(x)
    x = layers.DepthwiseConv2D(kernel, strides=strides, padding="same", use_bias=False,
                               depthwise_initializer=CONV_INIT, name=f"{prefix}dwconv2")(x)
    x = _bn(x, f"{prefix}bn")
    x = layers.Activation(ACTIVATION, name=f"{prefix}activation")(x)
    if 0 < se_ratio <= 1:
        x = squeeze_excite(x, filters, max(1, int(filters_in * se_ratio)), prefix)
    x = _conv(x, filters_out, 1, 1, f"{prefix}project_conv")
    x = _bn(x, f"{prefix}project_bn")
    return _shortcut(x, inputs, filters_in, filters_out, strides, drop_rate, prefix)


def fused_mbconv_block(x, *, filters_in, filters_out, kernel, strides, expand_ratio, se_ratio, drop_rate, prefix):
    """A full kxk conv does expansion and spatial mixing at once; without expansion it is the only conv."""
    inputs = x
    filters = filters_in * expand_ratio
    if expand_ratio != 1:
        x = _conv(x, filters, kernel, strides, f"{prefix}expand_conv")
        x = _bn(x, f"{prefix}expand_bn")
        x = layers.Activation(ACTIVATION, name=f"{prefix}expand_activation")(x)
    if 0 < se_ratio <= 1:
        x = squeeze_excite(x, filters, max(1, int(filters_in * se_ratio)), prefix)
    expanded = expand_ratio != 1
    x = _conv(x, filters_out, 1 if expanded else kernel, 1 if expanded else strides, f"{prefix}project_conv")
    x = _bn(x, f"{prefix}project_bn")
    if not expanded:
        x = layers.Activation(ACTIVATION, name=f"{prefix}project_activation")(x)
    return _shortcut(x, inputs, filters_in, filters_out, strides, drop_rate, prefix)


def _body(width, depth, table, include_preprocessing):
    stages = STAGES[table]

    def body(img_input, input_shape, pretrained):
        axis = _common.bn_axis()
        x = img_input
        if include_preprocessing:
            channels = input_shape[0] if axis == 1 else input_shape[-1]
            if table == "b" and channels == 3:  # V1's ImageNet statistics, fixed (no weights)
                x = layers.Rescaling(1.0 / 255, name="rescaling")(x)
                x = layers.Normalization(mean=list(IMAGENET_MEAN_RGB),
                                         variance=[s ** 2 for s in IMAGENET_STDDEV_RGB],
                                         axis=1 if axis == 1 else 3, name="normalization")(x)
            else:  # [0, 255] -> [-1, 1]
                x = layers.Rescaling(1.0 / 128.0, offset=-1, name="rescaling")(x)

        x = _conv(x, round_filters(stages[0][2], width), 3, 2, "stem_conv")
        x = _bn(x, "stem_bn")
        x = layers.Activation(ACTIVATION, name="stem_activation")(x)

        # Keras spreads the drop rate over the *unscaled* number of blocks (unlike V1).
        total_blocks = float(sum(row[1] for row in stages))
        block_index = 0
        for stage, (kernel, repeats, f_in, f_out, expand, se_ratio, strides, fused) in enumerate(stages):
            f_in, f_out = round_filters(f_in, width), round_filters(f_out, width)
            block = fused_mbconv_block if fused else mbconv_block
            for j in range(round_repeats(repeats, depth)):
                x = block(x, filters_in=f_in if j == 0 else f_out, filters_out=f_out, kernel=kernel,
                          strides=strides if j == 0 else 1, expand_ratio=expand, se_ratio=se_ratio,
                          drop_rate=DROP_CONNECT_RATE * block_index / total_blocks,
                          prefix=f"block{stage + 1}{chr(ord('a') + j)}_")
                block_index += 1

        x = _conv(x, round_filters(1280, width), 1, 1, "top_conv")
        x = _bn(x, "top_bn")
        return layers.Activation(ACTIVATION, name="top_activation")(x)

    return body


def _efficientnet_v2(variant, include_top, weights, input_tensor, input_shape, pooling, classes,
                     classifier_activation, include_preprocessing, name):
    width, depth, table = VARIANTS[variant]
    model_name = f"efficientnetv2{variant}"
    return build(model_name, _body(width, depth, table, include_preprocessing),
                 default_size=index.get(model_name).input_size, dropout=DROPOUT_RATE, include_top=include_top, weights=weights,
                 input_tensor=input_tensor, input_shape=input_shape, pooling=pooling, classes=classes,
                 classifier_activation=classifier_activation, name=name, weights_error=WEIGHTS_ERROR,
                 classes_error=CLASSES_ERROR)


def EfficientNetV2B0(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
                     classes=1000, classifier_activation="softmax", include_preprocessing=True,
                     name="efficientnetv2-b0"):
    """Instantiates EfficientNetV2-B0, as keras.applications.EfficientNetV2B0 (see the module docstring)."""
    return _efficientnet_v2("b0", include_top, weights, input_tensor, input_shape, pooling, classes,
                            classifier_activation, include_preprocessing, name)


def EfficientNetV2B1(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
                     classes=1000, classifier_activation="softmax", include_preprocessing=True,
                     name="efficientnetv2-b1"):
    """Instantiates EfficientNetV2-B1, as keras.applications.EfficientNetV2B1 (see the module docstring)."""
    return _efficientnet_v2("b1", include_top, weights, input_tensor, input_shape, pooling, classes,
                            classifier_activation, include_preprocessing, name)


def EfficientNetV2B2(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
                     classes=1000, classifier_activation="softmax", include_preprocessing=True,
                     name="efficientnetv2-b2"):
    """Instantiates EfficientNetV2-B2, as keras.applications.EfficientNetV2B2 (see the module docstring)."""
    return _efficientnet_v2("b2", include_top, weights, input_tensor, input_shape, pooling, classes,
                            classifier_activation, include_preprocessing, name)


def EfficientNetV2B3(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
                     classes=1000, classifier_activation="softmax", include_preprocessing=True,
                     name="efficientnetv2-b3"):
    """Instantiates EfficientNetV2-B3, as keras.applications.EfficientNetV2B3 (see the module docstring)."""
    return _efficientnet_v2("b3", include_top, weights, input_tensor, input_shape, pooling, classes,
                            classifier_activation, include_preprocessing, name)


def EfficientNetV2S(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
                    classes=1000, classifier_activation="softmax", include_preprocessing=True,
                    name="efficientnetv2-s"):
    """Instantiates EfficientNetV2-S, as keras.applications.EfficientNetV2S (see the module docstring)."""
    return _efficientnet_v2("s", include_top, weights, input_tensor, input_shape, pooling, classes,
                            classifier_activation, include_preprocessing, name)


def EfficientNetV2M(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
                    classes=1000, classifier_activation="softmax", include_preprocessing=True,
                    name="efficientnetv2-m"):
    """Instantiates EfficientNetV2-M, as keras.applications.EfficientNetV2M (see the module docstring)."""
    return _efficientnet_v2("m", include_top, weights, input_tensor, input_shape, pooling, classes,
                            classifier_activation, include_preprocessing, name)


def EfficientNetV2L(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
                    classes=1000, classifier_activation="softmax", include_preprocessing=True,
                    name="efficientnetv2-l"):
    """Instantiates EfficientNetV2-L, as keras.applications.EfficientNetV2L (see the module docstring)."""
    return _efficientnet_v2("l", include_top, weights, input_tensor, input_shape, pooling, classes,
                            classifier_activation, include_preprocessing, name)
