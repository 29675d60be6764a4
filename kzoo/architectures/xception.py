"""Xception, as keras.applications builds it.

Entry flow: a conv stem, then three blocks of two separable convs + a strided max-pool, each added to
a strided 1x1 conv shortcut. Middle flow: eight residual blocks of three separable convs. Exit flow: one
more shortcut block, then two separable convs. The shortcut convs and their BatchNorms are unnamed in
Keras (``conv2d``, ``batch_normalization``, ...), and so they are here, so a model built in a fresh
session has the same names as Keras'.
"""

from __future__ import annotations

from keras import layers

from kzoo.architectures import _common, _factory
from kzoo.preprocessing import decode_predictions, family_preprocess  # noqa: F401

__all__ = ["Xception"]

# (block, first width, second width) of the blocks with a strided conv shortcut.
ENTRY_BLOCKS = ((2, 128, 128), (3, 256, 256), (4, 728, 728))
EXIT_BLOCK = (13, 728, 1024)
MIDDLE_BLOCKS = range(5, 13)
# Keras' Xception words this error without the received value.
WEIGHTS_ERROR = ("The `weights` argument should be either `None` (random initialization), 'imagenet' "
                 "(pre-training on ImageNet), or the path to the weights file to be loaded.")

preprocess_input = family_preprocess("tf")


def _bn(x, name=None):
    return layers.BatchNormalization(axis=_common.bn_axis(), name=name)(x)


def _sepconv_bn(x, filters, name):
    x = layers.SeparableConv2D(filters, (3, 3), padding="same", use_bias=False, name=name)(x)
    return _bn(x, f"{name}_bn")


def _shortcut_block(x, block, widths, relu_first):
    """Two separable convs + strided max-pool, added to a strided 1x1 conv of the block input."""
    residual = layers.Conv2D(widths[1], (1, 1), strides=(2, 2), padding="same", use_bias=False)(x)
    residual = _bn(residual)
    prefix = f"block{block}"
    if relu_first:
        x = layers.Activation("relu", name=f"{prefix}_sepconv1_act")(x)
    x = _sepconv_bn(x, widths[0], f"{prefix}_sepconv1")
    x = layers.Activation("relu", name=f"{prefix}_sepconv2_act")(x)
    x = _sepconv_bn(x, widths[1], f"{prefix}_sepconv2")
    x = layers.MaxPooling2D((3, 3), strides=(2, 2), padding="same", name=f"{prefix}_pool")(x)
    return layers.add([x, residual])


def _middle_block(x, block):
    residual = x
    for i in (1, 2, 3):
        x = layers.Activation("relu", name=f"block{block}_sepconv{i}_act")(x)
        x = _sepconv_bn(x, 728, f"block{block}_sepconv{i}")
    return layers.add([x, residual])


def _body(img_input):
    x = layers.Conv2D(32, (3, 3), strides=(2, 2), use_bias=False, name="block1_conv1")(img_input)
    x = layers.Activation("relu", name="block1_conv1_act")(_bn(x, "block1_conv1_bn"))
    x = layers.Conv2D(64, (3, 3), use_bias=False, name="block1_conv2")(x)
    x = layers.Activation("relu", name="block1_conv2_act")(_bn(x, "block1_conv2_bn"))
    for block, *widths in ENTRY_BLOCKS:
        x = _shortcut_block(x, block, widths, relu_first=block != 2)  # block2 follows an activation
    for block in MIDDLE_BLOCKS:
        x = _middle_block(x, block)
    block, *widths = EXIT_BLOCK
    x = _shortcut_block(x, block, widths, relu_first=True)
    for i, width in ((1, 1536), (2, 2048)):
        x = _sepconv_bn(x, width, f"block14_sepconv{i}")
        x = layers.Activation("relu", name=f"block14_sepconv{i}_act")(x)
    return x


def Xception(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
             classes=1000, classifier_activation="softmax", name="xception"):
    """Instantiates the Xception architecture (keras.applications signature, layer names, weight layout).

    Default input 299x299, at least 71x71. Preprocessing: ``kzoo.xception.preprocess_input`` ([-1, 1]).
    ``weights``: None, 'imagenet', a registry tag for ``xception``, or a path to an .h5 / .weights.h5.
    """
    return _factory.build(
        "xception", _body, include_top=include_top, weights=weights, input_tensor=input_tensor,
        input_shape=input_shape, pooling=pooling, classes=classes, classifier_activation=classifier_activation,
        name=name, default_size=299, min_size=71, pool_names=(None, None),  # unnamed in Keras
        weights_errors={"weights_error": WEIGHTS_ERROR})
