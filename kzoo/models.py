"""The one door: ``create_model(name, **kwargs)`` and ``list_models``.

Family modules in ``kzoo/architectures/`` register their builders with ``@register_model``; the
registry of names is filled by importing those modules on first use, so importing ``kzoo`` stays cheap.
"""

from __future__ import annotations

import fnmatch
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable

from kzoo.errors import UnknownModel


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture: its canonical lower-case name and the builder that makes it."""

    name: str
    builder: Callable
    family: str
    default_kwargs: dict = field(default_factory=dict)
    aliases: tuple = ()


_MODELS: dict[str, ModelSpec] = {}
_ALIASES: dict[str, str] = {}
_LOADED = False


def register_model(name: str, *, aliases: tuple = (), **default_kwargs):
    """Decorator: register ``builder`` under ``name`` (lower-case), with optional fixed kwargs.

    The same builder can be registered several times with different ``default_kwargs``, e.g.
    ``mobilenet_v2_140`` is MobileNetV2 with ``alpha=1.4``.
    """

    def decorate(builder):
        family = builder.__module__.rsplit(".", 1)[-1]
        spec = ModelSpec(name, builder, family, dict(default_kwargs), tuple(aliases))
        if name in _MODELS and _MODELS[name].builder is not builder:
            raise ValueError(f"model name {name!r} registered twice")
        _MODELS[name] = spec
        for alias in aliases:
            _ALIASES[alias] = name
        return builder

    return decorate


def _load_families():
    global _LOADED
    if _LOADED:
        return
    import kzoo.architectures as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"kzoo.architectures.{info.name}")
    _LOADED = True


def get_model_spec(name: str) -> ModelSpec:
    _load_families()
    key = name.lower()
    key = _ALIASES.get(key, key)
    if key not in _MODELS:
        close = [n for n in sorted(_MODELS) if key[:4] in n][:8]
        hint = f" Did you mean one of {close}?" if close else ""
        raise UnknownModel(
            f"Unknown model {name!r}.{hint} Run `kzoo list` to see every model name."
        )
    return _MODELS[key]


def list_models(pattern: str | None = None, pretrained: bool = False) -> list[str]:
    """Sorted canonical model names, optionally filtered by a glob and by having registry weights."""
    _load_families()
    names = sorted(_MODELS)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern.lower())]
    if pretrained:
        from kzoo import registry

        with_weights = {e.model for e in registry.list_weights()}
        names = [n for n in names if n in with_weights]
    return names


def create_model(name: str, *, features_only: bool = False, out_indices=None, **kwargs):
    """Build a registered model by name. ``features_only=True`` returns multi-scale outputs.

    Without ``features_only`` the keyword arguments are those of the Keras-style builder
    (``weights``, ``include_top``, ``input_shape``, ...). With it, the backbone is built with
    ``include_top=False`` and one output per stride is returned (see ``kzoo.features``).
    """
    spec = get_model_spec(name)
    call_kwargs = {**spec.default_kwargs, **kwargs}
    if not features_only:
        if out_indices is not None:
            raise ValueError("`out_indices` is only meaningful with `features_only=True`.")
        return spec.builder(**call_kwargs)
    from kzoo.features import build_feature_model

    return build_feature_model(spec, call_kwargs, out_indices)
