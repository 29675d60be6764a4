"""What :func:`kzoo.optimize_for_inference` will rewrite in a functional model's graph.

:class:`Graph` indexes the model's nodes (producers, consumers, how often each layer is called);
:func:`plan_rewrites` reads it and returns a :class:`Plan`: which BatchNormalization and activation
nodes fold into the conv/dense layer before them, which inference no-ops and ZeroPadding2D nodes
disappear, and which convs take "same" padding instead. Nothing is built here: the plan only names
nodes, so :mod:`kzoo.merge_siblings` can add its groups to it and :mod:`kzoo.optimize` rebuilds the
model by following it.
"""

from __future__ import annotations

import math

# Layers whose output channel is the last kernel axis, and how to scale that axis.
_CONV_LIKE = (
    "Conv1D",
    "Conv2D",
    "Conv3D",
    "DepthwiseConv1D",
    "DepthwiseConv2D",
    "SeparableConv1D",
    "SeparableConv2D",
    "Dense",
)
_INFERENCE_IDENTITY = (
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "GaussianDropout",
    "GaussianNoise",
    "AlphaDropout",
    "ActivityRegularization",
)


class Graph:
    """The model's nodes in execution order, with producers and consumers of every tensor."""

    def __init__(self, model):
        self.inputs = list(model.inputs)
        self.outputs = list(model.outputs)
        self.output_ids = {id(x) for x in self.outputs}
        self.nodes = []
        for depth in sorted(model._nodes_by_depth, reverse=True):
            for node in model._nodes_by_depth[depth]:
                if node.operation is not None and not node.is_input:
                    self.nodes.append(node)
        self.producer = {id(t): n for n in self.nodes for t in n.outputs}
        self.consumers: dict[int, list] = {}
        for n in self.nodes:
            for t in n.input_tensors:
                self.consumers.setdefault(id(t), []).append(n)
        # An operation called more than once in this model (shared layer) must not be rewritten.
        calls: dict[int, int] = {}
        for n in self.nodes:
            calls[id(n.operation)] = calls.get(id(n.operation), 0) + 1
        self.calls = calls

    def only_consumer(self, tensor):
        """The single node reading ``tensor``, or None if several read it or it is an output."""
        if id(tensor) in self.output_ids:
            return None
        readers = self.consumers.get(id(tensor), [])
        return readers[0] if len(readers) == 1 else None


class _Fold:
    def __init__(self, bn=None, activation=None, last_output=None):
        self.bn = bn  # the BatchNormalization layer to fold, or None
        self.activation = activation  # activation name to put in the layer, or None
        self.last_output = last_output  # the old tensor the new layer's output replaces


class Plan:
    def __init__(self):
        self.folds: dict[int, _Fold] = {}  # id(conv node) -> what to fold into it
        self.absorbed: set[int] = set()  # ids of BN/activation nodes folded into a layer
        self.identity: set[int] = set()  # ids of no-op nodes replaced by their input
        self.same_padding: set[int] = set()  # ids of conv nodes whose ZeroPadding2D became "same"
        self.merged: dict[int, list] = {}  # id(conv node) -> its group of sibling 1x1 conv nodes


def plan_rewrites(graph, fold_batchnorm, fuse_activations, drop_identity, fold_padding):
    plan = Plan()
    for node in graph.nodes:
        op = node.operation
        kind = type(op).__name__
        if drop_identity and kind in _INFERENCE_IDENTITY and len(node.input_tensors) == 1:
            plan.identity.add(id(node))
            continue
        if fold_padding and kind == "ZeroPadding2D" and graph.calls[id(op)] == 1:
            conv_node = graph.only_consumer(node.outputs[0])
            if conv_node is not None and _padding_is_same(op, node, conv_node, graph):
                plan.identity.add(id(node))
                plan.same_padding.add(id(conv_node))
            continue
        if kind not in _CONV_LIKE or graph.calls[id(op)] != 1 or len(node.outputs) != 1:
            continue
        if activation_name(op) != "linear":
            continue  # BN after a nonlinearity cannot be folded into the weights
        fold = _Fold(last_output=node.outputs[0])
        tensor = node.outputs[0]
        nxt = graph.only_consumer(tensor)
        if (
            fold_batchnorm
            and nxt is not None
            and type(nxt.operation).__name__ == "BatchNormalization"
            and graph.calls[id(nxt.operation)] == 1
            and _bn_axis_matches(nxt.operation, op, tensor)
        ):
            fold.bn = nxt.operation
            plan.absorbed.add(id(nxt))
            tensor = nxt.outputs[0]
            fold.last_output = tensor
            nxt = graph.only_consumer(tensor)
        if fuse_activations and nxt is not None and graph.calls[id(nxt.operation)] == 1:
            act = _fusable_activation(nxt.operation)
            if act is not None:
                fold.activation = act
                plan.absorbed.add(id(nxt))
                fold.last_output = nxt.outputs[0]
        if fold.bn is not None or fold.activation is not None:
            plan.folds[id(node)] = fold
    return plan


def plain_conv2d_config(conv, kernel_size):
    """``conv``'s config when it is a plain channels_last ``Conv2D`` (no dilation, one group) with this
    kernel size, else None: the convs that Winograd and sibling merging can rewrite."""
    if type(conv).__name__ != "Conv2D":
        return None
    cfg = conv.get_config()
    if (tuple(cfg["kernel_size"]) != kernel_size or tuple(cfg.get("dilation_rate", (1, 1))) != (1, 1)
            or cfg.get("groups", 1) != 1 or cfg.get("data_format") != "channels_last"):
        return None
    return cfg


def member_activation(node, plan):
    """The activation a conv node computes once its fold is applied."""
    fold = plan.folds.get(id(node))
    if fold is not None and fold.activation is not None:
        return fold.activation
    return activation_name(node.operation)


def activation_name(layer):
    activation = layer.get_config().get("activation", "linear")
    if isinstance(activation, dict):  # serialised form
        activation = activation.get("config", activation.get("class_name"))
    return activation if isinstance(activation, str) else None


def _fusable_activation(layer):
    """The activation name a conv layer can apply instead of this layer, or None."""
    kind = type(layer).__name__
    if kind == "Activation":
        name = activation_name(layer)
        return name if name not in (None, "linear") else None
    if kind == "ReLU":
        cfg = layer.get_config()
        if cfg.get("negative_slope", 0) or cfg.get("threshold", 0):
            return None
        max_value = cfg.get("max_value")
        if max_value is None:
            return "relu"
        if float(max_value) == 6.0:
            return "relu6"
    return None


def _padding_is_same(pad_layer, pad_node, conv_node, graph):
    """True when ZeroPadding2D -> conv("valid") equals conv("same") on this input size.

    "same" pads ``total = max((ceil(n / s) - 1) * s + k - n, 0)`` per spatial axis, ``total // 2``
    before and the rest after, identically on every Keras backend.
    """
    conv = conv_node.operation
    if type(conv).__name__ not in ("Conv2D", "DepthwiseConv2D", "SeparableConv2D"):
        return False
    if graph.calls[id(conv)] != 1 or conv_node.input_tensors[0] is not pad_node.outputs[0]:
        return False
    cfg, pad_cfg = conv.get_config(), pad_layer.get_config()
    if cfg.get("padding") != "valid" or tuple(cfg.get("dilation_rate", (1, 1))) != (1, 1):
        return False
    if cfg.get("data_format") != pad_cfg.get("data_format"):
        return False
    shape = tuple(pad_node.input_tensors[0].shape)
    spatial = shape[2:4] if cfg.get("data_format") == "channels_first" else shape[1:3]
    if any(n is None for n in spatial):
        return False  # "same" depends on the size; unknown sizes cannot be checked
    for n, k, s, (before, after) in zip(spatial, cfg["kernel_size"], cfg["strides"], pad_cfg["padding"]):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        if (before, after) != (total // 2, total - total // 2):
            return False
    return True


def _channel_axis(layer, tensor):
    rank = len(tensor.shape)
    if type(layer).__name__ != "Dense" and layer.get_config().get("data_format") == "channels_first":
        return 1
    return rank - 1


def _bn_axis_matches(bn, layer, tensor):
    axis = bn.axis
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    rank = len(tensor.shape)
    axes = [a % rank for a in axes]
    return axes == [_channel_axis(layer, tensor)]
