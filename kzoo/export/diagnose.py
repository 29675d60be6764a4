"""Naming the layer a format cannot hold.

Two checks. Before exporting: kzoo's own layers that a format is known not to hold
(:attr:`kzoo.export.formats.Format.cannot_hold`), by class. After a converter or runtime failed: the
unsupported TensorFlow op types its message names (tf2onnx, OpenVINO's frontend, TensorFlow Lite's converter,
ONNX Runtime's loader each word it differently), and the layers whose ops those are, found in the op paths of
the message (``functional_1/svd_layer_1/Svd``) or, failing that, in the graph TensorFlow traces of the model.
tf2onnx does not fail on an op it cannot convert: it writes the node as it is, so an ONNX file is also checked
node by node against ONNX's operator schemas (:func:`onnx_unknown_nodes`).
"""

from __future__ import annotations

import re

from kzoo.errors import ExportError

_OP_PATTERNS = (
    re.compile(r"Tensorflow op \[[^\]]*?: (\w+)\] is not supported"),  # tf2onnx
    re.compile(r"Unsupported ops: Counter\(\{([^}]*)\}\)"),  # tf2onnx's summary: 'Svd': 1, ...
    re.compile(r"No conversion rule found for operations: ([\w, ]+)"),  # OpenVINO
    re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op"),  # TensorFlow Lite
    re.compile(r"No Op registered for (\w+)"),  # ONNX Runtime
)
# What an op is, where its name alone does not say (the ops measured failing on kzoo's own families).
OP_HINTS = {
    "StatefulPartitionedCall": "a nested function: Keras' TensorFlow backend runs a grouped Conv2D as an "
                               "XLA-compiled function on CPU",
    "Erfc": "exact GELU's complementary error function",
}
_PATH = re.compile(r"[\w.\-]+(?:/[\w.\-]+)+")


def held_layers_check(model, fmt) -> None:
    """Raise ExportError naming the layers of ``model`` whose class ``fmt`` cannot hold."""
    if not fmt.cannot_hold:
        return
    found = [(layer.name, type(layer).__name__) for layer in _all_layers(model)
             if type(layer).__name__ in fmt.cannot_hold]
    if found:
        names = ", ".join(f"{name!r} ({cls})" for name, cls in found[:5]) + (" ..." if len(found) > 5 else "")
        why = fmt.cannot_hold[found[0][1]]
        raise ExportError(f"{fmt.name} cannot hold layer {names}: {why}. Export the model before "
                          f"optimize_for_inference, or optimize it with winograd=False "
                          f"(kzoo.export(..., optimize=True) does that for {fmt.name}).")


def unsupported_ops(text: str) -> list[str]:
    """Op types a converter or runtime message says it cannot handle, in order of first mention."""
    ops: list[str] = []
    for pattern in _OP_PATTERNS:
        for match in pattern.finditer(text):
            for op in re.findall(r"\w+", match.group(1)):
                if not op.isdigit() and op not in ops:
                    ops.append(op)
    return ops


def layers_named_in(model, text: str) -> list[str]:
    """Layer names of ``model`` that appear as a scope of an op path in ``text`` (deepest scope first)."""
    names = {layer.name for layer in _all_layers(model)}
    found: list[str] = []
    for path in _PATH.findall(text):
        for part in reversed(path.split("/")[:-1]):
            # TensorFlow makes scopes unique with a _1, _2 suffix: functional_1/conv1_1/Conv2D is layer conv1.
            for candidate in (part, re.sub(r"_\d+$", "", part)):
                if candidate in names:
                    if candidate not in found:
                        found.append(candidate)
                    break
            else:
                continue
            break
    return found


def layers_with_ops(model, op_types) -> list[str]:
    """Layers whose traced TensorFlow graph holds an op of one of ``op_types`` (TensorFlow backend)."""
    import tensorflow as tf

    spec = [tf.TensorSpec((1, *model.inputs[0].shape[1:]), model.inputs[0].dtype)]
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(*spec).graph
    paths = "\n".join(op.name for op in graph.get_operations() if op.type in op_types)
    return layers_named_in(model, paths)


def explain(error: BaseException, model, fmt, stage: str) -> ExportError:
    """An ExportError for a converter / runtime failure, naming the unsupported ops and their layers."""
    text = str(error)
    ops = unsupported_ops(text)
    if not ops:
        return ExportError(f"{stage} failed for {fmt.name}: {type(error).__name__}: {_first_lines(text)}")
    return cannot_hold(model, fmt, ops, text, stage)


def cannot_hold(model, fmt, ops, text: str, stage: str) -> ExportError:
    """The error for ops ``fmt`` cannot hold, naming their layers (from op paths in ``text``, else traced)."""
    layers = layers_named_in(model, text)
    if not layers:
        try:
            layers = layers_with_ops(model, set(ops))
        except Exception:  # naming the layer is a courtesy; the op names stand on their own
            layers = []
    shown = ", ".join(repr(n) for n in layers[:4]) + (f" and {len(layers) - 4} more" if len(layers) > 4 else "")
    where = f"layer {shown}" if layers else "a layer"
    named = ", ".join(f"{op} ({OP_HINTS[op]})" if op in OP_HINTS else op for op in ops)
    return ExportError(f"{fmt.name} cannot hold {where}: its op {named} is not supported by {stage}. Replace "
                       f"the layer with supported ops, or export to another format.")


def onnx_unknown_nodes(path) -> tuple[list[str], list[str]]:
    """``(op types, node names)`` of the nodes of an ONNX file that no registered ONNX schema defines."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ops, nodes = [], []
    for node in model.graph.node:
        if not onnx.defs.has(node.op_type, node.domain or ""):
            nodes.append(node.name)
            if node.op_type not in ops:
                ops.append(node.op_type)
    return ops, nodes


def _all_layers(model):
    return list(model._flatten_layers(include_self=False, recursive=True))


def _first_lines(text: str, limit: int = 600) -> str:
    text = " ".join(line.strip() for line in text.strip().splitlines() if line.strip())
    return text if len(text) <= limit else text[:limit] + " ..."
