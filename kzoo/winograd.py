"""Winograd convolution: a 3x3 stride-1 "same" Conv2D with 2.25x or 4x fewer multiplications.

A 3x3 convolution over an ``(m+2) x (m+2)`` input tile ``d`` gives an ``m x m`` output tile. Winograd's
minimal filtering algorithm (Lavin & Gray, 2015) writes it as ``Y = A^T [(G g G^T) * (B^T d B)] A``:
``(m+2)^2`` products per tile instead of ``9 m^2``. Summed over input channels, these element-wise
products become ``(m+2)^2`` independent matrix products ``[tiles, Cin] x [Cin, Cout]``, which is
where the time goes. Two tile sizes:

* ``tile=2``, F(2x2, 3x3): 16 products per 4 outputs (2.25x fewer). Points 0, 1, -1, infinity; the
  transforms hold only 0, +-1 and 1/2, so float32 rounding stays at the level of a direct convolution.
* ``tile=4``, F(4x4, 3x3): 36 products per 16 outputs (4x fewer). Points 0, 1, -1, 1/2, -2, infinity
  (more accurate than the usual +-2: 5.6e-6 against 1.5e-5 relative per layer in float32 on Gaussian
  data, against 3e-7 for a direct conv). Its transformed kernel is 4x the size of the 3x3 kernel, so it
  pays off only with many tiles per call.

The layer keeps the transformed kernel ``U = G g G^T`` (shape ``[(m+2)^2, Cin, Cout]``) as its weight,
computed once from the 3x3 kernel in float64 (:meth:`WinogradConv2D.set_conv_weights`). Only
``keras.ops`` is used, so it runs on every Keras backend.
"""

from __future__ import annotations

from fractions import Fraction as _F

import keras
import numpy as np
from keras import ops


def _array(rows):
    return np.array([[float(_F(v)) for v in row] for row in rows], np.float64)


# (B^T, G, A^T) per output tile size m. A Keras conv is a cross-correlation: no kernel flip.
_MATRICES = {
    2: (
        _array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]),
        _array([[1, 0, 0], ["1/2", "1/2", "1/2"], ["1/2", "-1/2", "1/2"], [0, 0, 1]]),
        _array([[1, 1, 1, 0], [0, 1, -1, -1]]),
    ),
    4: (
        _array([[1, "-3/2", -2, "3/2", 1, 0], [0, -1, "1/2", "5/2", 1, 0], [0, 1, "-5/2", "1/2", 1, 0],
                [0, -2, -1, 2, 1, 0], [0, "1/2", -1, "-1/2", 1, 0], [0, 1, "-3/2", -2, "3/2", 1]]),
        _array([[1, 0, 0], ["1/3", "1/3", "1/3"], ["-1/3", "1/3", "-1/3"], ["-16/15", "-8/15", "-4/15"],
                ["1/15", "-2/15", "4/15"], [0, 0, 1]]),
        _array([[1, 1, 1, 1, 1, 0], [0, 1, -1, "1/2", -2, 0], [0, 1, 1, "1/4", 4, 0],
                [0, 1, -1, "1/8", -8, 1]]),
    ),
}


def transform_kernel(kernel, tile=2):
    """``U = G g G^T`` for a Conv2D kernel ``[3, 3, Cin, Cout]``, as ``[(tile+2)^2, Cin, Cout]`` float64."""
    kernel = np.asarray(kernel, np.float64)
    if kernel.shape[:2] != (3, 3):
        raise ValueError(f"Winograd F(m x m, 3x3) needs a 3x3 kernel, got shape {kernel.shape}")
    g = _MATRICES[tile][1]
    u = np.einsum("ik,klcd,jl->ijcd", g, kernel, g)
    return u.reshape((tile + 2) ** 2, *kernel.shape[2:])


@keras.saving.register_keras_serializable(package="kzoo")
class WinogradConv2D(keras.layers.Layer):
    """``Conv2D(filters, 3, padding="same")`` (stride 1, channels_last) by Winograd F(tile x tile, 3x3).

    Build it from a trained conv with :meth:`from_conv2d`, or set a 3x3 kernel with
    :meth:`set_conv_weights`. The spatial size of the input must be known when the layer is built.
    """

    def __init__(self, filters, tile=2, activation=None, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        if tile not in _MATRICES:
            raise ValueError(f"tile must be one of {sorted(_MATRICES)}, got {tile!r}")
        self.filters = int(filters)
        self.tile = int(tile)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"{self.name}: the channel axis of the input must be known")
        self.kernel = self.add_weight(
            name="winograd_kernel", shape=((self.tile + 2) ** 2, channels, self.filters), initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros") \
            if self.use_bias else None

    @classmethod
    def from_conv2d(cls, conv, tile=2, name=None, kernel=None, bias=None, activation=None):
        """A built WinogradConv2D computing a built ``Conv2D``: its kernel, bias and activation, or
        those given instead (the optimizer passes a kernel and bias with a BatchNormalization folded in)."""
        cfg = conv.get_config()
        if kernel is None:
            kernel = np.asarray(conv.kernel)
            bias = np.asarray(conv.bias) if conv.use_bias else None
        layer = cls(cfg["filters"], tile=tile, activation=activation or cfg["activation"],
                    use_bias=bias is not None, name=name or conv.name, dtype=conv.dtype_policy)
        layer.build((None, None, None, kernel.shape[2]))
        layer.set_conv_weights(kernel, bias)
        return layer

    def set_conv_weights(self, kernel, bias=None):
        """Load a 3x3 kernel ``[3, 3, Cin, Cout]`` (transformed in float64, then cast) and a bias."""
        self.kernel.assign(transform_kernel(kernel, self.tile).astype(self.kernel.dtype))
        if self.use_bias:
            self.bias.assign(np.zeros(self.filters) if bias is None else np.asarray(bias, self.bias.dtype))

    def call(self, inputs):
        height, width, channels = inputs.shape[1], inputs.shape[2], inputs.shape[3]
        if height is None or width is None:
            raise ValueError(f"{self.name}: WinogradConv2D needs a known spatial input size")
        m, a = self.tile, self.tile + 2
        bt, _, at = _MATRICES[m]
        th, tw = -(-height // m), -(-width // m)  # output tiles; odd sizes are padded up, then cropped
        # Pad 1 before ("same") and up to m * (tiles + 1) after, so that each padded axis splits into
        # (block, phase) = (tiles + 1, m): tap i of tile r is row m*r + i = m*(r + i//m) + i%m, a
        # plain slice of that view. No strided gather (TF's StridedSlice is slow on CPU).
        x = ops.pad(inputs, [[0, 0], [1, m * (th + 1) - height - 1], [1, m * (tw + 1) - width - 1], [0, 0]])
        x = ops.reshape(x, (-1, th + 1, m, tw + 1, m, channels))
        taps = [x[:, i // m:i // m + th, i % m, j // m:j // m + tw, j % m] for i in range(a) for j in range(a)]
        d = ops.reshape(ops.stack(taps, axis=0), (a * a, -1))
        # Input transform B^T d B on all tiles at once: one small matmul with kron(B^T, B^T).
        v = ops.matmul(ops.convert_to_tensor(np.kron(bt, bt), dtype=self.compute_dtype), d)
        v = ops.reshape(v, (a * a, -1, channels))
        # [(m+2)^2, tiles, Cout]: the products, summed over Cin. One matmul per transform point, not
        # one batched matmul: TF's CPU batched matmul splits a product of only 32-400 rows badly across
        # threads (ResNet50 batch 8, two threads: 1.17x keras per point, 1.01x batched; one thread:
        # 1.26x against 1.22x).
        prod = ops.stack([ops.matmul(v[k], self.kernel[k]) for k in range(a * a)])
        y = ops.matmul(ops.convert_to_tensor(np.kron(at, at), dtype=self.compute_dtype),
                       ops.reshape(prod, (a * a, -1)))
        # [dy, dx, n, r, c, Cout] -> [n, r, dy, c, dx, Cout]: interleave the tiles back to NHWC.
        y = ops.transpose(ops.reshape(y, (m, m, -1, th, tw, self.filters)), (2, 3, 0, 4, 1, 5))
        y = ops.reshape(y, (-1, m * th, m * tw, self.filters))
        if m * th != height or m * tw != width:
            y = y[:, :height, :width]
        if self.use_bias:
            y = y + self.bias
        return self.activation(y) if self.activation is not None else y

    def compute_output_shape(self, input_shape):
        return (*input_shape[:3], self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, tile=self.tile, activation=keras.activations.serialize(self.activation),
                      use_bias=self.use_bias)
        return config
