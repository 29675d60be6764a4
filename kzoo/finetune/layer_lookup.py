"""Finding a model's layers (nested models flattened) and which of them form its classification head."""

from __future__ import annotations

import keras
from keras import layers


def _leaf_layers(model):
    """Layers in graph order, nested models flattened, input layers dropped."""
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if hasattr(layer, "layers") and layer.layers:
            out.extend(_leaf_layers(layer))
        else:
            out.append(layer)
    return out


def head_layers(model) -> list[str]:
    """The classification head's layer names: those recorded by ``build_classifier``, else every
    layer after the last global pooling / flatten layer (so a reloaded model still has a head)."""
    recorded = getattr(model, "kzoo_head", None)
    if recorded:
        return list(recorded)
    leaves = _leaf_layers(model)
    pools = (layers.GlobalAveragePooling2D, layers.GlobalMaxPooling2D, layers.Flatten)
    last = max((i for i, layer in enumerate(leaves) if isinstance(layer, pools)), default=None)
    if last is None:
        raise ValueError(f"Cannot find the head of {model.name!r} (no global pooling layer). "
                         "Pass until= / trainable= explicitly.")
    return [layer.name for layer in leaves[last:]]
