"""Transfer learning made the easy way the right way.

- ``build_classifier``: backbone + head that takes raw 0-255 images (the backbone's preprocessing is a
  layer inside the model, so a saved model cannot be fed wrongly scaled images).
- ``freeze`` / ``unfreeze``: choose what trains by layer name, stage name, glob or fraction, or with
  TF-slim style ``trainable=`` / ``exclude=`` globs. BatchNormalization stays frozen by default: a
  frozen BN layer runs in inference mode in Keras 3, so its moving statistics never move (the
  keras#9214 fine-tuning trap).
- ``load_pretrained``: load a weight file when the head differs; mismatched layers are skipped and
  named in a warning and in the returned report, never silently.
- ``fit_two_phase``: head first, then the top of the backbone at a lower rate, optionally with
  layer-wise learning-rate decay (TF and JAX backends).
- ``image_dataset``: a folder of class sub-folders -> ``tf.data`` batches at the model's input size,
  with optional augmentation.
- ``extract_features`` / ``linear_probe``: features computed once and cached on disk, keyed by the
  model, its weights and the data.

Every function works inside ``tf.distribute.MirroredStrategy`` (build the model in ``strategy.scope()``;
compiling is done in the model's own strategy) and with ``keras.distribution.DataParallel`` on JAX.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import logging
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

__all__ = [
    "ImagePreprocessing",
    "preprocessing_mode",
    "build_classifier",
    "load_pretrained",
    "head_layers",
    "freeze",
    "unfreeze",
    "TrainableSummary",
    "fit_two_phase",
    "TwoPhaseHistory",
    "layer_decay_scales",
    "image_dataset",
    "feature_extractor",
    "extract_features",
    "linear_probe",
    "ProbeResult",
]

# ---------------------------------------------------------------------------------------------------
# Preprocessing as a layer
# ---------------------------------------------------------------------------------------------------

#: The registry's vocabulary. ``tf``/``caffe``/``torch`` as keras.applications; ``rgb_mean`` is
#: TF-slim's vgg_preprocessing (RGB order, mean pixel subtracted, no scaling); ``unit`` is x / 255;
#: ``none`` means the backbone rescales its own input (EfficientNet, ConvNeXt, MobileNetV3).
PREPROCESSING_MODES = ("tf", "caffe", "torch", "rgb_mean", "unit", "none")
_SLIM_RGB_MEAN = (123.68, 116.78, 103.94)

# keras.applications model names (``model.name``), lower-cased with non-alphanumerics removed.
_MODE_BY_KERAS_NAME = [
    (r"^(efficientnet|convnext|mobilenetv3)", "none"),
    (r"^densenet", "torch"),
    (r"^resnet\d+v2", "tf"),
    (r"^(vgg\d+|resnet\d+)$", "caffe"),
    (r"^(mobilenet|xception|inception|nasnet)", "tf"),
]


@keras.saving.register_keras_serializable(package="kzoo")
class ImagePreprocessing(layers.Layer):
    """Raw RGB images in [0, 255] -> the input scaling a backbone was trained with.

    Being a layer, it is saved with the model: whoever loads the model feeds raw pixels.
    """

    def __init__(self, mode="tf", **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESSING_MODES:
            raise ValueError(f"Unknown preprocessing mode {mode!r}; expected one of {PREPROCESSING_MODES}.")
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "none":
            return x
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "rgb_mean":
            channels_first = keras.config.image_data_format() == "channels_first"
            shape = (1, 3, 1, 1) if channels_first else (1, 1, 1, 3)
            return x - ops.reshape(ops.convert_to_tensor(_SLIM_RGB_MEAN, dtype=x.dtype), shape)
        from kzoo.preprocessing import preprocess_input

        return preprocess_input(x, mode=self.mode)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def preprocessing_mode(backbone) -> str:
    """The preprocessing mode for a model name or a keras.applications / kzoo model.

    Raises ``ValueError`` (asking for ``preprocessing=``) when it cannot tell: guessing wrong would
    train on wrongly scaled inputs without any error.
    """
    if isinstance(backbone, str):
        name = _canonical_name(backbone)
        registered = _registry_modes(name)  # the registry records how each model's weights expect input
        if len(registered) == 1:
            return registered.pop()
    else:
        key = re.sub(r"[^a-z0-9]", "", backbone.name.lower())
        for pattern, mode in _MODE_BY_KERAS_NAME:
            if re.search(pattern, key):
                return mode
        name = backbone.name
    raise ValueError(
        f"Cannot tell which preprocessing the backbone {name!r} expects. Pass "
        f"preprocessing= one of {PREPROCESSING_MODES} (or include_preprocessing=False if your data is "
        "already preprocessed)."
    )


def _registry_modes(name: str) -> set:
    """The preprocessing the registry records for this model's weights (a set: tags may disagree)."""
    try:
        from kzoo.registry import list_weights

        return {e.preprocessing for e in list_weights(name) if e.preprocessing in PREPROCESSING_MODES}
    except Exception:  # registry unavailable or malformed: the table below still answers
        return set()


def _canonical_name(name: str) -> str:
    try:
        from kzoo.models import get_model_spec

        return get_model_spec(name).name
    except Exception:  # not registered (yet): fall back to the name as given
        return name.lower()


# ---------------------------------------------------------------------------------------------------
# Building a classifier
# ---------------------------------------------------------------------------------------------------

HEAD_NAMES = {"avg": "avg_pool", "max": "max_pool", "dropout": "top_dropout", "dense": "predictions"}


def _build_backbone(name, input_tensor, input_shape, weights, **kwargs):
    from kzoo.models import create_model

    return create_model(name, include_top=False, weights=weights, input_tensor=input_tensor,
                        input_shape=input_shape, **kwargs)


def build_classifier(backbone, num_classes, pooling="avg", dropout=0.2, include_preprocessing=True,
                     weights="imagenet", input_shape=None, preprocessing=None, name=None, **backbone_kwargs):
    """A classifier for ``num_classes`` classes on a pretrained backbone; it takes raw 0-255 images.

    Args:
        backbone: a model name (``"mobilenetv2"``) or a Keras model without its top. A Functional
            model is copied with its weights into the classifier (the original is left alone).
        num_classes: 2 gives one sigmoid unit (binary); more gives a softmax layer.
        pooling: ``"avg"`` or ``"max"`` global pooling of the backbone's feature map.
        dropout: dropout rate before the classification layer (0 for none).
        include_preprocessing: put the backbone's preprocessing inside the model as a layer.
        weights: for a model name, a registry tag (``"imagenet"``), None, or a weight-file path. A
            file may hold a different head (e.g. 1000 ImageNet classes): the mismatched layers are
            skipped and listed in a warning and in ``model.kzoo_load_report``.
        input_shape: e.g. ``(224, 224, 3)``; None lets the builder choose.
        preprocessing: override the preprocessing mode (see ``PREPROCESSING_MODES``).
        **backbone_kwargs: passed to the builder (``alpha=0.35`` ...).

    The head is the layers ``avg_pool`` (or ``max_pool``), ``top_dropout`` and ``predictions``. The
    classification layer starts at zero (kernel and bias), so the first predictions are uniform and
    the first gradients come from the features alone, not from a random projection of them (the
    head-initialisation used by BiT).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}.")
    if pooling not in ("avg", "max"):
        raise ValueError(f"pooling must be 'avg' or 'max', got {pooling!r}.")
    weights_file = weights if isinstance(weights, (str, os.PathLike)) and os.path.exists(os.fspath(weights)) else None
    if include_preprocessing:
        mode = preprocessing or preprocessing_mode(backbone)
    if isinstance(backbone, str):
        shape = tuple(input_shape) if input_shape else (None, None, 3)
        inputs = keras.Input(shape=shape, name="image")
        x = ImagePreprocessing(mode, name="preprocessing")(inputs) if include_preprocessing else inputs
        base = _build_backbone(backbone, x, input_shape, None if weights_file else weights, **backbone_kwargs)
        features = base.output
        model_name = name or f"{base.name}_classifier"
    else:
        shape = tuple(input_shape) if input_shape else tuple(backbone.input_shape[1:])
        inputs = keras.Input(shape=shape, name="image")
        preprocess = ImagePreprocessing(mode, name="preprocessing") if include_preprocessing else None
        clone, features = _replay(backbone, inputs, preprocess)
        base = clone or backbone
        model_name = name or f"{backbone.name}_classifier"
    taken = {layer.name for layer in _leaf_layers(base)}
    names = {key: _free_name(value, taken) for key, value in HEAD_NAMES.items()}
    if len(features.shape) == 4:
        pool = layers.GlobalAveragePooling2D if pooling == "avg" else layers.GlobalMaxPooling2D
        features = pool(name=names[pooling])(features)
    head = [features]
    if dropout:
        head.append(layers.Dropout(dropout, name=names["dropout"])(head[-1]))
    binary = num_classes == 2
    outputs = layers.Dense(1 if binary else num_classes, activation="sigmoid" if binary else "softmax",
                           kernel_initializer="zeros", bias_initializer="zeros", name=names["dense"])(head[-1])
    model = keras.Model(inputs, outputs, name=model_name)
    model.kzoo_head = [n for n in (names[pooling], names["dropout"], names["dense"]) if _has_layer(model, n)]
    model.kzoo_load_report = None
    if weights_file:
        model.kzoo_load_report = load_pretrained(model, weights_file)
    return model


def _replay(backbone, inputs, preprocess):
    """The backbone's graph rebuilt on ``inputs`` (through ``preprocess`` when given), as a copy.

    A Functional backbone is cloned layer by layer with its weights, so the classifier's layers are
    top-level (addressable by name for freezing and h5 loading) and each has one call site, so
    ``model.get_layer(name).output`` means what users expect. Sharing the user's layer objects
    instead would give each two call sites, and ``.output`` would point into the old graph.
    Other models (Sequential, subclassed) are called as one nested layer.
    """
    functional = isinstance(backbone, keras.Model) and not isinstance(backbone, keras.Sequential) \
        and hasattr(backbone, "_run_through_graph") and len(backbone.inputs) == 1
    if not functional:
        return None, backbone(preprocess(inputs) if preprocess else inputs)
    memo = {}

    def call_function(layer, *args, **kwargs):
        if preprocess is not None and args and args[0] is inputs:  # the first layers see preprocessed pixels
            if "x" not in memo:
                memo["x"] = preprocess(inputs)
            args = (memo["x"], *args[1:])
        return layer(*args, **kwargs)

    clone = keras.models.clone_model(backbone, input_tensors=inputs, call_function=call_function)
    for layer in _leaf_layers(backbone):
        if layer.weights:
            clone.get_layer(layer.name).set_weights(layer.get_weights())
    return clone, clone.output


def _free_name(name, taken):
    candidate, i = name, 1
    while candidate in taken:
        candidate, i = f"{name}_{i}", i + 1
    return candidate


def _has_layer(model, name):
    return any(layer.name == name for layer in model.layers)


def load_pretrained(model, path, warn=True):
    """Load a weight file by layer name, skipping the layers whose shapes differ (a new head).

    Returns the ``LoadReport`` of ``kzoo.load_weights``; anything skipped is also named in a warning,
    so a head that silently stayed random (TF-slim's ``Assign requires shapes`` trap, solved the
    other way round) cannot go unnoticed.
    """
    from kzoo.formats.keras_h5 import load_weights

    report = load_weights(model, os.fspath(path), skip_mismatch=True)
    if report.ok:
        return report
    try:
        head = set(head_layers(model))
    except ValueError:
        head = set()
    if warn and (set(report.skipped) - head or report.unexpected):
        warnings.warn(f"Some weights of {os.fspath(path)!r} were not loaded into {model.name!r}; the model "
                      f"layers named keep their initial values:\n{report}", stacklevel=2)
    else:  # only the new head differs: expected when fine-tuning, but still said
        logging.getLogger("kzoo").info("New head %s starts from its initialiser:\n%s", sorted(head), report)
    return report


# ---------------------------------------------------------------------------------------------------
# Choosing what trains
# ---------------------------------------------------------------------------------------------------


def _leaf_layers(model):
    """Layers in graph order, nested models flattened, input layers dropped."""
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if hasattr(layer, "layers") and layer.layers:
            out.extend(_leaf_layers(layer))
        else:
            out.append(layer)
    return out


def head_layers(model) -> list[str]:
    """The classification head's layer names: those recorded by ``build_classifier``, else every
    layer after the last global pooling / flatten layer (so a reloaded model still has a head)."""
    recorded = getattr(model, "kzoo_head", None)
    if recorded:
        return list(recorded)
    leaves = _leaf_layers(model)
    pools = (layers.GlobalAveragePooling2D, layers.GlobalMaxPooling2D, layers.Flatten)
    last = max((i for i, layer in enumerate(leaves) if isinstance(layer, pools)), default=None)
    if last is None:
        raise ValueError(f"Cannot find the head of {model.name!r} (no global pooling layer). "
                         "Pass until= / trainable= explicitly.")
    return [layer.name for layer in leaves[last:]]


def _matches(name, pattern):
    """A glob, or a TF-slim-like scope: ``conv4`` matches ``conv4`` and ``conv4_block1_1_conv`` and
    ``block1`` matches ``block1a_expand_conv`` but never ``block10_...``."""
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return name == pattern or (name.startswith(pattern) and not name[len(pattern)].isdigit())


def _position(model, leaves, spec, which):
    """Index of the layer ``spec`` designates among ``leaves``: the last match (``which="last"``,
    for ``until``) or the first (``"first"``, for ``start``). A fraction counts the backbone's
    weighted layers (``0.75``: the first three quarters of the backbone's depth)."""
    if isinstance(spec, float) and not isinstance(spec, bool):
        if not 0.0 <= spec <= 1.0:
            raise ValueError(f"A fraction must be in [0, 1], got {spec}.")
        try:
            head = set(head_layers(model))
        except ValueError:
            head = set()
        weighted = [i for i, layer in enumerate(leaves) if layer.weights and layer.name not in head]
        k = round(spec * len(weighted))
        if which == "last":
            return weighted[k - 1] if k else -1
        return weighted[k] if k < len(weighted) else (weighted[-1] + 1 if weighted else 0)
    if isinstance(spec, int) and not isinstance(spec, bool):
        return spec if spec >= 0 else len(leaves) + spec
    names = [layer.name for layer in leaves]
    exact = [i for i, n in enumerate(names) if n == spec]
    hits = exact or [i for i, n in enumerate(names) if _matches(n, spec)]
    if not hits:
        close = [n for n in names if spec.lower()[:4] in n.lower()][:6]
        raise ValueError(f"No layer or stage {spec!r} in {len(names)} layers"
                         + (f"; similar names: {close}" if close else "") + ".")
    return hits[-1] if which == "last" else hits[0]


@dataclass
class TrainableSummary:
    """Which layers train after ``freeze`` / ``unfreeze`` (recompile the model for it to take effect)."""

    trainable: list = field(default_factory=list)
    frozen: list = field(default_factory=list)
    trainable_params: int = 0
    frozen_params: int = 0

    def __str__(self):
        return (f"{len(self.trainable)} layers trainable ({self.trainable_params:,} params), "
                f"{len(self.frozen)} frozen ({self.frozen_params:,} params)")


def _summary(model):
    s = TrainableSummary()
    for layer in _leaf_layers(model):
        if not layer.weights:
            continue
        size = sum(int(np.prod(v.shape)) for v in layer.weights)
        if layer.trainable:
            s.trainable.append(layer.name)
            s.trainable_params += size
        else:
            s.frozen.append(layer.name)
            s.frozen_params += size
    return s


def _set(layer, trainable, keep_bn_frozen):
    if trainable and keep_bn_frozen and isinstance(layer, layers.BatchNormalization):
        trainable = False
    layer.trainable = trainable


def freeze(model, until=None, trainable=None, exclude=None, keep_bn_frozen=True) -> TrainableSummary:
    """Freeze part of ``model`` and return what trains now. Recompile afterwards.

    - ``until``: freeze from the input up to and including this layer: a layer name, a stage name
      (``"conv4"``, ``"block_12"``, ``"block5"``: every layer in the stage), a glob (``"mixed*"``:
      up to the last match), a fraction (``0.75``: the first 75% of the backbone's weighted layers)
      or an index into the layer list. None:
      the whole backbone, i.e. everything but the head (see ``head_layers``).
    - ``trainable``: globs/scopes, as TF-slim's ``--trainable_scopes``: only matching layers train.
    - ``exclude``: globs/scopes of layers frozen whatever else is said.
    - ``keep_bn_frozen``: BatchNormalization layers stay frozen even where the rest trains.

    A frozen layer keeps its weights; a frozen BatchNormalization also runs in inference mode (Keras 3
    semantics), so its moving mean and variance do not move during ``fit``.
    """
    leaves = _leaf_layers(model)
    if until is None and trainable is None:
        head = set(head_layers(model))
        for layer in leaves:
            _set(layer, layer.name in head, keep_bn_frozen)
    else:
        cut = _position(model, leaves, until, "last") if until is not None else -1
        for i, layer in enumerate(leaves):
            train = i > cut
            if trainable is not None:
                train = train and any(_matches(layer.name, p) for p in _as_list(trainable))
            _set(layer, train, keep_bn_frozen)
    _exclude(leaves, exclude)
    return _summary(model)


def unfreeze(model, start=None, trainable=None, exclude=None, keep_bn_frozen=True) -> TrainableSummary:
    """Make layers trainable again (layers before ``start`` keep their state). Recompile afterwards.

    - ``start``: the first layer to unfreeze, same forms as ``freeze``'s ``until`` (a stage name
      means its first layer; ``0.7`` means from 70% of the depth on). None: every layer.
    - ``trainable``: only layers matching these globs/scopes are unfrozen.
    - ``exclude``: globs/scopes that stay frozen.
    - ``keep_bn_frozen`` (default True): BatchNormalization stays frozen and in inference mode,
      the usual fix for fine-tuning on small batches (keras#9214).
    """
    leaves = _leaf_layers(model)
    first = _position(model, leaves, start, "first") if start is not None else 0
    for layer in leaves[first:]:
        if trainable is None or any(_matches(layer.name, p) for p in _as_list(trainable)):
            _set(layer, True, keep_bn_frozen)
        elif isinstance(layer, layers.BatchNormalization) and keep_bn_frozen:
            layer.trainable = False
    _exclude(leaves, exclude)
    return _summary(model)


def _exclude(leaves, exclude):
    for layer in leaves:
        if exclude and any(_matches(layer.name, p) for p in _as_list(exclude)):
            layer.trainable = False


def _as_list(value):
    return [value] if isinstance(value, str) else list(value)


# ---------------------------------------------------------------------------------------------------
# Two-phase training and layer-wise learning-rate decay
# ---------------------------------------------------------------------------------------------------


def layer_decay_scales(model, rate, groups=10) -> dict:
    """``{variable path: learning-rate multiplier}`` for layer-wise decay.

    The head trains at the full rate. The trainable backbone layers, in depth order, are cut into
    ``groups`` contiguous groups; group ``k`` counted from the top (k = 1 for the top group) gets
    ``rate ** k``, so the layers nearest the input move least.
    """
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"layer decay rate must be in (0, 1], got {rate}.")
    try:
        head = set(head_layers(model))
    except ValueError:
        head = set()
    body = [layer for layer in _leaf_layers(model) if layer.trainable_weights and layer.name not in head]
    scales = {}
    chunks = [c for c in np.array_split(np.arange(len(body)), min(groups, len(body)) or 1) if len(c)]
    for k, chunk in enumerate(chunks):
        for i in chunk:
            for v in body[i].trainable_weights:
                scales[v.path] = float(rate ** (len(chunks) - k))
    return scales


def _layer_decay_class(base_cls):
    """A subclass of ``base_cls`` whose updates use ``learning_rate * scale`` per variable.

    Scaling the learning rate, not the gradient: Adam-like optimizers are invariant to gradient
    scale, so gradient scaling would do nothing. ``update_step`` is the per-variable hook every
    Keras optimizer goes through on TF (including under a distribution strategy) and JAX; the torch
    backend's fused optimizers bypass it, so layer decay is refused there.
    """

    class LayerDecay(base_cls):
        def __init__(self, *args, lr_scales=None, **kwargs):
            super().__init__(*args, **kwargs)
            self._kzoo_scales_by_path = dict(lr_scales or {})

        def build(self, variables):
            super().build(variables)
            self._kzoo_scales = [self._kzoo_scales_by_path.get(v.path, 1.0) for v in variables]

        def update_step(self, gradient, variable, learning_rate):
            scale = self._kzoo_scales[self._get_variable_index(variable)]
            if scale != 1.0:
                learning_rate = ops.multiply(learning_rate, scale)
            return super().update_step(gradient, variable, learning_rate)

    # Saved models record (and reload as) the plain optimizer: the scales belong to one training run.
    LayerDecay.__name__ = base_cls.__name__
    LayerDecay.__qualname__ = base_cls.__qualname__
    LayerDecay.__module__ = base_cls.__module__
    return LayerDecay


def _make_optimizer(optimizer, learning_rate, lr_scales=None):
    if isinstance(optimizer, str):
        template = keras.optimizers.get(optimizer)
    elif isinstance(optimizer, type):
        template = optimizer()
    else:
        template = optimizer
    config = {**template.get_config(), "learning_rate": learning_rate}
    config.pop("name", None)
    cls = type(template)
    if lr_scales is None:
        return cls.from_config(config)
    if keras.backend.backend() not in ("tensorflow", "jax"):
        raise NotImplementedError("layer_decay is implemented for the TensorFlow and JAX backends only.")
    return _layer_decay_class(cls)(lr_scales=lr_scales, **config)


def _strategy_scope(model):
    """Compile (and create optimizer variables) in the strategy the model was built under."""
    if keras.backend.backend() == "tensorflow":
        return model.distribute_strategy.scope()
    return contextlib.nullcontext()


def _default_loss(model):
    return "binary_crossentropy" if model.output_shape[-1] == 1 else "sparse_categorical_crossentropy"


@dataclass
class TwoPhaseHistory:
    head: object = None  # keras History of phase 1 (None if head_epochs == 0)
    finetune: object = None  # keras History of phase 2 (None if finetune_epochs == 0)
    head_summary: TrainableSummary | None = None
    finetune_summary: TrainableSummary | None = None

    @property
    def history(self) -> dict:
        """Both phases' metrics, concatenated epoch by epoch."""
        merged = {}
        for h in (self.head, self.finetune):
            for key, values in (h.history if h else {}).items():
                merged.setdefault(key, []).extend(values)
        return merged


def fit_two_phase(model, train, val=None, head_epochs=5, finetune_epochs=5, unfreeze=None, lr=1e-3,
                  finetune_lr_factor=0.1, layer_decay=None, decay_groups=10, optimizer="adam", loss=None,
                  metrics=("accuracy",), callbacks=None, keep_bn_frozen=True, jit_compile="auto",
                  verbose="auto", **fit_kwargs) -> TwoPhaseHistory:
    """The standard fine-tuning recipe.

    1. Freeze the backbone, train the head for ``head_epochs`` at ``lr``.
    2. Unfreeze from ``unfreeze`` on (a layer, stage, glob or fraction, see ``unfreeze``; None means
       the whole backbone), keep BatchNormalization frozen, and train ``finetune_epochs`` more at
       ``lr * finetune_lr_factor`` with a fresh optimizer. With ``layer_decay=r`` (e.g. 0.7), lower
       layers get ``r ** k`` of that rate (see ``layer_decay_scales``).

    ``train``/``val`` are anything ``model.fit`` takes (a ``tf.data.Dataset``, or ``(x, y)`` tuples).
    The loss defaults to sparse categorical (binary for a one-unit sigmoid head). ``jit_compile`` goes
    to ``model.compile`` (XLA compilation of a deep net takes long on CPU: pass False there).
    Extra keyword arguments go to both ``model.fit`` calls (``batch_size``, ``steps_per_epoch`` ...).
    """
    global_unfreeze = globals()["unfreeze"]
    loss = loss or _default_loss(model)
    metrics = list(metrics or [])
    x, y, val_data = _fit_args(train, val)
    result = TwoPhaseHistory()
    if head_epochs:
        result.head_summary = freeze(model, keep_bn_frozen=keep_bn_frozen)
        with _strategy_scope(model):
            model.compile(optimizer=_make_optimizer(optimizer, lr), loss=loss, metrics=metrics,
                          jit_compile=jit_compile)
        result.head = model.fit(x, y, validation_data=val_data, epochs=head_epochs, callbacks=callbacks,
                                verbose=verbose, **fit_kwargs)
    if finetune_epochs:
        result.finetune_summary = global_unfreeze(model, start=unfreeze, keep_bn_frozen=keep_bn_frozen)
        scales = layer_decay_scales(model, layer_decay, decay_groups) if layer_decay else None
        with _strategy_scope(model):
            model.compile(optimizer=_make_optimizer(optimizer, lr * finetune_lr_factor, scales), loss=loss,
                          metrics=metrics, jit_compile=jit_compile)
        result.finetune = model.fit(x, y, validation_data=val_data, initial_epoch=head_epochs,
                                    epochs=head_epochs + finetune_epochs, callbacks=callbacks, verbose=verbose,
                                    **fit_kwargs)
    return result


def _fit_args(train, val):
    x, y = (train if isinstance(train, tuple) else (train, None))
    return x, y, val


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------

DEFAULT_AUGMENT = {"flip": "horizontal", "rotation": 0.05, "zoom": 0.1}


def _augmenter(augment, seed):
    if augment is True:
        augment = DEFAULT_AUGMENT
    known = {"flip", "rotation", "zoom", "contrast", "translation", "brightness"}
    unknown = set(augment) - known
    if unknown:
        raise ValueError(f"Unknown augmentation options {sorted(unknown)}; known: {sorted(known)}.")
    steps = []
    if augment.get("flip"):
        steps.append(layers.RandomFlip(augment["flip"], seed=seed))
    if augment.get("rotation"):
        steps.append(layers.RandomRotation(augment["rotation"], seed=seed))
    if augment.get("zoom"):
        steps.append(layers.RandomZoom(augment["zoom"], seed=seed))
    if augment.get("translation"):
        t = augment["translation"]
        steps.append(layers.RandomTranslation(t, t, seed=seed))
    if augment.get("contrast"):
        steps.append(layers.RandomContrast(augment["contrast"], seed=seed))
    if augment.get("brightness"):
        steps.append(layers.RandomBrightness(augment["brightness"], seed=seed))
    return keras.Sequential(steps, name="augmentation")


def _model_image_size(model, default=(224, 224)):
    shape = model.input_shape
    if isinstance(shape, list):
        shape = shape[0]
    hw = shape[2:4] if keras.config.image_data_format() == "channels_first" else shape[1:3]
    return tuple(hw) if None not in hw else default


def image_dataset(directory, model=None, image_size=None, batch_size=32, validation_split=None, subset=None,
                  seed=1337, augment=None, shuffle=True, label_mode=None, **kwargs):
    """``keras.utils.image_dataset_from_directory`` at the model's input size, labels matching its head.

    - Images stay raw (0-255 floats): a ``build_classifier`` model preprocesses them itself.
    - ``label_mode`` defaults to ``"binary"`` for a one-unit head, ``"int"`` otherwise.
    - ``augment``: True (horizontal flip, small rotation and zoom) or a dict with any of ``flip``,
      ``rotation``, ``zoom``, ``translation``, ``contrast``, ``brightness`` (Keras' random layers'
      factors). Applied to the training subset only.
    - ``subset="both"`` with ``validation_split`` returns ``(train, val)``.

    Each returned dataset has ``class_names``.
    """
    import tensorflow as tf

    if image_size is None:
        image_size = _model_image_size(model) if model is not None else (224, 224)
    if label_mode is None:
        label_mode = "binary" if model is not None and model.output_shape[-1] == 1 else "int"
    result = keras.utils.image_dataset_from_directory(
        directory, image_size=image_size, batch_size=batch_size, validation_split=validation_split,
        subset=subset, seed=seed, shuffle=shuffle, label_mode=label_mode, **kwargs)
    datasets = list(result) if isinstance(result, (list, tuple)) else [result]
    names = datasets[0].class_names
    out = []
    for i, ds in enumerate(datasets):
        training = subset != "validation" and i == 0
        if augment and training:
            aug = _augmenter(augment, seed)
            ds = ds.map(lambda x, y: (aug(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.prefetch(tf.data.AUTOTUNE)
        ds.class_names = names
        out.append(ds)
    return tuple(out) if len(out) > 1 else out[0]


# ---------------------------------------------------------------------------------------------------
# Features, cached
# ---------------------------------------------------------------------------------------------------


def feature_extractor(model, layer=None):
    """The model up to ``layer``; by default up to the pooled features (the head's pooling layer),
    or, for a model whose output is a feature map, that map globally average-pooled."""
    if layer is None:
        try:
            head = head_layers(model)
        except ValueError:
            head = []
        pools = [n for n in head if isinstance(model.get_layer(n), (layers.GlobalAveragePooling2D,
                                                                    layers.GlobalMaxPooling2D, layers.Flatten))]
        if pools:
            layer = pools[0]
    if layer is not None:
        return keras.Model(_inputs(model), model.get_layer(layer).output, name=f"{model.name}_features")
    if len(model.output_shape) == 4:
        return keras.Model(_inputs(model), layers.GlobalAveragePooling2D()(model.output),
                           name=f"{model.name}_features")
    return model


def _inputs(model):
    # A single input stays a tensor, not a one-element list, so the new model is called with a tensor.
    return model.inputs[0] if len(model.inputs) == 1 else model.inputs


def _model_fingerprint(model) -> str:
    h = hashlib.sha256()
    h.update(repr((model.name, model.input_shape, model.output_shape,
                   [(layer.name, type(layer).__name__) for layer in _leaf_layers(model)])).encode())
    for v in model.weights:
        h.update(v.path.encode())
        h.update(np.ascontiguousarray(ops.convert_to_numpy(v)).tobytes())
    return h.hexdigest()


def _batches(data):
    """(x, y-or-None) numpy batches from arrays, an (x, y) tuple, or a dataset of x or (x, y[, w])."""
    if isinstance(data, tuple):
        yield np.asarray(data[0]), (None if data[1] is None else np.asarray(data[1]))
        return
    if isinstance(data, np.ndarray):
        yield data, None
        return
    for batch in data:
        if isinstance(batch, (tuple, list)):
            yield np.asarray(batch[0]), np.asarray(batch[1]) if len(batch) > 1 else None
        else:
            yield np.asarray(batch), None


def _data_fingerprint(data) -> str:
    """Content hash, independent of example order (so a reshuffling dataset still hits the cache)."""
    total, count = 0, 0
    for x, y in _batches(data):
        for i in range(len(x)):
            h = hashlib.sha256(np.ascontiguousarray(x[i]).tobytes())
            if y is not None:
                h.update(np.ascontiguousarray(y[i]).tobytes())
            total = (total + int.from_bytes(h.digest(), "big")) % (1 << 256)
            count += 1
    return f"{count}-{total:064x}"


def _compute_features(model, data, batch_size):
    feats, labels = [], []
    for x, y in _batches(data):
        for start in range(0, len(x), batch_size):
            feats.append(np.asarray(model.predict_on_batch(x[start:start + batch_size])))
        if y is not None:
            labels.append(y)
    features = np.concatenate(feats) if feats else np.zeros((0,))
    return features, (np.concatenate(labels) if labels else None)


def _cache_file(cache, model, key):
    path = Path(cache)
    if path.suffix in (".npz", ".h5", ".hdf5"):
        return path
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", model.name)
    return path / f"{safe}-{key[:16]}.npz"


def _read_cache(path, key):
    if not path.exists():
        return None
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            if str(f["key"]) != key:
                return None
            return f["features"], (f["labels"] if "labels" in f.files else None)
    import h5py

    with h5py.File(path, "r") as f:
        if f.attrs.get("key") != key:
            return None
        return f["features"][()], (f["labels"][()] if "labels" in f else None)


def _write_cache(path, key, features, labels):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    arrays = {"features": features, "key": np.array(key)}
    if labels is not None:
        arrays["labels"] = labels
    if path.suffix == ".npz":
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    else:
        import h5py

        with h5py.File(tmp, "w") as f:
            f.attrs["key"] = key
            f["features"] = features
            if labels is not None:
                f["labels"] = labels
    os.replace(tmp, path)  # readers never see a half-written cache


def extract_features(model, data, cache=None, layer=None, batch_size=64, data_key=None):
    """``(features, labels)`` of ``data`` through ``model``'s feature extractor (see ``feature_extractor``).

    ``data``: an image array, an ``(images, labels)`` tuple, or a dataset of images or ``(images,
    labels)`` batches (labels are None when there are none).

    ``cache``: a folder (one ``.npz`` per model+weights+data) or a ``.npz`` / ``.h5`` file. The key
    hashes the model's architecture and weight values, and the data: its content (order-independent,
    so a reshuffled dataset hits; augmented data never does, by design) or ``data_key`` when given,
    which also skips reading the data to hash it. A second call with the same key reads the file and
    runs no forward pass; a different model, weights or data recomputes and rewrites.
    """
    fmodel = feature_extractor(model, layer)
    if cache is None:
        return _compute_features(fmodel, data, batch_size)
    key = hashlib.sha256(f"{_model_fingerprint(fmodel)}|{data_key or _data_fingerprint(data)}".encode()).hexdigest()
    path = _cache_file(cache, fmodel, key)
    cached = _read_cache(path, key)
    if cached is not None:
        return cached
    features, labels = _compute_features(fmodel, data, batch_size)
    _write_cache(path, key, features, labels)
    return features, labels


@dataclass
class ProbeResult:
    """A linear classifier on frozen features: ``model`` maps features -> class probabilities."""

    model: object
    train_accuracy: float
    val_accuracy: float | None
    num_classes: int


def linear_probe(model, train, val=None, cache=None, epochs=100, lr=1e-2, l2=1e-4, batch_size=256, layer=None,
                 seed=0, verbose=0) -> ProbeResult:
    """Fit a linear softmax classifier on frozen (cached) features of ``model``.

    Features are standardised (a ``Normalization`` layer adapted on the training features, part of the
    probe model). ``cache`` is a folder shared by train and val (see ``extract_features``).
    """
    xtr, ytr = extract_features(model, train, cache=cache, layer=layer)
    if ytr is None:
        raise ValueError("linear_probe needs labelled training data: (images, labels) or a labelled dataset.")
    ytr = _int_labels(ytr)
    num_classes = int(ytr.max()) + 1
    keras.utils.set_random_seed(seed)
    norm = layers.Normalization(name="standardise")
    norm.adapt(xtr)
    probe = keras.Sequential([keras.Input(shape=xtr.shape[1:]), norm,
                              layers.Dense(num_classes, activation="softmax", name="probe",
                                           kernel_regularizer=keras.regularizers.L2(l2))], name="linear_probe")
    probe.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    probe.fit(xtr, ytr, epochs=epochs, batch_size=batch_size, verbose=verbose)
    train_acc = _accuracy(probe, xtr, ytr)
    val_acc = None
    if val is not None:
        xva, yva = extract_features(model, val, cache=cache, layer=layer)
        val_acc = _accuracy(probe, xva, _int_labels(yva))
    return ProbeResult(probe, train_acc, val_acc, num_classes)


def _int_labels(y):
    y = np.asarray(y)
    return y.argmax(-1) if y.ndim == 2 and y.shape[1] > 1 else y.reshape(-1).astype("int64")


def _accuracy(probe, x, y):
    return float(np.mean(np.asarray(probe.predict(x, verbose=0)).argmax(-1) == y))

