"""VGG11, VGG13, VGG16 and VGG19, as keras.applications builds VGG16/19 (layer names ``block{b}_conv{i}``,
``fc1``, ``fc2``).

A depth is data: the number of 3x3 convolutions in each of the five blocks (the index rows' ``stages``,
which the TF-slim and Paddle conversion rules read too). VGG11 and VGG13 (configurations A and B of
Simonyan & Zisserman, https://arxiv.org/abs/1409.1556) have no keras.applications original; their weights are
PaddlePaddle's (``weights="paddle"``, RGB ``torch`` preprocessing). The TF-slim names ``vgg_16`` / ``vgg_19`` are registrations
of these builders (see ``kzoo.index``): the same network, with weights looked up under the slim name.
"""

from __future__ import annotations

from keras import layers

from kzoo import index
from kzoo.architectures import _factory
from kzoo.preprocessing import decode_predictions, family_preprocess  # noqa: F401

__all__ = ["VGG11", "VGG13", "VGG16", "VGG19"]

BLOCK_WIDTHS = (64, 128, 256, 512, 512)

preprocess_input = family_preprocess("caffe")


def _body(convs_per_block):
    def body(x):
        for block, (convs, width) in enumerate(zip(convs_per_block, BLOCK_WIDTHS), start=1):
            for i in range(1, convs + 1):
                x = layers.Conv2D(width, (3, 3), activation="relu", padding="same", name=f"block{block}_conv{i}")(x)
            x = layers.MaxPooling2D((2, 2), strides=(2, 2), name=f"block{block}_pool")(x)
        return x

    return body


def _head(x, classes, classifier_activation):
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(4096, activation="relu", name="fc1")(x)
    x = layers.Dense(4096, activation="relu", name="fc2")(x)
    return layers.Dense(classes, activation=classifier_activation, name="predictions")(x)


def _vgg(model_name, include_top, weights, input_tensor, input_shape, pooling, classes, classifier_activation,
         name):
    return _factory.build(model_name, _body(index.get(model_name).stages), head=_head, include_top=include_top,
                          weights=weights, input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                          classes=classes, classifier_activation=classifier_activation, name=name,
                          default_size=224, min_size=32, pool_names=(None, None))  # unnamed in Keras


def VGG11(include_top=True, weights="paddle", input_tensor=None, input_shape=None, pooling=None,
          classes=1000, classifier_activation="softmax", name="vgg11"):
    """Instantiates VGG11 (configuration A: 1, 1, 2, 2, 2 convs per block) in the VGG16 layout.

    Preprocessing: ``kzoo.preprocess_input(x, mode="torch")`` for the Paddle weights (RGB, ImageNet mean/std).
    ``weights``: None, 'paddle', a registry tag for ``vgg11``, or a path to an .h5 / .weights.h5.
    """
    return _vgg("vgg11", include_top, weights, input_tensor, input_shape, pooling, classes, classifier_activation,
                name)


def VGG13(include_top=True, weights="paddle", input_tensor=None, input_shape=None, pooling=None,
          classes=1000, classifier_activation="softmax", name="vgg13"):
    """Instantiates VGG13 (configuration B: 2 convs per block) in the VGG16 layout. Weights and
    preprocessing as for :func:`VGG11`."""
    return _vgg("vgg13", include_top, weights, input_tensor, input_shape, pooling, classes, classifier_activation,
                name)


def VGG16(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
          classes=1000, classifier_activation="softmax", name="vgg16"):
    """Instantiates the VGG16 model (keras.applications signature, layer names and weight layout).

    Preprocessing: ``kzoo.vgg.preprocess_input`` (caffe: RGB->BGR, ImageNet mean subtracted).
    ``weights``: None, 'imagenet', a registry tag for ``vgg16``, or a path to an .h5 / .weights.h5.
    """
    return _vgg("vgg16", include_top, weights, input_tensor, input_shape, pooling, classes, classifier_activation,
                name)


def VGG19(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
          classes=1000, classifier_activation="softmax", name="vgg19"):
    """Instantiates the VGG19 model (keras.applications signature, layer names and weight layout).

    Preprocessing: ``kzoo.vgg.preprocess_input`` (caffe). ``weights`` as for :func:`VGG16`.
    """
    return _vgg("vgg19", include_top, weights, input_tensor, input_shape, pooling, classes, classifier_activation,
                name)
