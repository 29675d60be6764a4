"""SE-ResNeXt50/101 (32x4d): ResNeXt bottlenecks (https://arxiv.org/abs/1611.05431) with squeeze-and-excitation
(https://arxiv.org/abs/1709.01507), as PaddlePaddle's ``models_name/se_resnext.py`` builds them
(https://github.com/PaddlePaddle/models, fluid/PaddleCV/image_classification).

A block: 1x1 conv (width w) -> grouped 3x3 conv (w, 32 groups, the stage's stride here, padded one pixel on each
side) -> 1x1 conv (2w) -> BN; squeeze-excite (global average -> Dense(2w/16, ReLU) -> Dense(2w, sigmoid) ->
scale); plus the shortcut (a 1x1 conv + BN projection in each stage's first block); ReLU. Stem and max-pool as
:mod:`kzoo.architectures.resnet_v1_5`; no conv biases; BN epsilon 1e-5. The release trained the classifier
behind a ``downscale_in_infer`` dropout; the converter folds its 0.5 into ``predictions``, so there is none here.
Layer names follow Keras' ResNet (``conv{stage}_block{n}_{i}_conv``, ``..._se_squeeze``, ``..._se_excite``).
"""

from __future__ import annotations

from keras import layers

from kzoo import index
from kzoo.architectures import _factory
from kzoo.architectures.resnet_v1_5 import conv_bn, stem
from kzoo.preprocessing import decode_predictions, family_preprocess  # noqa: F401

__all__ = ["SEResNeXt50_32x4d", "SEResNeXt101_32x4d"]

WIDTHS = (128, 256, 512, 1024)  # grouped-conv width of each stage; the block outputs twice that
CARDINALITY = 32
SE_REDUCTION = 16

preprocess_input = family_preprocess("torch")


def squeeze_excite(x, channels, name):
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_pool")(x)
    s = layers.Dense(channels // SE_REDUCTION, activation="relu", name=f"{name}_se_squeeze")(s)
    s = layers.Dense(channels, activation="sigmoid", name=f"{name}_se_excite")(s)
    return layers.Multiply(name=f"{name}_se_scale")([x, s])


def block(x, width, stride, projection, name):
    shortcut = conv_bn(x, 2 * width, 1, f"{name}_0", strides=stride, activation=None) if projection else x
    x = conv_bn(x, width, 1, f"{name}_1")
    x = conv_bn(x, width, 3, f"{name}_2", strides=stride, groups=CARDINALITY)
    x = conv_bn(x, 2 * width, 1, f"{name}_3", activation=None)
    x = squeeze_excite(x, 2 * width, name)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def _body(model_name):
    def body(img_input):
        x = stem(img_input)
        for stage, (blocks, width) in enumerate(zip(index.get(model_name).stages, WIDTHS)):
            for i in range(blocks):
                x = block(x, width, 2 if stage and not i else 1, i == 0, f"conv{stage + 2}_block{i + 1}")
        return x

    return body


def _builder(depth):
    model_name = f"se_resnext{depth}_32x4d"
    return _factory.keras_style_builder(
        model_name, _body(model_name), function_name=f"SEResNeXt{depth}_32x4d", module=__name__, weights_default="paddle",
        doc=(f"Instantiates SE-ResNeXt{depth} 32x4d (keras.applications signature, Keras-style layer names).\n\n"
            "Preprocessing: ``kzoo.se_resnext.preprocess_input`` (torch: RGB, ImageNet mean/std). ``weights``: None, "
            "'paddle', a registry tag, or a path to an .h5 / .weights.h5."))


SEResNeXt50_32x4d = _builder(50)
SEResNeXt101_32x4d = _builder(101)
