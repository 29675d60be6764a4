"""Linear probing: a linear classifier trained on a model's frozen (cached) features."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from keras import layers

from kzoo.finetune.features import extract_features


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
