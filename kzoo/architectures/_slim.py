"""Pieces shared by the builders of TF-slim networks (resnet_v1, inception v1/v2/v4, shufflenet_v2).

Layer names follow the slim variable scopes with ``/`` replaced by ``_`` (and ``unit_1`` written
``unit1``), so a checkpoint variable maps onto a layer mechanically:
``InceptionV1/Mixed_3b/Branch_1/Conv2d_0b_3x3/weights`` -> layer ``Mixed_3b_Branch_1_Conv2d_0b_3x3``,
its ``BatchNorm/*`` -> layer ``Mixed_3b_Branch_1_Conv2d_0b_3x3_bn``. The classifier is always the
Keras-style ``predictions`` Dense layer (slim's 1x1-conv logits flattened).
"""

from __future__ import annotations

from keras import layers

from kzoo import preprocessing
from kzoo.architectures import _common, _factory



def conv_bn(x, filters, kernel_size, name, *, strides=1, padding="same", epsilon=1e-3, scale=False,
            activation="relu", dilation_rate=1):
    """slim ``conv2d`` under a batch-norm arg_scope: bias-free conv, BN, optional ReLU (or ReLU6)."""
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding=padding, dilation_rate=dilation_rate,
                      use_bias=False, name=name)(x)
    x = layers.BatchNormalization(axis=_common.bn_axis(), epsilon=epsilon, scale=scale, name=f"{name}_bn")(x)
    if activation:
        x = layers.Activation(activation, name=f"{name}_{activation}")(x)
    return x


def concat(tensors, name):
    return layers.Concatenate(axis=_common.bn_axis(), name=name)(tensors)


def build(model_name, body, **kwargs):
    """The one builder path (``_factory.build``) in keras.applications' order for these families: the
    classifier activation is checked before any layer is built. The classifier is global average pooling +
    ``predictions``: slim pools with a VALID average pool as large as the final feature map (7x7 at 224
    for v1/v2, the whole map for v4) or ``reduce_mean``, which at the default input size is the same."""
    return _factory.build(model_name, body, validate_activation_first=True, **kwargs)


preprocess_inception = preprocessing.family_preprocess("tf")  # slim's inception preprocessing: [-1, 1]
decode_predictions = preprocessing.decode_predictions


preprocess_vgg_rgb = preprocessing.rgb_mean_preprocess_input
