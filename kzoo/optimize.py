"""``optimize_for_inference(model)``: the same function, fewer and cheaper layers.

What it does to a Keras functional model (any backend):

* **BatchNormalization folding.** A BN whose only input is the output of a Conv1D/2D/3D,
  DepthwiseConv1D/2D, SeparableConv1D/2D or Dense layer (with a linear activation, used nowhere
  else) is folded into that layer's kernel and bias. In inference BN is a per-channel affine map
  ``y = s * x + t`` with ``s = gamma / sqrt(var + eps)`` and ``t = beta - s * mean``, so
  ``BN(W x + b) = (s W) x + (s b + t)``. The arithmetic is done in float64 and cast back.
* **Activation fusion.** When the folded BN (or the bare linear conv) feeds only an
  ``Activation`` or a plain ``ReLU``/``ReLU(max_value=6)`` layer, that activation moves into the
  layer, so backends that fuse conv+bias+activation (oneDNN, cuDNN, XLA) see one op.
* **Padding folding.** ``ZeroPadding2D`` followed by a ``padding="valid"`` convolution becomes one
  ``padding="same"`` convolution when the explicit pads are exactly the "same" pads for the model's
  input size (the MobileNet/EfficientNet stride-2 blocks): one memory pass less, same numbers.
* **Winograd convolution.** 3x3 stride-1 "same" Conv2D layers can become
  :class:`kzoo.winograd.WinogradConv2D`, F(4x4, 3x3) or F(2x2, 3x3): 4x or 2.25x fewer
  multiplications, which is what a compute-bound CPU needs. By default, on a CPU, each candidate conv
  (at least 64 channels) is timed as direct, F(2x2) and F(4x4) once, for ``batch_size``, and the
  fastest is kept (:func:`tuned_winograd_tile`): which wins depends on the batch, the channels and how
  many threads an op gets. ``winograd=True`` applies a fixed one-core rule instead (:func:`winograd_tile`).
* **Sibling 1x1 convs merged.** 1x1 Conv2D layers that read the same tensor with the same strides
  become one Conv2D with their filters side by side, followed by :class:`kzoo.layers.ChannelSplit`,
  which cuts the channels apart and applies each one's activation: the input is read once and the
  product is wider.
* **Inference no-ops removed:** Dropout and the noise layers, which are the identity in inference.

Everything else is cloned unchanged (``from_config`` + weights), so the result shares no state with
the input model. Nested functional models are optimised recursively. The result keeps the names of
the layers that survive, so it can still be inspected, saved and loaded. It is **for inference
only**: folding BN makes the statistics disappear, so do not fine-tune the optimised model.
"""

from __future__ import annotations

import math

import numpy as np

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


def optimize_for_inference(model, *, fold_batchnorm=True, fuse_activations=True, drop_identity=True,
                           fold_padding=True, merge_siblings=True, winograd="auto", batch_size=None):
    """Return a new functional model that computes ``model(x, training=False)`` with fewer layers.

    Args:
        model: a Keras functional (or Sequential) model, e.g. ``kzoo.ResNet50()``.
        fold_batchnorm: fold BatchNormalization into the preceding conv/dense layer.
        fuse_activations: move a following ``Activation``/``ReLU`` layer into the folded layer.
        drop_identity: remove Dropout and noise layers.
        fold_padding: turn ``ZeroPadding2D`` + ``padding="valid"`` conv into one ``padding="same"``
            conv when the explicit padding is exactly what "same" pads for that input size.
        merge_siblings: compute 1x1 Conv2D layers that read the same tensor with the same strides
            (ResNet's shortcut and first convs of a downsampling block) as one wider conv, split after.
        winograd: compute 3x3 stride-1 convolutions by Winograd F(4x4, 3x3) or F(2x2, 3x3)
            (:class:`kzoo.winograd.WinogradConv2D`) where that is faster. ``"auto"`` (default): on a
            CPU, ``"tune"``; on a GPU, off (cuDNN picks its own algorithm; not measured). ``"tune"``:
            each distinct eligible conv (shape, batch, activation, thread count) is timed once per
            process as a direct conv, F(2x2) and F(4x4), on random data, and the fastest is kept if it
            beats the direct conv by :data:`TUNE_MARGIN` (:func:`tuned_winograd_tile`; a ResNet50
            takes 2-9 s longer to optimise, more for bigger batches). Timing is needed because the
            winner depends on the batch, the channels and the threads per op (BENCHMARKS.md has
            per-layer timings): a rule measured on one core lost to folding alone on two. ``True``:
            the fixed one-core rule of :func:`winograd_tile`, no timing (deterministic). ``False``:
            off. Either way the function is the direct conv's within float32 rounding (2e-7
            relative on a random-weight ResNet50).
        batch_size: the batch the optimised model will mostly run. Only Winograd's tile choice uses
            it (bigger batches amortise bigger tiles); any batch still computes the same function.
            None: the input's static batch, else planned for batch 1.

    Returns:
        A ``keras.Model`` with the same inputs and outputs (shapes, dtypes, names). Outputs agree
        with the original in inference mode to float rounding (about 1e-6 relative in float32).
    """
    import keras

    model = getattr(model, "_functional", None) or model  # a built Sequential wraps a Functional
    if not hasattr(model, "_nodes_by_depth"):
        raise TypeError(
            f"optimize_for_inference needs a functional or Sequential Keras model, got "
            f"{type(model).__name__}; subclassed models have no graph to rewrite."
        )
    if winograd not in ("auto", "tune", True, False):
        raise ValueError(f'winograd must be "auto", "tune", True or False, got {winograd!r}')
    if winograd == "auto":
        from kzoo.devices import accelerator_name

        winograd = "tune" if accelerator_name() is None else False
    graph = _Graph(model)
    plan = _plan(graph, fold_batchnorm, fuse_activations, drop_identity, fold_padding)
    if merge_siblings:
        _plan_sibling_merges(graph, plan)
    options = (fold_batchnorm, fuse_activations, drop_identity, fold_padding, merge_siblings, winograd, batch_size)

    new_inputs = [
        keras.Input(batch_shape=x.shape, dtype=x.dtype, name=_tensor_name(x)) for x in graph.inputs
    ]
    values = {id(old): new for old, new in zip(graph.inputs, new_inputs)}
    clones = {}
    for node in graph.nodes:
        op = node.operation
        if id(node) in plan.absorbed:
            continue  # a BN or activation computed by the folded layer before it
        if id(node) in plan.identity:
            values[id(node.outputs[0])] = values[id(node.input_tensors[0])]
            continue
        if id(node) in plan.merged:
            group = plan.merged[id(node)]
            if node is group[0]:
                args, kwargs = node.arguments.fill_in(values)
                conv, split = _merged_layers(group, plan)
                outs = split(conv(*args, **kwargs))
                for member, out in zip(group, outs):
                    fold = plan.folds.get(id(member))
                    values[id(fold.last_output if fold is not None else member.outputs[0])] = out
            continue
        args, kwargs = node.arguments.fill_in(values)
        fold = plan.folds.get(id(node))
        same = id(node) in plan.same_padding
        tile = 0
        if winograd and graph.calls[id(op)] == 1:
            if winograd == "tune":
                tile = tuned_winograd_tile(op, node.input_tensors[0], same, batch_size, _member_activation(node, plan))
            else:
                tile = winograd_tile(op, node.input_tensors[0], same, batch_size)
        if tile:
            layer = _winograd_layer(op, fold, tile)
            out = layer(*args, **kwargs)
            values[id(fold.last_output if fold is not None else node.outputs[0])] = out
            continue
        if fold is not None:
            layer = _folded_layer(op, fold, same)
            out = layer(*args, **kwargs)
            _set_folded_weights(layer, op, fold)
            values[id(fold.last_output)] = out
            continue
        # One clone per operation: a shared layer stays shared (and keeps its unique name).
        first_call = id(op) not in clones
        if first_call:
            clones[id(op)] = _clone_operation(op, options, same)
        new_op = clones[id(op)]
        out = new_op(*args, **kwargs)
        if first_call and new_op is not op and hasattr(op, "get_weights") and not _is_functional(op):
            new_op.set_weights(op.get_weights())
        for old, new in zip(node.outputs, keras.tree.flatten(out)):
            values[id(old)] = new

    outputs = keras.tree.pack_sequence_as(
        model._outputs_struct, [values[id(x)] for x in graph.outputs]
    )
    inputs = keras.tree.pack_sequence_as(model._inputs_struct, new_inputs)
    return keras.Model(inputs, outputs, name=model.name)


# ----------------------------------------------------------------------------------------------
# graph bookkeeping


class _Graph:
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


class _Plan:
    def __init__(self):
        self.folds: dict[int, _Fold] = {}  # id(conv node) -> what to fold into it
        self.absorbed: set[int] = set()  # ids of BN/activation nodes folded into a layer
        self.identity: set[int] = set()  # ids of no-op nodes replaced by their input
        self.same_padding: set[int] = set()  # ids of conv nodes whose ZeroPadding2D became "same"
        self.merged: dict[int, list] = {}  # id(conv node) -> its group of sibling 1x1 conv nodes


def _plan(graph, fold_batchnorm, fuse_activations, drop_identity, fold_padding):
    plan = _Plan()
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
        if _activation_name(op) != "linear":
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


def _merge_key(node, graph, plan):
    """What sibling 1x1 convs must share to be merged, or None when this node cannot be merged."""
    op = node.operation
    if graph.calls[id(op)] != 1 or id(node) in plan.same_padding:
        return None
    cfg = _plain_conv2d_config(op, (1, 1))
    if cfg is None or len(node.input_tensors) != 1 or _member_activation(node, plan) is None:
        return None
    return (id(node.input_tensors[0]), tuple(cfg["strides"]), cfg["padding"], op.dtype_policy.name)


def _plain_conv2d_config(conv, kernel_size):
    """``conv``'s config when it is a plain channels_last ``Conv2D`` (no dilation, one group) with this
    kernel size, else None: the convs that Winograd and sibling merging can rewrite."""
    if type(conv).__name__ != "Conv2D":
        return None
    cfg = conv.get_config()
    if (tuple(cfg["kernel_size"]) != kernel_size or tuple(cfg.get("dilation_rate", (1, 1))) != (1, 1)
            or cfg.get("groups", 1) != 1 or cfg.get("data_format") != "channels_last"):
        return None
    return cfg


def _member_activation(node, plan):
    """The activation a conv node computes once its fold is applied."""
    fold = plan.folds.get(id(node))
    if fold is not None and fold.activation is not None:
        return fold.activation
    return _activation_name(node.operation)


def _plan_sibling_merges(graph, plan):
    groups: dict = {}
    for node in graph.nodes:
        key = _merge_key(node, graph, plan)
        if key is not None:
            groups.setdefault(key, []).append(node)
    for group in groups.values():
        if len(group) > 1:
            for node in group:
                plan.merged[id(node)] = group


def _merged_layers(group, plan):
    """One Conv2D computing every conv of ``group`` (BNs folded), and the ChannelSplit after it."""
    import keras

    from kzoo.layers import ChannelSplit

    kernels, biases, activations = [], [], []
    for node in group:
        op, fold = node.operation, plan.folds.get(id(node))
        if fold is not None and fold.bn is not None:
            values = _folded_values(op, fold.bn)
            kernel, bias = values["kernel"], values["bias"]
        else:
            kernel = np.asarray(op.kernel, np.float64)
            bias = np.asarray(op.bias, np.float64) if op.use_bias else np.zeros(kernel.shape[-1])
        kernels.append(kernel)
        biases.append(bias)
        activations.append(_member_activation(node, plan))
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


def _tensor_name(x):
    history = getattr(x, "_keras_history", None)
    op = getattr(history, "operation", None)
    return getattr(op, "name", None)


def _is_functional(op):
    return hasattr(op, "_nodes_by_depth") or getattr(op, "_functional", None) is not None


def _activation_name(layer):
    activation = layer.get_config().get("activation", "linear")
    if isinstance(activation, dict):  # serialised form
        activation = activation.get("config", activation.get("class_name"))
    return activation if isinstance(activation, str) else None


def _fusable_activation(layer):
    """The activation name a conv layer can apply instead of this layer, or None."""
    kind = type(layer).__name__
    if kind == "Activation":
        name = _activation_name(layer)
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


# ----------------------------------------------------------------------------------------------
# rebuilding layers


def _clone_operation(op, options, same=False):
    """A fresh copy of a layer (weights set by the caller), a recursively optimised sub-model, or
    the same object for stateless operations (``keras.ops`` calls recorded in the graph)."""
    import keras

    if _is_functional(op):
        fold_batchnorm, fuse_activations, drop_identity, fold_padding, merge_siblings, winograd, batch_size = options
        return optimize_for_inference(
            op,
            fold_batchnorm=fold_batchnorm,
            fuse_activations=fuse_activations,
            drop_identity=drop_identity,
            fold_padding=fold_padding,
            merge_siblings=merge_siblings,
            winograd=winograd,
            batch_size=batch_size,
        )
    if not isinstance(op, keras.layers.Layer):
        return op
    config = op.get_config()
    if same:
        config["padding"] = "same"
    return op.__class__.from_config(config)


def _folded_layer(layer, fold, same=False):
    config = layer.get_config()
    if same:
        config["padding"] = "same"
    if fold.bn is not None:
        config["use_bias"] = True
        config["bias_initializer"] = "zeros"
        config["bias_regularizer"] = None
        config["bias_constraint"] = None
    if fold.activation is not None:
        config["activation"] = fold.activation
    return layer.__class__.from_config(config)


def _bn_scale_shift(bn):
    """(s, t) in float64 such that BN(x) == s * x + t in inference."""
    variance = np.asarray(bn.moving_variance, dtype=np.float64)
    mean = np.asarray(bn.moving_mean, dtype=np.float64)
    gamma = np.asarray(bn.gamma, dtype=np.float64) if bn.scale else np.ones_like(variance)
    beta = np.asarray(bn.beta, dtype=np.float64) if bn.center else np.zeros_like(variance)
    scale = gamma / np.sqrt(variance + bn.epsilon)
    return scale, beta - scale * mean


def _set_folded_weights(new, old, fold):
    """Copy ``old``'s weights into ``new``, scaled by the BN it absorbed."""
    if fold.bn is None:
        new.set_weights(old.get_weights())
        return
    for attr, value in _folded_values(old, fold.bn).items():
        var = getattr(new, attr)
        var.assign(np.asarray(value, dtype=var.dtype))


def _folded_values(old, bn):
    """``{attribute: float64 array}``: ``old``'s kernel and bias with the BN ``bn`` folded in."""
    kind = type(old).__name__
    scale, shift = _bn_scale_shift(bn)
    # The kernel whose last axis is the output channel.
    if kind.startswith("Separable"):
        kernel_attr = "pointwise_kernel"
    elif kind.startswith("Depthwise"):
        kernel_attr = "kernel"
    else:
        kernel_attr = "kernel"
    kernel_var = getattr(old, kernel_attr)
    kernel = np.asarray(kernel_var, dtype=np.float64)
    if kind.startswith("Depthwise"):
        # (..., in_channels, multiplier): output channel c * multiplier + m.
        kernel = kernel * scale.reshape(kernel.shape[-2:])
    else:
        kernel = kernel * scale
    bias = np.asarray(old.bias, dtype=np.float64) if old.use_bias else 0.0
    bias = bias * scale + shift

    values = {kernel_attr: kernel, "bias": bias}
    for name in ("depthwise_kernel",):
        if hasattr(old, name) and kind.startswith("Separable"):
            values[name] = np.asarray(getattr(old, name))
    return values


# ----------------------------------------------------------------------------------------------
# Winograd


def winograd_tile(conv, input_tensor, same=False, batch_size=None):
    """The Winograd tile (4, 2) ``optimize_for_inference`` computes this conv with, or 0 for none.

    Eligible: a plain ``Conv2D``, 3x3, stride 1, dilation 1, one group, "same" padding, channels_last,
    known input size, at least 128 channels in and out. Which tile pays off depends on how many tiles
    one call has, so on the batch: ``batch_size``, else the input's static batch, else 1 (the cautious
    choice). Single-thread CPU time on a 2-core AVX2 CPU (TF, float32), Winograd over the folded Conv2D
    (bias + ReLU included), two runs each, batch 8 / batch 1:

    ====================  =========================  =========================
    input (HxWxC, C out)  F(2x2, 3x3)                F(4x4, 3x3)
    ====================  =========================  =========================
    56x56x64              0.49-0.70x / 0.42-0.47x    0.86-1.08x / 0.90-0.95x
    28x28x128             1.03-1.07x / 0.99-1.06x    1.51-1.54x / 1.24-1.29x
    14x14x256             1.31-1.52x / 1.06-1.09x    1.44-1.62x / 0.74-0.75x
    7x7x512               1.13-1.23x / 0.81-0.83x    1.54-1.59x / 0.55-0.70x
    ====================  =========================  =========================

    F(4x4) wins from about 32 tiles of 4x4 per call (28x28 at batch 1, 7x7 at batch 8). Below that,
    F(2x2) wins from about 49 tiles of 2x2 (14x14 at batch 1). Below that, the direct conv wins.
    With fewer than 128 channels the transforms (cost ~ channels) outweigh the saved products
    (~ channels squared).
    """
    shape = _eligible_shape(conv, input_tensor, same)
    if shape is None:
        return 0
    height, width, channels = shape
    if min(channels, conv.get_config()["filters"]) < WINOGRAD_MIN_CHANNELS:
        return 0
    batch = int(batch_size or input_tensor.shape[0] or 1)
    for tile, min_tiles in ((4, WINOGRAD_F4_MIN_TILES), (2, WINOGRAD_F2_MIN_TILES)):
        if batch * -(-height // tile) * -(-width // tile) >= min_tiles:
            return tile
    return 0


WINOGRAD_MIN_CHANNELS = 128
WINOGRAD_F4_MIN_TILES = 32
WINOGRAD_F2_MIN_TILES = 49

TUNE_MIN_CHANNELS = 64  # narrower convs are not timed: transforms grow with channels, savings with their square
TUNE_MARGIN = 0.95  # Winograd must take <= 95% of the direct conv's time: noise must not flip the choice
_TUNED: dict = {}  # (backend, threads, dtype, batch, H, W, Cin, Cout, activation) -> tile, per process


def _eligible_shape(conv, input_tensor, same=False):
    """``(height, width, channels)`` when ``conv`` is a 3x3 stride-1 "same" channels_last Conv2D
    with a known input size, else None."""
    cfg = _plain_conv2d_config(conv, (3, 3))
    if cfg is None or tuple(cfg["strides"]) != (1, 1) or ("same" if same else cfg.get("padding")) != "same":
        return None
    shape = tuple(input_tensor.shape)
    if len(shape) != 4 or None in shape[1:]:
        return None
    return shape[1:]


def tuned_winograd_tile(conv, input_tensor, same=False, batch_size=None, activation=None):
    """The fastest way to compute this conv here: 0 (direct), 2 or 4, by timing all three once.

    Each distinct (backend, threads, dtype, batch, input size, channels, activation) is timed once per
    process on random data, the candidates alternating call by call (:func:`kzoo.timing.race`), and
    Winograd is kept only when it takes at most ``TUNE_MARGIN`` of the direct conv's median time.
    The batch is ``batch_size``, else the input's static batch, else 1.
    """
    shape = _eligible_shape(conv, input_tensor, same)
    if shape is None or min(shape[2], conv.filters) < TUNE_MIN_CHANNELS:
        return 0
    filters = conv.filters
    import keras

    from kzoo.devices import cpu_threads

    batch = int(batch_size or input_tensor.shape[0] or 1)
    activation = activation or "linear"
    dtype = conv.dtype_policy.name
    key = (keras.backend.backend(), cpu_threads(), dtype, batch, *shape, filters, activation)
    if key not in _TUNED:
        times = _race_tiles(batch, shape, filters, activation, conv.dtype_policy)
        best = min((2, 4), key=lambda tile: times[tile])
        _TUNED[key] = best if times[best] <= TUNE_MARGIN * times[0] else 0
    return _TUNED[key]


def _race_tiles(batch, shape, filters, activation, dtype_policy):
    """Median seconds per call of a direct Conv2D, F(2x2) and F(4x4) on one random batch."""
    import keras

    from kzoo.timing import inference_step, on_device, race
    from kzoo.winograd import WinogradConv2D

    conv = keras.layers.Conv2D(filters, 3, padding="same", activation=activation, dtype=dtype_policy)
    conv.build((None, *shape))
    layers = {0: conv, 2: WinogradConv2D.from_conv2d(conv, 2), 4: WinogradConv2D.from_conv2d(conv, 4)}
    x = on_device(np.random.default_rng(0).standard_normal((batch, *shape)).astype(dtype_policy.compute_dtype))
    jit = keras.backend.backend() == "jax"  # JAX without jit runs op by op: time it as it is deployed
    steps = {}
    for tile, layer in layers.items():
        inputs = keras.Input(batch_shape=(batch, *shape), dtype=dtype_policy.compute_dtype)
        steps[tile] = inference_step(keras.Model(inputs, layer(inputs)), x, jit=jit)
    return race(steps, rounds=5, warmup=2)


def _winograd_layer(conv, fold, tile):
    """A WinogradConv2D computing ``conv`` followed by what ``fold`` absorbed (BN, activation)."""
    from kzoo.winograd import WinogradConv2D

    kernel = bias = None
    if fold is not None and fold.bn is not None:
        values = _folded_values(conv, fold.bn)
        kernel, bias = values["kernel"], values["bias"]
    activation = fold.activation if fold is not None else None
    return WinogradConv2D.from_conv2d(conv, tile, kernel=kernel, bias=bias, activation=activation)
