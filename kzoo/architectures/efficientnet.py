"""EfficientNet B0-B7 (Tan & Le, 2019), weight-compatible with ``keras.applications.efficientnet``.

The eight variants are rows of ``VARIANTS`` (width / depth coefficient, dropout; the default input size is the index row's)
applied to one stage table, ``BLOCKS``. Layer names, weighted-layer order and weight shapes are those of
keras.applications, so the released ``efficientnetb*.h5`` files load by name (kzoo) and by order (Keras).
The builders take pixels in [0, 255] (the scaling is part of the model); ``weights`` is None, 'imagenet',
another registry tag for the model, or a .h5 / .weights.h5 path.

The input Normalization quirk
-----------------------------
The stem is ``Rescaling(1/255)`` then a *weighted* ``Normalization`` layer whose ``mean`` / ``variance``
/ ``count`` are read from the weight file like any other layer's weights (it is a weighted layer in the
legacy h5 order, between the input and ``stem_conv``). The released files store the ImageNet standard
deviations as ``variance``, so ``Normalization`` divides by ``sqrt(std)`` only; the original
implementation divided by ``std``. keras.applications therefore inserts, for ``weights="imagenet"``
only, a weightless ``Rescaling(1/sqrt(std))`` right after the Normalization (tensorflow#49930). kzoo
does the same for any registry tag (the registry's EfficientNet files are those released files), and
not for ``weights=None`` or a file path, exactly as Keras.

Which numbers kzoo reproduces (measured, float64, random weights with random Normalization statistics,
tf_keras 2.21 / Keras 3.15): after loading a legacy h5, tf_keras (``load_weights`` or ``set_weights``),
Keras 3 ``load_weights`` and kzoo all give identical outputs -- the stored ``mean`` / ``variance`` are
applied. The one that differs (by ~3e-4 relative) is Keras 3 ``Layer.set_weights``: Keras 3's
Normalization keeps a snapshot of its statistics taken by ``finalize_state()``, and ``set_weights``
does not call it, so the layer keeps normalising with the statistics it had before (build-time zeros /
ones). The released files were made for Keras 2, whose numbers are those of the loaders, so kzoo
reproduces the loaders: kzoo's loader calls ``finalize_state()`` after assigning. If you copy weights
into a kzoo (or Keras 3) EfficientNet with ``set_weights``, call
``model.get_layer("normalization").finalize_state()`` afterwards. ``tests/test_compat_modern.py``
checks both facts.

Auto-named layers: Keras leaves the stem's ``Rescaling`` / ``Normalization`` unnamed, so their names
depend on what else was built in the session. kzoo names them as a fresh session would
(``rescaling``, ``normalization``, ``rescaling_1``), which keeps name-based loading of the released files
stable.
"""

from __future__ import annotations

import math

from keras import layers

from kzoo import index
from kzoo.architectures import _common, _factory
from kzoo.preprocessing import decode_predictions, passthrough_preprocess_input as preprocess_input  # noqa: F401

__all__ = [f"EfficientNetB{i}" for i in range(8)]

# One stage per row: kernel, repeats, filters_in, filters_out, expand_ratio, strides, se_ratio.
# Every block keeps its identity shortcut when shapes allow (Keras' id_skip=True).
BLOCKS = (
    (3, 1, 32, 16, 1, 1, 0.25),
    (3, 2, 16, 24, 6, 2, 0.25),
    (5, 2, 24, 40, 6, 2, 0.25),
    (3, 3, 40, 80, 6, 2, 0.25),
    (5, 3, 80, 112, 6, 1, 0.25),
    (5, 4, 112, 192, 6, 2, 0.25),
    (3, 1, 192, 320, 6, 1, 0.25),
)

# variant: (width coefficient, depth coefficient, dropout before the classifier)
VARIANTS = {
    "b0": (1.0, 1.0, 0.2),
    "b1": (1.0, 1.1, 0.2),
    "b2": (1.1, 1.2, 0.3),
    "b3": (1.2, 1.4, 0.3),
    "b4": (1.4, 1.8, 0.4),
    "b5": (1.6, 2.2, 0.4),
    "b6": (1.8, 2.6, 0.5),
    "b7": (2.0, 3.1, 0.5),
}

DROP_CONNECT_RATE = 0.2
DEPTH_DIVISOR = 8
ACTIVATION = "swish"
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)

# keras.applications' initialisers, so training from scratch starts from the same distribution.
CONV_INIT = {"class_name": "VarianceScaling",
             "config": {"scale": 2.0, "mode": "fan_out", "distribution": "truncated_normal"}}
DENSE_INIT = {"class_name": "VarianceScaling",
              "config": {"scale": 1.0 / 3.0, "mode": "fan_out", "distribution": "uniform"}}

# keras.applications.efficientnet words its errors like this (no "Received" in the first one).
WEIGHTS_ERROR = (
    "The `weights` argument should be either "
    "`None` (random initialization), `imagenet` "
    "(pre-training on ImageNet), "
    "or the path to the weights file to be loaded."
)
CLASSES_ERROR = 'If using `weights="imagenet"` with `include_top` as true, `classes` should be 1000'


def round_filters(filters, width, divisor=DEPTH_DIVISOR):
    """Scale a channel count by ``width`` and round to a multiple of ``divisor`` (never down >10%)."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats, depth):
    return int(math.ceil(depth * repeats))


def mbconv_block(x, *, filters_in, filters_out, kernel, strides, expand_ratio, se_ratio, drop_rate, prefix):
    """Inverted residual: expand 1x1, depthwise, squeeze-excite, project 1x1, shortcut."""
    axis = _common.bn_axis()
    inputs = x
    filters = filters_in * expand_ratio
    if expand_ratio != 1:
        x = layers.Conv2D(filters, 1, padding="same", use_bias=False, kernel_initializer=CONV_INIT,
                          name=f"{prefix}expand_conv")(x)
        x = layers.BatchNormalization(axis=axis, name=f"{prefix}expand_bn")(x)
        x = layers.Activation(ACTIVATION, name=f"{prefix}expand_activation")(x)
    if strides == 2:
        x = layers.ZeroPadding2D(_common.correct_pad(x, kernel), name=f"{prefix}dwconv_pad")(x)
    x = layers.DepthwiseConv2D(kernel, strides=strides, padding="valid" if strides == 2 else "same",
                               use_bias=False, depthwise_initializer=CONV_INIT, name=f"{prefix}dwconv")(x)
    x = layers.BatchNormalization(axis=axis, name=f"{prefix}bn")(x)
    x = layers.Activation(ACTIVATION, name=f"{prefix}activation")(x)
    if 0 < se_ratio <= 1:
        x = squeeze_excite(x, filters, max(1, int(filters_in * se_ratio)), prefix)
    x = layers.Conv2D(filters_out, 1, padding="same", use_bias=False, kernel_initializer=CONV_INIT,
                      name=f"{prefix}project_conv")(x)
    x = layers.BatchNormalization(axis=axis, name=f"{prefix}project_bn")(x)
    if strides == 1 and filters_in == filters_out:
        if drop_rate > 0:  # stochastic depth: drops the whole residual per sample
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{prefix}drop")(x)
        x = layers.add([x, inputs], name=f"{prefix}add")
    return x


def squeeze_excite(x, filters, filters_se, prefix):
    se_shape = (filters, 1, 1) if _common.bn_axis() == 1 else (1, 1, filters)
    se = layers.GlobalAveragePooling2D(name=f"{prefix}se_squeeze")(x)
    se = layers.Reshape(se_shape, name=f"{prefix}se_reshape")(se)
    se = layers.Conv2D(filters_se, 1, padding="same", activation=ACTIVATION, kernel_initializer=CONV_INIT,
                       name=f"{prefix}se_reduce")(se)
    se = layers.Conv2D(filters, 1, padding="same", activation="sigmoid", kernel_initializer=CONV_INIT,
                       name=f"{prefix}se_expand")(se)
    return layers.multiply([x, se], name=f"{prefix}se_excite")


def build(model_name, body, *, default_size, dropout, include_top, weights, input_tensor, input_shape, pooling,
          classes, classifier_activation, name, weights_error, classes_error):
    """keras.applications' EfficientNet (and EfficientNetV2) builder: the one path, with a stem that sees
    the resolved input shape and whether the weights are pretrained, and a ``top_dropout`` head."""

    def head(x, classes, classifier_activation):
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if dropout > 0:
            x = layers.Dropout(dropout, name="top_dropout")(x)
        return layers.Dense(classes, activation=classifier_activation, kernel_initializer=DENSE_INIT,
                            name="predictions")(x)

    return _factory.build(model_name, body, head=head, include_top=include_top, weights=weights,
                          input_tensor=input_tensor, input_shape=input_shape, pooling=pooling, classes=classes,
                          classifier_activation=classifier_activation, name=name, default_size=default_size,
                          min_size=32, weights_errors={"weights_error": weights_error, "classes_error": classes_error},
                          body_sees_input=True)


def _body(width, depth):
    def body(img_input, input_shape, pretrained):
        axis = _common.bn_axis()
        x = layers.Rescaling(1.0 / 255.0, name="rescaling")(img_input)
        x = layers.Normalization(axis=axis, name="normalization")(x)
        if pretrained:  # the released files' variance is the std: divide by the other sqrt(std) (see above)
            x = layers.Rescaling([1.0 / math.sqrt(s) for s in IMAGENET_STDDEV_RGB], name="rescaling_1")(x)
        x = layers.ZeroPadding2D(_common.correct_pad(x, 3), name="stem_conv_pad")(x)
        x = layers.Conv2D(round_filters(32, width), 3, strides=2, padding="valid", use_bias=False,
                          kernel_initializer=CONV_INIT, name="stem_conv")(x)
        x = layers.BatchNormalization(axis=axis, name="stem_bn")(x)
        x = layers.Activation(ACTIVATION, name="stem_activation")(x)

        total_blocks = float(sum(round_repeats(row[1], depth) for row in BLOCKS))
        block_index = 0
        for stage, (kernel, repeats, f_in, f_out, expand, strides, se_ratio) in enumerate(BLOCKS):
            f_in, f_out = round_filters(f_in, width), round_filters(f_out, width)
            for j in range(round_repeats(repeats, depth)):
                x = mbconv_block(
                    x, filters_in=f_in if j == 0 else f_out, filters_out=f_out, kernel=kernel,
                    strides=strides if j == 0 else 1, expand_ratio=expand, se_ratio=se_ratio,
                    drop_rate=DROP_CONNECT_RATE * block_index / total_blocks,
                    prefix=f"block{stage + 1}{chr(ord('a') + j)}_")
                block_index += 1

        x = layers.Conv2D(round_filters(1280, width), 1, padding="same", use_bias=False,
                          kernel_initializer=CONV_INIT, name="top_conv")(x)
        x = layers.BatchNormalization(axis=axis, name="top_bn")(x)
        return layers.Activation(ACTIVATION, name="top_activation")(x)

    return body


def _efficientnet(variant, include_top, weights, input_tensor, input_shape, pooling, classes, classifier_activation,
                  name):
    width, depth, dropout = VARIANTS[variant]
    model_name = f"efficientnet{variant}"
    return build(model_name, _body(width, depth), default_size=index.get(model_name).input_size, dropout=dropout,
                 include_top=include_top, weights=weights, input_tensor=input_tensor, input_shape=input_shape,
                 pooling=pooling, classes=classes, classifier_activation=classifier_activation, name=name,
                 weights_error=WEIGHTS_ERROR, classes_error=CLASSES_ERROR)


def EfficientNetB0(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
                   classes=1000, classifier_activation="softmax", name="efficientnetb0"):
    """Instantiates EfficientNet-B0, as keras.applications.EfficientNetB0 (see the module docstring)."""
    return _efficientnet("b0", include_top, weights, input_tensor, input_shape, pooling, classes,
                         classifier_activation, name)


def EfficientNetB1(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
                   classes=1000, classifier_activation="softmax", name="efficientnetb1"):
    """Instantiates EfficientNet-B1, as keras.applications.EfficientNetB1 (see the module docstring)."""
    return _efficientnet("b1", include_top, weights, input_tensor, input_shape, pooling, classes,
                         classifier_activation, name)


def EfficientNetB2(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
                   classes=1000, classifier_activation="softmax", name="efficientnetb2"):
    """Instantiates EfficientNet-B2, as keras.applications.EfficientNetB2 (see the module docstring)."""
    return _efficientnet("b2", include_top, weights, input_tensor, input_shape, pooling, classes,
                         classifier_activation, name)


def EfficientNetB3(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
                   classes=1000, classifier_activation="softmax", name="efficientnetb3"):
    """Instantiates EfficientNet-B3, as keras.applications.EfficientNetB3 (see the module docstring)."""
    return _efficientnet("b3", include_top, weights, input_tensor, input_shape, pooling, classes,
                         classifier_activation, name)


def EfficientNetB4(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
                   classes=1000, classifier_activation="softmax", name="efficientnetb4"):
    """Instantiates EfficientNet-B4, as keras.applications.EfficientNetB4 (see the module docstring)."""
    return _efficientnet("b4", include_top, weights, input_tensor, input_shape, pooling, classes,
                         classifier_activation, name)


def EfficientNetB5(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
                   classes=1000, classifier_activation="softmax", name="efficientnetb5"):
    """Instantiates EfficientNet-B5, as keras.applications.EfficientNetB5 (see the module docstring)."""
    return _efficientnet("b5", include_top, weights, input_tensor, input_shape, pooling, classes,
                         classifier_activation, name)


def EfficientNetB6(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
                   classes=1000, classifier_activation="softmax", name="efficientnetb6"):
    """Instantiates EfficientNet-B6, as keras.applications.EfficientNetB6 (see the module docstring)."""
    return _efficientnet("b6", include_top, weights, input_tensor, input_shape, pooling, classes,
                         classifier_activation, name)


def EfficientNetB7(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
                   classes=1000, classifier_activation="softmax", name="efficientnetb7"):
    """Instantiates EfficientNet-B7, as keras.applications.EfficientNetB7 (see the module docstring)."""
    return _efficientnet("b7", include_top, weights, input_tensor, input_shape, pooling, classes,
                         classifier_activation, name)
