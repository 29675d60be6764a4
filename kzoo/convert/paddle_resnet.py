"""PaddlePaddle's 2019 ResNet50/101/152 (``models_name/resnet.py``) -> kzoo ``ResNet*V1_5``.

``conv1_weights`` / ``bn_conv1_*`` -> ``conv1_conv`` / ``conv1_bn``; ``res{s}{u}_branch2a|2b|2c`` ->
``conv{s}_block{k}_1|2|3_conv`` and ``bn{s}{u}_branch*`` -> ``..._bn``; ``res{s}a_branch1`` -> ``..._0_conv``;
``fc_0.w_0`` / ``fc_0.b_0`` -> ``predictions``. Block ids are letters (``a`` = block 1), except stage 4 of
ResNet101/152: ``a``, ``b1``, ``b2``, ... (https://github.com/PaddlePaddle/models,
fluid/PaddleCV/image_classification/models_name/resnet.py).
"""

from __future__ import annotations

import re

from kzoo.convert import paddle_common as pc
from kzoo.convert._base import register_family

_LAYER = re.compile(r"^conv(\d)_block(\d+)_(\d)_conv$")
_BRANCH = {"0": "branch1", "1": "branch2a", "2": "branch2b", "3": "branch2c"}


def block_id(model_name: str, stage: int, block: int) -> str:
    if stage == 4 and not model_name.startswith("resnet50"):
        return "a" if block == 1 else f"b{block - 1}"
    return chr(ord("a") + block - 1)


@register_family("resnet50_v1_5", "resnet101_v1_5", "resnet152_v1_5", head="fc_0.b_0")
def paddle_resnet_rules(model, ctx):
    yield from pc.conv("conv1_conv", "conv1_weights")
    yield from pc.batch_norm("conv1_bn", "bn_conv1")
    for layer in pc.weighted_layers(model, "Conv2D"):
        match = _LAYER.match(layer)
        if match:
            stage, block, branch = match.groups()
            suffix = f"{stage}{block_id(ctx.model_name, int(stage), int(block))}_{_BRANCH[branch]}"
            yield from pc.conv(layer, f"res{suffix}_weights")
            yield from pc.batch_norm(layer[:-len("conv")] + "bn", f"bn{suffix}")
    yield from pc.dense("predictions", "fc_0.w_0", "fc_0.b_0", head=True)
