"""Input preprocessing and ImageNet label decoding, with keras.applications' exact semantics.

``preprocess_input(x, data_format=None, mode="caffe")`` behaves like
``keras.applications.imagenet_utils.preprocess_input``:

- ``caffe``: RGB -> BGR, then subtract the ImageNet BGR mean pixel, no scaling (VGG, ResNet v1);
- ``tf``: scale to [-1, 1] (Inception, Xception, MobileNet, ResNet v2);
- ``torch``: scale to [0, 1], then normalise each channel by ImageNet mean / std (DenseNet).

NumPy float arrays are modified in place, as Keras does (``np.copy`` first to keep the original);
other arrays are cast to ``floatx`` first. Tensors are handled with ``keras.ops`` and never modified.

``decode_predictions`` reads the ImageNet class index shipped in ``kzoo/data``, so it works offline.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

import numpy as np

MODES = ("caffe", "tf", "torch")  # keras.applications' modes
# The registry's and the index's vocabulary: Keras' modes, plus TF-slim's vgg_preprocessing (``rgb_mean``: RGB
# order, the mean pixel subtracted, no scaling), ``unit`` (x / 255) and ``none`` (the model scales in its graph).
MODEL_MODES = ("tf", "caffe", "torch", "rgb_mean", "unit", "none")
SLIM_RGB_MEAN = (123.68, 116.78, 103.94)
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)
NUM_CLASSES = 1000


def preprocess_input(x, data_format=None, mode="caffe"):
    """Preprocess a batch (4D) or one image (3D) with 3 colour channels and values in [0, 255]."""
    if mode not in MODES:
        raise ValueError(
            "Expected mode to be one of `caffe`, `tf` or `torch`. "
            f"Received: mode={mode}"
        )
    if data_format is None:
        import keras

        data_format = keras.config.image_data_format()
    elif data_format not in {"channels_first", "channels_last"}:
        raise ValueError(
            "Expected data_format to be one of `channels_first` or "
            f"`channels_last`. Received: data_format={data_format}"
        )
    if isinstance(x, np.ndarray):
        return _numpy(x, data_format, mode)
    return _tensor(x, data_format, mode)


def _channel_axis(ndim: int, data_format: str) -> int:
    if data_format == "channels_last":
        return ndim - 1
    return 0 if ndim == 3 else 1


def _numpy(x, data_format, mode):
    if not np.issubdtype(x.dtype, np.floating):
        import keras

        x = x.astype(keras.config.floatx(), copy=False)
    if mode == "tf":
        x /= 127.5
        x -= 1.0
        return x
    axis = _channel_axis(x.ndim, data_format)
    if mode == "torch":
        x /= 255.0
        mean, std = TORCH_MEAN, TORCH_STD
    else:
        # A reversed view: like Keras, the caller's array is updated (in BGR order) in place.
        x = np.flip(x, axis=axis)
        mean, std = CAFFE_BGR_MEAN, None
    index = [slice(None)] * x.ndim
    for channel in range(3):
        index[axis] = channel
        x[tuple(index)] -= mean[channel]
        if std is not None:
            x[tuple(index)] /= std[channel]
    return x


def _tensor(x, data_format, mode):
    from keras import ops

    if mode == "tf":
        return x / 127.5 - 1.0
    ndim = len(x.shape)
    axis = _channel_axis(ndim, data_format)
    if mode == "torch":
        x = x / 255.0
        mean, std = TORCH_MEAN, TORCH_STD
    else:
        x = ops.flip(x, axis=axis)
        mean, std = CAFFE_BGR_MEAN, None
    shape = [1] * ndim
    shape[axis] = 3
    if data_format == "channels_first" and ndim == 3:
        shape = [3, 1, 1]
    x = x + ops.reshape(ops.convert_to_tensor(-np.array(mean), dtype=x.dtype), shape)
    if std is not None:
        x = x / ops.reshape(ops.convert_to_tensor(np.array(std), dtype=x.dtype), shape)
    return x


@functools.lru_cache(maxsize=1)
def class_index() -> dict:
    """``{"0": ["n01440764", "tench"], ...}``: the file Keras downloads, shipped with kzoo."""
    with resources.files("kzoo").joinpath("data", "imagenet_class_index.json").open("r", encoding="utf8") as f:
        return json.load(f)


def decode_predictions(preds, top=5):
    """Top ``top`` ``(wordnet_id, label, score)`` tuples for each row of an ``(N, 1000)`` prediction batch."""
    if len(preds.shape) != 2 or preds.shape[1] != NUM_CLASSES:
        raise ValueError(
            "`decode_predictions` expects "
            "a batch of predictions "
            "(i.e. a 2D array of shape (samples, 1000)). "
            f"Received array with shape: {preds.shape}"
        )
    from keras import ops

    index = class_index()
    results = []
    for row in ops.convert_to_numpy(preds):
        best = row.argsort()[-top:][::-1]
        result = [(*index[str(i)], row[i]) for i in best]
        result.sort(key=lambda item: item[2], reverse=True)
        results.append(result)
    return results


def family_preprocess(mode: str):
    """A family module's ``preprocess_input(x, data_format=None)``, fixed to one mode."""

    def preprocess(x, data_format=None):
        return preprocess_input(x, data_format=data_format, mode=mode)

    preprocess.__doc__ = f"keras.applications-style preprocessing, mode {mode!r} (see kzoo.preprocessing)."
    return preprocess


def passthrough_preprocess_input(x, data_format=None):
    """The identity, as in Keras: these models scale their [0, 255] inputs inside the graph
    (EfficientNet, EfficientNetV2 and ConvNeXt with ``include_preprocessing``, MobileNetV3)."""
    return x


def rgb_mean_preprocess_input(x, data_format=None):
    """TF-slim's vgg preprocessing on 0..255 RGB: subtract the RGB channel means; no scaling, no BGR flip
    (unlike Keras' ``caffe`` mode). NumPy float arrays are updated in place, as Keras does."""
    import keras

    data_format = data_format or keras.config.image_data_format()
    ndim = len(x.shape)
    shape = [1] * ndim
    shape[1 if data_format == "channels_first" and ndim == 4 else (0 if data_format == "channels_first" else -1)] = 3
    if isinstance(x, np.ndarray):
        if not np.issubdtype(x.dtype, np.floating):
            x = x.astype(keras.config.floatx(), copy=False)
        x -= np.asarray(SLIM_RGB_MEAN, dtype=x.dtype).reshape(shape)
        return x
    x = keras.ops.cast(x, keras.config.floatx())
    return x - keras.ops.reshape(keras.ops.convert_to_tensor(np.asarray(SLIM_RGB_MEAN), dtype=x.dtype), shape)


def unit_preprocess_input(x, data_format=None):
    """0..255 -> [0, 1]. ``data_format`` is accepted for keras.applications compatibility; scaling does
    not depend on it."""
    import keras

    if isinstance(x, np.ndarray):
        if not np.issubdtype(x.dtype, np.floating):
            x = x.astype(keras.config.floatx())
        return x / 255.0
    return keras.ops.cast(x, keras.config.floatx()) / 255.0


def for_mode(mode: str):
    """The ``preprocess_input(x, data_format=None)`` of one of :data:`MODEL_MODES`."""
    if mode == "none":
        return passthrough_preprocess_input
    if mode == "rgb_mean":
        return rgb_mean_preprocess_input
    if mode == "unit":
        return unit_preprocess_input
    if mode not in MODES:
        raise ValueError(f"Unknown preprocessing mode {mode!r}; expected one of {MODEL_MODES}.")
    return family_preprocess(mode)


def for_model(name: str) -> dict:
    """``{"preprocess_input": ..., "decode_predictions": ...}`` for a model, from its index row's mode."""
    from kzoo import index

    return {"preprocess_input": for_mode(index.get(name).preprocessing), "decode_predictions": decode_predictions}
