"""A model's features, computed once and cached on disk, keyed by the model, its weights and the data."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

from kzoo.finetune.layer_lookup import _leaf_layers, head_layers


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
    """Write the features file whole or not at all: built in memory (HDF5 never meets a full disk) and
    renamed into place, so a full disk is a StorageError naming the folder and the bytes, and an older
    file there stays as it was."""
    from kzoo.sources.storage import h5_bytes, write_atomically

    arrays = {"features": features, "key": np.array(key)}
    if labels is not None:
        arrays["labels"] = labels
    if path.suffix == ".npz":
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        data = buffer.getvalue()
    else:
        def build(f):
            f.attrs["key"] = key
            f["features"] = features
            if labels is not None:
                f["labels"] = labels

        data = h5_bytes(build)
    write_atomically(path, data, f"Feature cache {path.name}", elsewhere="pass another cache= folder")


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
