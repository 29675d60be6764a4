"""Layers with a BatchNormalization, an activation or "same" padding folded in: config and weights.

In inference BN is a per-channel affine map ``y = s * x + t`` with ``s = gamma / sqrt(var + eps)``
and ``t = beta - s * mean``, so ``BN(W x + b) = (s W) x + (s b + t)``. The arithmetic is done in
float64 and cast back. What to fold comes from a :class:`kzoo.rewrite_plan.Plan`'s folds.
"""

from __future__ import annotations

import numpy as np


def folded_layer(layer, fold, same=False):
    """An unbuilt copy of ``layer`` that also computes what ``fold`` absorbed (weights: :func:`set_folded_weights`)."""
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


def set_folded_weights(new, old, fold):
    """Copy ``old``'s weights into ``new``, scaled by the BN it absorbed."""
    if fold.bn is None:
        new.set_weights(old.get_weights())
        return
    for attr, value in folded_values(old, fold.bn).items():
        var = getattr(new, attr)
        var.assign(np.asarray(value, dtype=var.dtype))


def folded_values(old, bn):
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


def _bn_scale_shift(bn):
    """(s, t) in float64 such that BN(x) == s * x + t in inference."""
    variance = np.asarray(bn.moving_variance, dtype=np.float64)
    mean = np.asarray(bn.moving_mean, dtype=np.float64)
    gamma = np.asarray(bn.gamma, dtype=np.float64) if bn.scale else np.ones_like(variance)
    beta = np.asarray(bn.beta, dtype=np.float64) if bn.center else np.zeros_like(variance)
    scale = gamma / np.sqrt(variance + bn.epsilon)
    return scale, beta - scale * mean
