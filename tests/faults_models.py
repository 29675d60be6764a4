"""A small Keras image model for the fault tests, built the same way in the test and in its child processes."""

from __future__ import annotations


def tiny_image_model(seed: int = 0):
    """Two convolutions and a dense head on 32x32 RGB (about 300 KB of float32 weights)."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Conv2D(64, 3, activation="relu")(inputs)
    x = keras.layers.Conv2D(128, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x), name="tiny")


def h5_writers(seed: int):
    """kzoo's h5 writers, each as ``write(path)``: keras_h5.save_weights of the tiny model, and the
    fine-tuning feature cache (about 320 KB of features)."""
    from pathlib import Path

    import numpy as np

    from kzoo.finetune.features import _write_cache
    from kzoo.formats import keras_h5

    features = np.random.default_rng(seed).normal(size=(20000, 4)).astype("float32")
    return [lambda path: keras_h5.save_weights(tiny_image_model(seed), path),
            lambda path: _write_cache(Path(path), f"key-{seed}", features, None)]
