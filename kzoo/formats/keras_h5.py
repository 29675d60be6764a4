"""Keras weight files: the legacy (Keras 2) HDF5 layout of the released ``.h5`` files, read by layer name.

Layout, as Keras 2 writes it: the root (or its ``model_weights`` group, in whole-model files) carries a
``layer_names`` attribute; each layer has a group with a ``weight_names`` attribute listing datasets such as
``conv1_conv/kernel:0``, in the legacy order (trainable weights, then non-trainable). Long attributes are
split into ``layer_names0``, ``layer_names1``, ... chunks.

Loading here is by name and strict: every weighted layer of the model must be found with the same number
of weights and the same shapes, or :class:`kzoo.errors.IncompatibleWeights` lists what is wrong. Keras 3
``.weights.h5`` files are handed to Keras' own loader.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass, field

import h5py
import numpy as np

from kzoo.errors import IncompatibleWeights

# HDF5 cannot hold one attribute larger than this; Keras splits longer name lists the same way.
_ATTR_LIMIT = 64512
_SHOWN = 12  # how many names an error message lists before summarising


@dataclass
class LoadReport:
    """What ``load_weights`` did: layers loaded, and anything skipped with ``skip_mismatch=True``."""

    path: str
    loaded: list = field(default_factory=list)
    missing: list = field(default_factory=list)  # weighted model layers the file lacks
    unexpected: list = field(default_factory=list)  # weighted file layers the model lacks
    mismatched: list = field(default_factory=list)  # (layer, reason) pairs
    paired_by_order: list = field(default_factory=list)  # (model layer, file layer) for auto-named layers

    @property
    def skipped(self) -> list:
        return [*self.missing, *(name for name, _ in self.mismatched)]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        lines = [f"{os.path.basename(self.path)}: {len(self.loaded)} layers loaded"]
        if self.paired_by_order:
            lines.append(f"  {len(self.paired_by_order)} auto-named layers paired by order "
                         f"(e.g. {self.paired_by_order[0][0]} <- {self.paired_by_order[0][1]})")
        if self.missing:
            lines.append(f"  not in the file ({len(self.missing)}): {_names(self.missing)}")
        if self.unexpected:
            lines.append(f"  not in the model ({len(self.unexpected)}): {_names(self.unexpected)}")
        for name, reason in self.mismatched[:_SHOWN]:
            lines.append(f"  {name}: {reason}")
        if len(self.mismatched) > _SHOWN:
            lines.append(f"  ... and {len(self.mismatched) - _SHOWN} more mismatched layers")
        return "\n".join(lines)


def _names(names) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f", ... (+{len(names) - _SHOWN})" if len(names) > _SHOWN else "")


def legacy_weights(layer) -> list:
    """A layer's variables in the legacy h5 order: trainable first, then non-trainable."""
    return list(layer.trainable_weights) + list(layer.non_trainable_weights)


def _read_names(group, name) -> list[str]:
    if name in group.attrs:
        values = group.attrs[name]
    else:
        values, chunk = [], 0
        while f"{name}{chunk}" in group.attrs:
            values.extend(group.attrs[f"{name}{chunk}"])
            chunk += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _write_names(group, name, values: list[str]):
    data = np.asarray([v.encode("utf8") for v in values])
    chunks = 1
    while data.nbytes / chunks > _ATTR_LIMIT:
        chunks += 1
    if chunks == 1:
        group.attrs[name] = data
    else:
        for i, part in enumerate(np.array_split(data, chunks)):
            group.attrs[f"{name}{i}"] = part


def _weights_root(f: h5py.File, path: str):
    root = f["model_weights"] if "model_weights" in f else f
    if "layer_names" not in root.attrs and "layer_names0" not in root.attrs:
        return None
    return root


def is_legacy_h5(path) -> bool:
    with h5py.File(path, "r") as f:
        return _weights_root(f, path) is not None


def read_weights(path) -> list:
    """All weights of a legacy file: ``[(layer_name, [(weight_name, array), ...]), ...]`` in file order."""
    with h5py.File(path, "r") as f:
        root = _weights_root(f, path)
        if root is None:
            raise IncompatibleWeights(f"{path} is not a legacy Keras h5 weight file (no 'layer_names').")
        result = []
        for layer_name in _read_names(root, "layer_names"):
            group = root[layer_name]
            result.append((layer_name, [(w, group[w][()]) for w in _read_names(group, "weight_names")]))
        return result


def write_weights(path, layers, *, backend: str = "tensorflow", keras_version: str | None = None):
    """Write ``[(layer_name, [(weight_name, array), ...]), ...]`` in the legacy layout.

    Layers with no weights are listed too (Keras 2 lists every layer), so the by-order loader of
    Keras and tf_keras, which skips weightless layers, sees the same sequence either way.
    """
    if keras_version is None:
        import keras

        keras_version = keras.__version__
    tmp = f"{os.fspath(path)}.tmp-{os.getpid()}"
    with h5py.File(tmp, "w") as f:
        _write_names(f, "layer_names", [name for name, _ in layers])
        f.attrs["backend"] = backend.encode("utf8")
        f.attrs["keras_version"] = keras_version.encode("utf8")
        for layer_name, weights in layers:
            group = f.create_group(layer_name)
            _write_names(group, "weight_names", [w for w, _ in weights])
            for weight_name, value in weights:
                group.create_dataset(weight_name, data=np.asarray(value))
    os.replace(tmp, path)  # never leave a half-written weight file under the final name


def save_weights(model, path):
    """Save a Keras model's weights in the legacy layout the released files use."""
    layers = []
    for layer in model.layers:
        weights = [(f"{layer.name}/{_short_name(v)}:0", np.asarray(v.numpy() if hasattr(v, "numpy") else v))
                   for v in legacy_weights(layer)]
        layers.append((layer.name, weights))
    write_weights(path, layers)


def _short_name(variable) -> str:
    # Keras 3 variable paths look like "conv1_conv/kernel"; Keras 2 names like "kernel".
    return str(getattr(variable, "name", "")).rsplit("/", 1)[-1] or "weight"


def load_weights(model, path, skip_mismatch: bool = False, allow_unexpected: bool = False) -> LoadReport:
    """Load a weight file into ``model`` by layer name, strictly.

    With ``skip_mismatch=False`` (the default) a missing, unexpected or wrongly shaped weight raises
    :class:`IncompatibleWeights` listing every layer involved, and nothing is assigned. With
    ``skip_mismatch=True`` the matching layers load and the report names what was skipped.
    ``allow_unexpected=True`` accepts extra layers in the file (a classifier head loaded into a
    headless model) while still requiring every model layer to be found.
    """
    path = os.fspath(path)
    with h5py.File(path, "r") as f:
        root = _weights_root(f, path)
        if root is None:
            return _load_keras3_file(model, path)
        report = LoadReport(path)
        file_layers = {}
        for name in _read_names(root, "layer_names"):
            weight_names = _read_names(root[name], "weight_names")
            if weight_names:
                file_layers[name] = weight_names
        weighted = [layer for layer in model.layers if legacy_weights(layer)]
        pairs = _pair_auto_named(weighted, list(file_layers))
        report.paired_by_order = [(layer.name, name) for layer, name in pairs if layer.name != name]
        paired_layers = {id(layer) for layer, _ in pairs}
        paired_names = {name for _, name in pairs}
        plan = list(pairs)  # (model layer, file layer name)
        for layer in weighted:
            if id(layer) in paired_layers:
                continue
            if layer.name in file_layers and layer.name not in paired_names:
                plan.append((layer, layer.name))
            else:
                report.missing.append(layer.name)
        used = {name for _, name in plan}
        report.unexpected = [name for name in file_layers if name not in used]
        checked = []
        for layer, file_name in plan:
            variables = legacy_weights(layer)
            datasets = [root[file_name][w] for w in file_layers[file_name]]
            reason = _mismatch(variables, datasets)
            if reason:
                report.mismatched.append((layer.name, reason))
            else:
                checked.append((layer, variables, datasets))
        strict_failure = report.missing or report.mismatched or (report.unexpected and not allow_unexpected)
        if strict_failure and not skip_mismatch:
            raise IncompatibleWeights(
                f"The weight file {path} does not fit model '{model.name}':\n{report}\n"
                "Check that the file was saved from the same architecture and the same include_top / "
                "classes / alpha settings, or pass skip_mismatch=True to load only the layers that fit."
            )
        for layer, variables, datasets in checked:
            for variable, dataset in zip(variables, datasets):
                variable.assign(dataset[()].astype(variable.dtype, copy=False))
            if hasattr(layer, "finalize_state"):  # e.g. Normalization recomputes its derived state
                layer.finalize_state()
            report.loaded.append(layer.name)
    return report


def _auto_name_stem(class_name: str) -> str:
    """The stem Keras gives an unnamed layer of this class (``BatchNormalization`` -> ``batch_normalization``)."""
    words = re.sub(r"(.)([A-Z][a-z0-9]+)", r"\1_\2", class_name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", words).lower()


def _pair_auto_named(model_layers, file_names) -> list:
    """Pair layers that Keras named automatically (``conv2d_17``) with the file's, by order.

    Such names depend on how many layers a session built before (Keras 2 files start at ``conv2d_1``),
    so they carry no meaning, and may even coincide with the wrong layer; Keras' own loader pairs
    layers by order for the same reason. Pairing is done per layer class, and only where the model
    and the file have the same number of layers with that automatic stem.
    """
    model_by_stem, file_by_stem = defaultdict(list), defaultdict(list)
    for layer in model_layers:
        stem = _auto_name_stem(type(layer).__name__)
        if re.fullmatch(rf"{re.escape(stem)}(_\d+)?", layer.name):
            model_by_stem[stem].append(layer)
    for name in file_names:
        file_by_stem[re.sub(r"_\d+$", "", name)].append(name)
    pairs = []
    for stem, layers in model_by_stem.items():
        if len(file_by_stem.get(stem, ())) == len(layers):
            pairs.extend(zip(layers, file_by_stem[stem]))
    return pairs


def _mismatch(variables, datasets) -> str | None:
    if len(variables) != len(datasets):
        return f"the model has {len(variables)} weights, the file has {len(datasets)}"
    for variable, dataset in zip(variables, datasets):
        if tuple(variable.shape) != tuple(dataset.shape):
            return (f"weight {_short_name(variable)} has shape {tuple(variable.shape)} in the model, "
                    f"{tuple(dataset.shape)} in the file")
    return None


def _load_keras3_file(model, path) -> LoadReport:
    """Keras 3 ``.weights.h5`` files follow the model's object structure; Keras' own loader is exact."""
    try:
        model.load_weights(path, skip_mismatch=False)
    except ValueError as err:
        raise IncompatibleWeights(f"The weight file {path} does not fit model '{model.name}': {err}") from err
    report = LoadReport(path)
    report.loaded = [layer.name for layer in model.layers if layer.weights]
    return report
