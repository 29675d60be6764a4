"""Inception v3, as keras.applications builds it.

Stem, then the mixed blocks as a table: three 35x35 blocks (A), a grid reduction, four 17x17 blocks
with factorised 7x7 convs (B), a second reduction and two 8x8 blocks with expanded filter banks (C).
Every conv is bias-free with a scale-free BatchNorm and ReLU. Like Keras, the conv / BN / ReLU layers
are unnamed (``conv2d_7``, ``batch_normalization_7``, ...); they are created in Keras' order so a model
built in a fresh session carries Keras' names. The TF-slim name ``inception_v3`` is the same network
(slim's ``InceptionV3/Mixed_*`` convs map one to one; the aux head is not built): a registration of
:func:`InceptionV3` in ``kzoo.index``, so ``kzoo.create_model("inception_v3")`` builds this model with the
weights registered under ``inception_v3`` (``weights="tione"`` by default).
"""

from __future__ import annotations

from keras import layers

from kzoo.architectures import _common, _factory
from kzoo.preprocessing import decode_predictions, family_preprocess  # noqa: F401

__all__ = ["InceptionV3"]

# (kind, argument): A = pool-branch width, B = width of the factorised 7x7 branches.
MIXED = (("A", 32), ("A", 64), ("A", 64), ("RA", None),
         ("B", 128), ("B", 160), ("B", 160), ("B", 192), ("RB", None),
         ("C", None), ("C", None))

# Keras' InceptionV3 words these errors its own way.
WEIGHTS_ERRORS = {
    "weights_error": "The `weights` argument should be either `None` (random initialization), `imagenet` "
                     "(pre-training on ImageNet), or the path to the weights file to be loaded; "
                     "Received: weights={weights}",
    "classes_error": 'If using `weights="{weights}"` with `include_top=True`, `classes` should be '
                     "{num_classes}. Received classes={classes}",
}

preprocess_input = family_preprocess("tf")


def conv_bn(x, filters, rows, cols, padding="same", strides=(1, 1)):
    x = layers.Conv2D(filters, (rows, cols), strides=strides, padding=padding, use_bias=False)(x)
    x = layers.BatchNormalization(axis=_common.bn_axis(), scale=False)(x)
    return layers.Activation("relu")(x)


def _avg_pool_branch(x, filters):
    return conv_bn(layers.AveragePooling2D((3, 3), strides=(1, 1), padding="same")(x), filters, 1, 1)


def _block_a(x, pool_filters):
    b1 = conv_bn(x, 64, 1, 1)
    b5 = conv_bn(conv_bn(x, 48, 1, 1), 64, 5, 5)
    b3 = conv_bn(conv_bn(conv_bn(x, 64, 1, 1), 96, 3, 3), 96, 3, 3)
    return [b1, b5, b3, _avg_pool_branch(x, pool_filters)]


def _reduction_a(x):
    b3 = conv_bn(x, 384, 3, 3, strides=(2, 2), padding="valid")
    b3dbl = conv_bn(conv_bn(conv_bn(x, 64, 1, 1), 96, 3, 3), 96, 3, 3, strides=(2, 2), padding="valid")
    return [b3, b3dbl, layers.MaxPooling2D((3, 3), strides=(2, 2))(x)]


def _block_b(x, width):
    b1 = conv_bn(x, 192, 1, 1)
    b7 = conv_bn(conv_bn(conv_bn(x, width, 1, 1), width, 1, 7), 192, 7, 1)
    b7dbl = conv_bn(x, width, 1, 1)
    for filters, (rows, cols) in ((width, (7, 1)), (width, (1, 7)), (width, (7, 1)), (192, (1, 7))):
        b7dbl = conv_bn(b7dbl, filters, rows, cols)
    return [b1, b7, b7dbl, _avg_pool_branch(x, 192)]


def _reduction_b(x):
    b3 = conv_bn(conv_bn(x, 192, 1, 1), 320, 3, 3, strides=(2, 2), padding="valid")
    b7x3 = conv_bn(conv_bn(conv_bn(x, 192, 1, 1), 192, 1, 7), 192, 7, 1)
    b7x3 = conv_bn(b7x3, 192, 3, 3, strides=(2, 2), padding="valid")
    return [b3, b7x3, layers.MaxPooling2D((3, 3), strides=(2, 2))(x)]


def _block_c(x, index):
    axis = _common.bn_axis()
    b1 = conv_bn(x, 320, 1, 1)
    b3 = conv_bn(x, 384, 1, 1)
    b3 = layers.concatenate([conv_bn(b3, 384, 1, 3), conv_bn(b3, 384, 3, 1)], axis=axis, name=f"mixed9_{index}")
    b3dbl = conv_bn(conv_bn(x, 448, 1, 1), 384, 3, 3)
    b3dbl = layers.concatenate([conv_bn(b3dbl, 384, 1, 3), conv_bn(b3dbl, 384, 3, 1)], axis=axis)
    return [b1, b3, b3dbl, _avg_pool_branch(x, 192)]


def _body(img_input):
    axis = _common.bn_axis()
    x = conv_bn(img_input, 32, 3, 3, strides=(2, 2), padding="valid")
    x = conv_bn(x, 32, 3, 3, padding="valid")
    x = conv_bn(x, 64, 3, 3)
    x = layers.MaxPooling2D((3, 3), strides=(2, 2))(x)
    x = conv_bn(x, 80, 1, 1, padding="valid")
    x = conv_bn(x, 192, 3, 3, padding="valid")
    x = layers.MaxPooling2D((3, 3), strides=(2, 2))(x)

    c_index = 0
    for i, (kind, arg) in enumerate(MIXED):
        if kind == "A":
            branches = _block_a(x, arg)
        elif kind == "RA":
            branches = _reduction_a(x)
        elif kind == "B":
            branches = _block_b(x, arg)
        elif kind == "RB":
            branches = _reduction_b(x)
        else:
            branches = _block_c(x, c_index)
            c_index += 1
        x = layers.concatenate(branches, axis=axis, name=f"mixed{i}")
    return x


def InceptionV3(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
                classes=1000, classifier_activation="softmax", name="inception_v3"):
    """Instantiates the Inception v3 architecture (keras.applications signature, names, weight layout).

    Default input 299x299, at least 75x75. Preprocessing: ``kzoo.inception_v3.preprocess_input`` ([-1, 1]).
    ``weights``: None, 'imagenet', a registry tag for ``inceptionv3``, or a path to an .h5 / .weights.h5.
    """
    return _factory.build(
        "inceptionv3", _body, include_top=include_top, weights=weights, input_tensor=input_tensor,
        input_shape=input_shape, pooling=pooling, classes=classes, classifier_activation=classifier_activation,
        name=name, default_size=299, min_size=75, pool_names=(None, None),  # unnamed in Keras
        weights_errors=WEIGHTS_ERRORS)
