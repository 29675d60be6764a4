"""Layers that :func:`kzoo.optimize_for_inference` puts into the models it returns (besides
:class:`kzoo.winograd.WinogradConv2D`). Registered for Keras serialisation, so optimised models save and load."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kzoo")
class ChannelSplit(keras.layers.Layer):
    """Cut the last axis into consecutive pieces of ``sizes`` channels and apply one activation to each.

    It undoes the merge of sibling convolutions: ``Conv2D(a + b)`` followed by ``ChannelSplit([a, b],
    ["linear", "relu"])`` computes ``Conv2D(a)`` and ``Conv2D(b, activation="relu")`` of one input.
    """

    def __init__(self, sizes, activations, **kwargs):
        super().__init__(**kwargs)
        if len(sizes) != len(activations) or len(sizes) < 2:
            raise ValueError(f"ChannelSplit needs >= 2 sizes and one activation each, got {sizes!r}, {activations!r}")
        self.sizes = [int(size) for size in sizes]
        self.activations = [keras.activations.get(a) for a in activations]

    def call(self, inputs):
        boundaries, total = [], 0
        for size in self.sizes[:-1]:
            total += size
            boundaries.append(total)
        pieces = ops.split(inputs, boundaries, axis=-1)
        return [activation(piece) for activation, piece in zip(self.activations, pieces)]

    def compute_output_shape(self, input_shape):
        return [(*input_shape[:-1], size) for size in self.sizes]

    def get_config(self):
        config = super().get_config()
        config.update(sizes=self.sizes, activations=[keras.activations.serialize(a) for a in self.activations])
        return config
