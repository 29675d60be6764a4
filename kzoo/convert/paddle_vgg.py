"""PaddlePaddle's 2019 VGG11/13/16/19 (``models_name/vgg.py``) -> kzoo ``VGG11`` / ``VGG13`` / ``VGG16`` / ``VGG19``.

``conv{b}_{i}_weights`` -> ``block{b}_conv{i}``; the released archives have no conv bias files
(``conv{b}_{i}_offset``, https://github.com/PaddlePaddle/models/issues/2196: the loader skipped them and the
biases stayed at their zero initial value), so an absent bias is zeros. ``fc6`` -> ``fc1``: Paddle flattens the
last feature map in (C, H, W) order, Keras' channels_last ``Flatten`` in (H, W, C), so the rows are reordered.
``fc7`` -> ``fc2`` and ``fc8`` -> ``predictions`` each read a ``downgrade_in_infer`` dropout's output: x 0.5.
"""

from __future__ import annotations

import math

import numpy as np

from kzoo import index
from kzoo.convert import paddle_common as pc
from kzoo.convert._base import WeightRule, register_family

LAST_CHANNELS = 512


def chw_rows_to_hwc(array: np.ndarray) -> np.ndarray:
    """fc6's [C*H*W, out] rows (Paddle's NCHW flatten) in Keras' (H, W, C) order."""
    side = math.isqrt(array.shape[0] // LAST_CHANNELS)
    if side * side * LAST_CHANNELS != array.shape[0]:
        return array  # not a square 512-channel map: the shape check reports it
    rows = array.reshape(LAST_CHANNELS, side, side, -1).transpose(1, 2, 0, 3)
    return np.ascontiguousarray(rows.reshape(array.shape))


def _zero_bias(kernel: np.ndarray) -> np.ndarray:
    return np.zeros(kernel.shape[0], kernel.dtype)  # [out, in, kh, kw]: one bias per output channel


@register_family("vgg11", "vgg13", "vgg16", "vgg19", head="fc8_offset", needs_variables=True)
def paddle_vgg_rules(model, ctx):
    for block, count in enumerate(index.get(ctx.model_name).stages, start=1):
        for i in range(1, count + 1):
            name = f"conv{block}_{i}"
            yield from pc.conv(f"block{block}_conv{i}", f"{name}_weights")
            if f"{name}_offset" in ctx.variables:
                yield WeightRule(f"block{block}_conv{i}", "bias", f"{name}_offset")
            else:
                yield WeightRule(f"block{block}_conv{i}", "bias", f"{name}_weights", _zero_bias)
    yield from pc.dense("fc1", "fc6_weights", "fc6_offset", transform=chw_rows_to_hwc)
    yield from pc.dense("fc2", "fc7_weights", "fc7_offset", transform=pc.dropout_fold(ctx))
    yield from pc.dense("predictions", "fc8_weights", "fc8_offset", transform=pc.dropout_fold(ctx), head=True)
