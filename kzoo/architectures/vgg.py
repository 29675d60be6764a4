"""VGG16 and VGG19, as keras.applications builds them (layer names ``block{b}_conv{i}``, ``fc1``, ``fc2``).

A depth is data: the number of 3x3 convolutions in each of the five blocks. The TF-slim names
``vgg_16`` / ``vgg_19`` are the same networks (slim's ``conv{b}/conv{b}_{i}`` and ``fc6``/``fc7``
convolutions map one to one onto these layers), registered under their own names so that the registry's
TF-slim weights resolve for them.
"""

from __future__ import annotations

import keras
from keras import layers

from kzoo.architectures import _common
from kzoo.models import register_model
from kzoo.preprocessing import decode_predictions, family_preprocess  # noqa: F401

__all__ = ["VGG16", "VGG19"]

CONVS_PER_BLOCK = {16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
BLOCK_WIDTHS = (64, 128, 256, 512, 512)

preprocess_input = family_preprocess("caffe")


def _vgg(depth, *, canonical, include_top, weights, input_tensor, input_shape, pooling, classes,
         classifier_activation, name):
    pretrained = _common.validate_weights(weights, canonical, include_top, classes)
    input_shape = _common.obtain_input_shape(input_shape, default_size=224, min_size=32,
                                             require_flatten=include_top, pretrained=pretrained)
    img_input = _common.make_input(input_tensor, input_shape)
    x = img_input
    for block, (convs, width) in enumerate(zip(CONVS_PER_BLOCK[depth], BLOCK_WIDTHS), start=1):
        for i in range(1, convs + 1):
            x = layers.Conv2D(width, (3, 3), activation="relu", padding="same", name=f"block{block}_conv{i}")(x)
        x = layers.MaxPooling2D((2, 2), strides=(2, 2), name=f"block{block}_pool")(x)
    if include_top:
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(4096, activation="relu", name="fc1")(x)
        x = layers.Dense(4096, activation="relu", name="fc2")(x)
        _common.validate_activation(classifier_activation, weights)
        x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    else:
        x = _common.pooling_head(x, pooling, avg_name=None, max_name=None)  # unnamed in Keras
    model = keras.Model(_common.model_inputs(input_tensor, img_input), x, name=name)
    return _common.load_model_weights(model, canonical, weights, include_top)


@register_model("vgg16")
def VGG16(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
          classes=1000, classifier_activation="softmax", name="vgg16"):
    """Instantiates the VGG16 model (keras.applications signature, layer names and weight layout).

    Preprocessing: ``kzoo.vgg.preprocess_input`` (caffe: RGB->BGR, ImageNet mean subtracted).
    ``weights``: None, 'imagenet', a registry tag for ``vgg16``, or a path to an .h5 / .weights.h5.
    """
    return _vgg(16, canonical="vgg16", include_top=include_top, weights=weights, input_tensor=input_tensor,
                input_shape=input_shape, pooling=pooling, classes=classes,
                classifier_activation=classifier_activation, name=name)


@register_model("vgg19")
def VGG19(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
          classes=1000, classifier_activation="softmax", name="vgg19"):
    """Instantiates the VGG19 model (keras.applications signature, layer names and weight layout).

    Preprocessing: ``kzoo.vgg.preprocess_input`` (caffe). ``weights`` as for :func:`VGG16`.
    """
    return _vgg(19, canonical="vgg19", include_top=include_top, weights=weights, input_tensor=input_tensor,
                input_shape=input_shape, pooling=pooling, classes=classes,
                classifier_activation=classifier_activation, name=name)


@register_model("vgg_16")
def vgg_16(include_top=True, weights="tione", input_tensor=None, input_shape=None, pooling=None,
           classes=1000, classifier_activation="softmax", name="vgg_16"):
    """TF-slim ``vgg_16``: the same network and layer names as :func:`VGG16`; weights resolve under
    the registry name ``vgg_16`` (e.g. ``weights="tione"``)."""
    return _vgg(16, canonical="vgg_16", include_top=include_top, weights=weights, input_tensor=input_tensor,
                input_shape=input_shape, pooling=pooling, classes=classes,
                classifier_activation=classifier_activation, name=name)


@register_model("vgg_19")
def vgg_19(include_top=True, weights="tione", input_tensor=None, input_shape=None, pooling=None,
           classes=1000, classifier_activation="softmax", name="vgg_19"):
    """TF-slim ``vgg_19``: the same network and layer names as :func:`VGG19`; weights resolve under
    the registry name ``vgg_19``."""
    return _vgg(19, canonical="vgg_19", include_top=include_top, weights=weights, input_tensor=input_tensor,
                input_shape=input_shape, pooling=pooling, classes=classes,
                classifier_activation=classifier_activation, name=name)
