"""Building a classifier: a pretrained backbone, its preprocessing as a layer, and a new head."""

from __future__ import annotations

import os

import keras
from keras import layers

from kzoo.finetune.layer_lookup import _leaf_layers
from kzoo.finetune.loading import load_pretrained
from kzoo.finetune.preprocessing_layer import ImagePreprocessing, preprocessing_mode


HEAD_NAMES = {"avg": "avg_pool", "max": "max_pool", "dropout": "top_dropout", "dense": "predictions"}


def _build_backbone(name, input_tensor, input_shape, weights, **kwargs):
    from kzoo.models import create_model

    return create_model(name, include_top=False, weights=weights, input_tensor=input_tensor,
                        input_shape=input_shape, **kwargs)


def build_classifier(backbone, num_classes, pooling="avg", dropout=0.2, include_preprocessing=True,
                     weights="imagenet", input_shape=None, preprocessing=None, name=None, **backbone_kwargs):
    """A classifier for ``num_classes`` classes on a pretrained backbone; it takes raw 0-255 images.

    Args:
        backbone: a model name (``"mobilenetv2"``) or a Keras model without its top. A Functional
            model is copied with its weights into the classifier (the original is left alone).
        num_classes: 2 gives one sigmoid unit (binary); more gives a softmax layer.
        pooling: ``"avg"`` or ``"max"`` global pooling of the backbone's feature map.
        dropout: dropout rate before the classification layer (0 for none).
        include_preprocessing: put the backbone's preprocessing inside the model as a layer.
        weights: for a model name, a registry tag (``"imagenet"``), None, or a weight-file path. A
            file may hold a different head (e.g. 1000 ImageNet classes): the mismatched layers are
            skipped and listed in a warning and in ``model.kzoo_load_report``.
        input_shape: e.g. ``(224, 224, 3)``; None lets the builder choose.
        preprocessing: override the preprocessing mode (see ``PREPROCESSING_MODES``).
        **backbone_kwargs: passed to the builder (``alpha=0.35`` ...).

    The head is the layers ``avg_pool`` (or ``max_pool``), ``top_dropout`` and ``predictions``. The
    classification layer starts at zero (kernel and bias), so the first predictions are uniform and
    the first gradients come from the features alone, not from a random projection of them (the
    head-initialisation used by BiT).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}.")
    if pooling not in ("avg", "max"):
        raise ValueError(f"pooling must be 'avg' or 'max', got {pooling!r}.")
    weights_file = weights if isinstance(weights, (str, os.PathLike)) and os.path.exists(os.fspath(weights)) else None
    if include_preprocessing:
        mode = preprocessing or preprocessing_mode(backbone)
    if isinstance(backbone, str):
        shape = tuple(input_shape) if input_shape else (None, None, 3)
        inputs = keras.Input(shape=shape, name="image")
        x = ImagePreprocessing(mode, name="preprocessing")(inputs) if include_preprocessing else inputs
        base = _build_backbone(backbone, x, input_shape, None if weights_file else weights, **backbone_kwargs)
        features = base.output
        model_name = name or f"{base.name}_classifier"
    else:
        shape = tuple(input_shape) if input_shape else tuple(backbone.input_shape[1:])
        inputs = keras.Input(shape=shape, name="image")
        preprocess = ImagePreprocessing(mode, name="preprocessing") if include_preprocessing else None
        clone, features = _replay(backbone, inputs, preprocess)
        base = clone or backbone
        model_name = name or f"{backbone.name}_classifier"
    taken = {layer.name for layer in _leaf_layers(base)}
    names = {key: _free_name(value, taken) for key, value in HEAD_NAMES.items()}
    if len(features.shape) == 4:
        pool = layers.GlobalAveragePooling2D if pooling == "avg" else layers.GlobalMaxPooling2D
        features = pool(name=names[pooling])(features)
    head = [features]
    if dropout:
        head.append(layers.Dropout(dropout, name=names["dropout"])(head[-1]))
    binary = num_classes == 2
    outputs = layers.Dense(1 if binary else num_classes, activation="sigmoid" if binary else "softmax",
                           kernel_initializer="zeros", bias_initializer="zeros", name=names["dense"])(head[-1])
    model = keras.Model(inputs, outputs, name=model_name)
    model.kzoo_head = [n for n in (names[pooling], names["dropout"], names["dense"]) if _has_layer(model, n)]
    model.kzoo_load_report = None
    if weights_file:
        model.kzoo_load_report = load_pretrained(model, weights_file)
    return model


def _replay(backbone, inputs, preprocess):
    """The backbone's graph rebuilt on ``inputs`` (through ``preprocess`` when given), as a copy.

    A Functional backbone is cloned layer by layer with its weights, so the classifier's layers are
    top-level (addressable by name for freezing and h5 loading) and each has one call site, so
    ``model.get_layer(name).output`` means what users expect. Sharing the user's layer objects
    instead would give each two call sites, and ``.output`` would point into the old graph.
    Other models (Sequential, subclassed) are called as one nested layer.
    """
    functional = isinstance(backbone, keras.Model) and not isinstance(backbone, keras.Sequential) \
        and hasattr(backbone, "_run_through_graph") and len(backbone.inputs) == 1
    if not functional:
        return None, backbone(preprocess(inputs) if preprocess else inputs)
    memo = {}

    def call_function(layer, *args, **kwargs):
        if preprocess is not None and args and args[0] is inputs:  # the first layers see preprocessed pixels
            if "x" not in memo:
                memo["x"] = preprocess(inputs)
            args = (memo["x"], *args[1:])
        return layer(*args, **kwargs)

    clone = keras.models.clone_model(backbone, input_tensors=inputs, call_function=call_function)
    for layer in _leaf_layers(backbone):
        if layer.weights:
            clone.get_layer(layer.name).set_weights(layer.get_weights())
    return clone, clone.output


def _free_name(name, taken):
    candidate, i = name, 1
    while candidate in taken:
        candidate, i = f"{name}_{i}", i + 1
    return candidate


def _has_layer(model, name):
    return any(layer.name == name for layer in model.layers)
