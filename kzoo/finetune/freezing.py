"""Choosing what trains: freezing and unfreezing layers by name, stage, glob/scope, fraction or index."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

import numpy as np
from keras import layers

from kzoo.finetune.layer_lookup import _leaf_layers, head_layers


def _matches(name, pattern):
    """A glob, or a TF-slim-like scope: ``conv4`` matches ``conv4`` and ``conv4_block1_1_conv`` and
    ``block1`` matches ``block1a_expand_conv`` but never ``block10_...``."""
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return name == pattern or (name.startswith(pattern) and not name[len(pattern)].isdigit())


def _position(model, leaves, spec, which):
    """Index of the layer ``spec`` designates among ``leaves``: the last match (``which="last"``,
    for ``until``) or the first (``"first"``, for ``start``). A fraction counts the backbone's
    weighted layers (``0.75``: the first three quarters of the backbone's depth)."""
    if isinstance(spec, float) and not isinstance(spec, bool):
        if not 0.0 <= spec <= 1.0:
            raise ValueError(f"A fraction must be in [0, 1], got {spec}.")
        try:
            head = set(head_layers(model))
        except ValueError:
            head = set()
        weighted = [i for i, layer in enumerate(leaves) if layer.weights and layer.name not in head]
        k = round(spec * len(weighted))
        if which == "last":
            return weighted[k - 1] if k else -1
        return weighted[k] if k < len(weighted) else (weighted[-1] + 1 if weighted else 0)
    if isinstance(spec, int) and not isinstance(spec, bool):
        return spec if spec >= 0 else len(leaves) + spec
    names = [layer.name for layer in leaves]
    exact = [i for i, n in enumerate(names) if n == spec]
    hits = exact or [i for i, n in enumerate(names) if _matches(n, spec)]
    if not hits:
        close = [n for n in names if spec.lower()[:4] in n.lower()][:6]
        raise ValueError(f"No layer or stage {spec!r} in {len(names)} layers"
                         + (f"; similar names: {close}" if close else "") + ".")
    return hits[-1] if which == "last" else hits[0]


@dataclass
class TrainableSummary:
    """Which layers train after ``freeze`` / ``unfreeze`` (recompile the model for it to take effect)."""

    trainable: list = field(default_factory=list)
    frozen: list = field(default_factory=list)
    trainable_params: int = 0
    frozen_params: int = 0

    def __str__(self):
        return (f"{len(self.trainable)} layers trainable ({self.trainable_params:,} params), "
                f"{len(self.frozen)} frozen ({self.frozen_params:,} params)")


def _summary(model):
    s = TrainableSummary()
    for layer in _leaf_layers(model):
        if not layer.weights:
            continue
        size = sum(int(np.prod(v.shape)) for v in layer.weights)
        if layer.trainable:
            s.trainable.append(layer.name)
            s.trainable_params += size
        else:
            s.frozen.append(layer.name)
            s.frozen_params += size
    return s


def _set(layer, trainable, keep_bn_frozen):
    if trainable and keep_bn_frozen and isinstance(layer, layers.BatchNormalization):
        trainable = False
    layer.trainable = trainable


def freeze(model, until=None, trainable=None, exclude=None, keep_bn_frozen=True) -> TrainableSummary:
    """Freeze part of ``model`` and return what trains now. Recompile afterwards.

    - ``until``: freeze from the input up to and including this layer: a layer name, a stage name
      (``"conv4"``, ``"block_12"``, ``"block5"``: every layer in the stage), a glob (``"mixed*"``:
      up to the last match), a fraction (``0.75``: the first 75% of the backbone's weighted layers)
      or an index into the layer list. None:
      the whole backbone, i.e. everything but the head (see ``head_layers``).
    - ``trainable``: globs/scopes, as TF-slim's ``--trainable_scopes``: only matching layers train.
    - ``exclude``: globs/scopes of layers frozen whatever else is said.
    - ``keep_bn_frozen``: BatchNormalization layers stay frozen even where the rest trains.

    A frozen layer keeps its weights; a frozen BatchNormalization also runs in inference mode (Keras 3
    semantics), so its moving mean and variance do not move during ``fit``.
    """
    leaves = _leaf_layers(model)
    if until is None and trainable is None:
        head = set(head_layers(model))
        for layer in leaves:
            _set(layer, layer.name in head, keep_bn_frozen)
    else:
        cut = _position(model, leaves, until, "last") if until is not None else -1
        for i, layer in enumerate(leaves):
            train = i > cut
            if trainable is not None:
                train = train and any(_matches(layer.name, p) for p in _as_list(trainable))
            _set(layer, train, keep_bn_frozen)
    _exclude(leaves, exclude)
    return _summary(model)


def unfreeze(model, start=None, trainable=None, exclude=None, keep_bn_frozen=True) -> TrainableSummary:
    """Make layers trainable again (layers before ``start`` keep their state). Recompile afterwards.

    - ``start``: the first layer to unfreeze, same forms as ``freeze``'s ``until`` (a stage name
      means its first layer; ``0.7`` means from 70% of the depth on). None: every layer.
    - ``trainable``: only layers matching these globs/scopes are unfrozen.
    - ``exclude``: globs/scopes that stay frozen.
    - ``keep_bn_frozen`` (default True): BatchNormalization stays frozen and in inference mode,
      the usual fix for fine-tuning on small batches (keras#9214).
    """
    leaves = _leaf_layers(model)
    first = _position(model, leaves, start, "first") if start is not None else 0
    for layer in leaves[first:]:
        if trainable is None or any(_matches(layer.name, p) for p in _as_list(trainable)):
            _set(layer, True, keep_bn_frozen)
        elif isinstance(layer, layers.BatchNormalization) and keep_bn_frozen:
            layer.trainable = False
    _exclude(leaves, exclude)
    return _summary(model)


def _exclude(leaves, exclude):
    for layer in leaves:
        if exclude and any(_matches(layer.name, p) for p in _as_list(exclude)):
            layer.trainable = False


def _as_list(value):
    return [value] if isinstance(value, str) else list(value)
