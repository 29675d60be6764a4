"""Multi-scale feature extraction: ``create_model(name, features_only=True, out_indices=(1, 2, 3, 4))``.

Index ``i`` is the feature map at stride ``2 ** (i + 1)``: 0 -> stride 2 (where the network has a layer at
that resolution), 1 -> 4, 2 -> 8, 3 -> 16, 4 -> 32. Outputs are named ``stride_4``, ``stride_8``, ... and
``model.feature_info`` lists, per output, its channels, reduction and the backbone layer it comes from.

Which layer represents a stride: the last *trunk* layer at that reduction. A trunk layer is one every
path from the input to the output goes through (no edge of the graph jumps over it), so a branch inside
an Inception block or a residual body is never picked, and the block output is. Padding layers are
skipped. Pre-activation networks override the rule (their block outputs are not normalised): ResNet v2
uses each stage's last ``*_preact_relu`` and ``post_relu``; DenseNet uses the BN-ReLU that opens each
transition (``pool{n}_relu``) and the final ``relu``.
"""

from __future__ import annotations

import itertools
import math
import re

import keras
import numpy as np
from keras import layers

from kzoo.errors import InvalidFeatureIndex

DEFAULT_OUT_INDICES = (1, 2, 3, 4)
# Reductions are measured on a symbolic input this large, so VALID paddings cannot blur the rounding.
_PROBE_SIZE = 512
_SKIPPED = (layers.ZeroPadding2D, layers.InputLayer)


def build_feature_model(spec, kwargs, out_indices=None):
    """The backbone of ``spec`` without its head, with one output per requested stride."""
    kwargs = dict(kwargs)
    if kwargs.get("include_top"):
        raise ValueError(f"features_only=True builds '{spec.name}' without its classifier; "
                         "do not pass include_top=True.")
    if kwargs.get("pooling") is not None:
        raise ValueError(f"features_only=True returns feature maps; pooling={kwargs['pooling']!r} "
                         "is not supported with it.")
    kwargs["include_top"] = False
    kwargs["pooling"] = None
    backbone = spec.builder(**kwargs)
    stages = feature_layers(backbone, spec.family)
    indices = DEFAULT_OUT_INDICES if out_indices is None else tuple(out_indices)
    available = sorted(int(math.log2(r)) - 1 for r in stages)
    bad = [i for i in indices if not isinstance(i, (int, np.integer)) or isinstance(i, bool)
           or int(i) not in available]
    if bad or not indices:
        raise InvalidFeatureIndex(
            f"out_indices={indices} is not valid for '{spec.name}': it has feature indices {available} "
            f"(strides {[2 ** (i + 1) for i in available]}); index i is stride 2**(i+1)."
        )
    if len(set(indices)) != len(indices):
        raise InvalidFeatureIndex(f"out_indices={indices} repeats an index.")
    outputs, info = [], []
    channel_axis = 1 if keras.config.image_data_format() == "channels_first" else -1
    for index in indices:
        reduction = 2 ** (int(index) + 1)
        source = backbone.get_layer(stages[reduction])
        out_name = f"stride_{reduction}"
        outputs.append(layers.Identity(name=out_name)(source.output))
        info.append({"index": int(index), "name": out_name, "reduction": reduction,
                     "channels": int(source.output.shape[channel_axis]), "layer": source.name})
    inputs = backbone.inputs[0] if len(backbone.inputs) == 1 else backbone.inputs
    model = keras.Model(inputs, outputs, name=f"{backbone.name}_features")
    model.feature_info = info
    return model


def feature_layers(model, family: str | None = None) -> dict:
    """``{reduction: layer name}`` for every power-of-two reduction (>= 2) the model's trunk reaches."""
    reductions = _reductions(model)
    override = _OVERRIDES.get(family)
    if override is not None:
        picked = override(model, reductions)
        if picked:
            return picked
    picked = {}
    for op in _trunk(model):  # topological order: a later layer at the same reduction wins
        if not isinstance(op, keras.layers.Layer) or isinstance(op, _SKIPPED):
            continue
        reduction = reductions.get(op.name)
        if reduction and reduction >= 2:
            picked[reduction] = op.name
    return picked


def _edges(model):
    for node in itertools.chain.from_iterable(model._nodes_by_depth.values()):
        for parent in node.parent_nodes:
            yield parent.operation, node.operation


def _trunk(model) -> list:
    """The operations no edge jumps over, in topological order."""
    ops = list(model.operations)
    position = {id(op): i for i, op in enumerate(ops)}
    crossing = np.zeros(len(ops) + 1, dtype=np.int64)
    for parent, child in _edges(model):
        a, b = position.get(id(parent)), position.get(id(child))
        if a is None or b is None or b <= a + 1:
            continue
        crossing[a + 1] += 1
        crossing[b] -= 1
    covered = np.cumsum(crossing)[: len(ops)]
    return [op for op, c in zip(ops, covered) if c == 0]


def _reductions(model) -> dict:
    """``{layer name: reduction}`` for 4D outputs, from a symbolic pass at a large input size."""
    channels_first = keras.config.image_data_format() == "channels_first"
    input_shape = tuple(model.inputs[0].shape)
    channels = input_shape[1] if channels_first else input_shape[-1]
    probe_shape = (1, channels, _PROBE_SIZE, _PROBE_SIZE) if channels_first else (
        1, _PROBE_SIZE, _PROBE_SIZE, channels)
    ops = [op for op in model.operations if isinstance(op, keras.layers.Layer)
           and not isinstance(op, layers.InputLayer) and len(op._inbound_nodes) == 1]
    probe = keras.Model(model.inputs[0], [op.output for op in ops])
    # The public compute_output_shape insists on the model's own (possibly fixed) input size.
    specs = probe._run_through_graph(keras.KerasTensor(probe_shape), operation_fn=lambda op: op.compute_output_spec)
    result = {}
    for op, spec in zip(ops, specs):
        shape = tuple(spec.shape)
        if len(shape) != 4:
            continue
        height = shape[2] if channels_first else shape[1]
        if height:
            result[op.name] = 2 ** round(math.log2(_PROBE_SIZE / height))
    return result


def _last_per_stage(model, reductions, pattern, extra=()):
    picked = {}
    names = [layer.name for layer in model.layers]
    for name in names:
        if re.fullmatch(pattern, name) or name in extra:
            reduction = reductions.get(name)
            if reduction and reduction >= 2:
                picked[reduction] = name  # later (deeper) layers at the same reduction win
    return picked


def _resnet_overrides(model, reductions):
    if not any(layer.name == "post_relu" for layer in model.layers):
        return None  # ResNet v1: the generic rule picks conv{n}_block{last}_out
    return _last_per_stage(model, reductions, r"conv\d_block\d+_preact_relu", extra=("conv1_conv", "post_relu"))


def _densenet_overrides(model, reductions):
    return _last_per_stage(model, reductions, r"pool\d_relu", extra=("conv1_relu", "relu"))


def _ssd_overrides(model, reductions):
    # SSD's maps branch off the trunk (Mixed_4c feeds Mixed_5a too): name them, not the trunk's last layers.
    return _last_per_stage(model, reductions, r"Mixed_4c|Mixed_5c|Mixed_5c_2_Conv2d_\d_3x3_s2_\d+_relu6")


_OVERRIDES = {"resnet": _resnet_overrides, "resnet_v2": _resnet_overrides, "densenet": _densenet_overrides,
              "ssd_inception_v2": _ssd_overrides}
