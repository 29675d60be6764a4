"""PaddlePaddle's 2019 SE_ResNeXt50/101_32x4d (``models_name/se_resnext.py``) -> kzoo ``SEResNeXt*_32x4d``.

``conv1_weights`` / ``conv1_bn_*`` -> the stem; ``conv{s}_{k}_x1|x2|x3`` -> ``conv{s}_block{k}_1|2|3_conv``
(BN ``conv{s}_{k}_x*_bn_*``), ``conv{s}_1_prj`` -> ``conv{s}_block1_0_conv``; ``fc{s}_{k}_sqz|exc_weights`` /
``_offset`` -> ``conv{s}_block{k}_se_squeeze|se_excite``; ``fc6_weights`` (behind the 0.5 dropout, folded) /
``fc6_offset`` -> ``predictions`` (https://github.com/PaddlePaddle/models,
fluid/PaddleCV/image_classification/models_name/se_resnext.py).
"""

from __future__ import annotations

import re

from kzoo.convert import paddle_common as pc
from kzoo.convert._base import register_family

_CONV = re.compile(r"^conv(\d)_block(\d+)_(\d)_conv$")
_SE = re.compile(r"^conv(\d)_block(\d+)_se_(squeeze|excite)$")
_BRANCH = {"0": "prj", "1": "x1", "2": "x2", "3": "x3"}


@register_family("se_resnext50_32x4d", "se_resnext101_32x4d", head="fc6_offset")
def paddle_se_resnext_rules(model, ctx):
    yield from pc.conv("conv1_conv", "conv1_weights")
    yield from pc.batch_norm("conv1_bn", "conv1_bn")
    for layer in pc.weighted_layers(model, "Conv2D"):
        match = _CONV.match(layer)
        if match:
            stage, block, branch = match.groups()
            name = f"conv{stage}_{block}_{_BRANCH[branch]}"
            yield from pc.conv(layer, f"{name}_weights")
            yield from pc.batch_norm(layer[:-len("conv")] + "bn", f"{name}_bn")
    for layer in pc.weighted_layers(model, "Dense"):
        match = _SE.match(layer)
        if match:
            stage, block, kind = match.groups()
            name = f"fc{stage}_{block}_{'sqz' if kind == 'squeeze' else 'exc'}"
            yield from pc.dense(layer, f"{name}_weights", f"{name}_offset")
    yield from pc.dense("predictions", "fc6_weights", "fc6_offset", transform=pc.dropout_fold(ctx), head=True)
