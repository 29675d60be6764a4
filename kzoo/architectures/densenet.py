"""DenseNet-121/169/201, as keras.applications builds them.

A depth is data: the number of conv blocks (BN-ReLU-1x1, BN-ReLU-3x3, growth 32, concatenated) in each
of the four dense blocks (the index rows' ``stages``). Transition blocks (``pool2``..``pool4``) halve
channels and resolution.
"""

from __future__ import annotations

import keras
from keras import layers

from kzoo import index
from kzoo.architectures import _common, _factory
from kzoo.preprocessing import decode_predictions, family_preprocess  # noqa: F401

__all__ = ["DenseNet121", "DenseNet169", "DenseNet201"]

GROWTH_RATE = 32
BN_EPS = 1.001e-5

# Keras' DenseNet words these errors its own way.
WEIGHTS_ERRORS = {
    "weights_error": "The `weights` argument should be either `None` (random initialization), `imagenet` "
                     "(pre-training on ImageNet), or the path to the weights file to be loaded.",
    "classes_error": 'If using `weights` as `"{weights}"` with `include_top` as true, `classes` should be '
                     "{num_classes}",
}

preprocess_input = family_preprocess("torch")


def _bn_relu(x, name):
    x = layers.BatchNormalization(axis=_common.bn_axis(), epsilon=BN_EPS, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def _conv_block(x, name):
    y = _bn_relu(x, f"{name}_0")
    y = layers.Conv2D(4 * GROWTH_RATE, 1, use_bias=False, name=f"{name}_1_conv")(y)
    y = _bn_relu(y, f"{name}_1")
    y = layers.Conv2D(GROWTH_RATE, 3, padding="same", use_bias=False, name=f"{name}_2_conv")(y)
    return layers.Concatenate(axis=_common.bn_axis(), name=f"{name}_concat")([x, y])


def _transition(x, name):
    x = _bn_relu(x, name)
    x = layers.Conv2D(int(x.shape[_common.bn_axis()] * 0.5), 1, use_bias=False, name=f"{name}_conv")(x)
    return layers.AveragePooling2D(2, strides=2, name=f"{name}_pool")(x)


def _densenet(depth, include_top, weights, input_tensor, input_shape, pooling, classes, classifier_activation,
              name):
    if keras.config.image_data_format() == "channels_first":  # Keras checks this before the weights
        raise ValueError(
            "DenseNet does not support the `channels_first` image data format. Switch to `channels_last` "
            "by editing your local config file at ~/.keras/keras.json")
    model_name = f"densenet{depth}"

    def body(img_input):
        x = layers.ZeroPadding2D(padding=((3, 3), (3, 3)))(img_input)
        x = layers.Conv2D(64, 7, strides=2, use_bias=False, name="conv1_conv")(x)
        x = _bn_relu(x, "conv1")
        x = layers.ZeroPadding2D(padding=((1, 1), (1, 1)))(x)
        x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)
        for stage, blocks in enumerate(index.get(model_name).stages, start=2):
            for i in range(1, blocks + 1):
                x = _conv_block(x, f"conv{stage}_block{i}")
            if stage < 5:
                x = _transition(x, f"pool{stage}")
        x = layers.BatchNormalization(axis=_common.bn_axis(), epsilon=BN_EPS, name="bn")(x)
        return layers.Activation("relu", name="relu")(x)

    return _factory.build(model_name, body, include_top=include_top, weights=weights, input_tensor=input_tensor,
                          input_shape=input_shape, pooling=pooling, classes=classes,
                          classifier_activation=classifier_activation, name=name, default_size=224, min_size=32,
                          weights_errors=WEIGHTS_ERRORS, legacy_names=keras2_layer_name)


def keras2_layer_name(name: str) -> str:
    """Keras 2 named the stem ``conv1/conv``, ``conv1/bn``; Keras 3 (and this builder) ``conv1_conv``, ``conv1_bn``."""
    return name.replace("/", "_")


_DOC = """Instantiates the DenseNet{depth} architecture (keras.applications signature, names, weight layout).

    channels_last only, as in Keras. Preprocessing: ``kzoo.densenet.preprocess_input`` (torch mode).
    ``weights``: None, 'imagenet', a registry tag for ``densenet{depth}``, or a path to an .h5 / .weights.h5.
    """


def DenseNet121(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
                classes=1000, classifier_activation="softmax", name="densenet121"):
    return _densenet(121, include_top, weights, input_tensor, input_shape, pooling, classes,
                     classifier_activation, name)


def DenseNet169(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
                classes=1000, classifier_activation="softmax", name="densenet169"):
    return _densenet(169, include_top, weights, input_tensor, input_shape, pooling, classes,
                     classifier_activation, name)


def DenseNet201(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
                classes=1000, classifier_activation="softmax", name="densenet201"):
    return _densenet(201, include_top, weights, input_tensor, input_shape, pooling, classes,
                     classifier_activation, name)


for _depth, _builder in ((121, DenseNet121), (169, DenseNet169), (201, DenseNet201)):
    _builder.__doc__ = _DOC.format(depth=_depth)
