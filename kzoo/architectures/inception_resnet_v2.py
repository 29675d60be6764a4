"""Inception-ResNet v2, as keras.applications builds it.

Stem and ``mixed_5b``, then three repeated residual Inception blocks (a table: type, count, scale) with
reductions ``mixed_6a`` / ``mixed_7a`` between them, and ``conv_7b``. The stem and branch convs are
unnamed in Keras (``conv2d_7``, ...) and created here in Keras' order, so a fresh-session model has
Keras' names; the block-level layers are named (``block35_3_conv``, ``block17_10_ac``, ...).
"""

from __future__ import annotations

import keras
from keras import layers

from kzoo.architectures import _common, _factory
from kzoo.preprocessing import decode_predictions, family_preprocess  # noqa: F401

__all__ = ["InceptionResNetV2"]

# (block type, repeats, residual scale). The very last block8 has scale 1.0 and no activation.
REPEATS = (("block35", 10, 0.17), ("block17", 20, 0.1), ("block8", 10, 0.2))

# Branches of each residual block: a list of (filters, kernel) chains, all stride 1, "same".
BRANCHES = {
    "block35": [[(32, 1)], [(32, 1), (32, 3)], [(32, 1), (48, 3), (64, 3)]],
    "block17": [[(192, 1)], [(128, 1), (160, (1, 7)), (192, (7, 1))]],
    "block8": [[(192, 1)], [(192, 1), (224, (1, 3)), (256, (3, 1))]],
}

# Keras' InceptionResNetV2 words these errors its own way.
WEIGHTS_ERRORS = {
    "weights_error": "The `weights` argument should be either `None` (random initialization), `imagenet` "
                     "(pre-training on ImageNet), or the path to the weights file to be loaded.",
    "classes_error": 'If using `weights="{weights}"` with `include_top=True`, `classes` should be '
                     "{num_classes}. Received classes={classes}",
}

preprocess_input = family_preprocess("tf")


@keras.saving.register_keras_serializable(package="kzoo")
class CustomScaleLayer(layers.Layer):
    """``inputs[0] + scale * inputs[1]``: the scaled residual sum (class name kept for Keras' auto names)."""

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, inputs):
        return inputs[0] + inputs[1] * self.scale

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


def conv_bn(x, filters, kernel_size, strides=1, padding="same", activation="relu", use_bias=False, name=None):
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding=padding, use_bias=use_bias, name=name)(x)
    if not use_bias:
        x = layers.BatchNormalization(axis=_common.bn_axis(), scale=False,
                                      name=None if name is None else f"{name}_bn")(x)
    if activation is not None:
        x = layers.Activation(activation, name=None if name is None else f"{name}_ac")(x)
    return x


def _chain(x, convs):
    for filters, kernel in convs:
        x = conv_bn(x, filters, kernel)
    return x


def residual_block(x, block_type, index, scale, activation="relu"):
    axis = _common.bn_axis()
    branches = [_chain(x, convs) for convs in BRANCHES[block_type]]
    name = f"{block_type}_{index}"
    mixed = layers.Concatenate(axis=axis, name=f"{name}_mixed")(branches)
    up = conv_bn(mixed, x.shape[axis], 1, activation=None, use_bias=True, name=f"{name}_conv")
    x = CustomScaleLayer(scale)([x, up])
    if activation is not None:
        x = layers.Activation(activation, name=f"{name}_ac")(x)
    return x


def _body(img_input):
    axis = _common.bn_axis()
    x = conv_bn(img_input, 32, 3, strides=2, padding="valid")
    x = conv_bn(x, 32, 3, padding="valid")
    x = conv_bn(x, 64, 3)
    x = layers.MaxPooling2D(3, strides=2)(x)
    x = conv_bn(x, 80, 1, padding="valid")
    x = conv_bn(x, 192, 3, padding="valid")
    x = layers.MaxPooling2D(3, strides=2)(x)

    branches = [_chain(x, [(96, 1)]), _chain(x, [(48, 1), (64, 5)]), _chain(x, [(64, 1), (96, 3), (96, 3)])]
    branches.append(conv_bn(layers.AveragePooling2D(3, strides=1, padding="same")(x), 64, 1))
    x = layers.Concatenate(axis=axis, name="mixed_5b")(branches)

    for stage, (block_type, repeats, scale) in enumerate(REPEATS):
        last_stage = stage == len(REPEATS) - 1
        for index in range(1, repeats + 1):
            if last_stage and index == repeats:
                x = residual_block(x, block_type, index, scale=1.0, activation=None)
            else:
                x = residual_block(x, block_type, index, scale=scale)
        if stage == 0:  # mixed_6a: 35x35 -> 17x17
            branches = [conv_bn(x, 384, 3, strides=2, padding="valid"),
                        conv_bn(_chain(x, [(256, 1), (256, 3)]), 384, 3, strides=2, padding="valid"),
                        layers.MaxPooling2D(3, strides=2, padding="valid")(x)]
            x = layers.Concatenate(axis=axis, name="mixed_6a")(branches)
        elif stage == 1:  # mixed_7a: 17x17 -> 8x8
            branches = [conv_bn(conv_bn(x, 256, 1), 384, 3, strides=2, padding="valid"),
                        conv_bn(conv_bn(x, 256, 1), 288, 3, strides=2, padding="valid"),
                        conv_bn(_chain(x, [(256, 1), (288, 3)]), 320, 3, strides=2, padding="valid"),
                        layers.MaxPooling2D(3, strides=2, padding="valid")(x)]
            x = layers.Concatenate(axis=axis, name="mixed_7a")(branches)
    return conv_bn(x, 1536, 1, name="conv_7b")


def InceptionResNetV2(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
                      classes=1000, classifier_activation="softmax", name="inception_resnet_v2"):
    """Instantiates the Inception-ResNet v2 architecture (keras.applications signature, names, layout).

    Default input 299x299, at least 75x75. Preprocessing: ``kzoo.inception_resnet_v2.preprocess_input``.
    ``weights``: None, 'imagenet', a registry tag for ``inceptionresnetv2``, or a path to an .h5.
    """
    return _factory.build(
        "inceptionresnetv2", _body, include_top=include_top, weights=weights, input_tensor=input_tensor,
        input_shape=input_shape, pooling=pooling, classes=classes, classifier_activation=classifier_activation,
        name=name, default_size=299, min_size=75, pool_names=(None, None),  # unnamed in Keras
        weights_errors=WEIGHTS_ERRORS)
