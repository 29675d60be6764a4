"""Multiply-accumulates per image, from a Keras model's layer shapes or a torch module's forward.

Conv, depthwise, separable, transposed conv and dense multiply-adds; 1 MAC = 2 FLOPs; BN, activations
and pooling are not counted, as fvcore and timm do.
"""

from __future__ import annotations

import re


def _graph_nodes(model):
    functional = getattr(model, "_functional", None) or model  # Sequential wraps a Functional
    by_depth = getattr(functional, "_nodes_by_depth", None)
    if by_depth is None:
        return []
    nodes = []
    for depth in sorted(by_depth, reverse=True):
        nodes.extend(n for n in by_depth[depth] if n.operation is not None and not n.is_input)
    return nodes


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def layer_macs(layer, input_shape, output_shape) -> int:
    """Multiply-accumulates of one call of ``layer`` for ONE sample (shapes include the batch axis)."""
    kind = type(layer).__name__
    if kind == "Dense":
        return _prod(output_shape[1:]) * int(input_shape[-1])
    cfg = layer.get_config() if hasattr(layer, "get_config") else {}
    channels_first = cfg.get("data_format") == "channels_first"

    def split(shape):  # (spatial dims, channels)
        return (shape[2:], shape[1]) if channels_first else (shape[1:-1], shape[-1])

    if kind.startswith("Conv") and kind.endswith("Transpose"):
        in_spatial, in_ch = split(input_shape)
        return _prod(in_spatial) * int(in_ch) * int(cfg["filters"]) * _prod(cfg["kernel_size"])
    if kind.startswith("Depthwise"):
        out_spatial, out_ch = split(output_shape)
        return _prod(out_spatial) * int(out_ch) * _prod(cfg["kernel_size"])
    if kind.startswith("Separable"):
        out_spatial, out_ch = split(output_shape)
        _, in_ch = split(input_shape)
        mid = int(in_ch) * int(cfg.get("depth_multiplier", 1))
        return _prod(out_spatial) * mid * (_prod(cfg["kernel_size"]) + int(out_ch))
    if kind == "WinogradConv2D":
        # Counted as the 3x3 conv it computes, not the ~2.25-4x fewer products it does: GFLOP/img is a
        # property of the function, so kzoo-opt's %peak reads as effective throughput, comparable with keras'.
        out_spatial, out_ch = split(output_shape)
        return _prod(out_spatial) * int(out_ch) * 9 * int(split(input_shape)[1])
    if re.fullmatch(r"Conv[123]D", kind):
        out_spatial, out_ch = split(output_shape)
        _, in_ch = split(input_shape)
        groups = int(cfg.get("groups", 1))
        return _prod(out_spatial) * int(out_ch) * _prod(cfg["kernel_size"]) * int(in_ch) // groups
    return 0


def count_macs(model) -> int:
    """Multiply-accumulates per image, summed over conv/dense layers of the (nested) model graph."""
    total = 0
    for node in _graph_nodes(model):
        op = node.operation
        if _graph_nodes(op):  # a nested model: count its own graph
            total += count_macs(op)
            continue
        if not node.input_tensors or not node.outputs:
            continue
        total += layer_macs(op, tuple(node.input_tensors[0].shape), tuple(node.outputs[0].shape))
    return total


def count_flops(model) -> int:
    """Forward FLOPs per image (2 x MACs)."""
    return 2 * count_macs(model)


def count_torch_macs(module, input_shape) -> int:
    """Multiply-accumulates per image of a torch module, counted like :func:`count_macs`.

    One batch-1 forward on zeros with hooks on ``Conv*d`` and ``Linear``: a conv costs
    out_elements x in_channels / groups x kernel elements, a linear out_elements x in_features.
    BN, activations and pooling are not counted, as for the Keras models.
    """
    import torch

    total = [0]

    def conv_hook(mod, inputs, output):
        total[0] += (output[0].numel() * (mod.in_channels // mod.groups)
                     * _prod(mod.kernel_size))

    def linear_hook(mod, inputs, output):
        total[0] += output[0].numel() * mod.in_features

    hooks = []
    for sub in module.modules():
        if isinstance(sub, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
            hooks.append(sub.register_forward_hook(conv_hook))
        elif isinstance(sub, torch.nn.Linear):
            hooks.append(sub.register_forward_hook(linear_hook))
    param = next(module.parameters())
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(torch.zeros((1, *input_shape), dtype=param.dtype, device=param.device))
    finally:
        module.train(was_training)
        for hook in hooks:
            hook.remove()
    return total[0]
