"""NASNet-A Mobile and Large (Zoph et al., 2018), weight-compatible with ``keras.applications.nasnet``;
plus ``nasnet_mobile``, the TF-slim (TI-ONE) variant of NASNet-A Mobile.

A network is a row of ``VARIANTS``: stem, two stem reduction cells, then three stacks of
``num_blocks`` normal cells separated by two reduction cells. Cells are the two functions
``normal_cell`` / ``reduction_cell``; the operations inside them follow the NASNet-A search result
(Fig. 4 of the paper). Layer names, weighted-layer order and weight shapes are keras.applications'
(weightless layers that Keras leaves unnamed are left unnamed here too, in the same order, so a fresh
session gives them the same names).

``nasnet_mobile`` -- how it differs from ``NASNetMobile``
---------------------------------------------------------
TF-slim's ``nets/nasnet/nasnet.py`` computes the three stride-2 pools of every reduction cell
(``comb_iter_1/left`` max 3x3, ``comb_iter_2/left`` avg 3x3, ``comb_iter_4/right`` max 3x3; Keras'
``reduction_left2_<id>``, ``reduction_left3_<id>``, ``reduction_right5_<id>``) with ``padding="SAME"``
on the cell's ``beginning_bn`` output: the max pools ignore the border (as if padded with -inf) and
the average pool excludes padded positions from its count. Keras instead zero-pads that output
(``reduction_pad_1_<id>``, ``correct_pad``) and pools VALID, so border windows see zeros. The windows
are the same; only border values differ (relative error ~1e-2 on slim's weights with Keras' graph,
~4e-7 with slim's; tensorflow/models research/slim/nets/nasnet/nasnet_utils.py). So ``nasnet_mobile`` is
``NASNetMobile`` with, in each of the four reduction cells (``stem_1``, ``stem_2``, ``reduce_4``,
``reduce_8``):

- no ``reduction_pad_1_<id>`` layer, and
- those three pools applied to ``reduction_bn_1_<id>``'s output with ``padding="same"``.

Nothing else changes: every weighted layer, its name, weights and order are identical, so the same h5
file loads into both builders (by name or by order). Its default weights are the TI-ONE checkpoint
(tag ``tione``), converted on first use; preprocessing is slim's Inception scaling to [-1, 1],
the same as ``preprocess_input`` here.
"""

from __future__ import annotations

import keras
from keras import layers
from keras.models import Model

from kzoo import index
from kzoo.architectures import _common, _factory
from kzoo.preprocessing import decode_predictions  # noqa: F401

__all__ = ["NASNetMobile", "NASNetLarge"]

# variant: penultimate filters, normal cells per stack, stem filters, skip_reduction, filter multiplier
# (the default input size is the index row's). (skip_reduction: the cell after a reduction cell sees the reduction cell's input as
# its "previous" input -- NASNet-A Large's wiring -- instead of the reduction cell's own previous input.)
VARIANTS = {
    "mobile": dict(penultimate_filters=1056, num_blocks=4, stem_filters=32, skip_reduction=False,
                   filter_multiplier=2),
    "large": dict(penultimate_filters=4032, num_blocks=6, stem_filters=96, skip_reduction=True,
                  filter_multiplier=2),
}

BN_MOMENTUM = 0.9997
BN_EPSILON = 1e-3

WEIGHTS_ERROR = (
    "The `weights` argument should be either "
    "`None` (random initialization), `imagenet` "
    "(pre-training on ImageNet), "
    "or the path to the weights file to be loaded."
)
CLASSES_ERROR = 'If using `weights` as `"imagenet"` with `include_top` as true, `classes` should be 1000'


def _bn(x, name):
    return layers.BatchNormalization(axis=-1, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)(x)


def _conv1x1(x, filters, name, strides=1):
    return layers.Conv2D(filters, 1, strides=strides, padding="same", use_bias=False, name=name,
                         kernel_initializer="he_normal")(x)


def separable_block(x, filters, kernel, block_id, strides=1):
    """Twice ReLU -> separable conv -> BN; the first conv carries the stride (zero-padded like SAME)."""
    x = layers.Activation("relu")(x)
    padding = "same"
    if strides == 2:
        x = layers.ZeroPadding2D(_common.correct_pad(x, kernel), name=f"separable_conv_1_pad_{block_id}")(x)
        padding = "valid"
    x = layers.SeparableConv2D(filters, kernel, strides=strides, padding=padding, use_bias=False,
                               name=f"separable_conv_1_{block_id}")(x)
    x = _bn(x, f"separable_conv_1_bn_{block_id}")
    x = layers.Activation("relu")(x)
    x = layers.SeparableConv2D(filters, kernel, padding="same", use_bias=False,
                               name=f"separable_conv_2_{block_id}")(x)
    return _bn(x, f"separable_conv_2_bn_{block_id}")


def adjust_previous(p, ip, filters, block_id):
    """Make the previous cell's output ``p`` match ``ip`` in resolution (factorized reduction) or width."""
    if p is None:
        return ip
    if p.shape[-2] != ip.shape[-2]:
        # Halve the resolution along two paths offset by one pixel, then concatenate the halves.
        p = layers.Activation("relu", name=f"adjust_relu_1_{block_id}")(p)
        p1 = layers.AveragePooling2D(1, strides=2, padding="valid", name=f"adjust_avg_pool_1_{block_id}")(p)
        p1 = _conv1x1(p1, filters // 2, f"adjust_conv_1_{block_id}")
        p2 = layers.ZeroPadding2D(((0, 1), (0, 1)))(p)
        p2 = layers.Cropping2D(((1, 0), (1, 0)))(p2)
        p2 = layers.AveragePooling2D(1, strides=2, padding="valid", name=f"adjust_avg_pool_2_{block_id}")(p2)
        p2 = _conv1x1(p2, filters // 2, f"adjust_conv_2_{block_id}")
        p = layers.concatenate([p1, p2], axis=-1)
        return _bn(p, f"adjust_bn_{block_id}")
    if p.shape[-1] != filters:
        p = layers.Activation("relu")(p)
        p = _conv1x1(p, filters, f"adjust_conv_projection_{block_id}")
        return _bn(p, f"adjust_bn_{block_id}")
    return p


def _cell_input(ip, p, filters, kind, block_id):
    p = adjust_previous(p, ip, filters, block_id)
    h = layers.Activation("relu")(ip)
    h = _conv1x1(h, filters, f"{kind}_conv_1_{block_id}")
    return _bn(h, f"{kind}_bn_1_{block_id}"), p


def normal_cell(ip, p, filters, block_id):
    """NASNet-A normal cell: five pairwise combinations, concatenated with the (adjusted) previous input."""
    h, p = _cell_input(ip, p, filters, "normal", block_id)
    x1 = layers.add([separable_block(h, filters, 5, f"normal_left1_{block_id}"),
                     separable_block(p, filters, 3, f"normal_right1_{block_id}")], name=f"normal_add_1_{block_id}")
    x2 = layers.add([separable_block(p, filters, 5, f"normal_left2_{block_id}"),
                     separable_block(p, filters, 3, f"normal_right2_{block_id}")], name=f"normal_add_2_{block_id}")
    x3 = layers.AveragePooling2D(3, strides=1, padding="same", name=f"normal_left3_{block_id}")(h)
    x3 = layers.add([x3, p], name=f"normal_add_3_{block_id}")
    x4_1 = layers.AveragePooling2D(3, strides=1, padding="same", name=f"normal_left4_{block_id}")(p)
    x4_2 = layers.AveragePooling2D(3, strides=1, padding="same", name=f"normal_right4_{block_id}")(p)
    x4 = layers.add([x4_1, x4_2], name=f"normal_add_4_{block_id}")
    x5 = separable_block(h, filters, 3, f"normal_left5_{block_id}")
    x5 = layers.add([x5, h], name=f"normal_add_5_{block_id}")
    x = layers.concatenate([p, x1, x2, x3, x4, x5], axis=-1, name=f"normal_concat_{block_id}")
    return x, ip


def reduction_cell(ip, p, filters, block_id, slim_pools=False):
    """NASNet-A reduction cell (stride 2). ``slim_pools``: TF-slim's SAME pools (module docstring)."""
    h, p = _cell_input(ip, p, filters, "reduction", block_id)
    if slim_pools:
        pooled, pool_padding = h, "same"
    else:
        pooled = layers.ZeroPadding2D(_common.correct_pad(h, 3), name=f"reduction_pad_1_{block_id}")(h)
        pool_padding = "valid"

    x1 = layers.add([separable_block(h, filters, 5, f"reduction_left1_{block_id}", strides=2),
                     separable_block(p, filters, 7, f"reduction_right1_{block_id}", strides=2)],
                    name=f"reduction_add_1_{block_id}")
    x2_1 = layers.MaxPooling2D(3, strides=2, padding=pool_padding, name=f"reduction_left2_{block_id}")(pooled)
    x2 = layers.add([x2_1, separable_block(p, filters, 7, f"reduction_right2_{block_id}", strides=2)],
                    name=f"reduction_add_2_{block_id}")
    x3_1 = layers.AveragePooling2D(3, strides=2, padding=pool_padding, name=f"reduction_left3_{block_id}")(pooled)
    x3 = layers.add([x3_1, separable_block(p, filters, 5, f"reduction_right3_{block_id}", strides=2)],
                    name=f"reduction_add3_{block_id}")
    x4 = layers.AveragePooling2D(3, strides=1, padding="same", name=f"reduction_left4_{block_id}")(x1)
    x4 = layers.add([x2, x4])
    x5_1 = separable_block(x1, filters, 3, f"reduction_left4_{block_id}")
    x5_2 = layers.MaxPooling2D(3, strides=2, padding=pool_padding, name=f"reduction_right5_{block_id}")(pooled)
    x5 = layers.add([x5_1, x5_2], name=f"reduction_add4_{block_id}")
    x = layers.concatenate([x2, x3, x4, x5], axis=-1, name=f"reduction_concat_{block_id}")
    return x, ip


def build_nasnet(variant, *, model_name, input_shape, include_top, weights, input_tensor, pooling, classes,
                 classifier_activation, name, slim_pools=False):
    # Not _factory.build: Keras checks the data format first and a static input shape between the weights
    # and the input-shape checks, and names none of its pooling layers.
    cfg = VARIANTS[variant]
    if keras.config.image_data_format() == "channels_first":
        raise ValueError(
            "NASNet does not support the `channels_first` image data "
            "format. Switch to `channels_last` by editing your local "
            "config file at ~/.keras/keras.json"
        )
    request = _factory.Weights(weights, model_name, include_top, classes, weights_error=WEIGHTS_ERROR,
                               classes_error=CLASSES_ERROR)
    if isinstance(input_shape, tuple) and None in input_shape and request.pretrained:
        raise ValueError(
            "When specifying the input shape of a NASNet and loading "
            "`ImageNet` weights, the input_shape argument must be static"
            f" (no None entries). Got: `input_shape={input_shape}`."
        )
    input_shape = _common.obtain_input_shape(input_shape, index.get(model_name).input_size, 32, include_top, request.pretrained)
    img_input = _common.make_input(input_tensor, input_shape)

    multiplier = cfg["filter_multiplier"]
    if cfg["penultimate_filters"] % (24 * multiplier ** 2) != 0:
        raise ValueError(
            "For NASNet-A models, the `penultimate_filters` must be a multiple "
            "of 24 * (`filter_multiplier` ** 2). "
            f"Current value: {cfg['penultimate_filters']}"
        )
    filters = cfg["penultimate_filters"] // 24
    blocks = cfg["num_blocks"]

    x = layers.Conv2D(cfg["stem_filters"], 3, strides=2, padding="valid", use_bias=False, name="stem_conv1",
                      kernel_initializer="he_normal")(img_input)
    x = _bn(x, "stem_bn1")
    x, p = reduction_cell(x, None, filters // multiplier ** 2, "stem_1", slim_pools)
    x, p = reduction_cell(x, p, filters // multiplier, "stem_2", slim_pools)
    # Three stacks of normal cells; the cell ids count on through the reduction cells between them.
    for stack in range(3):
        width = filters * multiplier ** stack
        if stack:
            x, p_reduced = reduction_cell(x, p, width, f"reduce_{stack * blocks}", slim_pools)
            p = p if cfg["skip_reduction"] else p_reduced
        for i in range(blocks):
            x, p = normal_cell(x, p, width, str(stack * blocks + i + (1 if stack else 0)))
    x = layers.Activation("relu")(x)

    if include_top:
        x = layers.GlobalAveragePooling2D()(x)
        _common.validate_activation(classifier_activation, weights)
        x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    else:
        x = _common.pooling_head(x, pooling, None, None)

    model = Model(_common.model_inputs(input_tensor, img_input), x, name=name)
    return request.load(model)


def NASNetMobile(input_shape=None, include_top=True, weights="imagenet", input_tensor=None, pooling=None,
                 classes=1000, classifier_activation="softmax", name="nasnet_mobile"):
    """Instantiates NASNet-A Mobile (keras.applications-compatible). Default input 224x224; preprocess with
    ``kzoo.nasnet.preprocess_input`` (scales to [-1, 1]). ``weights``: None, 'imagenet', another registry
    tag, or a .h5 / .weights.h5 path."""
    return build_nasnet("mobile", model_name="nasnetmobile", input_shape=input_shape, include_top=include_top,
                        weights=weights, input_tensor=input_tensor, pooling=pooling, classes=classes,
                        classifier_activation=classifier_activation, name=name)


def NASNetLarge(input_shape=None, include_top=True, weights="imagenet", input_tensor=None, pooling=None,
                classes=1000, classifier_activation="softmax", name="nasnet_large"):
    """Instantiates NASNet-A Large (keras.applications-compatible). Default input 331x331; preprocess with
    ``kzoo.nasnet.preprocess_input`` (scales to [-1, 1]). ``weights``: None, 'imagenet', another registry
    tag, or a .h5 / .weights.h5 path."""
    return build_nasnet("large", model_name="nasnetlarge", input_shape=input_shape, include_top=include_top,
                        weights=weights, input_tensor=input_tensor, pooling=pooling, classes=classes,
                        classifier_activation=classifier_activation, name=name)


def nasnet_mobile(input_shape=None, include_top=True, weights="tione", input_tensor=None, pooling=None,
                  classes=1000, classifier_activation="softmax", name="nasnet_mobile"):
    """NASNet-A Mobile as TF-slim computes it (SAME-padded reduction-cell pools; see the module docstring).

    Same arguments and weights as ``NASNetMobile``; default weights: the TI-ONE slim checkpoint (``tione``).
    """
    return build_nasnet("mobile", model_name="nasnet_mobile", input_shape=input_shape, include_top=include_top,
                        weights=weights, input_tensor=input_tensor, pooling=pooling, classes=classes,
                        classifier_activation=classifier_activation, name=name, slim_pools=True)


def preprocess_input(x, data_format=None):
    """Scale [0, 255] pixels to [-1, 1] (Keras' "tf" mode), as keras.applications.nasnet does."""
    from kzoo.preprocessing import preprocess_input as preprocess

    return preprocess(x, data_format=data_format, mode="tf")


nasnet_mobile.preprocess_input = preprocess_input
nasnet_mobile.decode_predictions = decode_predictions
