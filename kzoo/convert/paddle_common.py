"""What every PaddlePaddle rule shares: layouts, BatchNorm names, the dropout fold, and opening the source.

Layouts (Paddle: https://github.com/PaddlePaddle/Paddle, ``python/paddle/nn/layer/conv.py``, ``norm.py``):
a conv kernel is ``[out, in / groups, kh, kw]`` (Keras: ``[kh, kw, in / groups, out]``), a depthwise kernel
``[C, 1, kh, kw]`` (Keras: ``[kh, kw, C, 1]``), an fc weight ``[in, out]`` (Keras' Dense kernel as is).
A BatchNorm ``<bn>`` is four variables ``<bn>_scale``, ``_offset``, ``_mean``, ``_variance`` (gamma, beta,
moving mean and variance; the builders use Paddle's epsilon 1e-5).

The 2019 models ran their classifier behind ``fluid.layers.dropout(p=0.5)``, whose default
``downgrade_in_infer`` multiplies by ``1 - p`` at inference; Keras' Dropout is the identity there, so the next
layer's weights (not its bias) are multiplied by :data:`DROPOUT_KEEP`.

The transforms read the module constants when they run, so a test can show each one necessary.
"""

from __future__ import annotations

import re

import numpy as np

from kzoo.convert._base import WeightRule
from kzoo.errors import ConversionError

CONV_AXES = (2, 3, 1, 0)  # [out, in, kh, kw] -> [kh, kw, in, out]
DEPTHWISE_AXES = (2, 3, 0, 1)  # [C, 1, kh, kw] -> [kh, kw, C, 1]
BN_VARIABLES = {"gamma": "scale", "beta": "offset", "moving_mean": "mean", "moving_variance": "variance"}
DROPOUT_KEEP = 0.5


def conv_kernel(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array.transpose(CONV_AXES))


def depthwise_kernel(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array.transpose(DEPTHWISE_AXES))


def after_dropout(array: np.ndarray) -> np.ndarray:
    """A weight that read ``downgrade_in_infer`` dropout's output: the inference scaling folded in."""
    return array * np.asarray(DROPOUT_KEEP, array.dtype)


def dropout_fold(ctx):
    """:func:`after_dropout`, unless the registry entry says the file's model had no such dropout
    (``conversion.dropout_fold: false``: PaddleClas' SE_ResNeXt, whose forward has none)."""
    return after_dropout if ctx.conversion.get("dropout_fold", True) else None


def conv(layer: str, variable: str):
    return [WeightRule(layer, "kernel", variable, conv_kernel)]


def depthwise(layer: str, variable: str):
    return [WeightRule(layer, "kernel", variable, depthwise_kernel)]


def batch_norm(layer: str, bn: str):
    return [WeightRule(layer, keras_name, f"{bn}_{BN_VARIABLES[keras_name]}") for keras_name in
            ("gamma", "beta", "moving_mean", "moving_variance")]


def dense(layer: str, weights: str, bias: str, *, transform=None, head: bool = False):
    return [WeightRule(layer, "kernel", weights, transform, -1 if head else None),
            WeightRule(layer, "bias", bias, None, -1 if head else None)]


def weighted_layers(model, class_name: str) -> list:
    return [layer.name for layer in model.layers if type(layer).__name__ == class_name]


def expected_variables(model_name: str) -> list:
    """The variables a full (with head, 1000 classes) conversion to ``model_name`` reads, sorted by name as
    ``save_vars`` writes a combined params file."""
    from kzoo.convert import _plan

    plan, _ = _plan(model_name, 1000, True, False, 1000, (), "{}")
    return sorted({slot.rule.variable for _, slots in plan for slot in slots if slot.rule is not None})


# A variable only each family's files hold (the classifiers' names overlap: VGG has fc6/fc7 like SE_ResNeXt's
# and MobileNet's heads), so a folder of another model is named as such before any shape is compared.
MARKERS = {"paddle_resnet": ("res2a_branch2a_weights", "ResNet50/101/152"),
           "paddle_se_resnext": ("conv2_1_x1_weights", "SE_ResNeXt50/101_32x4d"),
           "paddle_mobilenet": ("conv2_1_dw_weights", "MobileNetV1"),
           "paddle_vgg": ("fc8_weights", "VGG11/13/16/19")}
KZOO_NAMES = {"paddle_resnet": "resnet50_v1_5, resnet101_v1_5 or resnet152_v1_5",
              "paddle_se_resnext": "se_resnext50_32x4d or se_resnext101_32x4d",
              "paddle_mobilenet": "mobilenet_v1_relu", "paddle_vgg": "vgg11, vgg13, vgg16 or vgg19"}


# PaddleClas' dygraph models without ParamAttr names (ppcls/arch/backbone/legendary_models/{vgg,mobilenet_v1,resnet}.py
# in https://github.com/PaddlePaddle/PaddleClas) store structured keys; these are the 2019 names they stand for.
_BN_KEYS = {"weight": "scale", "bias": "offset", "_mean": "mean", "_variance": "variance"}
_PADDLECLAS_VGG = re.compile(r"^conv_block_(\d)\.conv(\d)\.weight$")
_PADDLECLAS_MOBILENET = re.compile(r"^(conv\d_\d|conv6|conv1)\.(?:(_depthwise_conv|_pointwise_conv)\.)?"
                                   r"(_conv|_batch_norm)\.(weight|bias|_mean|_variance)$")
_PADDLECLAS_FC = {"fc1": "fc6", "fc2": "fc7", "fc3": "fc8", "out": "fc7"}


_PADDLECLAS_RESNET = re.compile(r"^(?:stem\.0|blocks\.(\d+)\.(conv0|conv1|conv2|short))\.(conv|bn)\."
                                r"(weight|bias|_mean|_variance)$")
_RESNET_BRANCH = {"conv0": "branch2a", "conv1": "branch2b", "conv2": "branch2c", "short": "branch1"}


def _resnet_block_names(model_name: str) -> list:
    """``res{stage}{block id}`` of each PaddleClas ``blocks.{j}``, in order."""
    from kzoo import index
    from kzoo.convert.paddle_resnet import block_id

    return [f"{stage}{block_id(model_name, stage, block)}"
            for stage, count in enumerate(index.get(model_name).stages, start=2) for block in range(1, count + 1)]


def paddleclas_name(key: str, model_name: str = "") -> str | None:
    """The 2019 variable name of a PaddleClas legendary VGG / MobileNetV1 / ResNet key, or None."""
    match = _PADDLECLAS_RESNET.match(key)
    if match and model_name.startswith("resnet"):
        block, branch, layer, leaf = match.groups()
        if block is None:
            conv, bn = "conv1", "bn_conv1"
        else:
            names = _resnet_block_names(model_name)
            if int(block) >= len(names):
                return None
            suffix = f"{names[int(block)]}_{_RESNET_BRANCH[branch]}"
            conv, bn = f"res{suffix}", f"bn{suffix}"
        return f"{conv}_weights" if layer == "conv" else f"{bn}_{_BN_KEYS[leaf]}"
    if model_name.startswith("resnet") and key in ("fc.weight", "fc.bias"):
        return "fc_0.w_0" if key == "fc.weight" else "fc_0.b_0"
    match = _PADDLECLAS_VGG.match(key)
    if match:
        return f"conv{match[1]}_{match[2]}_weights"
    match = _PADDLECLAS_MOBILENET.match(key)
    if match:
        block, part, layer, leaf = match.groups()
        name = block + {"_depthwise_conv": "_dw", "_pointwise_conv": "_sep", None: ""}[part]
        return f"{name}_weights" if layer == "_conv" else f"{name}_bn_{_BN_KEYS[leaf]}"
    head, _, leaf = key.partition(".")
    if head in _PADDLECLAS_FC and leaf in ("weight", "bias"):
        return f"{_PADDLECLAS_FC[head]}_{'weights' if leaf == 'weight' else 'offset'}"
    return None


def check_family(params, family: str, model_name: str) -> None:
    """ConversionError naming the file when ``params`` are another Paddle family's (or no Paddle model's)."""
    shapes = params.shapes()
    if MARKERS[family][0] in shapes:
        return
    others = [f for f, (marker, _) in MARKERS.items() if marker in shapes]
    what = (f"they are {MARKERS[others[0]][1]} parameters: convert them with --model {KZOO_NAMES[others[0]]}"
            if others else f"none of the four 2019 families' variables are there ({len(shapes)} variables, "
                           f"e.g. {sorted(shapes)[:3]})")
    params.close()
    raise ConversionError(f"{params.source}: not {MARKERS[family][1]} parameters for {model_name} (no "
                          f"{MARKERS[family][0]!r}); {what}.")


def open_source(src, model_name: str, family: str, workdir=None):
    """Open a Paddle folder, archive, ``.pdparams`` or combined params file for ``model_name`` (rules ``family``)."""
    from pathlib import Path

    from kzoo.formats import paddle

    path = Path(src)
    names = None
    if path.is_file() and not paddle.is_pdparams(path):
        from kzoo.formats.archives import archive_kind

        if archive_kind(path) is None:
            names = expected_variables(model_name)
    params = paddle.open_params(src, names=names, workdir=workdir)
    if family in ("paddle_vgg", "paddle_mobilenet", "paddle_resnet") and MARKERS[family][0] not in params.shapes():
        renames = {key: paddleclas_name(key, model_name) for key in params.shapes()}
        if all(renames.values()):  # a PaddleClas file: every key known
            params.rename(renames)
    check_family(params, family, model_name)
    return params
