"""ShuffleNet v2 (arXiv 1807.11164) as built by TropComplique/shufflenet-v2-tensorflow, the source of
the ``shufflenet_v2_050`` (0.5x) checkpoint TI-ONE lists.

Structure: Conv1 3x3/2 (24) -> MaxPool 3x3/2 SAME -> Stage2, Stage3, Stage4 (4, 8, 4 units) ->
Conv5 1x1 (1024) -> global average -> ``predictions``. Every 1x1 conv is bias-free + BN (gamma,
eps 1e-3) + ReLU; every depthwise 3x3 is bias-free + BN, no ReLU. The first unit of a stage
downsamples both halves (a main branch 1x1 -> dw/2 -> 1x1 and a ``second_branch`` dw/2 -> 1x1);
later units concatenate the two halves, shuffle channels (interleave), split, and transform the
first half. Like the source graph, the model takes RGB in [0, 1] and computes ``2x - 1`` itself
(layer ``standardize_input``); ``preprocess_input`` maps 0..255 pixels to [0, 1] (registry
preprocessing ``unit``).

Layer names follow the checkpoint's scopes: ``ShuffleNetV2/Stage3/unit_1/second_branch/depthwise``
-> ``Stage3_unit1_second_branch_depthwise`` (its ``batch_norm`` -> ``..._bn``); ``classifier`` ->
``predictions``. Classes are in Keras' (sorted-wnid) order; the converter reorders the checkpoint's
ILSVRC-devkit order. Default weights: the TI-ONE checkpoint (``weights="tione"``, alpha 0.5 only).
"""

from __future__ import annotations

import keras
from keras import layers, ops

from kzoo import preprocessing
from kzoo.architectures import _common, _slim

__all__ = ["ShuffleNetV2"]

BN_EPSILON = 1e-3
# depth multiplier -> channels of Stage2 (doubled by Stage3 and Stage4), and Conv5 width
STAGE2_CHANNELS = {0.5: 48, 1.0: 116, 1.5: 176, 2.0: 224}
STAGE_UNITS = (("Stage2", 4), ("Stage3", 8), ("Stage4", 4))


@keras.saving.register_keras_serializable(package="kzoo")
class ShuffleHalf(layers.Layer):
    """Half ``half`` (0 or 1) of ``concat([x, y])`` after a two-group channel shuffle.

    The source's ``concat_shuffle_split`` interleaves the channels of ``x`` and ``y``
    (x0, y0, x1, y1, ...) and splits the result in two; half 0 is the interleave of the first
    halves of ``x`` and ``y``, half 1 of their second halves. One single-output layer per half keeps
    the functional graph simple (feature extraction, plotting, saving).
    """

    def __init__(self, half, data_format=None, **kwargs):
        super().__init__(**kwargs)
        if half not in (0, 1):
            raise ValueError(f"half must be 0 or 1; received {half}")
        self.half = half
        self.data_format = data_format or keras.config.image_data_format()

    def _axis(self):
        return 1 if self.data_format == "channels_first" else 3

    def call(self, inputs):
        x, y = inputs
        axis = self._axis()
        channels = x.shape[axis]
        start, stop = self.half * channels // 2, (self.half + 1) * channels // 2
        x, y = (ops.take(t, ops.arange(start, stop), axis=axis) for t in (x, y))
        z = ops.stack([x, y], axis=axis + 1)  # channel c of x and of y side by side
        shape = list(ops.shape(x))
        shape[0] = -1
        shape[axis] = 2 * (stop - start)
        return ops.reshape(z, shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        return {**super().get_config(), "half": self.half, "data_format": self.data_format}


def _conv_bn(x, filters, name):
    return _slim.conv_bn(x, filters, 1, name, epsilon=BN_EPSILON, scale=True)


def _depthwise_bn(x, strides, name):
    x = layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False, name=name)(x)
    return layers.BatchNormalization(axis=_common.bn_axis(), epsilon=BN_EPSILON, name=f"{name}_bn")(x)


def basic_unit(x, name):
    channels = x.shape[_common.bn_axis()]
    x = _conv_bn(x, channels, f"{name}_conv1x1_before")
    x = _depthwise_bn(x, 1, f"{name}_depthwise")
    return _conv_bn(x, channels, f"{name}_conv1x1_after")


def downsampling_unit(x, out_channels, name):
    """``unit_1`` of a stage: returns (second_branch, main branch), the source's (x, y)."""
    channels = x.shape[_common.bn_axis()]
    y = _conv_bn(x, channels, f"{name}_conv1x1_before")
    y = _depthwise_bn(y, 2, f"{name}_depthwise")
    y = _conv_bn(y, out_channels // 2, f"{name}_conv1x1_after")
    x = _depthwise_bn(x, 2, f"{name}_second_branch_depthwise")
    x = _conv_bn(x, out_channels // 2, f"{name}_second_branch_conv1x1_after")
    return x, y


def shufflenet_stage(x, name, units, out_channels):
    x, y = downsampling_unit(x, out_channels, f"{name}_unit1")
    for unit in range(2, units + 1):
        x, y = (ShuffleHalf(half, name=f"{name}_unit{unit}_shuffle{half}")([x, y]) for half in (0, 1))
        x = basic_unit(x, f"{name}_unit{unit}")
    return _slim.concat([x, y], name)


def ShuffleNetV2(
    include_top=True,
    weights="tione",
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name=None,
    alpha=0.5,
):
    """ShuffleNet v2 with depth multiplier ``alpha`` in {0.5, 1.0, 1.5, 2.0}; weights exist for 0.5
    (``shufflenet_v2_050``). See the module docstring."""
    if alpha not in STAGE2_CHANNELS:
        raise ValueError(f"ShuffleNetV2 alpha must be one of {sorted(STAGE2_CHANNELS)}; received alpha={alpha}")
    model_name = f"shufflenet_v2_{round(alpha * 100):03d}"

    def body(x):
        x = layers.Rescaling(2.0, offset=-1.0, name="standardize_input")(x)
        x = _slim.conv_bn(x, 24, 3, "Conv1", strides=2, epsilon=BN_EPSILON, scale=True)
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="MaxPool")(x)
        out_channels = STAGE2_CHANNELS[alpha]
        for stage, units in STAGE_UNITS:
            x = shufflenet_stage(x, stage, units, out_channels)
            out_channels *= 2
        return _conv_bn(x, 2048 if alpha == 2.0 else 1024, "Conv5")

    return _slim.build(model_name, body, include_top=include_top, weights=weights, input_tensor=input_tensor,
                       input_shape=input_shape, pooling=pooling, classes=classes,
                       classifier_activation=classifier_activation, name=name or model_name, default_size=224,
                       min_size=32)




preprocess_input = preprocessing.unit_preprocess_input  # the model standardises to [-1, 1] itself
decode_predictions = _slim.decode_predictions
