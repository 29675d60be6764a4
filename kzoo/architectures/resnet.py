"""ResNet v1 (ResNet50/101/152) and v2 (ResNet50V2/101V2/152V2), as keras.applications builds them.

A depth is data: the number of bottleneck blocks in each of the four stages. v1 (post-activation) puts
the stride on the first block of a stage; v2 (pre-activation, identity mappings) on the last, and its
stem has no BatchNorm. Layer names are Keras' (``conv{stage}_block{n}_{i}_conv``), so the released
``.h5`` files load by name.

The TF-slim names ``resnet_v2_50/101/152`` are the same v2 network with one difference, see
:func:`resnet_v2_50`.
"""

from __future__ import annotations

from keras import layers

from kzoo import index
from kzoo.architectures import _common, _factory
from kzoo.preprocessing import decode_predictions, family_preprocess

__all__ = ["ResNet50", "ResNet101", "ResNet152", "ResNet50V2", "ResNet101V2", "ResNet152V2"]

# Bottleneck blocks per stage (conv2..conv5) are the index rows' ``stages``; the widths are fixed.
WIDTHS = (64, 128, 256, 512)
BN_EPS = 1.001e-5

preprocess_input = family_preprocess("caffe")  # ResNet v1; the v2 models use "tf" (resnet_v2 module)
preprocess_input_v2 = family_preprocess("tf")


def _bn(x, name):
    return layers.BatchNormalization(axis=_common.bn_axis(), epsilon=BN_EPS, name=name)(x)


def _block_v1(x, filters, stride, projection, name):
    """Post-activation bottleneck: 1x1 (strided) -> 3x3 -> 1x1 (4x), added to the shortcut, ReLU."""
    if projection:
        shortcut = layers.Conv2D(4 * filters, 1, strides=stride, name=f"{name}_0_conv")(x)
        shortcut = _bn(shortcut, f"{name}_0_bn")
    else:
        shortcut = x
    x = layers.Conv2D(filters, 1, strides=stride, name=f"{name}_1_conv")(x)
    x = layers.Activation("relu", name=f"{name}_1_relu")(_bn(x, f"{name}_1_bn"))
    x = layers.Conv2D(filters, 3, padding="same", name=f"{name}_2_conv")(x)
    x = layers.Activation("relu", name=f"{name}_2_relu")(_bn(x, f"{name}_2_bn"))
    x = _bn(layers.Conv2D(4 * filters, 1, name=f"{name}_3_conv")(x), f"{name}_3_bn")
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def _block_v2(x, filters, stride, projection, name):
    """Pre-activation bottleneck: BN-ReLU, 1x1 -> 3x3 (strided) -> 1x1 (4x, with bias), added."""
    preact = layers.Activation("relu", name=f"{name}_preact_relu")(_bn(x, f"{name}_preact_bn"))
    if projection:
        shortcut = layers.Conv2D(4 * filters, 1, strides=stride, name=f"{name}_0_conv")(preact)
    elif stride > 1:
        shortcut = layers.MaxPooling2D(1, strides=stride)(x)  # unnamed in Keras too
    else:
        shortcut = x
    x = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_1_conv")(preact)
    x = layers.Activation("relu", name=f"{name}_1_relu")(_bn(x, f"{name}_1_bn"))
    x = layers.ZeroPadding2D(padding=((1, 1), (1, 1)), name=f"{name}_2_pad")(x)
    x = layers.Conv2D(filters, 3, strides=stride, use_bias=False, name=f"{name}_2_conv")(x)
    x = layers.Activation("relu", name=f"{name}_2_relu")(_bn(x, f"{name}_2_bn"))
    x = layers.Conv2D(4 * filters, 1, name=f"{name}_3_conv")(x)
    return layers.Add(name=f"{name}_out")([shortcut, x])


def _stages_v1(x, depths):
    for stage, (blocks, filters) in enumerate(zip(depths, WIDTHS)):
        first_stride = 1 if stage == 0 else 2  # conv2 follows the max-pool: no stride of its own
        for i in range(blocks):
            x = _block_v1(x, filters, first_stride if i == 0 else 1, i == 0, f"conv{stage + 2}_block{i + 1}")
    return x


def _stages_v2(x, depths):
    for stage, (blocks, filters) in enumerate(zip(depths, WIDTHS)):
        last_stride = 2 if stage < 3 else 1  # v2 downsamples at the end of conv2..conv4
        for i in range(blocks):
            stride = last_stride if i == blocks - 1 else 1
            x = _block_v2(x, filters, stride, i == 0, f"conv{stage + 2}_block{i + 1}")
    return x


def _resnet(model_name, preact, *, include_top, weights, input_tensor, input_shape, pooling, classes,
            classifier_activation, name, slim_pool=False):
    def body(img_input):
        x = layers.ZeroPadding2D(padding=((3, 3), (3, 3)), name="conv1_pad")(img_input)
        x = layers.Conv2D(64, 7, strides=2, use_bias=True, name="conv1_conv")(x)
        if not preact:
            x = layers.Activation("relu", name="conv1_relu")(_bn(x, "conv1_bn"))
        if slim_pool:
            # TF-slim: max_pool2d(3, 2, 'SAME'), i.e. padding at the bottom/right only, with -inf.
            x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1_pool")(x)
        else:
            x = layers.ZeroPadding2D(padding=((1, 1), (1, 1)), name="pool1_pad")(x)
            x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
        stages = index.get(model_name).stages
        x = _stages_v2(x, stages) if preact else _stages_v1(x, stages)
        if preact:
            x = layers.Activation("relu", name="post_relu")(_bn(x, "post_bn"))
        return x

    return _factory.build(model_name, body, include_top=include_top, weights=weights, input_tensor=input_tensor,
                          input_shape=input_shape, pooling=pooling, classes=classes,
                          classifier_activation=classifier_activation, name=name, default_size=224, min_size=32)


def _keras_builder(depth, preact, model_name):
    def builder(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
                classes=1000, classifier_activation="softmax", name=model_name):
        return _resnet(model_name, preact, include_top=include_top, weights=weights,
                       input_tensor=input_tensor, input_shape=input_shape, pooling=pooling, classes=classes,
                       classifier_activation=classifier_activation, name=name)

    family = "ResNetV2" if preact else "ResNet"
    builder.__doc__ = (
        f"Instantiates the {family}{depth} architecture (keras.applications signature and layer names).\n\n"
        f"Preprocessing: ``kzoo.{'resnet_v2' if preact else 'resnet'}.preprocess_input`` "
        f"({'scale to [-1, 1]' if preact else 'caffe: RGB->BGR, mean subtraction'}).\n"
        "``weights`` is None, 'imagenet', any registry tag for this model, or a path to an .h5 / .weights.h5."
    )
    return builder


ResNet50 = _keras_builder(50, False, "resnet50")
ResNet101 = _keras_builder(101, False, "resnet101")
ResNet152 = _keras_builder(152, False, "resnet152")
ResNet50V2 = _keras_builder(50, True, "resnet50v2")
ResNet101V2 = _keras_builder(101, True, "resnet101v2")
ResNet152V2 = _keras_builder(152, True, "resnet152v2")
for _builder, _name in zip((ResNet50, ResNet101, ResNet152, ResNet50V2, ResNet101V2, ResNet152V2), __all__):
    _builder.__name__ = _builder.__qualname__ = _name
    _builder.__module__ = __name__
    _builder.preprocess_input = preprocess_input_v2 if "V2" in _name else preprocess_input
    _builder.decode_predictions = decode_predictions

_SLIM_DOC = """The TF-slim ``resnet_v2_{depth}`` network, in Keras' ResNet{depth}V2 layout.

    Identical to :func:`ResNet{depth}V2` (same layers, names, weight order and shapes, so the same ``.h5``
    loads into either) except for the stem max-pool ``pool1_pool``: slim's ``max_pool2d(3, 2, 'SAME')``
    pads only at the bottom/right and ignores the padding (``-inf``), while Keras pads one zero on every
    side (``pool1_pad``, a ZeroPadding2D that this model does not have) before a VALID pool. Because the
    stem has no BatchNorm/ReLU before the pool in v2, Keras' zero padding changes results (rel. error
    ~5e-2 on slim weights); this builder reproduces slim's outputs. Preprocessing: scale to [-1, 1]
    (``kzoo.resnet_v2.preprocess_input``).
    """


def _slim_builder(depth):
    def builder(include_top=True, weights="tione", input_tensor=None, input_shape=None, pooling=None,
                classes=1000, classifier_activation="softmax", name=f"resnet_v2_{depth}"):
        return _resnet(f"resnet_v2_{depth}", True, include_top=include_top, weights=weights,
                       input_tensor=input_tensor, input_shape=input_shape, pooling=pooling, classes=classes,
                       classifier_activation=classifier_activation, name=name, slim_pool=True)

    builder.__name__ = builder.__qualname__ = f"resnet_v2_{depth}"
    builder.__module__ = __name__
    builder.__doc__ = _SLIM_DOC.format(depth=depth)
    builder.preprocess_input = preprocess_input_v2
    builder.decode_predictions = decode_predictions
    return builder


resnet_v2_50 = _slim_builder(50)
resnet_v2_101 = _slim_builder(101)
resnet_v2_152 = _slim_builder(152)
