"""resnet_v2_50/101/152 (tf_slim ``nets/resnet_v2.py``) -> the Keras ResNet50V2/101V2/152V2 names.

Slim ``blockN`` is Keras stage ``conv{N+1}``; ``unit_U`` is ``block{U}``. The stem conv, the
shortcut projections and each unit's last 1x1 conv carry biases (no BN after them); the other
convs are followed by BN with gamma (``resnet_arg_scope``). ``postnorm`` is ``post_bn``; the
1001-class 1x1-conv ``logits`` become the Dense ``predictions``.
"""

from kzoo import index
from kzoo.convert._base import batch_norm, conv, conv_bn, dense, register_family


@register_family("resnet_v2_50", "resnet_v2_101", "resnet_v2_152", head="{model}/logits/biases")
def resnet_v2_rules(model, ctx):
    scope = ctx.model_name
    yield from conv("conv1_conv", f"{scope}/conv1", bias=True)
    for block, units in enumerate(index.get(scope).stages, start=1):
        for unit in range(1, units + 1):
            keras = f"conv{block + 1}_block{unit}"
            slim = f"{scope}/block{block}/unit_{unit}/bottleneck_v2"
            yield from batch_norm(f"{keras}_preact_bn", f"{slim}/preact")
            if unit == 1:
                yield from conv(f"{keras}_0_conv", f"{slim}/shortcut", bias=True)
            yield from conv_bn(f"{keras}_1_conv", f"{keras}_1_bn", f"{slim}/conv1")
            yield from conv_bn(f"{keras}_2_conv", f"{keras}_2_bn", f"{slim}/conv2")
            yield from conv(f"{keras}_3_conv", f"{slim}/conv3", bias=True)
    yield from batch_norm("post_bn", f"{scope}/postnorm")
    yield from dense("predictions", f"{scope}/logits")
