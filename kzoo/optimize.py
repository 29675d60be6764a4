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

The passes live in their own modules: :mod:`kzoo.rewrite_plan` (which nodes fold, drop or take
"same" padding), :mod:`kzoo.folding` (BN arithmetic), :mod:`kzoo.merge_siblings` and
:mod:`kzoo.winograd_tuning`. This module rebuilds the model from their plan.
"""

from __future__ import annotations

from kzoo.folding import folded_layer, set_folded_weights
from kzoo.merge_siblings import merged_layers, plan_sibling_merges
from kzoo.rewrite_plan import Graph, member_activation, plan_rewrites
from kzoo.winograd_tuning import tuned_winograd_tile, winograd_layer, winograd_tile

# Re-exported: the docstrings and BENCHMARKS.md name them as kzoo.optimize.<name>.
from kzoo.winograd_tuning import (  # noqa: F401
    TUNE_MARGIN,
    TUNE_MIN_CHANNELS,
    WINOGRAD_F2_MIN_TILES,
    WINOGRAD_F4_MIN_TILES,
    WINOGRAD_MIN_CHANNELS,
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
    graph = Graph(model)
    plan = plan_rewrites(graph, fold_batchnorm, fuse_activations, drop_identity, fold_padding)
    if merge_siblings:
        plan_sibling_merges(graph, plan)
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
                conv, split = merged_layers(group, plan)
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
                tile = tuned_winograd_tile(op, node.input_tensors[0], same, batch_size, member_activation(node, plan))
            else:
                tile = winograd_tile(op, node.input_tensors[0], same, batch_size)
        if tile:
            layer = winograd_layer(op, fold, tile)
            out = layer(*args, **kwargs)
            values[id(fold.last_output if fold is not None else node.outputs[0])] = out
            continue
        if fold is not None:
            layer = folded_layer(op, fold, same)
            out = layer(*args, **kwargs)
            set_folded_weights(layer, op, fold)
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


def _tensor_name(x):
    history = getattr(x, "_keras_history", None)
    op = getattr(history, "operation", None)
    return getattr(op, "name", None)


def _is_functional(op):
    return hasattr(op, "_nodes_by_depth") or getattr(op, "_functional", None) is not None

