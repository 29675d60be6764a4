"""PaddlePaddle's 2019 MobileNetV1 (``models_name/mobilenet.py``, scale 1.0) -> kzoo ``MobileNetV1ReLU``.

``conv1_weights`` / ``conv1_bn_*`` -> ``conv1`` / ``conv1_bn``; the k-th separable block ``{blk}`` (``conv2_1``,
``conv2_2``, ``conv3_1``, ..., ``conv5_6``, ``conv6``) -> ``conv_dw_{k}`` (depthwise ``{blk}_dw_weights``) and
``conv_pw_{k}`` (``{blk}_sep_weights``), with BNs ``{blk}_dw_bn_*`` / ``{blk}_sep_bn_*``; the fc ``fc7`` ->
the 1x1 conv ``conv_preds`` (https://github.com/PaddlePaddle/models,
fluid/PaddleCV/image_classification/models_name/mobilenet.py).
"""

from __future__ import annotations

from kzoo.convert import paddle_common as pc
from kzoo.convert._base import WeightRule, register_family

BLOCK_NAMES = ("conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv4_1", "conv4_2", "conv5_1", "conv5_2", "conv5_3",
               "conv5_4", "conv5_5", "conv5_6", "conv6")


def _fc_as_conv(array):
    return array[None, None]  # [in, out] -> [1, 1, in, out]


@register_family("mobilenet_v1_relu", head="fc7_offset")
def paddle_mobilenet_rules(model, ctx):
    yield from pc.conv("conv1", "conv1_weights")
    yield from pc.batch_norm("conv1_bn", "conv1_bn")
    for k, block in enumerate(BLOCK_NAMES, start=1):
        yield from pc.depthwise(f"conv_dw_{k}", f"{block}_dw_weights")
        yield from pc.batch_norm(f"conv_dw_{k}_bn", f"{block}_dw_bn")
        yield from pc.conv(f"conv_pw_{k}", f"{block}_sep_weights")
        yield from pc.batch_norm(f"conv_pw_{k}_bn", f"{block}_sep_bn")
    yield WeightRule("conv_preds", "kernel", "fc7_weights", _fc_as_conv, -1)
    yield WeightRule("conv_preds", "bias", "fc7_offset", None, -1)
