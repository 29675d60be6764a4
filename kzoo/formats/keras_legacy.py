"""Superseded Keras weight layouts, recognised from a file's contents and read into today's builders.

The fchollet/deep-learning-models releases (https://github.com/fchollet/deep-learning-models/releases,
v0.1-v0.8) were written by Keras 1 and early Keras 2. What differs from today's layout, and the rule kzoo
applies (``adapt``), all as the file is read; nothing is written back:

- **Keras 1 names** (root attribute ``layer_names`` only, no ``keras_version``; datasets ``conv1_W:0``,
  ``bn_conv1_running_std:0``). The weights of a layer are listed in the same order as today's legacy order
  (``W, b``; ``gamma, beta, running_mean, running_std``), and ``running_std`` holds the *variance*: Keras 1
  passed it to ``tf.nn.batch_normalization`` as the variance (keras 1.2.2 ``backend/tensorflow_backend.py``),
  so it loads into ``moving_variance`` unchanged.
- **ResNet50 v0.1 / v0.2** (the ``res2a_branch2a`` / ``bn2a_branch2a`` / ``fc1000`` names of the legacy
  ``resnet50.py``, keras-team/keras-applications 1.0.8): renamed by :func:`resnet50_v0_name`, a rule, so that
  loading stays by name. The weighted layers are in another order than today's (the shortcut comes after the
  main branch), so Keras' by-order loader puts a block's same-shaped kernels into each other's layers
  (tensorflow/tensorflow#33459). That model ran BatchNormalization with Keras 2's default epsilon 1e-3
  (today's ResNet50: 1.001e-5). ``bn_epsilon="fold"`` (the default) adds the difference to
  ``moving_variance``, which reproduces exactly the function the file was released for -- the outputs its
  users saw, and the file's own preprocessing and accuracy figures. ``bn_epsilon="raw"`` loads the stored
  numbers unchanged (the function of today's epsilon, which is closer to Caffe's 1e-5 of the original
  model, KaimingHe/deep-residual-networks).
- **Theano ordering** (``*_th_dim_ordering_th_kernels*``): a Conv2D kernel is stored ``(out, in, rows,
  cols)`` as a true convolution, so it is transposed to ``(rows, cols, in, out)`` and rotated by 180 degrees
  (keras 1.0.7 ``utils/layer_utils.py`` ``convert_all_kernels_in_model``); a Dense layer right after a
  Flatten of a ``(C, H, W)`` map has its rows reordered to ``(H, W, C)`` (tf_keras
  ``convert_dense_weights_data_format``). Detected from the registry entry when the file is a known release,
  else from the file name, else from the kernel shapes; ``dim_ordering=`` overrides.
- **Load by order** (DenseNet v0.8, whose weight names did not match the code,
  keras-team/keras-applications#17): the registry entry says ``"legacy": {"pair_by": "order"}``; the
  weighted layers are paired one for one in file order, each pair's shapes checked. ``by_order=True``
  asks for it for a file kzoo does not know.
- **InceptionV3 v0.2** (2016) is another network (ReLU before a scaled BatchNorm, biased convolutions,
  average pooling in mixed8): its file cannot be loaded into today's InceptionV3 and raises
  IncompatibleWeights saying so.

A user's own file named like a released file is hashed (:func:`identify_file`): a match says which release
it is; no match gives a :class:`NotAReleasedCopy` warning and the file loads as the user's own.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass

import numpy as np

from kzoo.errors import IncompatibleWeights

# The legacy resnet50.py used Keras' default BatchNormalization epsilon: 1e-3 from Keras 1.2 and in all of
# Keras 2, where keras.applications <= 2.2 ran this file (keras 2.2.4 layers/normalization.py).
RESNET50_V0_BN_EPSILON = 1e-3
BN_EPSILON_MODES = ("fold", "raw")
DIM_ORDERINGS = ("tf", "th")
_TH_NAME = re.compile(r"_th_dim_ordering_th_kernels")
_KERAS1_WEIGHT = re.compile(r"_(W|b|gamma|beta|running_mean|running_std)(:\d+)?$")
_RESNET50_V0 = re.compile(r"^(res|bn)([2-5])([a-z])_branch(1|2a|2b|2c)$")
_RESNET50_V0_FIXED = {"conv1": "conv1_conv", "bn_conv1": "conv1_bn", "fc1000": "predictions"}
_BRANCH = {"1": 0, "2a": 1, "2b": 2, "2c": 3}


class NotAReleasedCopy(UserWarning):
    """A file named like a released weight file whose bytes match no release (fine-tuned, or damaged)."""


def resnet50_v0_name(name: str) -> str:
    """The legacy resnet50.py layer name -> today's: ``res3b_branch2a`` -> ``conv3_block2_1_conv``,
    ``bn4a_branch1`` -> ``conv4_block1_0_bn``, ``bn_conv1`` -> ``conv1_bn``. Other names are kept."""
    if name in _RESNET50_V0_FIXED:
        return _RESNET50_V0_FIXED[name]
    match = _RESNET50_V0.match(name)
    if not match:
        return name
    kind, stage, block, branch = match.groups()
    return f"conv{stage}_block{ord(block) - ord('a') + 1}_{_BRANCH[branch]}_{'conv' if kind == 'res' else 'bn'}"


@dataclass
class Layout:
    """What kzoo recognised in a legacy h5 file, and how it will be read."""

    keras1: bool = False
    names: str = "same"  # "same" | "resnet50_v0" | "order"
    dim_ordering: str = "tf"
    dim_ordering_from: str = "default"  # "argument" | "registry" | "file name" | "kernel shapes" | "default"
    bn_epsilon: float | None = None  # the epsilon the file was made for, where it is not the model's
    release: object = None  # the registry entry, when the file is a known release

    @property
    def legacy(self) -> bool:
        return self.keras1 or self.names != "same" or self.dim_ordering == "th"

    def __str__(self) -> str:
        parts = ["Keras 1 layout" if self.keras1 else "Keras 2 layout"]
        if self.names == "resnet50_v0":
            parts.append("ResNet50 v0 names (renamed by rule)")
        elif self.names == "order":
            parts.append("paired by layer order")
        if self.dim_ordering == "th":
            parts.append(f"Theano kernels (from the {self.dim_ordering_from})")
        if self.release is not None:
            parts.append(f"release {self.release.id}")
        return ", ".join(parts)


def _registry_facts(entry) -> dict:
    return dict(getattr(entry, "legacy", None) or {})


def check_options(dim_ordering, bn_epsilon):
    if dim_ordering is not None and dim_ordering not in DIM_ORDERINGS:
        raise ValueError(f"dim_ordering must be one of {DIM_ORDERINGS} or None, not {dim_ordering!r}")
    if bn_epsilon not in BN_EPSILON_MODES:
        raise ValueError(f"bn_epsilon must be one of {BN_EPSILON_MODES}, not {bn_epsilon!r}")


def recognise(path, attrs, file_layers: dict, model, *, release=None, dim_ordering=None,
              by_order: bool = False) -> Layout:
    """The layout of a legacy file. ``attrs``: the names of its root attributes (values are not read);
    ``file_layers``: ``{layer: [(weight name, dataset), ...]}`` of its weighted layers, in file order."""
    check_options(dim_ordering, "fold")
    layout = Layout(release=release)
    weight_names = [w for weights in file_layers.values() for w, _ in weights]
    layout.keras1 = "keras_version" not in attrs and any(_KERAS1_WEIGHT.search(w) for w in weight_names)
    facts = _registry_facts(release)
    if facts.get("different_network") or _is_inception_v3_2016(layout, file_layers, model):
        raise IncompatibleWeights(
            f"The weight file {path} is InceptionV3 v0.2 (fchollet/deep-learning-models, 2016), a different "
            f"network from today's InceptionV3: each convolution has a bias and a ReLU *before* a scaled "
            f"BatchNorm, and mixed8 pools by average. Its weights cannot be loaded into today's builder, and "
            f"kzoo has no builder for that network. Use weights='imagenet' (the v0.5 file, trained to "
            f"convergence; the v0.2 file was from a model 'that had not fully converged').")
    if "bn_conv1" in file_layers and any(_RESNET50_V0.match(n) for n in file_layers):
        layout.names, layout.bn_epsilon = "resnet50_v0", RESNET50_V0_BN_EPSILON
    elif by_order or facts.get("pair_by") == "order":
        layout.names = "order"
    if dim_ordering is not None:
        layout.dim_ordering, layout.dim_ordering_from = dim_ordering, "argument"
    elif release is not None:
        layout.dim_ordering = (release.variant or {}).get("dim_ordering", "tf")
        layout.dim_ordering_from = "registry"
    elif _TH_NAME.search(os.path.basename(os.fspath(path))):
        layout.dim_ordering, layout.dim_ordering_from = "th", "file name"
    elif _kernels_look_theano(file_layers, model, layout):
        layout.dim_ordering, layout.dim_ordering_from = "th", "kernel shapes"
    return layout


def _is_inception_v3_2016(layout, file_layers, model) -> bool:
    """A Keras 1 file of auto-named biased convolutions (``convolution2d_N``: W and b) for an InceptionV3,
    whose convolutions today have no bias."""
    if not layout.keras1 or not model.name.startswith("inception_v3"):
        return False
    convs = [w for n, w in file_layers.items() if re.fullmatch(r"convolution2d_\d+", n)]
    return bool(convs) and all(len(w) == 2 for w in convs)


def _model_layers(model) -> dict:
    return {layer.name: layer for layer in model.layers}


def _kernels_look_theano(file_layers, model, layout) -> bool:
    """True when some file kernel fits its model layer only transposed from ``(out, in, rows, cols)``,
    and none fits only as stored."""
    layers, th_only, tf_only = _model_layers(model), 0, 0
    for name, weights in file_layers.items():
        layer = layers.get(resnet50_v0_name(name) if layout.names == "resnet50_v0" else name)
        kernel = getattr(layer, "kernel", None)
        if kernel is None or len(kernel.shape) != 4 or not weights or len(weights[0][1].shape) != 4:
            continue
        stored, want = tuple(weights[0][1].shape), tuple(kernel.shape)
        as_th = tuple(stored[i] for i in (2, 3, 1, 0))
        th_only += as_th == want and stored != want
        tf_only += stored == want and as_th != want
    return th_only > 0 and tf_only == 0


def adapt(model, file_layers: dict, layout: Layout, *, bn_epsilon: str = "fold", rename=None) -> dict:
    """``file_layers`` as today's builder names and stores them: renamed, Theano kernels turned into
    TensorFlow ones, the BatchNorm epsilon folded. Values stay h5py datasets (read later, lazily) unless a
    transform needs them in memory."""
    check_options(None, bn_epsilon)
    out = {}
    for name, weights in file_layers.items():
        new = rename(name) if rename is not None else name
        if layout.names == "resnet50_v0":
            new = resnet50_v0_name(new)
        out[new] = list(weights)
    if layout.names == "order":
        return out  # paired by position: no model layer names to transform by
    layers = _model_layers(model)
    if layout.dim_ordering == "th":
        _theano_to_tf(out, layers)
    if layout.bn_epsilon is not None and bn_epsilon == "fold":
        _fold_bn_epsilon(out, layers, layout.bn_epsilon)
    return out


def th_kernel_to_tf(kernel):
    """A Theano Conv2D kernel (out, in, rows, cols), a true convolution, as today's (rows, cols, in, out)
    correlation kernel: transposed, then rotated by 180 degrees."""
    return np.ascontiguousarray(kernel.transpose(2, 3, 1, 0)[::-1, ::-1])


def th_dense_rows_to_tf(dense, feature_map):
    """The rows of a Dense kernel after Flatten of a (C, H, W) map, reordered for today's Flatten over the
    (H, W, C) map ``feature_map``."""
    h, w, c = feature_map
    units = dense.shape[-1]
    return np.ascontiguousarray(dense.reshape(c, h, w, units).transpose(1, 2, 0, 3).reshape(c * h * w, units))


def _theano_to_tf(file_layers, layers):
    import keras

    for name, weights in file_layers.items():
        layer = layers.get(name)
        if isinstance(layer, keras.layers.Conv2D) and not isinstance(layer, keras.layers.DepthwiseConv2D) \
                and weights and len(weights[0][1].shape) == 4:
            weights[0] = (weights[0][0], th_kernel_to_tf(np.asarray(weights[0][1][()])))
        elif isinstance(layer, keras.layers.Dense) and weights:
            feature_map = _flattened_map_shape(layer)
            if feature_map is not None:
                weights[0] = (weights[0][0], th_dense_rows_to_tf(np.asarray(weights[0][1][()]), feature_map))


def _flattened_map_shape(dense):
    """``(H, W, C)`` when ``dense`` reads a Flatten of a feature map, else None."""
    import keras

    try:
        source = dense.input._keras_history.operation
    except (AttributeError, ValueError):
        return None
    if not isinstance(source, keras.layers.Flatten):
        return None
    shape = tuple(source.input.shape[1:])
    return shape if len(shape) == 3 and all(shape) else None


def _fold_bn_epsilon(file_layers, layers, file_epsilon: float):
    """BatchNorm divides by sqrt(variance + epsilon): adding (file's epsilon - model's) to the variance makes
    the model's layer compute exactly what the file's did."""
    from kzoo.formats.keras_h5 import legacy_weights

    for name, weights in file_layers.items():
        layer = layers.get(name)
        if type(layer).__name__ != "BatchNormalization":
            continue
        names = [str(getattr(v, "path", v.name)).rsplit("/", 1)[-1] for v in legacy_weights(layer)]
        if "moving_variance" not in names or len(names) != len(weights):
            continue  # the strict loader reports the mismatch
        i = names.index("moving_variance")
        variance = np.asarray(weights[i][1][()])
        shift = np.asarray(file_epsilon - layer.epsilon, dtype=np.float64)
        # kept in float64: the model's own dtype is the only rounding (assign casts)
        weights[i] = (weights[i][0], variance.astype(np.float64) + shift)


# --------------------------------------------------------------------------------------- a user's own file

_IDENTIFIED: dict = {}  # (path, inode, size, mtime) -> entry id or None


def identify_file(path):
    """The registry entry a user's file is, when its name is a registered file name and its hash matches
    one; ``None`` otherwise. A registered name with no matching hash warns :class:`NotAReleasedCopy`."""
    from kzoo import registry
    from kzoo.sources.hashing import hash_file

    path = os.fspath(path)
    name = os.path.basename(path)
    same_name = [e for e in registry.list_weights(include_superseded=True) if e.file_name == name]
    if not same_name or not os.path.isfile(path):
        return None
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _IDENTIFIED:
        digests = hash_file(path)
        found = registry.identify(sha256=digests["sha256"], md5=digests["md5"])
        _IDENTIFIED[key] = found[0].id if found else None
        if not found:
            releases = ", ".join(e.id for e in same_name)
            warnings.warn(
                f"{path} has the name of the released file(s) {releases}, but its hash matches no release: it is "
                f"not a released copy (a fine-tuned file, or a damaged download). It is loaded as your own "
                f"file; `kzoo fetch ID` gets a verified copy.", NotAReleasedCopy, stacklevel=4)
    entry_id = _IDENTIFIED[key]
    return registry.get_entry(entry_id) if entry_id else None


def describe_release(entry) -> list:
    """``[(label, text), ...]``: how a superseded Keras h5 release loads, for ``kzoo info``."""
    from kzoo import index

    facts = _registry_facts(entry)
    if not facts:
        return []
    if facts.get("different_network"):
        return [("loads", "no: a different network from today's builder (kzoo raises IncompatibleWeights); "
                          "use the current entry")]
    try:
        builder = f"kzoo.{index.get(entry.model).builder}"
    except Exception:  # a user's model: its own builder
        builder = f"kzoo.create_model({entry.model!r}, ...)"
    rows = [("loads", f"{builder}(weights={entry.id!r}) or kzoo.load_weights(model, path); its old layout "
                      f"is recognised from the file (kzoo.formats.keras_legacy)")]
    if (entry.variant or {}).get("dim_ordering") == "th":
        rows.append(("kernels", "Theano (th): transposed and rotated 180 degrees on load; a Dense after Flatten "
                                "has its rows reordered (C,H,W) -> (H,W,C)"))
    if facts.get("pair_by") == "resnet50_v0":
        rows.append(("names", "legacy resnet50.py (res2a_branch2a ...), renamed by rule; its BatchNorm epsilon "
                              f"{RESNET50_V0_BN_EPSILON:g} is folded into moving_variance (bn_epsilon='raw': the "
                              "stored numbers)"))
    if facts.get("pair_by") == "order":
        rows.append(("pairing", "by layer order (the file's layer names do not match the code's)"))
    if "same_numbers_as_current" in facts:
        same = facts["same_numbers_as_current"]
        text = "unknown (the two files were never compared)" if same is None else "yes" if same else "no"
        rows.append(("same numbers", f"as {entry.superseded_by}: {text}"))
    return rows
