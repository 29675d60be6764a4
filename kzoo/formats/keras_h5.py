"""Keras weight files: the legacy (Keras 2) HDF5 layout of the released ``.h5`` files, read by layer name.

Layout, as Keras 2 writes it: the root (or its ``model_weights`` group, in whole-model files) carries a
``layer_names`` attribute; each layer has a group with a ``weight_names`` attribute listing datasets such as
``conv1_conv/kernel:0``, in the legacy order (trainable weights, then non-trainable). Long attributes are
split into ``layer_names0``, ``layer_names1``, ... chunks.

Loading here is by name and strict: every weighted layer of the model must be found with the same number
of weights and the same shapes, or :class:`kzoo.errors.IncompatibleWeights` lists what is wrong. Keras 3
``.weights.h5`` files are handed to Keras' own loader. Superseded layouts (Keras 1 names, the ResNet50 v0.x
names, Theano kernels, files paired by order) are recognised and read into today's layers by
:mod:`kzoo.formats.keras_legacy` before the same strict pairing.

A truncated, damaged or non-HDF5 file raises :class:`kzoo.errors.WeightsFileError` naming the file, what is
wrong and the fix. h5py reports damage as OSError, KeyError, RuntimeError, ValueError or TypeError from
wherever the reader meets it (opening the file, an attribute, a group, a dataset's data); every access to
the file here goes through :func:`_reading`, which turns those into that one error.

Some damage does not raise at all. Fuzzing a tf_keras-written file (tests/test_fuzz_readers.py, 5000 mutants)
found HDF5 1.14.6 looping forever (27 mutants) or dying of SIGSEGV (1) while reading the variable-length
strings of the ``layer_names`` / ``weight_names`` attributes from a damaged global heap: no size or structure
check of the attribute can see it, since the damage is in the heap the strings point into. So before the
first read of a file in this process, kzoo makes the same reads in a child process (:func:`_probe`, about
0.3 s: Python, h5py and this module); a child killed by a signal or still reading after
``KZOO_H5_PROBE_TIMEOUT`` seconds becomes a WeightsFileError, and only a file the child read to the end (or
that failed there with an ordinary error, which this process then reports) is read here. A file is probed once
per process (by path, inode, size and modification time). ``probe=False`` (or ``KZOO_H5_PROBE=0``) skips it,
for bytes already verified against a registry hash, which are known to read.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field

import h5py
import numpy as np

from kzoo.errors import IncompatibleWeights, KzooError, WeightsFileError

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
    layout: object = None  # what keras_legacy recognised (a superseded layout, or today's)
    release: str | None = None  # the registry entry the file is, when known

    @property
    def skipped(self) -> list:
        return [*self.missing, *(name for name, _ in self.mismatched)]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        lines = [f"{os.path.basename(self.path)}: {len(self.loaded)} layers loaded"]
        if self.layout is not None and self.layout.legacy:
            lines.append(f"  read as: {self.layout}")
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


_FIX = ("If it was downloaded, download it again (`kzoo fetch ID` re-downloads and verifies a registered "
        "file); otherwise check that the path names a Keras weight file and that it was copied completely.")


def _damage(exc: BaseException) -> str:
    """What h5py's message says about the file, in words a user can act on."""
    text = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc).strip()
    truncated = re.search(r"truncated file: eof = (\d+).*stored_eof = (\d+)", text)
    if truncated:
        return f"the file is truncated: {truncated[1]} bytes of the {truncated[2]} its header declares"
    if "file signature not found" in text:
        return "it is not an HDF5 file (no HDF5 signature)"
    hdf5 = re.match(r"(?:Unable to|Can't) (?:synchronously )?(.+?) \((.+)\)$", text)
    if hdf5:  # HDF5's "Unable to synchronously open object (bad heap free list)"
        return f"the file is damaged (HDF5 could not {hdf5[1]}: {hdf5[2][:160]})"
    return f"the file is damaged ({type(exc).__name__}: {text[:200]})"


@contextlib.contextmanager
def _reading(path, where: str = ""):
    """Run h5py reads of ``path`` (``where``: the layer being read, for the message); any error h5py raises
    for a damaged file becomes a WeightsFileError naming it. kzoo's own errors pass unchanged."""
    try:
        yield
    except KzooError:
        raise
    except (OSError, KeyError, RuntimeError, ValueError, TypeError) as exc:
        at = f" ({where})" if where else ""
        raise WeightsFileError(f"Cannot read the weight file {path}{at}: {_damage(exc)}. {_FIX}") from exc


ENV_PROBE = "KZOO_H5_PROBE"  # "0": no child-process probe
ENV_PROBE_TIMEOUT = "KZOO_H5_PROBE_TIMEOUT"  # seconds; default 60, or 1 s per 20 MB for larger files
_PROBED: set = set()  # files read to the end by a probe in this process
_PROBE_CODE = "import sys; from kzoo.formats.keras_h5 import _touch; _touch(sys.argv[1])"


def _file_key(path) -> tuple:
    st = os.stat(path)
    return (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _probe(path: str):
    """Read ``path`` as this module will, first in a child process, so that a file that crashes or hangs
    HDF5 ends in a WeightsFileError instead of the caller's process (see the module docstring)."""
    if os.environ.get(ENV_PROBE, "1") == "0" or not sys.executable:
        return
    key = _file_key(path)
    if key in _PROBED:
        return
    st = os.stat(path)
    timeout = float(os.environ.get(ENV_PROBE_TIMEOUT) or max(60.0, st.st_size / 20e6))
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    try:
        child = subprocess.run([sys.executable, "-c", _PROBE_CODE, path], env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise WeightsFileError(
            f"Cannot read the weight file {path}: HDF5 was still reading it after {timeout:.0f} s (a damaged file "
            f"can send HDF5 into an endless loop; the read ran in a child process, which was stopped). {_FIX} If "
            f"the file is good and only slow to read, raise {ENV_PROBE_TIMEOUT}.") from None
    if child.returncode < 0:
        try:
            name = signal.Signals(-child.returncode).name
        except ValueError:
            name = f"signal {-child.returncode}"
        raise WeightsFileError(
            f"Cannot read the weight file {path}: reading it killed HDF5 ({name}; the read ran in a child process, "
            f"so this one is unharmed). The file is damaged. {_FIX}")
    if child.returncode == 0:
        _PROBED.add(key)
    # Any other status: the child met an ordinary error (the same read here reports it), or could not run.


def _touch(path):
    """Every read this module makes of ``path``, keeping nothing: what :func:`_probe` runs in the child."""
    size = os.path.getsize(path)
    with h5py.File(path, "r") as f:
        root = _weights_root(f, path)
        if root is None:  # Keras' loader reads a Keras 3 file: every dataset under it
            datasets = []
            f.visititems(lambda name, obj: datasets.append(obj) if isinstance(obj, h5py.Dataset) else None)
        else:
            datasets = [_dataset(root[name], weight, path) for name in _read_names(root, "layer_names")
                        for weight in _read_names(root[name], "weight_names")]
        for dataset in datasets:
            _check_size(dataset, path, size)
            dataset[()]


def _dataset(group, weight: str, path):
    """``group[weight]``, which must be a dataset: in a damaged file the name can resolve to a group or a
    named datatype."""
    found = group[weight]
    if not isinstance(found, h5py.Dataset):
        raise WeightsFileError(
            f"Cannot read the weight file {path} (layer {group.name.lstrip('/')!r}): the weight {weight!r} is a "
            f"{type(found).__name__.lower()}, not a dataset. The file is damaged. {_FIX}")
    return found


def _check_size(dataset, path, file_size: int):
    """An unfiltered dataset's values are stored in the file, so it cannot hold more bytes than the file: a
    damaged shape (2**40 elements) is an error here, not an allocation of that size."""
    if dataset.size * dataset.dtype.itemsize > file_size and not dataset.id.get_create_plist().get_nfilters():
        raise WeightsFileError(
            f"Cannot read the weight file {path}: dataset {dataset.name} declares shape {dataset.shape} "
            f"({dataset.size * dataset.dtype.itemsize} bytes), more than the whole file ({file_size} bytes). "
            f"The file is damaged. {_FIX}")


@contextlib.contextmanager
def _open(path, probe: bool = True):
    """``h5py.File(path, "r")``, with every read inside it checked by :func:`_reading`."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightsFileError(f"The weight file {path} does not exist (or is not a file). Check the path.")
    if probe:
        _probe(path)
    with _reading(path):
        with h5py.File(path, "r") as f:
            yield f


def _weights_root(f: h5py.File, path: str):
    root = f["model_weights"] if "model_weights" in f else f
    if "layer_names" not in root.attrs and "layer_names0" not in root.attrs:
        return None
    return root


def is_legacy_h5(path, *, probe: bool = True) -> bool:
    """Whether ``path`` is a legacy (Keras 2) weight file. ``probe``: see the module docstring."""
    with _open(path, probe) as f:
        return _weights_root(f, path) is not None


def read_weights(path, *, probe: bool = True) -> list:
    """All weights of a legacy file: ``[(layer_name, [(weight_name, array), ...]), ...]`` in file order."""
    size = os.path.getsize(path) if os.path.isfile(path) else 0
    with _open(path, probe) as f:
        root = _weights_root(f, path)
        if root is None:
            raise IncompatibleWeights(f"{path} is not a legacy Keras h5 weight file (no 'layer_names').")
        result = []
        for layer_name in _read_names(root, "layer_names"):
            with _reading(path, f"layer {layer_name!r}"):
                group = root[layer_name]
                datasets = [(w, _dataset(group, w, path)) for w in _read_names(group, "weight_names")]
                for _, dataset in datasets:
                    _check_size(dataset, path, size)
                result.append((layer_name, [(w, dataset[()]) for w, dataset in datasets]))
        return result


def write_weights(path, layers, *, backend: str = "tensorflow", keras_version: str | None = None,
                  what: str | None = None, elsewhere: str = "save them to another folder"):
    """Write ``[(layer_name, [(weight_name, array), ...]), ...]`` in the legacy layout.

    Layers with no weights are listed too (Keras 2 lists every layer), so the by-order loader of
    Keras and tf_keras, which skips weightless layers, sees the same sequence either way.

    The file is built in memory and reaches ``path`` through one rename (``kzoo.sources.storage``): a full
    disk or a file-size limit is a :class:`~kzoo.errors.StorageError` naming the folder and the bytes
    needed, never an HDF5 crash (HDF5 1.14 has died of SIGSEGV on ENOSPC) or a half-written file, and an
    older file at ``path`` stays as it was.
    """
    from kzoo.sources.storage import h5_bytes, write_atomically

    if keras_version is None:
        import keras

        keras_version = keras.__version__

    def build(f):
        _write_names(f, "layer_names", [name for name, _ in layers])
        f.attrs["backend"] = backend.encode("utf8")
        f.attrs["keras_version"] = keras_version.encode("utf8")
        for layer_name, weights in layers:
            group = f.create_group(layer_name)
            _write_names(group, "weight_names", [w for w, _ in weights])
            for weight_name, value in weights:
                group.create_dataset(weight_name, data=np.asarray(value))

    what = what or f"Weights {os.path.basename(os.fspath(path))}"
    write_atomically(path, h5_bytes(build), what, elsewhere=elsewhere)
    _PROBED.add(_file_key(path))  # written here from arrays in memory: nothing to probe


def save_weights(model, path):
    """Save a Keras model's weights in the legacy layout the released files use (see write_weights)."""
    layers = []
    for layer in model.layers:
        weights = [(f"{layer.name}/{_short_name(v)}:0", np.asarray(v.numpy() if hasattr(v, "numpy") else v))
                   for v in legacy_weights(layer)]
        layers.append((layer.name, weights))
    write_weights(path, layers, what=f"Weights of {model.name} ({os.path.basename(os.fspath(path))})")


def _short_name(variable) -> str:
    # Keras 3 variable paths look like "conv1_conv/kernel"; Keras 2 names like "kernel".
    return str(getattr(variable, "name", "")).rsplit("/", 1)[-1] or "weight"


def load_weights(model, path, skip_mismatch: bool = False, allow_unexpected: bool = False, *,
                 probe: bool = True, release=None, dim_ordering: str | None = None, bn_epsilon: str = "fold",
                 by_order: bool = False, rename=None) -> LoadReport:
    """Load a weight file into ``model`` by layer name, strictly.

    With ``skip_mismatch=False`` (the default) a missing, unexpected or wrongly shaped weight raises
    :class:`IncompatibleWeights` listing every layer involved, and nothing is assigned. With
    ``skip_mismatch=True`` the matching layers load and the report names what was skipped.
    ``allow_unexpected=True`` accepts extra layers in the file (a classifier head loaded into a
    headless model) while still requiring every model layer to be found.

    Superseded layouts (Keras 1, the ResNet50 v0.x names, Theano kernels) are recognised from the file's
    contents and read into today's layers (:mod:`kzoo.formats.keras_legacy`). ``release``: the registry
    entry the file is (else a file named like a released one is hashed to find out); ``dim_ordering``
    ("tf" / "th") overrides the detected kernel ordering; ``bn_epsilon="raw"`` loads a file made for another
    BatchNorm epsilon as stored instead of folding the difference into ``moving_variance`` ("fold", the
    default: the model computes what the file's model computed); ``by_order=True`` pairs weighted layers in
    file order (for files whose names are known not to match); ``rename``: a function from the file's layer
    names to the model's.

    A truncated, damaged or non-weight file raises :class:`~kzoo.errors.WeightsFileError`. ``probe=False``
    skips reading the file in a child process first (only for bytes verified against a registry hash: see
    the module docstring).
    """
    from kzoo.formats import keras_legacy

    path = os.fspath(path)
    keras_legacy.check_options(dim_ordering, bn_epsilon)  # before the file is opened: not a file error
    if release is None and os.path.isfile(path):
        release = keras_legacy.identify_file(path)  # a user's file named like a release: which one, if any
    with _open(path, probe) as f:
        root = _weights_root(f, path)
        if root is not None:
            file_layers = _file_layers(root, path)
            layout = keras_legacy.recognise(path, set(root.attrs), file_layers, model, release=release,
                                            dim_ordering=dim_ordering, by_order=by_order)
            with _reading(path):
                file_layers = keras_legacy.adapt(model, file_layers, layout, bn_epsilon=bn_epsilon, rename=rename)
            report = _load_legacy(model, path, file_layers, skip_mismatch, allow_unexpected,
                                  by_order=layout.names == "order")
            report.layout, report.release = layout, getattr(release, "id", None)
            return report
        keras3 = "layers" in f or "vars" in f  # the groups Keras 3's .weights.h5 writer makes
    if not keras3:
        raise WeightsFileError(
            f"The weight file {path} is neither a legacy Keras h5 weight file (no 'layer_names' attribute) "
            f"nor a Keras 3 .weights.h5 file (no 'layers' or 'vars' group). {_FIX}")
    return _load_keras3_file(model, path)  # with the file closed: Keras' loader opens it itself


def _file_layers(root, path) -> dict:
    """``{layer: [(weight name, dataset), ...]}`` for the file's weighted layers, in file order (data unread)."""
    file_layers = {}
    for name in _read_names(root, "layer_names"):
        with _reading(path, f"layer {name!r}"):
            group = root[name]
            weights = [(w, _dataset(group, w, path)) for w in _read_names(group, "weight_names")]
        if weights:
            file_layers[name] = weights
    return file_layers


def _load_legacy(model, path, file_layers: dict, skip_mismatch, allow_unexpected, by_order=False) -> LoadReport:
    report = LoadReport(path)
    weighted = [layer for layer in model.layers if legacy_weights(layer)]
    if by_order:  # names known not to match (keras_legacy): position is the pairing, shapes are checked
        pairs = list(zip(weighted, file_layers))
        report.missing = [layer.name for layer in weighted[len(file_layers):]]
        report.unexpected = list(file_layers)[len(weighted):]
        report.paired_by_order = [(layer.name, name) for layer, name in pairs if layer.name != name]
        plan = pairs
    else:
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
        datasets = [value for _, value in file_layers[file_name]]
        reason = _mismatch(variables, datasets)
        if reason:
            report.mismatched.append((layer.name, reason))
        else:
            checked.append((layer, file_name, variables, datasets))
    strict_failure = report.missing or report.mismatched or (report.unexpected and not allow_unexpected)
    if strict_failure and not skip_mismatch:
        raise IncompatibleWeights(
            f"The weight file {path} does not fit model '{model.name}':\n{report}\n"
            "Check that the file was saved from the same architecture and the same include_top / "
            "classes / alpha settings, or pass skip_mismatch=True to load only the layers that fit."
        )
    # Every value is read before any is assigned: damage met halfway leaves the model as it was.
    values = []
    for layer, file_name, variables, datasets in checked:
        with _reading(path, f"layer {file_name!r}"):
            values.append((layer, [(v, np.asarray(d[()]).astype(v.dtype, copy=False))
                                   for v, d in zip(variables, datasets)]))
    for layer, pairs_ in values:
        for variable, value in pairs_:
            variable.assign(value)
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
    except (OSError, KeyError, RuntimeError, TypeError) as err:
        raise WeightsFileError(f"Cannot read the weight file {path}: {_damage(err)}. {_FIX}") from err
    report = LoadReport(path)
    report.loaded = [layer.name for layer in model.layers if layer.weights]
    return report
