"""Sibling 1x1 convs merged: 1x1 Conv2D layers that read the same tensor with the same strides become
one Conv2D with their filters side by side, followed by :class:`kzoo.layers.ChannelSplit`, which cuts
the channels apart and applies each one's activation. The input is read once and the product is wider
(ResNet's shortcut and first convs of a downsampling block).
"""

from __future__ import annotations

import numpy as np

from kzoo.folding import folded_values
from kzoo.rewrite_plan import member_activation, plain_conv2d_config


def plan_sibling_merges(graph, plan):
    """Record in ``plan.merged`` every group of two or more 1x1 convs that can be computed as one."""
    groups: dict = {}
    for node in graph.nodes:
        key = _merge_key(node, graph, plan)
        if key is not None:
            groups.setdefault(key, []).append(node)
    for group in groups.values():
        if len(group) > 1:
            for node in group:
                plan.merged[id(node)] = group


def _merge_key(node, graph, plan):
    """What sibling 1x1 convs must share to be merged, or None when this node cannot be merged."""
    op = node.operation
    if graph.calls[id(op)] != 1 or id(node) in plan.same_padding:
        return None
    cfg = plain_conv2d_config(op, (1, 1))
    if cfg is None or len(node.input_tensors) != 1 or member_activation(node, plan) is None:
        return None
    return (id(node.input_tensors[0]), tuple(cfg["strides"]), cfg["padding"], op.dtype_policy.name)


def merged_layers(group, plan):
    """One Conv2D computing every conv of ``group`` (BNs folded), and the ChannelSplit after it."""
    import keras

    from kzoo.layers import ChannelSplit

    kernels, biases, activations = [], [], []
    for node in group:
        op, fold = node.operation, plan.folds.get(id(node))
        if fold is not None and fold.bn is not None:
            values = folded_values(op, fold.bn)
            kernel, bias = values["kernel"], values["bias"]
        else:
            kernel = np.asarray(op.kernel, np.float64)
            bias = np.asarray(op.bias, np.float64) if op.use_bias else np.zeros(kernel.shape[-1])
        kernels.append(kernel)
        biases.append(bias)
        activations.append(member_activation(node, plan))
    first = group[0].operation.get_config()
    shared = activations[0] if len(set(activations)) == 1 else "linear"
    conv = keras.layers.Conv2D(
        sum(k.shape[-1] for k in kernels), 1, strides=first["strides"], padding=first["padding"],
        activation=shared, dtype=group[0].operation.dtype_policy,
        name="_and_".join(node.operation.name for node in group))  # TF scope names allow no "+"
    conv.build((None, None, None, kernels[0].shape[2]))
    conv.kernel.assign(np.concatenate(kernels, axis=-1).astype(conv.kernel.dtype))
    conv.bias.assign(np.concatenate(biases).astype(conv.bias.dtype))
    split = ChannelSplit([k.shape[-1] for k in kernels],
                         ["linear"] * len(group) if shared != "linear" else activations,
                         name="split_" + conv.name, dtype=group[0].operation.dtype_policy)
    return conv, split
