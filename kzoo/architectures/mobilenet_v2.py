"""MobileNetV2, as keras.applications builds it.

A table of inverted residual blocks (expansion, output filters, stride); ``alpha`` scales the widths
(rounded to multiples of 8). Pretrained weights exist per (alpha, input rows); the variant is chosen as
Keras chooses the file: rows 96 / 128 / 160 / 192 / 224 for square inputs, else 224 with a warning.

The TF-slim names ``mobilenet_v2`` (depth multiplier 1.0) and ``mobilenet_v2_140`` (1.4) are the same
network (slim's ``MobilenetV2/expanded_conv_*`` map one to one): registrations of :func:`MobileNetV2` in
``kzoo.index`` with ``alpha=1.0`` / ``alpha=1.4``, so ``kzoo.create_model("mobilenet_v2_140")`` builds this
model with the TF-slim weights registered under that name (``weights="tione"`` by default).
"""

from __future__ import annotations

import warnings

import keras
from keras import layers

from kzoo.architectures import _common, _factory
from kzoo.preprocessing import decode_predictions, family_preprocess  # noqa: F401

__all__ = ["MobileNetV2"]

# (expansion, filters, stride) of blocks 0..16.
BLOCKS = ((1, 16, 1),
          (6, 24, 2), (6, 24, 1),
          (6, 32, 2), (6, 32, 1), (6, 32, 1),
          (6, 64, 2), (6, 64, 1), (6, 64, 1), (6, 64, 1),
          (6, 96, 1), (6, 96, 1), (6, 96, 1),
          (6, 160, 2), (6, 160, 1), (6, 160, 1),
          (6, 320, 1))
WEIGHT_ROWS = (96, 128, 160, 192, 224)
WEIGHT_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
BN = dict(epsilon=1e-3, momentum=0.999)

preprocess_input = family_preprocess("tf")


def make_divisible(value, divisor=8, min_value=None):
    """Round ``value`` to a multiple of ``divisor``, never more than 10% below it (the TF models' rule)."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _inverted_res_block(inputs, expansion, stride, alpha, filters, block_id):
    axis = _common.bn_axis()
    in_channels = inputs.shape[axis]
    out_channels = make_divisible(int(filters * alpha), 8)
    x = inputs
    if block_id:
        prefix = f"block_{block_id}_"
        x = layers.Conv2D(expansion * in_channels, kernel_size=1, padding="same", use_bias=False, activation=None,
                          name=f"{prefix}expand")(x)
        x = layers.BatchNormalization(axis=axis, **BN, name=f"{prefix}expand_BN")(x)
        x = layers.ReLU(6.0, name=f"{prefix}expand_relu")(x)
    else:
        prefix = "expanded_conv_"
    if stride == 2:
        x = layers.ZeroPadding2D(padding=_common.correct_pad(x, 3), name=f"{prefix}pad")(x)
    x = layers.DepthwiseConv2D(kernel_size=3, strides=stride, activation=None, use_bias=False,
                               padding="same" if stride == 1 else "valid", name=f"{prefix}depthwise")(x)
    x = layers.BatchNormalization(axis=axis, **BN, name=f"{prefix}depthwise_BN")(x)
    x = layers.ReLU(6.0, name=f"{prefix}depthwise_relu")(x)
    x = layers.Conv2D(out_channels, kernel_size=1, padding="same", use_bias=False, activation=None,
                      name=f"{prefix}project")(x)
    x = layers.BatchNormalization(axis=axis, **BN, name=f"{prefix}project_BN")(x)
    if in_channels == out_channels and stride == 1:
        return layers.Add(name=f"{prefix}add")([inputs, x])
    return x


def _rows_cols(shape, batch_dim=False):
    offset = 1 if batch_dim else 0
    if keras.config.image_data_format() == "channels_first":
        return shape[offset + 1], shape[offset + 2]
    return shape[offset], shape[offset + 1]


def _default_size(input_shape, input_tensor):
    """Keras' choice of the default size from ``input_shape`` or a Keras ``input_tensor``."""
    if input_shape is None and input_tensor is not None:
        if not keras.backend.is_keras_tensor(input_tensor):
            return 224
        rows, cols = _rows_cols(input_tensor.shape, batch_dim=True)
    elif input_shape is None:
        return 224
    else:
        rows, cols = _rows_cols(input_shape)
    return rows if rows == cols and rows in WEIGHT_ROWS else 224


def _check_tensor_against_shape(input_tensor, input_shape):
    if not keras.backend.is_keras_tensor(input_tensor):
        raise ValueError(f"input_tensor is not a Keras tensor; Received `input_tensor={input_tensor}`")
    if keras.config.image_data_format() == "channels_first":
        if input_tensor.shape[1] != input_shape[1]:
            raise ValueError(
                "input_shape[1] must equal shape(input_tensor)[1] when `image_data_format` is `channels_first`; "
                f"Received `input_tensor.shape={input_tensor.shape}`, `input_shape={input_shape}`")
    elif input_tensor.shape[2] != input_shape[1]:
        raise ValueError("input_tensor.shape[2] must equal input_shape[1]; Received "
                         f"`input_tensor.shape={input_tensor.shape}`, `input_shape={input_shape}`")


def MobileNetV2(input_shape=None, alpha=1.0, include_top=True, weights="imagenet", input_tensor=None,
                pooling=None, classes=1000, classifier_activation="softmax", name=None):
    """Instantiates the MobileNetV2 architecture (keras.applications signature, names, weight layout).

    Preprocessing: ``kzoo.mobilenet_v2.preprocess_input`` ([-1, 1]). ``weights``: None, 'imagenet', a
    registry tag for ``mobilenetv2``, or a path to an .h5 / .weights.h5. Default name ``mobilenetv2_{alpha}_{rows}``.
    """
    # Keras' own order: weights, the tensor/shape check, its default size, then its alpha / rows rules.
    request = _factory.Weights(
        weights, "mobilenetv2", include_top, classes,
        weights_error="The `weights` argument should be either `None` (random initialization), `imagenet` "
                      "(pre-training on ImageNet), or the path to the weights file to be loaded.  "
                      "Received `weights={weights}`",
        classes_error='If using `weights="{weights}"` with `include_top` as true, `classes` should be '
                      "{num_classes}. Received `classes={classes}`")
    if input_shape is not None and input_tensor is not None:
        _check_tensor_against_shape(input_tensor, input_shape)
    input_shape = _common.obtain_input_shape(input_shape, default_size=_default_size(input_shape, input_tensor),
                                             min_size=32, require_flatten=include_top,
                                             pretrained=request.pretrained)
    rows, cols = _rows_cols(input_shape)
    if request.pretrained:
        if alpha not in WEIGHT_ALPHAS:
            raise ValueError("If imagenet weights are being loaded, alpha must be one of `0.35`, `0.50`, `0.75`, "
                             f"`1.0`, `1.3` or `1.4` only; Received `alpha={alpha}`")
        if rows != cols or rows not in WEIGHT_ROWS:
            rows = 224
            warnings.warn("`input_shape` is undefined or non-square, or `rows` is not in [96, 128, 160, 192, "
                          "224]. Weights for input shape (224, 224) will be loaded as the default.", stacklevel=2)
    img_input = _common.make_input(input_tensor, input_shape)
    axis = _common.bn_axis()

    x = layers.Conv2D(make_divisible(32 * alpha, 8), kernel_size=3, strides=(2, 2), padding="same", use_bias=False,
                      name="Conv1")(img_input)
    x = layers.BatchNormalization(axis=axis, **BN, name="bn_Conv1")(x)
    x = layers.ReLU(6.0, name="Conv1_relu")(x)
    for block_id, (expansion, filters, stride) in enumerate(BLOCKS):
        x = _inverted_res_block(x, expansion=expansion, stride=stride, alpha=alpha, filters=filters,
                                block_id=block_id)
    last_filters = make_divisible(1280 * alpha, 8) if alpha > 1.0 else 1280
    x = layers.Conv2D(last_filters, kernel_size=1, use_bias=False, name="Conv_1")(x)
    x = layers.BatchNormalization(axis=axis, **BN, name="Conv_1_bn")(x)
    x = layers.ReLU(6.0, name="out_relu")(x)

    if include_top:
        x = layers.GlobalAveragePooling2D()(x)
        _common.validate_activation(classifier_activation, weights)
        x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    else:
        x = _common.pooling_head(x, pooling, avg_name=None, max_name=None)
    if name is None:
        name = f"mobilenetv2_{alpha:0.2f}_{rows}"
    model = keras.Model(_common.model_inputs(input_tensor, img_input), x, name=name)
    return request.load(model, alpha=float(alpha), rows=rows)
