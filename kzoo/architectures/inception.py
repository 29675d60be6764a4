"""GoogLeNet-family builders as TF-slim defines them: Inception v1, v2 and v4 (``inception_v1``,
``inception_v2``, ``inception_v4``), for the slim / TI-ONE checkpoints. Keras ships none of them.

Common to all three (slim ``inception_arg_scope``): every conv is bias-free, followed by
BatchNormalization *without* gamma (``scale=False``, eps 1e-3) and ReLU; padding is SAME unless a
table says VALID; pools inside blocks are 3x3/1 SAME (the average excludes the padding, as TF's
and Keras' ``padding='same'`` do). Slim's logits (a 1x1 conv, or v4's fully-connected ``Logits``)
become the Dense ``predictions`` after a global average pool; slim's VALID 7x7 (v1/v2) or
whole-map (v4) average pool is the same thing at the default input size. Dropout is omitted
(inference only).

Layer names follow the slim scopes: ``InceptionV1/Mixed_3b/Branch_1/Conv2d_0b_3x3/weights`` ->
``Mixed_3b_Branch_1_Conv2d_0b_3x3`` (BN ``..._bn``); a block's output is named after its end point
(``Mixed_3b``). Input: [-1, 1] (``preprocess_input``, slim's inception preprocessing). Default weights: the TI-ONE
slim checkpoints (``weights="tione"``), converted on first use; 1000 classes (background dropped).

Quirks kept from slim:
- v1 ``Mixed_5b/Branch_2`` names its 3x3 conv ``Conv2d_0a_3x3`` (not ``0b``);
- v2's stem ``Conv2d_1a_7x7`` is a separable 7x7/2 conv (depth multiplier 8) *with bias and ReLU
  and no BN* -- the arg_scope gives BN only to plain convs;
- v2's reduction blocks use SAME padding, v4's use VALID; v2's ``Mixed_5c`` pools with max, the
  other v2 blocks with average.

``SSDInceptionV2`` is v2 as the Object Detection API's SSD feature extractor builds it (ReLU6, BatchNorm with
gamma on every conv, a bias-free BN'd separable stem) plus SSD's four extra feature layers; its weights are
``weights="coco"`` (``ssd_inception_v2_coco_2018_01_28``).
"""

from __future__ import annotations

from keras import layers

from kzoo.architectures import _common, _slim

__all__ = ["InceptionV1", "InceptionV2", "InceptionV4", "SSDInceptionV2"]


def _conv(x, filters, kernel_size, name, strides=1, padding="same"):
    return _slim.conv_bn(x, filters, kernel_size, name, strides=strides, padding=padding, epsilon=1e-3,
                         scale=False)


def _max_pool(x, size, strides, name, padding="same"):
    return layers.MaxPooling2D(size, strides=strides, padding=padding, name=name)(x)


def _avg_pool(x, size, strides, name, padding="same"):
    return layers.AveragePooling2D(size, strides=strides, padding=padding, name=name)(x)


# ------------------------------------------------------------------------------------------------
# Inception v1 (GoogLeNet with BN)
# ------------------------------------------------------------------------------------------------

# block: (branch_0 1x1, branch_1 1x1 -> 3x3, branch_2 1x1 -> 3x3, branch_3 pool -> 1x1)
V1_BLOCKS = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
# (pool name, size) before each group of blocks
V1_POOLS = {"Mixed_3b": ("MaxPool_3a_3x3", 3), "Mixed_4b": ("MaxPool_4a_3x3", 3), "Mixed_5b": ("MaxPool_5a_2x2", 2)}


def inception_v1_block(x, name, b0, b1a, b1b, b2a, b2b, b3):
    branch_0 = _conv(x, b0, 1, f"{name}_Branch_0_Conv2d_0a_1x1")
    branch_1 = _conv(x, b1a, 1, f"{name}_Branch_1_Conv2d_0a_1x1")
    branch_1 = _conv(branch_1, b1b, 3, f"{name}_Branch_1_Conv2d_0b_3x3")
    branch_2 = _conv(x, b2a, 1, f"{name}_Branch_2_Conv2d_0a_1x1")
    second = "Conv2d_0a_3x3" if name == "Mixed_5b" else "Conv2d_0b_3x3"  # slim's name, sic
    branch_2 = _conv(branch_2, b2b, 3, f"{name}_Branch_2_{second}")
    branch_3 = _max_pool(x, 3, 1, f"{name}_Branch_3_MaxPool_0a_3x3")
    branch_3 = _conv(branch_3, b3, 1, f"{name}_Branch_3_Conv2d_0b_1x1")
    return _slim.concat([branch_0, branch_1, branch_2, branch_3], name)


def inception_v1_features(x):
    x = _conv(x, 64, 7, "Conv2d_1a_7x7", strides=2)
    x = _max_pool(x, 3, 2, "MaxPool_2a_3x3")
    x = _conv(x, 64, 1, "Conv2d_2b_1x1")
    x = _conv(x, 192, 3, "Conv2d_2c_3x3")
    for name, channels in V1_BLOCKS.items():
        if name in V1_POOLS:
            pool_name, size = V1_POOLS[name]
            x = _max_pool(x, size, 2, pool_name)
        x = inception_v1_block(x, name, *channels)
    return x


# ------------------------------------------------------------------------------------------------
# Inception v2 (BN-Inception)
# ------------------------------------------------------------------------------------------------

# Inception block: (b0 1x1; b1 1x1 -> 3x3; b2 1x1 -> 3x3 -> 3x3; b3 pool -> 1x1, pool kind)
# Reduction block: (b0 1x1 -> 3x3/2; b1 1x1 -> 3x3 -> 3x3/2; b2 max-pool 3x3/2)
V2_BLOCKS = (
    ("Mixed_3b", "inception", (64, 64, 64, 64, 96, 96, 32, "avg")),
    ("Mixed_3c", "inception", (64, 64, 96, 64, 96, 96, 64, "avg")),
    ("Mixed_4a", "reduction", (128, 160, 64, 96, 96)),
    ("Mixed_4b", "inception", (224, 64, 96, 96, 128, 128, 128, "avg")),
    ("Mixed_4c", "inception", (192, 96, 128, 96, 128, 128, 128, "avg")),
    ("Mixed_4d", "inception", (160, 128, 160, 128, 160, 160, 96, "avg")),
    ("Mixed_4e", "inception", (96, 128, 192, 160, 192, 192, 96, "avg")),
    ("Mixed_5a", "reduction", (128, 192, 192, 256, 256)),
    ("Mixed_5b", "inception", (352, 192, 320, 160, 224, 224, 128, "avg")),
    ("Mixed_5c", "inception", (352, 192, 320, 192, 224, 224, 128, "max")),
)


def inception_v2_block(x, name, b0, b1a, b1b, b2a, b2b, b2c, b3, pool, conv=_conv):
    branch_0 = conv(x, b0, 1, f"{name}_Branch_0_Conv2d_0a_1x1")
    branch_1 = conv(x, b1a, 1, f"{name}_Branch_1_Conv2d_0a_1x1")
    branch_1 = conv(branch_1, b1b, 3, f"{name}_Branch_1_Conv2d_0b_3x3")
    branch_2 = conv(x, b2a, 1, f"{name}_Branch_2_Conv2d_0a_1x1")
    branch_2 = conv(branch_2, b2b, 3, f"{name}_Branch_2_Conv2d_0b_3x3")
    branch_2 = conv(branch_2, b2c, 3, f"{name}_Branch_2_Conv2d_0c_3x3")
    if pool == "max":
        branch_3 = _max_pool(x, 3, 1, f"{name}_Branch_3_MaxPool_0a_3x3")
    else:
        branch_3 = _avg_pool(x, 3, 1, f"{name}_Branch_3_AvgPool_0a_3x3")
    branch_3 = conv(branch_3, b3, 1, f"{name}_Branch_3_Conv2d_0b_1x1")
    return _slim.concat([branch_0, branch_1, branch_2, branch_3], name)


def inception_v2_reduction(x, name, b0a, b0b, b1a, b1b, b1c, conv=_conv):
    branch_0 = conv(x, b0a, 1, f"{name}_Branch_0_Conv2d_0a_1x1")
    branch_0 = conv(branch_0, b0b, 3, f"{name}_Branch_0_Conv2d_1a_3x3", strides=2)
    branch_1 = conv(x, b1a, 1, f"{name}_Branch_1_Conv2d_0a_1x1")
    branch_1 = conv(branch_1, b1b, 3, f"{name}_Branch_1_Conv2d_0b_3x3")
    branch_1 = conv(branch_1, b1c, 3, f"{name}_Branch_1_Conv2d_1a_3x3", strides=2)
    branch_2 = _max_pool(x, 3, 2, f"{name}_Branch_2_MaxPool_1a_3x3")
    return _slim.concat([branch_0, branch_1, branch_2], name)


def _ssd_conv(x, filters, kernel_size, name, strides=1, padding="same"):
    """The Object Detection API's ``conv_hyperparams``: BN with gamma (eps 1e-3) and ReLU6."""
    return _slim.conv_bn(x, filters, kernel_size, name, strides=strides, padding=padding, epsilon=1e-3,
                         scale=True, activation="relu6")


def inception_v2_features(x, ssd=False, end_points=None):
    """Slim's ``inception_v2_base`` up to ``Mixed_5c``. ``ssd``: under the SSD feature extractor's arg_scope
    (every conv, the separable stem included, gets BN with gamma and ReLU6; no biases). ``end_points``: a
    dict to collect the block outputs in (``Mixed_4c`` ...)."""
    conv = _ssd_conv if ssd else _conv
    if ssd:
        x = layers.SeparableConv2D(64, 7, strides=2, padding="same", depth_multiplier=8, use_bias=False,
                                   name="Conv2d_1a_7x7")(x)
        x = layers.BatchNormalization(axis=_common.bn_axis(), epsilon=1e-3, name="Conv2d_1a_7x7_bn")(x)
        x = layers.Activation("relu6", name="Conv2d_1a_7x7_relu6")(x)
    else:
        # Separable stem with bias and ReLU, no BN (see the module docstring).
        x = layers.SeparableConv2D(64, 7, strides=2, padding="same", depth_multiplier=8, name="Conv2d_1a_7x7")(x)
        x = layers.Activation("relu", name="Conv2d_1a_7x7_relu")(x)
    x = _max_pool(x, 3, 2, "MaxPool_2a_3x3")
    x = conv(x, 64, 1, "Conv2d_2b_1x1")
    x = conv(x, 192, 3, "Conv2d_2c_3x3")
    x = _max_pool(x, 3, 2, "MaxPool_3a_3x3")
    for name, kind, channels in V2_BLOCKS:
        block = inception_v2_block if kind == "inception" else inception_v2_reduction
        x = block(x, name, *channels, conv=conv)
        if end_points is not None:
            end_points[name] = x
    return x


# ------------------------------------------------------------------------------------------------
# Inception v4
# ------------------------------------------------------------------------------------------------

V4_STAGES = (  # (block kind, end-point names)
    ("a", ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_5e")),
    ("reduction_a", ("Mixed_6a",)),
    ("b", ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_6f", "Mixed_6g", "Mixed_6h")),
    ("reduction_b", ("Mixed_7a",)),
    ("c", ("Mixed_7b", "Mixed_7c", "Mixed_7d")),
)


def inception_v4_stem(x):
    x = _conv(x, 32, 3, "Conv2d_1a_3x3", strides=2, padding="valid")
    x = _conv(x, 32, 3, "Conv2d_2a_3x3", padding="valid")
    x = _conv(x, 64, 3, "Conv2d_2b_3x3")

    branch_0 = _max_pool(x, 3, 2, "Mixed_3a_Branch_0_MaxPool_0a_3x3", padding="valid")
    branch_1 = _conv(x, 96, 3, "Mixed_3a_Branch_1_Conv2d_0a_3x3", strides=2, padding="valid")
    x = _slim.concat([branch_0, branch_1], "Mixed_3a")

    branch_0 = _conv(x, 64, 1, "Mixed_4a_Branch_0_Conv2d_0a_1x1")
    branch_0 = _conv(branch_0, 96, 3, "Mixed_4a_Branch_0_Conv2d_1a_3x3", padding="valid")
    branch_1 = _conv(x, 64, 1, "Mixed_4a_Branch_1_Conv2d_0a_1x1")
    branch_1 = _conv(branch_1, 64, (1, 7), "Mixed_4a_Branch_1_Conv2d_0b_1x7")
    branch_1 = _conv(branch_1, 64, (7, 1), "Mixed_4a_Branch_1_Conv2d_0c_7x1")
    branch_1 = _conv(branch_1, 96, 3, "Mixed_4a_Branch_1_Conv2d_1a_3x3", padding="valid")
    x = _slim.concat([branch_0, branch_1], "Mixed_4a")

    branch_0 = _conv(x, 192, 3, "Mixed_5a_Branch_0_Conv2d_1a_3x3", strides=2, padding="valid")
    branch_1 = _max_pool(x, 3, 2, "Mixed_5a_Branch_1_MaxPool_1a_3x3", padding="valid")
    return _slim.concat([branch_0, branch_1], "Mixed_5a")


def inception_v4_a(x, name):
    branch_0 = _conv(x, 96, 1, f"{name}_Branch_0_Conv2d_0a_1x1")
    branch_1 = _conv(x, 64, 1, f"{name}_Branch_1_Conv2d_0a_1x1")
    branch_1 = _conv(branch_1, 96, 3, f"{name}_Branch_1_Conv2d_0b_3x3")
    branch_2 = _conv(x, 64, 1, f"{name}_Branch_2_Conv2d_0a_1x1")
    branch_2 = _conv(branch_2, 96, 3, f"{name}_Branch_2_Conv2d_0b_3x3")
    branch_2 = _conv(branch_2, 96, 3, f"{name}_Branch_2_Conv2d_0c_3x3")
    branch_3 = _avg_pool(x, 3, 1, f"{name}_Branch_3_AvgPool_0a_3x3")
    branch_3 = _conv(branch_3, 96, 1, f"{name}_Branch_3_Conv2d_0b_1x1")
    return _slim.concat([branch_0, branch_1, branch_2, branch_3], name)


def inception_v4_reduction_a(x, name):
    branch_0 = _conv(x, 384, 3, f"{name}_Branch_0_Conv2d_1a_3x3", strides=2, padding="valid")
    branch_1 = _conv(x, 192, 1, f"{name}_Branch_1_Conv2d_0a_1x1")
    branch_1 = _conv(branch_1, 224, 3, f"{name}_Branch_1_Conv2d_0b_3x3")
    branch_1 = _conv(branch_1, 256, 3, f"{name}_Branch_1_Conv2d_1a_3x3", strides=2, padding="valid")
    branch_2 = _max_pool(x, 3, 2, f"{name}_Branch_2_MaxPool_1a_3x3", padding="valid")
    return _slim.concat([branch_0, branch_1, branch_2], name)


def inception_v4_b(x, name):
    branch_0 = _conv(x, 384, 1, f"{name}_Branch_0_Conv2d_0a_1x1")
    branch_1 = _conv(x, 192, 1, f"{name}_Branch_1_Conv2d_0a_1x1")
    branch_1 = _conv(branch_1, 224, (1, 7), f"{name}_Branch_1_Conv2d_0b_1x7")
    branch_1 = _conv(branch_1, 256, (7, 1), f"{name}_Branch_1_Conv2d_0c_7x1")
    branch_2 = _conv(x, 192, 1, f"{name}_Branch_2_Conv2d_0a_1x1")
    branch_2 = _conv(branch_2, 192, (7, 1), f"{name}_Branch_2_Conv2d_0b_7x1")
    branch_2 = _conv(branch_2, 224, (1, 7), f"{name}_Branch_2_Conv2d_0c_1x7")
    branch_2 = _conv(branch_2, 224, (7, 1), f"{name}_Branch_2_Conv2d_0d_7x1")
    branch_2 = _conv(branch_2, 256, (1, 7), f"{name}_Branch_2_Conv2d_0e_1x7")
    branch_3 = _avg_pool(x, 3, 1, f"{name}_Branch_3_AvgPool_0a_3x3")
    branch_3 = _conv(branch_3, 128, 1, f"{name}_Branch_3_Conv2d_0b_1x1")
    return _slim.concat([branch_0, branch_1, branch_2, branch_3], name)


def inception_v4_reduction_b(x, name):
    branch_0 = _conv(x, 192, 1, f"{name}_Branch_0_Conv2d_0a_1x1")
    branch_0 = _conv(branch_0, 192, 3, f"{name}_Branch_0_Conv2d_1a_3x3", strides=2, padding="valid")
    branch_1 = _conv(x, 256, 1, f"{name}_Branch_1_Conv2d_0a_1x1")
    branch_1 = _conv(branch_1, 256, (1, 7), f"{name}_Branch_1_Conv2d_0b_1x7")
    branch_1 = _conv(branch_1, 320, (7, 1), f"{name}_Branch_1_Conv2d_0c_7x1")
    branch_1 = _conv(branch_1, 320, 3, f"{name}_Branch_1_Conv2d_1a_3x3", strides=2, padding="valid")
    branch_2 = _max_pool(x, 3, 2, f"{name}_Branch_2_MaxPool_1a_3x3", padding="valid")
    return _slim.concat([branch_0, branch_1, branch_2], name)


def inception_v4_c(x, name):
    branch_0 = _conv(x, 256, 1, f"{name}_Branch_0_Conv2d_0a_1x1")
    branch_1 = _conv(x, 384, 1, f"{name}_Branch_1_Conv2d_0a_1x1")
    branch_1 = _slim.concat([
        _conv(branch_1, 256, (1, 3), f"{name}_Branch_1_Conv2d_0b_1x3"),
        _conv(branch_1, 256, (3, 1), f"{name}_Branch_1_Conv2d_0c_3x1"),
    ], f"{name}_Branch_1_concat")
    branch_2 = _conv(x, 384, 1, f"{name}_Branch_2_Conv2d_0a_1x1")
    branch_2 = _conv(branch_2, 448, (3, 1), f"{name}_Branch_2_Conv2d_0b_3x1")
    branch_2 = _conv(branch_2, 512, (1, 3), f"{name}_Branch_2_Conv2d_0c_1x3")
    branch_2 = _slim.concat([
        _conv(branch_2, 256, (1, 3), f"{name}_Branch_2_Conv2d_0d_1x3"),
        _conv(branch_2, 256, (3, 1), f"{name}_Branch_2_Conv2d_0e_3x1"),
    ], f"{name}_Branch_2_concat")
    branch_3 = _avg_pool(x, 3, 1, f"{name}_Branch_3_AvgPool_0a_3x3")
    branch_3 = _conv(branch_3, 256, 1, f"{name}_Branch_3_Conv2d_0b_1x1")
    return _slim.concat([branch_0, branch_1, branch_2, branch_3], name)


V4_BLOCK_FUNCTIONS = {
    "a": inception_v4_a,
    "reduction_a": inception_v4_reduction_a,
    "b": inception_v4_b,
    "reduction_b": inception_v4_reduction_b,
    "c": inception_v4_c,
}


def inception_v4_features(x):
    x = inception_v4_stem(x)
    for kind, names in V4_STAGES:
        for name in names:
            x = V4_BLOCK_FUNCTIONS[kind](x, name)
    return x


# ------------------------------------------------------------------------------------------------
# Builders
# ------------------------------------------------------------------------------------------------


def _build(model_name, features, default_size, min_size, include_top, weights, input_tensor, input_shape,
           pooling, classes, classifier_activation, name):
    return _slim.build(model_name, features, include_top=include_top, weights=weights, input_tensor=input_tensor,
                       input_shape=input_shape, pooling=pooling, classes=classes,
                       classifier_activation=classifier_activation, name=name, default_size=default_size,
                       min_size=min_size)


def InceptionV1(include_top=True, weights="tione", input_tensor=None, input_shape=None, pooling=None, classes=1000,
                classifier_activation="softmax", name="inception_v1"):
    """Slim Inception v1 (GoogLeNet with BN), 224x224 by default. See the module docstring."""
    return _build("inception_v1", inception_v1_features, 224, 32, include_top, weights, input_tensor,
                  input_shape, pooling, classes, classifier_activation, name)


def InceptionV2(include_top=True, weights="tione", input_tensor=None, input_shape=None, pooling=None, classes=1000,
                classifier_activation="softmax", name="inception_v2"):
    """Slim Inception v2 (BN-Inception, separable stem), 224x224 by default. See the module docstring."""
    return _build("inception_v2", inception_v2_features, 224, 32, include_top, weights, input_tensor,
                  input_shape, pooling, classes, classifier_activation, name)


def InceptionV4(include_top=True, weights="tione", input_tensor=None, input_shape=None, pooling=None, classes=1000,
                classifier_activation="softmax", name="inception_v4"):
    """Slim Inception v4, 299x299 by default (at least 75). See the module docstring. The
    auxiliary head of the checkpoint is not built."""
    return _build("inception_v4", inception_v4_features, 299, 75, include_top, weights, input_tensor,
                  input_shape, pooling, classes, classifier_activation, name)


# ------------------------------------------------------------------------------------------------
# SSD InceptionV2 (the Object Detection API's ssd_inception_v2 feature extractor)
# ------------------------------------------------------------------------------------------------

SSD_BASE_MAPS = ("Mixed_4c", "Mixed_5c")
# multi_resolution_feature_maps' extra layers: (layout index, depth); each is a 1x1 conv to depth / 2, then a
# 3x3/2 conv to depth, both named after the last base map (insert_1x1_conv=True).
SSD_EXTRA_LAYERS = ((2, 512), (3, 256), (4, 256), (5, 128))


def ssd_extra_layer(x, index, depth):
    x = _ssd_conv(x, depth // 2, 1, f"Mixed_5c_1_Conv2d_{index}_1x1_{depth // 2}")
    return _ssd_conv(x, depth, 3, f"Mixed_5c_2_Conv2d_{index}_3x3_s2_{depth}", strides=2)


def ssd_feature_maps(x):
    """The six SSD feature maps: ``Mixed_4c`` (stride 16), ``Mixed_5c`` (32), and four extra layers (64 ... 512)."""
    end_points = {}
    x = inception_v2_features(x, ssd=True, end_points=end_points)
    maps = [end_points[name] for name in SSD_BASE_MAPS]
    for index, depth in SSD_EXTRA_LAYERS:
        x = ssd_extra_layer(x, index, depth)
        maps.append(x)
    return maps


def SSDInceptionV2(include_top=False, weights="coco", input_tensor=None, input_shape=None, pooling=None,
                   name="ssd_inception_v2"):
    """The feature extractor of the Object Detection API's SSD InceptionV2 (tensorflow/models
    research/object_detection ``models/ssd_inception_v2_feature_extractor.py``): slim's InceptionV2 base under
    the detector's conv hyperparameters -- every conv (the separable stem included) bias-free with BatchNorm
    *with* gamma (eps 1e-3) and ReLU6 -- and the four extra layers of ``multi_resolution_feature_maps``.

    Returns the six feature maps (``Mixed_4c`` ... ``Mixed_5c_2_Conv2d_5_3x3_s2_128``) for a 300x300 input by
    default (the detector's ``fixed_shape_resizer``); input in [-1, 1] (``preprocess_input``).
    ``weights="coco"``: ``ssd_inception_v2_coco_2018_01_28``, converted on first use. There is no classifier.
    """
    if include_top:
        raise ValueError("SSDInceptionV2 is a feature extractor: it has no classifier (include_top=False).")
    if pooling is not None:
        raise ValueError(f"SSDInceptionV2 returns feature maps; pooling={pooling!r} is not supported.")
    if input_shape is None and input_tensor is None:
        input_shape = (300, 300, 3)
    return _slim.build("ssd_inception_v2", ssd_feature_maps, include_top=False, weights=weights,
                       input_tensor=input_tensor, input_shape=input_shape, pooling=None, classes=91,
                       classifier_activation=None, name=name, default_size=300, min_size=32)


preprocess_input = _slim.preprocess_inception
decode_predictions = _slim.decode_predictions
