"""mobilenet_v2 / mobilenet_v2_140 (research/slim ``nets/mobilenet/mobilenet_v2.py``) -> the
Keras MobileNetV2 names (alpha 1.0 / 1.4 = slim ``depth_multiplier``).

Slim ``expanded_conv`` (block 0, no expansion) and ``expanded_conv_{i}`` (i = 1..16) hold
``expand``/``depthwise``/``project`` convs, each with BN (gamma included); ``Conv``/``Conv_1`` are
the first and last convs; ``Logits/Conv2d_1c_1x1`` is the 1001-class head.
"""

from kzoo.convert._base import batch_norm, conv_bn, dense, depthwise, register_family

_SCOPE = "MobilenetV2"


@register_family("mobilenet_v2", "mobilenet_v2_140", head=_SCOPE + "/Logits/Conv2d_1c_1x1/biases")
def mobilenet_v2_rules(model, ctx):
    yield from conv_bn("Conv1", "bn_Conv1", f"{_SCOPE}/Conv")
    for block in range(17):
        slim = f"{_SCOPE}/expanded_conv" + (f"_{block}" if block else "")
        keras = f"block_{block}" if block else "expanded_conv"
        if block:
            yield from conv_bn(f"{keras}_expand", f"{keras}_expand_BN", f"{slim}/expand")
        yield from depthwise(f"{keras}_depthwise", f"{slim}/depthwise")
        yield from batch_norm(f"{keras}_depthwise_BN", f"{slim}/depthwise/BatchNorm")
        yield from conv_bn(f"{keras}_project", f"{keras}_project_BN", f"{slim}/project")
    yield from conv_bn("Conv_1", "Conv_1_bn", f"{_SCOPE}/Conv_1")
    yield from dense("predictions", f"{_SCOPE}/Logits/Conv2d_1c_1x1")
