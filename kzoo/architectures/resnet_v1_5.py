"""ResNet v1.5 (ResNet50/101/152 with the stride on the 3x3 conv) and symmetric padding.

The bottleneck of He et al. (https://arxiv.org/abs/1512.03385) as torchvision and PaddlePaddle's
``models_name/resnet.py`` (https://github.com/PaddlePaddle/models, fluid/PaddleCV/image_classification)
build it: the first block of a stage strides in its 3x3 conv (Keras' ResNet50 strides in the first 1x1), every
strided 3x3 is padded by one pixel on *each* side (TF's ``'same'`` pads bottom/right only), every first block
has a 1x1 projection shortcut, no conv has a bias and BatchNorm's epsilon is 1e-5.

Layer names and every kernel and BatchNorm shape are Keras' ``ResNet50`` (``conv{stage}_block{n}_{i}_conv``), so
``features_only`` and the stage tables work as for ``resnet``; the function is not Keras' (1.8e-2 apart on
random weights). Weights: PaddlePaddle's 2019 ImageNet release (``weights="paddle"``), input RGB in
``mode="torch"`` preprocessing.
"""

from __future__ import annotations

from keras import layers

from kzoo import index
from kzoo.architectures import _common, _factory
from kzoo.preprocessing import decode_predictions, family_preprocess  # noqa: F401

__all__ = ["ResNet50V1_5", "ResNet101V1_5", "ResNet152V1_5"]

WIDTHS = (64, 128, 256, 512)
BN_EPSILON = 1e-5
SYMMETRIC_PAD = True  # False: TF's 'same' on strided convs (tests show the difference)

preprocess_input = family_preprocess("torch")


def conv_bn(x, filters, kernel_size, name, strides=1, activation="relu", groups=1):
    """A bias-free conv with symmetric ``(k - 1) // 2`` padding, then BatchNorm (eps 1e-5) and ``activation``."""
    pad = (kernel_size - 1) // 2
    explicit = SYMMETRIC_PAD and strides > 1
    if pad and explicit:
        x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="valid" if explicit else "same",
                      use_bias=False, groups=groups, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(axis=_common.bn_axis(), epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return layers.Activation(activation, name=f"{name}_relu")(x) if activation else x


def stem(x):
    """7x7/2 conv (64) + BN + ReLU, then the 3x3/2 max-pool on one pixel of zero padding (after a ReLU, as
    good as Paddle's -inf padding)."""
    x = conv_bn(x, 64, 7, "conv1", strides=2)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    return layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)


def bottleneck(x, filters, stride, projection, name):
    shortcut = conv_bn(x, 4 * filters, 1, f"{name}_0", strides=stride, activation=None) if projection else x
    x = conv_bn(x, filters, 1, f"{name}_1")
    x = conv_bn(x, filters, 3, f"{name}_2", strides=stride)
    x = conv_bn(x, 4 * filters, 1, f"{name}_3", activation=None)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def _body(model_name):
    def body(img_input):
        x = stem(img_input)
        for stage, (blocks, filters) in enumerate(zip(index.get(model_name).stages, WIDTHS)):
            for i in range(blocks):
                stride = 2 if stage and not i else 1
                x = bottleneck(x, filters, stride, i == 0, f"conv{stage + 2}_block{i + 1}")
        return x

    return body


def _builder(depth):
    model_name = f"resnet{depth}_v1_5"
    return _factory.keras_style_builder(
        model_name, _body(model_name), function_name=f"ResNet{depth}V1_5", module=__name__, weights_default="paddle",
        doc=(f"Instantiates ResNet{depth} v1.5 (stride on the 3x3, symmetric padding; keras.applications signature and "
            "Keras' ResNet layer names).\n\nPreprocessing: ``kzoo.resnet_v1_5.preprocess_input`` (torch: RGB, "
            "ImageNet mean/std). ``weights``: None, 'paddle', a registry tag, or a path to an .h5 / .weights.h5."))


ResNet50V1_5 = _builder(50)
ResNet101V1_5 = _builder(101)
ResNet152V1_5 = _builder(152)
