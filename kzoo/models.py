"""The one door: ``create_model(name, **kwargs)`` and ``list_models``.

Names resolve through :mod:`kzoo.index` (data, no Keras), so listing and resolving never import a family
module; building imports only the one family it needs. ``register_model`` adds a user's own builder.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass, field
from typing import Callable

from kzoo import index


@dataclass(frozen=True)
class ModelSpec:
    """A model ready to build: its canonical name, builder, family and fixed keyword arguments."""

    name: str
    builder: Callable
    family: str
    default_kwargs: dict = field(default_factory=dict)
    aliases: tuple = ()


_USER_MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, *, aliases: tuple = (), **default_kwargs):
    """Decorator: make a user's ``builder`` reachable as ``create_model(name)`` (lower-case name).

    kzoo's own models are rows of :mod:`kzoo.index`; this is for builders outside kzoo.
    """

    def decorate(builder):
        key = name.lower()
        if key in index.MODELS or index.normalise(key) != key:
            raise ValueError(f"model name {name!r} is already a kzoo model")
        family = builder.__module__.rsplit(".", 1)[-1]
        _USER_MODELS[key] = ModelSpec(key, builder, family, dict(default_kwargs), tuple(aliases))
        for alias in aliases:
            _USER_MODELS[alias.lower()] = _USER_MODELS[key]
        return builder

    return decorate


def load_builder(info: index.ModelInfo) -> Callable:
    module = importlib.import_module(f"kzoo.architectures.{info.module}")
    return getattr(module, info.builder)


def get_model_spec(name: str) -> ModelSpec:
    key = str(name).lower()
    if key in _USER_MODELS:
        return _USER_MODELS[key]
    info = index.get(name)
    kwargs = dict(info.kwargs)
    if info.weights_default:
        kwargs["weights"] = info.weights_default
    return ModelSpec(info.name, load_builder(info), info.family, kwargs, info.aliases)


def list_models(pattern: str | None = None, pretrained: bool = False) -> list[str]:
    """Sorted canonical model names, optionally filtered by a glob and by having registry weights."""
    names = index.names(pattern)
    if pretrained:
        from kzoo import registry

        with_weights = {e.model for e in registry.list_weights()}
        names = [n for n in names if n in with_weights]
    return names


def create_model(name: str, *, features_only: bool = False, out_indices=None, **kwargs):
    """Build a model by name. ``features_only=True`` returns multi-scale outputs.

    Without ``features_only`` the keyword arguments are those of the Keras-style builder
    (``weights``, ``include_top``, ``input_shape``, ...). With it, the backbone is built with
    ``include_top=False`` and one output per stride is returned (see ``kzoo.features``).
    Registry weights are looked up under the name asked for: ``create_model("vgg_16", weights="tione")``
    builds VGG16 with the TF-slim weights registered for ``vgg_16``.
    """
    from kzoo.architectures._factory import registered_as

    spec = get_model_spec(name)
    call_kwargs = {**spec.default_kwargs, **kwargs}
    # A user's builder may wrap a kzoo one: only kzoo's own rows rename the weights lookup.
    with registered_as(spec.name) if spec.name in index.MODELS else contextlib.nullcontext():
        if not features_only:
            if out_indices is not None:
                raise ValueError("`out_indices` is only meaningful with `features_only=True`.")
            return spec.builder(**call_kwargs)
        from kzoo.features import build_feature_model

        return build_feature_model(spec, call_kwargs, out_indices)


__all__ = ["ModelSpec", "create_model", "get_model_spec", "list_models", "load_builder", "register_model"]
