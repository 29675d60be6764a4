"""ResNet v1 as TF-slim builds it (``resnet_v1_50/101/152``), for the slim / TI-ONE checkpoints.

This is not Keras' ``ResNet50``: the weight shapes agree, the computation does not. Slim
- puts the stride 2 of blocks 1-3 in the 3x3 ``conv2`` of the *last* unit of the block (Keras: in
  the 1x1 convs of the first unit of the next stage), so its identity shortcut is subsampled by a
  1x1/2 max-pool;
- pads a strided 3x3 explicitly by 1 on each side and convolves VALID (``conv2d_same``);
- max-pools ``pool1`` 3x3/2 with ``padding='same'`` (Keras: zero-pad 1, then VALID);
- has no conv biases and BN eps 1e-5 with gamma.

``output_stride`` (8 or 16; None = 32) is slim's ``resnet_v1(output_stride=...)`` for dense prediction, as
the Object Detection API's Faster R-CNN / R-FCN feature extractors use it (``first_stage_features_stride``):
once the running stride reaches it, every later unit runs at stride 1 and its 3x3 ``conv2`` is dilated by
the product of the strides skipped so far (``resnet_utils.stack_blocks_dense`` in tensorflow/models
research/slim). At 16 the last unit of block3 keeps stride 1 and block4 runs at rate 2; at 8 the last unit
of block2 also keeps stride 1, block3 runs at rate 2 and block4 at rate 4. The weights are the same.

Layer names follow the slim scopes: ``resnet_v1_50/block1/unit_1/bottleneck_v1/conv1/weights``
-> ``block1_unit1_bottleneck_v1_conv1`` (BN: ``..._conv1_bn``); ``conv1`` / ``conv1_bn`` for the
stem; slim's 1x1-conv ``logits`` -> the Dense ``predictions``. Input: RGB minus the ImageNet means
(``preprocess_input``), as slim's vgg preprocessing feeds it. Default weights: the TI-ONE slim
checkpoints (``weights="tione"``), converted on first use. ``weights="coco"`` (``include_top=False``) is the
backbone of a TI-ONE / Object Detection API detector (Faster R-CNN ResNet-50, R-FCN ResNet-101): see
``kzoo.detection``.
"""

from __future__ import annotations

from keras import layers

from kzoo import index
from kzoo.architectures import _common, _slim

__all__ = ["ResNetV1_50", "ResNetV1_101", "ResNetV1_152"]

BN_EPSILON = 1e-5

# Units per block come from the index rows (``stages``); block b has bottleneck depth 64 * 2**(b-1),
# output 4x that, stride 2 in its last unit except block4.
DEPTHS = (50, 101, 152)
BLOCK_STRIDES = (2, 2, 2, 1)
OUTPUT_STRIDES = (None, 8, 16, 32)


def _conv_bn(x, filters, kernel_size, name, strides=1, padding="same", activation="relu", dilation_rate=1):
    return _slim.conv_bn(x, filters, kernel_size, name, strides=strides, padding=padding,
                         epsilon=BN_EPSILON, scale=True, activation=activation, dilation_rate=dilation_rate)


def bottleneck_v1(x, depth_bottleneck, stride, name, rate=1):
    """One slim ``bottleneck_v1`` unit; ``name`` is its Keras prefix, e.g. ``block1_unit3``; ``rate`` dilates
    its 3x3 conv (stride-1 units only, as in slim)."""
    prefix = f"{name}_bottleneck_v1"
    depth = 4 * depth_bottleneck
    if x.shape[_common.bn_axis()] == depth:
        # Identity shortcut; slim's subsample is a 1x1 max-pool with the unit's stride.
        shortcut = x if stride == 1 else layers.MaxPooling2D(1, strides=stride, name=f"{prefix}_shortcut_pool")(x)
    else:
        shortcut = _conv_bn(x, depth, 1, f"{prefix}_shortcut", strides=stride, activation=None)

    residual = _conv_bn(x, depth_bottleneck, 1, f"{prefix}_conv1")
    if stride == 1:
        residual = _conv_bn(residual, depth_bottleneck, 3, f"{prefix}_conv2", dilation_rate=rate)
    else:
        # conv2d_same: symmetric explicit padding, then VALID (differs from 'same' on even sizes).
        residual = layers.ZeroPadding2D(1, name=f"{prefix}_conv2_pad")(residual)
        residual = _conv_bn(residual, depth_bottleneck, 3, f"{prefix}_conv2", strides=stride, padding="valid")
    residual = _conv_bn(residual, depth, 1, f"{prefix}_conv3", activation=None)

    x = layers.Add(name=f"{name}_add")([shortcut, residual])
    return layers.Activation("relu", name=f"{name}_out")(x)


def unit_plan(stages, output_stride=None, first_block=1, input_stride=4):
    """``[(block, unit, stride, rate), ...]`` for every unit, as slim's ``stack_blocks_dense`` runs them:
    the stem leaves the running stride at ``input_stride``; once it equals ``output_stride`` a unit keeps
    stride 1 and is dilated by the strides skipped before it."""
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}; received output_stride={output_stride}")
    current, rate, plan = input_stride, 1, []
    for block, units in enumerate(stages, start=first_block):
        for unit in range(1, units + 1):
            stride = BLOCK_STRIDES[block - 1] if unit == units else 1
            if output_stride is not None and current == output_stride:
                plan.append((block, unit, 1, rate))
                rate *= stride
            else:
                plan.append((block, unit, stride, 1))
                current *= stride
    return plan


def resnet_v1_blocks(x, plan):
    """The units of ``plan`` (:func:`unit_plan`) on ``x``."""
    for block, unit, stride, rate in plan:
        x = bottleneck_v1(x, 64 * 2 ** (block - 1), stride, f"block{block}_unit{unit}", rate=rate)
    return x


def stem(x):
    x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = _conv_bn(x, 64, 7, "conv1", strides=2, padding="valid")
    return layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)


def ResNetV1(
    depth,
    include_top=True,
    weights="tione",
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name=None,
    output_stride=None,
):
    """Slim ResNet v1 with ``depth`` in {50, 101, 152}; Keras-applications arguments, and slim's
    ``output_stride`` (None, 8, 16 or 32; see the module docstring)."""
    if depth not in DEPTHS:
        raise ValueError(f"ResNetV1 depth must be one of {DEPTHS}; received depth={depth}")
    model_name = f"resnet_v1_{depth}"
    plan = unit_plan(index.get(model_name).stages, output_stride)

    def body(x):
        return resnet_v1_blocks(stem(x), plan)

    return _slim.build(model_name, body, include_top=include_top, weights=weights, input_tensor=input_tensor,
                       input_shape=input_shape, pooling=pooling, classes=classes,
                       classifier_activation=classifier_activation, name=name or model_name, default_size=224,
                       min_size=32)


def _variant(depth):
    def builder(include_top=True, weights="tione", input_tensor=None, input_shape=None, pooling=None, classes=1000,
                classifier_activation="softmax", name=None, output_stride=None):
        return ResNetV1(depth, include_top=include_top, weights=weights, input_tensor=input_tensor,
                        input_shape=input_shape, pooling=pooling, classes=classes,
                        classifier_activation=classifier_activation, name=name, output_stride=output_stride)

    builder.__name__ = builder.__qualname__ = f"ResNetV1_{depth}"
    builder.__doc__ = f"Slim ResNet v1 {depth} (``resnet_v1_{depth}``). See the module docstring."
    builder.__module__ = __name__
    return builder


ResNetV1_50 = _variant(50)
ResNetV1_101 = _variant(101)
ResNetV1_152 = _variant(152)

preprocess_input = _slim.preprocess_vgg_rgb
decode_predictions = _slim.decode_predictions
