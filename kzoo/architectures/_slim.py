"""Pieces shared by the builders of TF-slim networks (resnet_v1, inception v1/v2/v4, shufflenet_v2).

Layer names follow the slim variable scopes with ``/`` replaced by ``_`` (and ``unit_1`` written
``unit1``), so a checkpoint variable maps onto a layer mechanically:
``InceptionV1/Mixed_3b/Branch_1/Conv2d_0b_3x3/weights`` -> layer ``Mixed_3b_Branch_1_Conv2d_0b_3x3``,
its ``BatchNorm/*`` -> layer ``Mixed_3b_Branch_1_Conv2d_0b_3x3_bn``. The classifier is always the
Keras-style ``predictions`` Dense layer (slim's 1x1-conv logits flattened).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from kzoo import preprocessing
from kzoo.architectures import _common

# Slim's VGG / ResNet v1 preprocessing subtracts these RGB means and does not scale.
VGG_RGB_MEANS = (123.68, 116.78, 103.94)


def conv_bn(x, filters, kernel_size, name, *, strides=1, padding="same", epsilon=1e-3, scale=False,
            activation="relu"):
    """slim ``conv2d`` under a batch-norm arg_scope: bias-free conv, BN, optional ReLU."""
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding=padding, use_bias=False, name=name)(x)
    x = layers.BatchNormalization(axis=_common.bn_axis(), epsilon=epsilon, scale=scale, name=f"{name}_bn")(x)
    if activation:
        x = layers.Activation(activation, name=f"{name}_{activation}")(x)
    return x


def concat(tensors, name):
    return layers.Concatenate(axis=_common.bn_axis(), name=name)(tensors)


def check_arguments(canonical_name, *, weights, include_top, input_shape, classes, classifier_activation,
                    default_size, min_size):
    """keras.applications' argument checks, in Keras' order; returns the resolved input shape."""
    pretrained = _common.validate_weights(weights, canonical_name, include_top, classes)
    input_shape = _common.obtain_input_shape(input_shape, default_size, min_size, require_flatten=include_top,
                                             pretrained=pretrained)
    if include_top:
        _common.validate_activation(classifier_activation, weights)
    return input_shape


def classifier(x, include_top, pooling, classes, classifier_activation):
    """Global average pooling + ``predictions``, or the ``pooling`` option without the top.

    Slim pools with a VALID average pool as large as the final feature map (7x7 at 224 for v1/v2,
    the whole map for v4) or ``reduce_mean``: at the default input size both are a global average.
    """
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        return layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    return _common.pooling_head(x, pooling)


def finish(input_tensor, img_input, outputs, name, canonical_name, weights, include_top):
    model = keras.Model(_common.model_inputs(input_tensor, img_input), outputs, name=name)
    return _common.load_model_weights(model, canonical_name, weights, include_top)


preprocess_inception = preprocessing.family_preprocess("tf")  # slim's inception preprocessing: [-1, 1]
decode_predictions = preprocessing.decode_predictions


def preprocess_vgg_rgb(x, data_format=None):
    """Slim's vgg preprocessing on 0..255 RGB: subtract the RGB channel means; no scaling, no BGR flip
    (unlike Keras' ``caffe`` mode). NumPy float arrays are updated in place, as Keras does."""
    data_format = data_format or keras.config.image_data_format()
    ndim = len(x.shape)
    shape = [1] * ndim
    shape[1 if data_format == "channels_first" and ndim == 4 else (0 if data_format == "channels_first" else -1)] = 3
    if isinstance(x, np.ndarray):
        if not np.issubdtype(x.dtype, np.floating):
            x = x.astype(keras.config.floatx(), copy=False)
        x -= np.asarray(VGG_RGB_MEANS, dtype=x.dtype).reshape(shape)
        return x
    x = keras.ops.cast(x, keras.config.floatx())
    return x - keras.ops.reshape(keras.ops.convert_to_tensor(np.asarray(VGG_RGB_MEANS), dtype=x.dtype), shape)

