"""Layer-wise learning-rate decay: per-variable multipliers, and optimizers that apply them."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from kzoo.finetune.layer_lookup import _leaf_layers, head_layers


def layer_decay_scales(model, rate, groups=10) -> dict:
    """``{variable path: learning-rate multiplier}`` for layer-wise decay.

    The head trains at the full rate. The trainable backbone layers, in depth order, are cut into
    ``groups`` contiguous groups; group ``k`` counted from the top (k = 1 for the top group) gets
    ``rate ** k``, so the layers nearest the input move least.
    """
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"layer decay rate must be in (0, 1], got {rate}.")
    try:
        head = set(head_layers(model))
    except ValueError:
        head = set()
    body = [layer for layer in _leaf_layers(model) if layer.trainable_weights and layer.name not in head]
    scales = {}
    chunks = [c for c in np.array_split(np.arange(len(body)), min(groups, len(body)) or 1) if len(c)]
    for k, chunk in enumerate(chunks):
        for i in chunk:
            for v in body[i].trainable_weights:
                scales[v.path] = float(rate ** (len(chunks) - k))
    return scales


def _layer_decay_class(base_cls):
    """A subclass of ``base_cls`` whose updates use ``learning_rate * scale`` per variable.

    Scaling the learning rate, not the gradient: Adam-like optimizers are invariant to gradient
    scale, so gradient scaling would do nothing. ``update_step`` is the per-variable hook every
    Keras optimizer goes through on TF (including under a distribution strategy) and JAX; the torch
    backend's fused optimizers bypass it, so layer decay is refused there.
    """

    class LayerDecay(base_cls):
        def __init__(self, *args, lr_scales=None, **kwargs):
            super().__init__(*args, **kwargs)
            self._kzoo_scales_by_path = dict(lr_scales or {})

        def build(self, variables):
            super().build(variables)
            self._kzoo_scales = [self._kzoo_scales_by_path.get(v.path, 1.0) for v in variables]

        def update_step(self, gradient, variable, learning_rate):
            scale = self._kzoo_scales[self._get_variable_index(variable)]
            if scale != 1.0:
                learning_rate = ops.multiply(learning_rate, scale)
            return super().update_step(gradient, variable, learning_rate)

    # Saved models record (and reload as) the plain optimizer: the scales belong to one training run.
    LayerDecay.__name__ = base_cls.__name__
    LayerDecay.__qualname__ = base_cls.__qualname__
    LayerDecay.__module__ = base_cls.__module__
    return LayerDecay


def _make_optimizer(optimizer, learning_rate, lr_scales=None):
    if isinstance(optimizer, str):
        template = keras.optimizers.get(optimizer)
    elif isinstance(optimizer, type):
        template = optimizer()
    else:
        template = optimizer
    config = {**template.get_config(), "learning_rate": learning_rate}
    config.pop("name", None)
    cls = type(template)
    if lr_scales is None:
        return cls.from_config(config)
    if keras.backend.backend() not in ("tensorflow", "jax"):
        raise NotImplementedError("layer_decay is implemented for the TensorFlow and JAX backends only.")
    return _layer_decay_class(cls)(lr_scales=lr_scales, **config)
