"""The mapping-rule interface every checkpoint family implements, and the helpers rules are made of.

A *family* is one function, registered for the kzoo model names it converts::

    from kzoo.convert._base import register_family, conv, batch_norm, dense

    @register_family("resnet_v2_50", "resnet_v2_101", "resnet_v2_152", head="{model}/logits/biases")
    def resnet_v2_rules(model, ctx):
        yield from conv("conv1_conv", f"{ctx.model_name}/conv1", bias=True)
        ...
        yield from dense("predictions", f"{ctx.model_name}/logits")   # class axis handled for you

``model`` is the freshly built kzoo Keras model (``include_top`` as requested, ``classes`` equal to
the number of classes the converted head will have). ``ctx`` is a :class:`RuleContext`. The function
returns (or yields) :class:`WeightRule` objects, one per Keras weight: "this Keras weight comes from
that checkpoint variable, through this transform". It does not read the checkpoint; the converter
does, so that missing variables, shape mismatches, EMA shadows, background classes and unused
variables are handled the same way for every family:

- a rule whose Keras *layer* does not exist in ``model`` is ignored (e.g. the head of an
  ``include_top=False`` model); its variable is then reported as unused;
- a Keras weight that no rule covers, or a rule naming a weight the layer does not have, is a
  converter bug and raises :class:`~kzoo.errors.ConversionError`;
- a rule whose variable is absent from the checkpoint, or whose transformed value has the wrong
  shape, is collected and reported, all together, as one ConversionError naming each.

``head`` (a format string over ``{model}``) names a checkpoint variable whose last dimension is the
number of classes (normally the logits bias). The converter reads its shape before building the
model, to choose ``classes`` (1001 -> 1000 unless ``keep_background``), and uses its absence to say
"this is not a <model> checkpoint".

Rules are plain data, so a family is easy to test without TensorFlow: call it on a built model and
look at the list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import numpy as np

Transform = Callable[[np.ndarray], np.ndarray]

# Suffix of exponential-moving-average shadow variables (tf.train.ExponentialMovingAverage).
EMA_SUFFIX = "/ExponentialMovingAverage"


@dataclass(frozen=True)
class WeightRule:
    """One Keras weight <- one checkpoint variable.

    layer:      Keras layer name (``model.get_layer(layer)``).
    weight:     the Keras weight's short name within the layer (``kernel``, ``bias``, ``gamma``,
                ``beta``, ``moving_mean``, ``moving_variance``, ``depthwise_kernel``,
                ``pointwise_kernel``), or its integer position in ``layer.weights``.
    variable:   checkpoint variable name, *without* the EMA suffix (the converter prefers
                ``variable + "/ExponentialMovingAverage"`` when present and EMA is on).
    transform:  applied to the checkpoint array before the shape check (reshape, flip, permute).
    class_axis: for head weights, the axis (after ``transform``) that indexes classes; the
                converter drops index 0 there when a 1001-class head loses its background class.
    """

    layer: str
    weight: str | int
    variable: str
    transform: Transform | None = None
    class_axis: int | None = None


@dataclass(frozen=True)
class RuleContext:
    """What a family may know while writing its rules.

    model_name:         kzoo canonical name being converted (``resnet_v2_50``, ``mobilenet_v2_140``).
    checkpoint_classes: last dimension of the ``head`` variable (e.g. 1001), or None if absent.
    drop_background:    True when the 1001-class head is being cut to 1000 classes.
    include_top:        whether the target model has its classification head.
    variables:          every checkpoint variable name -> shape (EMA shadows included), for
                        families registered with ``needs_variables=True`` (empty otherwise, so
                        the converter can reuse one plan for every checkpoint of a model).
    conversion:         the registry entry's ``conversion`` block (facts about the checkpoint, e.g.
                        ``label_order``); empty when a file is converted without an entry.
    """

    model_name: str
    checkpoint_classes: int | None
    drop_background: bool
    include_top: bool
    variables: Mapping[str, tuple] = field(default_factory=dict)
    conversion: Mapping = field(default_factory=dict)


RuleFunction = Callable[[object, RuleContext], Iterable[WeightRule]]


@dataclass(frozen=True)
class Family:
    """A registered rule function and the names it converts."""

    name: str
    models: tuple
    rules: RuleFunction
    head: str | None
    needs_variables: bool = False
    requires: tuple = ()  # other variables that tell this model from its siblings (e.g. the backbone's depth)

    def head_variable(self, model_name: str) -> str | None:
        return self.head.format(model=model_name) if self.head else None

    def missing(self, model_name: str, shapes) -> list:
        """The identifying variables (head first, then ``requires``) that a checkpoint's ``shapes`` lack."""
        names = ([self.head_variable(model_name)] if self.head else []) + [r.format(model=model_name)
                                                                             for r in self.requires]
        return [name for name in names if name not in shapes]


FAMILIES: dict[str, Family] = {}  # kzoo model name (or "<rule set>:<model name>", e.g. od_resnet_v1) -> Family


def register_family(*model_names: str, head: str | None = None, needs_variables: bool = False, requires=()):
    """Decorator: register ``rules(model, ctx)`` as the converter for ``model_names``.

    ``needs_variables=True`` when the rules depend on which variables the checkpoint holds
    (``ctx.variables``); the converter then plans each checkpoint separately.

    The index row of each model names its rule module (``rule``), which is imported on first use.
    """

    def decorate(function: RuleFunction) -> RuleFunction:
        family = Family(function.__module__.rsplit(".", 1)[-1], tuple(model_names), function, head,
                        needs_variables, tuple(requires))
        for model_name in model_names:
            previous = FAMILIES.get(model_name)
            if previous is not None and previous.rules is not function:
                raise ValueError(f"conversion rules for {model_name!r} registered twice")
            FAMILIES[model_name] = family
        return function

    return decorate


# ---------------------------------------------------------------------------------------------
# Rule builders for the usual slim layer kinds. Slim layouts need no transposes: conv weights
# [kh, kw, in, out], depthwise [kh, kw, in, mult], pointwise [1, 1, in*mult, out], fc [in, out]
# are already Keras' layouts.
# ---------------------------------------------------------------------------------------------


def conv(layer: str, scope: str, *, bias: bool = False, transform: Transform | None = None):
    """Conv2D ``layer`` <- ``scope/weights`` (and ``scope/biases``)."""
    rules = [WeightRule(layer, "kernel", f"{scope}/weights", transform)]
    if bias:
        rules.append(WeightRule(layer, "bias", f"{scope}/biases"))
    return rules


def depthwise(layer: str, scope: str, *, bias: bool = False):
    """DepthwiseConv2D ``layer`` <- ``scope/depthwise_weights`` (and ``scope/biases``)."""
    rules = [WeightRule(layer, "kernel", f"{scope}/depthwise_weights")]
    if bias:
        rules.append(WeightRule(layer, "bias", f"{scope}/biases"))
    return rules


def separable(layer: str, scope: str, *, bias: bool = False):
    """SeparableConv2D ``layer`` <- ``scope/{depthwise_weights, pointwise_weights[, biases]}``."""
    rules = [
        WeightRule(layer, "depthwise_kernel", f"{scope}/depthwise_weights"),
        WeightRule(layer, "pointwise_kernel", f"{scope}/pointwise_weights"),
    ]
    if bias:
        rules.append(WeightRule(layer, "bias", f"{scope}/biases"))
    return rules


def batch_norm(layer: str, scope: str, *, scale: bool = True):
    """BatchNormalization ``layer`` <- ``scope/{gamma, beta, moving_mean, moving_variance}``.

    ``scale=False`` for slim nets built without gamma (Inception v1-v4), whose Keras BN also has
    ``scale=False``. ``scope`` is the BN scope itself, e.g. ``.../conv1/BatchNorm``.
    """
    names = (["gamma"] if scale else []) + ["beta", "moving_mean", "moving_variance"]
    return [WeightRule(layer, name, f"{scope}/{name}") for name in names]


def conv_bn(conv_layer: str, bn_layer: str, scope: str, *, scale: bool = True,
            transform: Transform | None = None):
    """The slim ``conv2d`` + ``BatchNorm`` pair: ``scope/weights`` and ``scope/BatchNorm/*``."""
    return conv(conv_layer, scope, transform=transform) + batch_norm(bn_layer, f"{scope}/BatchNorm",
                                                                    scale=scale)


def flatten_to_dense(array: np.ndarray) -> np.ndarray:
    """[..., in, out] -> [prod(...)*in, out]: 1x1-conv logits and VGG's 7x7 fc6 as Dense kernels.

    Row-major flattening of (h, w, c) is what Keras' channels_last ``Flatten`` produces.
    """
    return array.reshape(-1, array.shape[-1])


def dense(layer: str, scope: str, *, head: bool = True, transform: Transform | None = None):
    """Dense ``layer`` <- ``scope/{weights, biases}``; conv-shaped kernels are flattened.

    ``head=True`` marks the class axis so the background class is dropped when needed.
    ``transform`` (e.g. a class permutation) is applied after flattening, to both kernel and bias
    along the last axis.
    """
    class_axis = -1 if head else None

    def kernel(array):
        array = flatten_to_dense(array)
        return transform(array) if transform else array

    return [
        WeightRule(layer, "kernel", f"{scope}/weights", kernel, class_axis),
        WeightRule(layer, "bias", f"{scope}/biases", transform, class_axis),
    ]


def flip_input_channels(array: np.ndarray) -> np.ndarray:
    """Reverse the input-channel axis of a first conv kernel (RGB-trained weights fed BGR)."""
    return array[:, :, ::-1, :].copy()


def graph_order(model) -> list:
    """The model's layers in the order a builder writes them: depth-first from the outputs,
    each layer's inputs visited in input order (so a block's branches come out branch 0, 1, 2...).

    ``model.layers`` is *not* that order for branchy nets: Keras sorts a functional graph by depth,
    interleaving the branches of an Inception block.
    """
    seen, ordered = set(), []
    stack = [(tensor, False) for tensor in reversed(model.outputs)]
    while stack:
        tensor, expanded = stack.pop()
        layer, node_index, _ = tensor._keras_history
        if expanded:
            if id(layer) not in seen:
                seen.add(id(layer))
                ordered.append(layer)
            continue
        if id(layer) in seen:
            continue
        stack.append((tensor, True))
        inputs = layer._inbound_nodes[node_index].input_tensors
        stack.extend((t, False) for t in reversed(inputs))
    return ordered


def layers_of_type(model, *class_names: str) -> list:
    """The model's layers of the given Keras class names, in :func:`graph_order`.

    For builders whose layers have automatic names (Keras' InceptionV3: ``conv2d_17``), rules
    pair slim scopes with layers by this order, never by the auto-name suffix.
    """
    return [layer for layer in graph_order(model) if type(layer).__name__ in class_names]


# ---------------------------------------------------------------------------------------------
# Variable bookkeeping shared by the converter and families.
# ---------------------------------------------------------------------------------------------

_OPTIMIZER_SLOT = re.compile(
    r"/(Momentum|RMSProp(_\d+)?|Adam(_\d+)?|adam_[mv]|Adagrad|Ftrl(_\d+)?|Adadelta(_\d+)?|"
    r"AdagradDA(_\d+)?|ProximalAdagrad|LARS)(/|$)"
)
_AUX_HEAD = re.compile(r"(^|/)(AuxLogits|aux_\d+|aux_logits)(/|$)")
_TRAINING_STATE = {"global_step", "beta1_power", "beta2_power", "learning_rate",
                   "learning_rate_0", "@LR_DECAY_COUNTER@"}  # the last two: Paddle's
_PADDLE_SLOT = re.compile(r"_(velocity|moment\d?|beta\d_pow_acc)_\d+$")


def unused_category(name: str) -> str:
    """Why a checkpoint variable is not needed for inference (report groups)."""
    if name.split("/")[-1] in _TRAINING_STATE or name in _TRAINING_STATE:
        return "training state"
    if _OPTIMIZER_SLOT.search(name) or _PADDLE_SLOT.search(name):
        return "optimizer slots"
    if _AUX_HEAD.search(name):
        return "auxiliary head"
    if name.endswith(EMA_SUFFIX):
        return "unused moving averages"
    return "other"


def preferred_variable(name: str, variables: Mapping, use_ema: bool) -> str | None:
    """The checkpoint key to read for ``name``: its EMA shadow if present (and wanted), else itself."""
    if use_ema and name + EMA_SUFFIX in variables:
        return name + EMA_SUFFIX
    return name if name in variables else None


def drop_background(array: np.ndarray, class_axis: int) -> np.ndarray:
    """Drop class 0 (slim's background) along ``class_axis``: 1001 classes -> Keras' 1000."""
    index = [slice(None)] * array.ndim
    index[class_axis] = slice(1, None)
    return np.ascontiguousarray(array[tuple(index)])
