"""Rules for kzoo builders whose layer names are slim scopes with ``/`` written ``_``
(``resnet_v1``, ``inception``, ``shufflenet_v2``).

Each family gives a ``scope_of(layer_name)`` that turns a Keras layer name back into the slim scope;
the rules then follow from the layer kinds, in model order: Conv2D -> ``scope/weights``,
DepthwiseConv2D -> ``scope/depthwise_weights``, SeparableConv2D -> ``scope/{depthwise,pointwise}_weights``
(+ ``biases`` where the layer has a bias), BatchNormalization ``X_bn`` -> the BN scope of ``X``.
The classifier ``predictions`` is left to the family (its scope and class order differ).
"""

from __future__ import annotations

from typing import Callable

from kzoo.convert._base import batch_norm, conv, depthwise, separable

BN_SUFFIX = "_bn"


def layer_rules(model, scope_of: Callable[[str], str], bn_scope: str = "BatchNorm", skip=("predictions",)):
    for layer in model.layers:
        if layer.name in skip or not layer.weights:
            continue
        kind = type(layer).__name__
        if kind == "Conv2D":
            yield from conv(layer.name, scope_of(layer.name), bias=layer.use_bias)
        elif kind == "DepthwiseConv2D":
            yield from depthwise(layer.name, scope_of(layer.name), bias=layer.use_bias)
        elif kind == "SeparableConv2D":
            yield from separable(layer.name, scope_of(layer.name), bias=layer.use_bias)
        elif kind == "BatchNormalization" and layer.name.endswith(BN_SUFFIX):
            owner = layer.name[: -len(BN_SUFFIX)]
            yield from batch_norm(layer.name, f"{scope_of(owner)}/{bn_scope}", scale=layer.scale)
        # Anything else with weights gets no rule: the converter reports it as uncovered.
