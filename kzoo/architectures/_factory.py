"""The one builder path: check the arguments, make the input, build the family's layers, finish the head,
then load the weights, which travel one way (registry -> sources -> [convert] -> local file -> model).

A family supplies its layers (``body``) and its classifier (``head``); :func:`build` does everything a
keras.applications builder does around them, in Keras' order, with Keras' messages. Families whose
Keras original interleaves its own checks with these steps (MobileNet's ``rows``, ConvNeXt's
preprocessing layers) call :class:`Weights` and the ``_common`` steps themselves, in the same order.

Weights are looked up under the *registered* name: the family's own name by default, or the name
``kzoo.create_model`` was called with (``vgg_16`` is the ``VGG16`` builder with TF-slim weights), as timm
looks weights up under the variant it was asked for.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from typing import Callable

import keras

from kzoo.architectures import _common

_REGISTERED_NAME = contextvars.ContextVar("kzoo_registered_name", default=None)


@contextlib.contextmanager
def registered_as(name: str):
    """Builders called inside look weights up under ``name`` (set by ``kzoo.create_model``)."""
    token = _REGISTERED_NAME.set(name)
    try:
        yield
    finally:
        _REGISTERED_NAME.reset(token)


def registered_name(default: str) -> str:
    return _REGISTERED_NAME.get() or default


class Weights:
    """A builder's ``weights`` argument, checked once (as keras.applications checks it) and loaded once.

    ``weights`` is None, a path (legacy ``.h5`` by layer name, or a Keras 3 ``.weights.h5``), a
    registry tag (``"imagenet"``, ``"tione"``, ...) for the registered name, or a registry id
    (``"resnet50.imagenet@dlm-v0.2"``: that file, superseded releases included). ``pretrained`` is True for a
    tag, so the input-shape rules for pretrained weights apply, as Keras applies them for ``"imagenet"``.
    Families whose Keras module words the errors differently pass their own templates
    (``str.format`` fields: ``weights``, ``classes``, ``num_classes``).
    """

    def __init__(self, weights, model_name: str, include_top: bool, classes: int, num_classes: int = 1000, *,
                 weights_error: str = _common.WEIGHTS_ERROR, classes_error: str = _common.CLASSES_ERROR):
        self.value = weights
        self.model_name = registered_name(model_name)
        self.include_top = include_top
        self.is_path = _common.is_weights_path(weights)
        self.pretrained = False
        self.entry = None
        if weights is None or self.is_path:
            return
        if isinstance(weights, str) and "." in weights:  # a registry id: "resnet50.imagenet@dlm-v0.2"
            from kzoo import registry

            self.entry = registry.load_registry().get(weights)
            if self.entry is not None:
                self._check_entry(classes, classes_error)
                self.pretrained = True
                return
        if weights != _common.IMAGENET:
            from kzoo import registry

            if not isinstance(weights, str) or not registry.has_weights(self.model_name, weights, include_top):
                raise ValueError(weights_error.format(weights=weights))
        if include_top and classes != num_classes:
            raise ValueError(classes_error.format(weights=weights, classes=classes, num_classes=num_classes))
        self.pretrained = True

    def _check_entry(self, classes, classes_error):
        """``weights=<registry id>``: the entry must be this model's, and carry a head if one is asked for."""
        from kzoo import index
        from kzoo.errors import IncompatibleWeights

        entry = self.entry
        if entry.model != index.normalise(self.model_name):
            raise IncompatibleWeights(f"Weights {entry.id!r} are for model {entry.model!r}, not "
                                      f"{self.model_name!r}. `kzoo list --weights --superseded` lists every id.")
        if self.include_top and not entry.include_top:
            raise IncompatibleWeights(f"Weights {entry.id!r} have no classifier head: build with "
                                      f"include_top=False, or use the entry with the head.")
        if self.include_top and entry.num_classes and classes != entry.num_classes:
            raise ValueError(classes_error.format(weights=entry.id, classes=classes,
                                                  num_classes=entry.num_classes))

    def local_file(self, **variant):
        """``(path, entry)``: the file to load and its registry entry (None for a user's path)."""
        if self.is_path:
            return os.fspath(self.value), None
        from kzoo import registry, sources

        entry = self.entry or registry.resolve_weights(self.model_name, self.value, self.include_top, **variant)
        path = sources.fetch(entry)
        if entry.format != "keras-h5":
            from kzoo.convert import converted_weights_path

            path = converted_weights_path(entry, path)
        return os.fspath(path), entry

    def load(self, model, *, legacy_names: Callable | None = None, **variant):
        """Load into ``model`` (nothing for ``weights=None``); ``variant`` picks among a tag's files."""
        if self.value is None:
            return model
        path, entry = self.local_file(**variant)
        # A checkpoint that only exists with its head also serves include_top=False: the head is extra.
        allow_unexpected = entry is not None and entry.include_top and not self.include_top
        # A registry file was hash-verified by sources.fetch: HDF5 cannot be fed a damaged one, so the
        # child-process probe that guards a user's own file (keras_h5's docstring) is not needed.
        _load_file(model, path, legacy_names, allow_unexpected=allow_unexpected, probe=entry is None,
                   release=entry)
        return model


def _load_file(model, path, legacy_names=None, *, probe=True, **kwargs):
    from kzoo.formats import keras_h5

    # legacy_names renames the file's layers as they are read (Keras 2 names such as "conv1/conv");
    # superseded layouts are recognised inside (kzoo.formats.keras_legacy).
    return keras_h5.load_weights(model, path, probe=probe, rename=legacy_names, **kwargs)


def dense_head(x, classes, classifier_activation):
    """Keras' most common classifier: global average pooling, then the ``predictions`` Dense layer."""
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.layers.Dense(classes, activation=classifier_activation, name="predictions")(x)


def build(model_name: str, body: Callable, *, include_top, weights, input_tensor, input_shape, pooling, classes,
          classifier_activation, name, default_size: int, min_size: int, head: Callable = dense_head,
          pool_names=("avg_pool", "max_pool"), weights_errors: dict | None = None, legacy_names=None,
          validate_activation_first: bool = False, body_sees_input: bool = False):
    """A keras.applications builder around ``body(img_input) -> features`` and ``head(x, classes, act)``.

    ``model_name`` is the family's registry name (``create_model`` may register it under another);
    ``name`` the Keras model name. ``pool_names`` are the ``pooling=`` layers' names (None where Keras
    leaves them unnamed). ``validate_activation_first``: families whose Keras module checks the classifier
    activation before building any layer. ``body_sees_input``: the body is called as
    ``body(img_input, input_shape, pretrained)``, for stems whose layers depend on them (EfficientNet).
    """
    request = Weights(weights, model_name, include_top, classes, **(weights_errors or {}))
    input_shape = _common.obtain_input_shape(input_shape, default_size=default_size, min_size=min_size,
                                             require_flatten=include_top, pretrained=request.pretrained)
    if include_top and validate_activation_first:
        _common.validate_activation(classifier_activation, weights)
    img_input = _common.make_input(input_tensor, input_shape)
    x = body(img_input, input_shape, request.pretrained) if body_sees_input else body(img_input)
    if include_top:
        _common.validate_activation(classifier_activation, weights)
        x = head(x, classes, classifier_activation)
    else:
        x = _common.pooling_head(x, pooling, *pool_names)
    model = keras.Model(_common.model_inputs(input_tensor, img_input), x, name=name)
    return request.load(model, legacy_names=legacy_names)


def keras_style_builder(model_name: str, body: Callable, *, function_name: str, module: str, doc: str,
                        weights_default: str = "imagenet", default_size: int = 224, min_size: int = 32):
    """A keras.applications-signature function (``include_top``, ``weights``, ``input_tensor``, ...) that
    builds ``body`` through :func:`build`, for families whose variants differ only in their stage table."""

    def builder(include_top=True, weights=weights_default, input_tensor=None, input_shape=None, pooling=None,
                classes=1000, classifier_activation="softmax", name=model_name):
        return build(model_name, body, include_top=include_top, weights=weights, input_tensor=input_tensor,
                     input_shape=input_shape, pooling=pooling, classes=classes,
                     classifier_activation=classifier_activation, name=name, default_size=default_size,
                     min_size=min_size)

    builder.__name__ = builder.__qualname__ = function_name
    builder.__module__ = module
    builder.__doc__ = doc
    return builder
