"""MobileNet (v1), as keras.applications builds it.

A 3x3 conv stem, then thirteen depthwise-separable blocks given as a table of (pointwise filters,
stride); ``alpha`` scales the widths, ``depth_multiplier`` the depthwise convs. The classifier is a 1x1
conv (``conv_preds``) on the pooled features, as in the original release.

Pretrained weights exist per (alpha, input rows); the variant is chosen exactly as Keras chooses the
file: alpha 1.0 / 0.75 / 0.5 / 0.25, rows 128 / 160 / 192 / 224, and 224 (with a warning) when the
input is undefined, non-square or another size.
"""

from __future__ import annotations

import warnings

import keras
from keras import layers

from kzoo.architectures import _common, _factory
from kzoo.preprocessing import decode_predictions, family_preprocess  # noqa: F401

__all__ = ["MobileNet", "MobileNetV1ReLU"]

# (pointwise filters, stride) of depthwise-separable blocks 1..13.
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
          (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))
WEIGHT_ROWS = (128, 160, 192, 224)
WEIGHT_ALPHAS = (0.25, 0.5, 0.75, 1.0)

preprocess_input = family_preprocess("tf")


def _depthwise_block(x, filters, alpha, depth_multiplier, stride, block_id, *, relu_max=6.0,
                     stride_pad=((0, 1), (0, 1)), epsilon=1e-3):
    axis = _common.bn_axis()
    if stride != 1:
        x = layers.ZeroPadding2D(stride_pad, name=f"conv_pad_{block_id}")(x)
    x = layers.DepthwiseConv2D((3, 3), padding="same" if stride == 1 else "valid",
                               depth_multiplier=depth_multiplier, strides=(stride, stride), use_bias=False,
                               name=f"conv_dw_{block_id}")(x)
    x = layers.BatchNormalization(axis=axis, epsilon=epsilon, name=f"conv_dw_{block_id}_bn")(x)
    x = layers.ReLU(relu_max, name=f"conv_dw_{block_id}_relu")(x)
    x = layers.Conv2D(int(filters * alpha), (1, 1), padding="same", use_bias=False, strides=(1, 1),
                      name=f"conv_pw_{block_id}")(x)
    x = layers.BatchNormalization(axis=axis, epsilon=epsilon, name=f"conv_pw_{block_id}_bn")(x)
    return layers.ReLU(relu_max, name=f"conv_pw_{block_id}_relu")(x)


def _spatial(shape):
    return (shape[1], shape[2]) if keras.config.image_data_format() == "channels_first" else (shape[0], shape[1])


def MobileNet(input_shape=None, alpha=1.0, depth_multiplier=1, dropout=1e-3, include_top=True,
              weights="imagenet", input_tensor=None, pooling=None, classes=1000,
              classifier_activation="softmax", name=None):
    """Instantiates the MobileNet architecture (keras.applications signature, names, weight layout).

    Preprocessing: ``kzoo.mobilenet.preprocess_input`` ([-1, 1]). ``weights``: None, 'imagenet', a registry
    tag for ``mobilenet``, or a path to an .h5 / .weights.h5. Default model name: ``mobilenet_{alpha}_{rows}``.
    """
    # Keras' own order: weights, input shape, then its alpha / rows rules, then the layers.
    request = _factory.Weights(
        weights, "mobilenet", include_top, classes,
        weights_error="The `weights` argument should be either `None` (random initialization), 'imagenet' "
                      "(pre-training on ImageNet), or the path to the weights file to be loaded. "
                      "Received weights={weights}")
    default_size = 224
    if input_shape is not None:
        rows, cols = _spatial(input_shape)
        if rows == cols and rows in WEIGHT_ROWS:
            default_size = rows
    input_shape = _common.obtain_input_shape(input_shape, default_size=default_size, min_size=32,
                                             require_flatten=include_top, pretrained=request.pretrained)
    rows, cols = _spatial(input_shape)
    if request.pretrained:
        if depth_multiplier != 1:
            raise ValueError("If imagenet weights are being loaded, depth multiplier must be 1.  "
                             f"Received depth_multiplier={depth_multiplier}")
        if alpha not in WEIGHT_ALPHAS:
            raise ValueError("If imagenet weights are being loaded, alpha can be one of`0.25`, `0.50`, `0.75` "
                             f"or `1.0` only.  Received alpha={alpha}")
        if rows != cols or rows not in WEIGHT_ROWS:
            rows = 224
            warnings.warn("`input_shape` is undefined or non-square, or `rows` is not in [128, 160, 192, 224]. "
                          "Weights for input shape (224, 224) will be loaded as the default.", stacklevel=2)
    img_input = _common.make_input(input_tensor, input_shape)
    axis = _common.bn_axis()

    x = layers.Conv2D(int(32 * alpha), (3, 3), padding="same", use_bias=False, strides=(2, 2), name="conv1")(
        img_input)
    x = layers.BatchNormalization(axis=axis, name="conv1_bn")(x)
    x = layers.ReLU(6.0, name="conv1_relu")(x)
    for block_id, (filters, stride) in enumerate(BLOCKS, start=1):
        x = _depthwise_block(x, filters, alpha, depth_multiplier, stride, block_id)

    if include_top:
        x = layers.GlobalAveragePooling2D(keepdims=True)(x)
        x = layers.Dropout(dropout, name="dropout")(x)
        x = layers.Conv2D(classes, (1, 1), padding="same", name="conv_preds")(x)
        x = layers.Reshape((classes,), name="reshape_2")(x)
        _common.validate_activation(classifier_activation, weights)
        x = layers.Activation(activation=classifier_activation, name="predictions")(x)
    else:
        x = _common.pooling_head(x, pooling, avg_name=None, max_name=None)
    if name is None:
        name = f"mobilenet_{alpha:0.2f}_{rows}"
    model = keras.Model(_common.model_inputs(input_tensor, img_input), x, name=name)
    # Keras' file choice: 1.0 / 0.75 / 0.5, anything else (only 0.25 passes validation) -> 0.25.
    variant_alpha = float(alpha) if alpha in (1.0, 0.75, 0.5) else 0.25
    return request.load(model, alpha=variant_alpha, rows=rows)


# MobileNet v1 as the paper (https://arxiv.org/abs/1704.04861) and PaddlePaddle's models_name/mobilenet.py build
# it: plain ReLU, every strided 3x3 padded by one pixel on each side, BatchNorm epsilon 1e-5.
RELU_EPSILON = 1e-5
RELU_MAX = None  # Keras' MobileNet: 6.0
RELU_STRIDE_PAD = 1  # Keras' MobileNet: ((0, 1), (0, 1))


def _relu_body(alpha):
    def body(img_input):
        axis = _common.bn_axis()
        x = layers.ZeroPadding2D(RELU_STRIDE_PAD, name="conv1_pad")(img_input)
        x = layers.Conv2D(int(32 * alpha), (3, 3), padding="valid", use_bias=False, strides=(2, 2), name="conv1")(x)
        x = layers.BatchNormalization(axis=axis, epsilon=RELU_EPSILON, name="conv1_bn")(x)
        x = layers.ReLU(RELU_MAX, name="conv1_relu")(x)
        for block_id, (filters, stride) in enumerate(BLOCKS, start=1):
            x = _depthwise_block(x, filters, alpha, 1, stride, block_id, relu_max=RELU_MAX,
                                 stride_pad=RELU_STRIDE_PAD, epsilon=RELU_EPSILON)
        return x

    return body


def _conv_preds_head(x, classes, classifier_activation):
    """Keras MobileNet's classifier (a 1x1 conv on the pooled features), so one .h5 layout serves both."""
    x = layers.GlobalAveragePooling2D(keepdims=True)(x)
    x = layers.Conv2D(classes, (1, 1), padding="same", name="conv_preds")(x)
    x = layers.Reshape((classes,), name="reshape_2")(x)
    return layers.Activation(activation=classifier_activation, name="predictions")(x)


def MobileNetV1ReLU(input_shape=None, alpha=1.0, include_top=True, weights="paddle", input_tensor=None,
                    pooling=None, classes=1000, classifier_activation="softmax", name="mobilenet_v1_relu"):
    """Instantiates MobileNet v1 with ReLU (not ReLU6) and symmetric padding on its strided convs.

    Layer names and weight shapes are Keras' ``MobileNet(alpha)``. Preprocessing:
    ``kzoo.preprocess_input(x, mode="torch")`` for the Paddle weights (``weights="paddle"``, alpha 1.0).
    """
    return _factory.build("mobilenet_v1_relu", _relu_body(alpha), head=_conv_preds_head, include_top=include_top,
                          weights=weights, input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                          classes=classes, classifier_activation=classifier_activation, name=name,
                          default_size=224, min_size=32, pool_names=(None, None))
