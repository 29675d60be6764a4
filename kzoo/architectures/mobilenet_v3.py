"""MobileNetV3 Small and Large, as keras.applications builds them.

Each size is a table of inverted residual blocks (expansion, filters, kernel, stride, squeeze-excite,
activation); ``minimalistic`` swaps 5x5 kernels, hard-swish and squeeze-excite for 3x3, ReLU and none.
The model rescales its input to [-1, 1] itself (``include_preprocessing=True``), so
``preprocess_input`` is the identity, as in Keras. The classifier head (``conv_2``, ``logits``) is only
built with ``include_top=True``, matching Keras' ``_no_top_v2`` weight files.
"""

from __future__ import annotations

import warnings

import keras
from keras import layers

from kzoo.architectures import _common, _factory
from kzoo.architectures.mobilenet_v2 import make_divisible
from kzoo.preprocessing import decode_predictions  # noqa: F401
from kzoo.preprocessing import passthrough_preprocess_input as preprocess_input  # noqa: F401

__all__ = ["MobileNetV3Small", "MobileNetV3Large"]

# (expansion, filters, kernel, stride, squeeze-excite, activation). kernel "k" / se True / act "a" take the
# full model's values (5, 0.25, hard-swish) or the minimalistic ones (3, none, relu).
SMALL = ((1, 16, 3, 2, True, "relu"), (72 / 16, 24, 3, 2, False, "relu"), (88 / 24, 24, 3, 1, False, "relu"),
         (4, 40, "k", 2, True, "a"), (6, 40, "k", 1, True, "a"), (6, 40, "k", 1, True, "a"),
         (3, 48, "k", 1, True, "a"), (3, 48, "k", 1, True, "a"),
         (6, 96, "k", 2, True, "a"), (6, 96, "k", 1, True, "a"), (6, 96, "k", 1, True, "a"))
LARGE = ((1, 16, 3, 1, False, "relu"), (4, 24, 3, 2, False, "relu"), (3, 24, 3, 1, False, "relu"),
         (3, 40, "k", 2, True, "relu"), (3, 40, "k", 1, True, "relu"), (3, 40, "k", 1, True, "relu"),
         (6, 80, 3, 2, False, "a"), (2.5, 80, 3, 1, False, "a"), (2.3, 80, 3, 1, False, "a"),
         (2.3, 80, 3, 1, False, "a"), (6, 112, 3, 1, True, "a"), (6, 112, 3, 1, True, "a"),
         (6, 160, "k", 2, True, "a"), (6, 160, "k", 1, True, "a"), (6, 160, "k", 1, True, "a"))
LAST_POINT_CHANNELS = {"small": 1024, "large": 1280}
BN = dict(epsilon=1e-3, momentum=0.999)


def keras2_layer_name(name: str) -> str:
    """The Keras 3 name of a layer in a tf.keras-era MobileNetV3 file (``expanded_conv/project/BatchNorm``
    -> ``expanded_conv_project_bn``, ``Logits`` -> ``logits``): the released ``.h5`` files use the old names."""
    return name.lower().replace("/batchnorm", "_bn").replace("/", "_")


def relu(x):
    return layers.ReLU()(x)


def hard_sigmoid(x):
    return layers.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)


def hard_swish(x):
    return layers.Activation("hard_swish")(x)


def _se_block(inputs, filters, se_ratio, prefix):
    x = layers.GlobalAveragePooling2D(keepdims=True, name=f"{prefix}squeeze_excite_avg_pool")(inputs)
    x = layers.Conv2D(make_divisible(filters * se_ratio), kernel_size=1, padding="same",
                      name=f"{prefix}squeeze_excite_conv")(x)
    x = layers.ReLU(name=f"{prefix}squeeze_excite_relu")(x)
    x = layers.Conv2D(filters, kernel_size=1, padding="same", name=f"{prefix}squeeze_excite_conv_1")(x)
    return layers.Multiply(name=f"{prefix}squeeze_excite_mul")([inputs, hard_sigmoid(x)])


def _inverted_res_block(x, expansion, filters, kernel_size, stride, se_ratio, activation, block_id):
    axis = _common.bn_axis()
    shortcut = x
    in_filters = x.shape[axis]
    prefix = "expanded_conv_"
    if block_id:
        prefix = f"expanded_conv_{block_id}_"
        x = layers.Conv2D(make_divisible(in_filters * expansion), kernel_size=1, padding="same", use_bias=False,
                          name=f"{prefix}expand")(x)
        x = activation(layers.BatchNormalization(axis=axis, **BN, name=f"{prefix}expand_bn")(x))
    if stride == 2:
        x = layers.ZeroPadding2D(padding=_common.correct_pad(x, kernel_size), name=f"{prefix}depthwise_pad")(x)
    x = layers.DepthwiseConv2D(kernel_size, strides=stride, padding="same" if stride == 1 else "valid",
                               use_bias=False, name=f"{prefix}depthwise")(x)
    x = activation(layers.BatchNormalization(axis=axis, **BN, name=f"{prefix}depthwise_bn")(x))
    if se_ratio:
        x = _se_block(x, make_divisible(in_filters * expansion), se_ratio, prefix)
    x = layers.Conv2D(filters, kernel_size=1, padding="same", use_bias=False, name=f"{prefix}project")(x)
    x = layers.BatchNormalization(axis=axis, **BN, name=f"{prefix}project_bn")(x)
    if stride == 1 and in_filters == filters:
        x = layers.Add(name=f"{prefix}add")([shortcut, x])
    return x


def _input_shape(input_shape, input_tensor):
    """Keras' MobileNetV3 input handling (including its (cols, rows) order for a tensor's shape)."""
    channels_first = keras.config.image_data_format() == "channels_first"
    if input_shape is not None and input_tensor is not None:
        if not keras.backend.is_keras_tensor(input_tensor):
            raise ValueError("input_tensor specified: ", input_tensor, "is not a keras tensor")
        if channels_first:
            if input_tensor.shape[1] != input_shape[1]:
                raise ValueError(
                    "When backend.image_data_format()=channels_first, input_shape[1] must equal "
                    f"input_tensor.shape[1].  Received input_shape={input_shape}, "
                    f"input_tensor.shape={input_tensor.shape}")
        elif input_tensor.shape[2] != input_shape[1]:
            raise ValueError("input_shape[1] must equal input_tensor.shape[2].  Received "
                             f"input_shape={input_shape}, input_tensor.shape={input_tensor.shape}")
    if input_shape is None and input_tensor is not None and keras.backend.is_keras_tensor(input_tensor):
        if channels_first:
            rows, cols = input_tensor.shape[2], input_tensor.shape[3]
            input_shape = (3, cols, rows)
        else:
            rows, cols = input_tensor.shape[1], input_tensor.shape[2]
            input_shape = (cols, rows, 3)
    if input_shape is None and input_tensor is None:
        input_shape = (3, None, None) if channels_first else (None, None, 3)
    return input_shape


def _mobilenet_v3(model_type, input_shape, alpha, minimalistic, include_top, weights, input_tensor, classes,
                  pooling, dropout_rate, classifier_activation, include_preprocessing, name):
    # Keras' own order: weights, its input-shape rules (no obtain_input_shape), alpha, then the layers.
    request = _factory.Weights(
        weights, f"mobilenetv3{model_type}", include_top, classes,
        weights_error="The `weights` argument should be either `None` (random initialization), `imagenet` "
                      "(pre-training on ImageNet), or the path to the weights file to be loaded.  "
                      "Received weights={weights}",
        classes_error='If using `weights="{weights}"` with `include_top` as true, `classes` should be '
                      "{num_classes}.  Received classes={classes}")
    input_shape = _input_shape(input_shape, input_tensor)
    if keras.config.image_data_format() == "channels_last":
        rows, cols = input_shape[0], input_shape[1]
    else:
        rows, cols = input_shape[1], input_shape[2]
    if rows and cols and (rows < 32 or cols < 32):
        raise ValueError(f"Input size must be at least 32x32; Received `input_shape={input_shape}`")
    if request.pretrained:
        if (not minimalistic and alpha not in [0.75, 1.0]) or (minimalistic and alpha != 1.0):
            raise ValueError("If imagenet weights are being loaded, alpha can be one of `0.75`, `1.0` for non "
                             "minimalistic or `1.0` for minimalistic only.")
        if rows != cols or rows != 224:
            warnings.warn("`input_shape` is undefined or non-square, or `rows` is not 224. Weights for input "
                          "shape (224, 224) will be loaded as the default.", stacklevel=3)
    img_input = _common.make_input(input_tensor, input_shape)
    axis = _common.bn_axis()
    if minimalistic:
        kernel, activation, se_ratio = 3, relu, None
    else:
        kernel, activation, se_ratio = 5, hard_swish, 0.25

    x = img_input
    if include_preprocessing:
        x = layers.Rescaling(scale=1.0 / 127.5, offset=-1.0)(x)
    x = layers.Conv2D(16, kernel_size=3, strides=(2, 2), padding="same", use_bias=False, name="conv")(x)
    x = activation(layers.BatchNormalization(axis=axis, **BN, name="conv_bn")(x))
    for block_id, (expansion, filters, k, stride, se, act) in enumerate(SMALL if model_type == "small" else LARGE):
        x = _inverted_res_block(x, expansion, make_divisible(filters * alpha), kernel if k == "k" else k, stride,
                                se_ratio if se else None, activation if act == "a" else relu, block_id)
    last_conv_channels = make_divisible(x.shape[axis] * 6)
    last_point_channels = LAST_POINT_CHANNELS[model_type]
    if alpha > 1.0:
        last_point_channels = make_divisible(last_point_channels * alpha)
    x = layers.Conv2D(last_conv_channels, kernel_size=1, padding="same", use_bias=False, name="conv_1")(x)
    x = activation(layers.BatchNormalization(axis=axis, **BN, name="conv_1_bn")(x))

    if include_top:
        x = layers.GlobalAveragePooling2D(keepdims=True)(x)
        x = layers.Conv2D(last_point_channels, kernel_size=1, padding="same", use_bias=True, name="conv_2")(x)
        x = activation(x)
        if dropout_rate > 0:
            x = layers.Dropout(dropout_rate)(x)
        x = layers.Conv2D(classes, kernel_size=1, padding="same", name="logits")(x)
        x = layers.Flatten()(x)
        _common.validate_activation(classifier_activation, weights)
        x = layers.Activation(activation=classifier_activation, name="predictions")(x)
    else:
        x = _common.pooling_head(x, pooling)
    model = keras.Model(_common.model_inputs(input_tensor, img_input), x, name=name)
    return request.load(model, legacy_names=keras2_layer_name, alpha=float(alpha), minimalistic=bool(minimalistic))


def MobileNetV3Small(input_shape=None, alpha=1.0, minimalistic=False, include_top=True, weights="imagenet",
                     input_tensor=None, classes=1000, pooling=None, dropout_rate=0.2,
                     classifier_activation="softmax", include_preprocessing=True, name="MobileNetV3Small"):
    """Instantiates MobileNetV3Small (keras.applications signature, names, weight layout).

    The model takes [0, 255] inputs when ``include_preprocessing=True``. ``weights``: None, 'imagenet', a
    registry tag for ``mobilenetv3small`` (variant: alpha, minimalistic), or a path to an .h5 / .weights.h5.
    """
    return _mobilenet_v3("small", input_shape, alpha, minimalistic, include_top, weights, input_tensor, classes,
                         pooling, dropout_rate, classifier_activation, include_preprocessing, name)


def MobileNetV3Large(input_shape=None, alpha=1.0, minimalistic=False, include_top=True, weights="imagenet",
                     input_tensor=None, classes=1000, pooling=None, dropout_rate=0.2,
                     classifier_activation="softmax", include_preprocessing=True, name="MobileNetV3Large"):
    """Instantiates MobileNetV3Large (keras.applications signature, names, weight layout).

    The model takes [0, 255] inputs when ``include_preprocessing=True``. ``weights``: None, 'imagenet', a
    registry tag for ``mobilenetv3large`` (variant: alpha, minimalistic), or a path to an .h5 / .weights.h5.
    """
    return _mobilenet_v3("large", input_shape, alpha, minimalistic, include_top, weights, input_tensor, classes,
                         pooling, dropout_rate, classifier_activation, include_preprocessing, name)
