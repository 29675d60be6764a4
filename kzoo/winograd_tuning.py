"""Which Winograd tile :func:`kzoo.optimize_for_inference` computes each 3x3 conv with, and the layer
that does it.

Two ways to choose: :func:`winograd_tile`, a fixed rule measured on one CPU core (deterministic), and
:func:`tuned_winograd_tile`, which times the direct conv, F(2x2) and F(4x4) on this machine once per
distinct conv and process. :func:`winograd_layer` then builds the :class:`kzoo.winograd.WinogradConv2D`.
"""

from __future__ import annotations

import numpy as np

from kzoo.folding import folded_values
from kzoo.rewrite_plan import plain_conv2d_config


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
    cfg = plain_conv2d_config(conv, (3, 3))
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


def winograd_layer(conv, fold, tile):
    """A WinogradConv2D computing ``conv`` followed by what ``fold`` absorbed (BN, activation)."""
    from kzoo.winograd import WinogradConv2D

    kernel = bias = None
    if fold is not None and fold.bn is not None:
        values = folded_values(conv, fold.bn)
        kernel, bias = values["kernel"], values["bias"]
    activation = fold.activation if fold is not None else None
    return WinogradConv2D.from_conv2d(conv, tile, kernel=kernel, bias=bias, activation=activation)
