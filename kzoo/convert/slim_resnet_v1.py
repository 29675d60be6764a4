"""TF-slim ``resnet_v1_{50,101,152}`` checkpoints -> kzoo ``ResNetV1_*`` (``kzoo.architectures.resnet_v1``).

``resnet_v1_50/block1/unit_1/bottleneck_v1/conv1/{weights, BatchNorm/*}`` ->
``block1_unit1_bottleneck_v1_conv1`` (+ ``_bn``); ``resnet_v1_50/conv1`` -> ``conv1``;
``resnet_v1_50/logits`` ([1, 1, 2048, 1000], no background class) -> ``predictions``.
"""

from __future__ import annotations

import re

from kzoo.convert._base import dense, register_family
from kzoo.convert._slim_scopes import layer_rules

_UNIT = re.compile(r"^block(\d+)_unit(\d+)_bottleneck_v1_(\w+)$")


def scope_of(layer_name: str) -> str:
    match = _UNIT.match(layer_name)
    if match:
        block, unit, rest = match.groups()
        return f"block{block}/unit_{unit}/bottleneck_v1/{rest}"
    return layer_name  # conv1


@register_family("resnet_v1_50", "resnet_v1_101", "resnet_v1_152", head="{model}/logits/biases")
def resnet_v1_rules(model, ctx):
    yield from layer_rules(model, lambda name: f"{ctx.model_name}/{scope_of(name)}")
    yield from dense("predictions", f"{ctx.model_name}/logits")
