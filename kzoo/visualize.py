"""Looking inside a classifier (the lesson's "ideal cat" and "adversarial cat").

- ``class_image``: start from noise and climb the gradient of one class's score, with a
  total-variation penalty that keeps the image smooth enough to look at.
- ``adversarial``: targeted iterative FGSM: small signed-gradient steps towards ``target_class``,
  kept inside an L-infinity ball of radius ``epsilon`` around the original image.
- ``feature_maps``: the activations of a few layers for one image, tiled into a PNG grid.

Images are in the model's input space. For a ``kzoo.finetune.build_classifier`` model that is raw RGB
in [0, 255] (the preprocessing is inside the model), so ``epsilon=4`` means 4 grey levels.

Gradients with respect to the input are taken with the backend's own machinery: ``tf.GradientTape``
on TensorFlow, ``jax.value_and_grad`` on JAX, autograd on PyTorch. The loss itself uses only
``keras.ops``.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

__all__ = ["total_variation", "class_image", "adversarial", "feature_maps", "input_gradient_fn"]


def total_variation(images):
    """Mean absolute difference between neighbouring pixels (anisotropic TV), per image.

    Works on NumPy arrays and backend tensors, batched ``(N, H, W, C)`` or single ``(H, W, C)``
    (channels last; channels first is handled by the callers transposing nothing: TV is symmetric
    in the two spatial axes and summed over channels either way)."""
    x = images if len(images.shape) == 4 else images[None]
    if keras.config.image_data_format() == "channels_first":
        dh = ops.abs(x[:, :, 1:, :] - x[:, :, :-1, :])
        dw = ops.abs(x[:, :, :, 1:] - x[:, :, :, :-1])
    else:
        dh = ops.abs(x[:, 1:, :, :] - x[:, :-1, :, :])
        dw = ops.abs(x[:, :, 1:, :] - x[:, :, :-1, :])
    tv = ops.mean(dh, axis=(1, 2, 3)) + ops.mean(dw, axis=(1, 2, 3))
    return tv if len(images.shape) == 4 else tv[0]


def input_gradient_fn(loss_fn):
    """``f(x) -> (loss, d loss / d x)`` for a scalar ``loss_fn(x)`` written with ``keras.ops``.

    Compiled once (``tf.function`` / ``jax.jit``) so that a loop of a few hundred steps is fast.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(reduce_retracing=True)
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = loss_fn(x)
            return loss, tape.gradient(loss, x)

        return lambda x: tuple(np.asarray(t) for t in step(tf.convert_to_tensor(x)))
    if backend == "jax":
        import jax

        step = jax.jit(jax.value_and_grad(loss_fn))
        return lambda x: tuple(np.asarray(t) for t in step(jax.numpy.asarray(x)))
    if backend == "torch":
        import torch

        def step(x):
            x = torch.tensor(x, requires_grad=True)
            loss = loss_fn(x)
            loss.backward()
            return np.asarray(loss.detach().cpu()), np.asarray(x.grad.cpu())

        return step
    raise NotImplementedError(f"No input gradient for the {backend!r} backend.")


def _outputs_are_probabilities(model):
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    return activation in (keras.activations.softmax, keras.activations.sigmoid) or \
        getattr(activation, "__name__", "") in ("softmax", "sigmoid")


def _log_score(model, x, class_index):
    """Log-probability of ``class_index`` (or the logit when the model outputs logits)."""
    out = model(x, training=False)
    if out.shape[-1] == 1:  # one sigmoid unit: class 1 is p, class 0 is 1 - p
        p = out[:, 0] if class_index == 1 else 1.0 - out[:, 0]
        return ops.log(ops.maximum(p, 1e-12)) if _outputs_are_probabilities(model) else \
            (out[:, 0] if class_index == 1 else -out[:, 0])
    score = out[:, class_index]
    return ops.log(ops.maximum(score, 1e-12)) if _outputs_are_probabilities(model) else score


def _input_shape(model, size):
    shape = model.input_shape[1:]
    if None in shape:
        if size is None:
            raise ValueError(f"{model.name!r} takes any image size: pass size=(height, width).")
        shape = (*size, shape[-1]) if keras.config.image_data_format() == "channels_last" else (shape[0], *size)
    return tuple(shape)


def class_image(model, class_index, steps=200, tv_weight=1.0, step_size=2.0, image=None, size=None,
                value_range=(0.0, 255.0), seed=0):
    """An image that ``model`` scores highly as ``class_index`` (the lesson's "ideal cat").

    Maximises ``log p(class) - tv_weight * TV(x / 255) * 255`` by normalised gradient ascent: each step
    moves pixels by ``step_size`` grey levels on average, so the same settings work whatever the
    model's gradient scale. ``tv_weight=0`` gives the noisy pattern the lesson shows first; larger
    values give smoother images. Starts from grey noise (or ``image``) and returns an ``(H, W, C)``
    float32 array in ``value_range``.
    """
    low, high = value_range
    shape = _input_shape(model, size)
    rng = np.random.default_rng(seed)
    if image is None:
        x = (low + high) / 2 + rng.normal(0.0, (high - low) * 0.08, size=(1, *shape))
    else:
        x = np.asarray(image, dtype="float32").reshape((1, *shape))
    x = np.clip(x, low, high).astype(keras.config.floatx())
    span = float(high - low)

    def loss(v):
        # TV is measured on the [0, 1] scale so tv_weight does not depend on the value range.
        return -ops.sum(_log_score(model, v, class_index)) + tv_weight * ops.sum(total_variation(v / span)) * span

    grad_fn = input_gradient_fn(loss)
    for _ in range(steps):
        _, g = grad_fn(x)
        x = np.clip(x - step_size * g / (np.mean(np.abs(g)) + 1e-12), low, high).astype(x.dtype)
    return x[0]


def adversarial(model, image, target_class, epsilon=8.0, steps=10, step_size=None, value_range=(0.0, 255.0)):
    """A copy of ``image`` (one ``(H, W, C)`` image or a batch) that ``model`` classifies as ``target_class``.

    Targeted iterative FGSM (Kurakin et al.): ``steps`` steps of size ``step_size`` (default
    ``2.5 * epsilon / steps``) along the sign of the gradient that lowers the cross-entropy to the
    target, each followed by projection onto ``|x' - x|_inf <= epsilon`` and ``value_range``. Success is
    not guaranteed for a small ``epsilon``: check ``model.predict``.
    """
    x0 = np.asarray(image, dtype=keras.config.floatx())
    single = x0.ndim == 3
    batch = x0[None] if single else x0
    low, high = value_range
    step_size = 2.5 * epsilon / steps if step_size is None else step_size
    lower, upper = np.maximum(batch - epsilon, low), np.minimum(batch + epsilon, high)

    def loss(v):
        return -ops.sum(_log_score(model, v, target_class))

    grad_fn = input_gradient_fn(loss)
    x = batch.copy()
    for _ in range(steps):
        _, g = grad_fn(x)
        x = np.clip(x - step_size * np.sign(g), lower, upper).astype(batch.dtype)
    return x[0] if single else x


def _tile(fmap, tile):
    """One activation map -> a ``tile`` x ``tile`` uint8 picture (nearest neighbour, own contrast)."""
    h, w = fmap.shape
    rows = (np.arange(tile) * h // tile).clip(0, h - 1)
    cols = (np.arange(tile) * w // tile).clip(0, w - 1)
    m = fmap[rows][:, cols]
    lo, hi = float(m.min()), float(m.max())
    return np.zeros_like(m, dtype="uint8") if hi - lo < 1e-12 else ((m - lo) / (hi - lo) * 255).astype("uint8")


def feature_maps(model, image, layers, path=None, max_channels=16, columns=8, tile=48, pad=2):
    """Activations of ``layers`` (names) for one image, as a grid: one band of rows per layer.

    Each map is stretched to its own min-max and resized to ``tile`` pixels. Returns the grid as an
    ``(H, W)`` uint8 array; with ``path`` it is also written as a PNG (``keras.utils.save_img``).
    """
    layers = [layers] if isinstance(layers, str) else list(layers)
    probe = keras.Model(model.inputs[0] if len(model.inputs) == 1 else model.inputs, [model.get_layer(name).output for name in layers])
    x = np.asarray(image, dtype=keras.config.floatx())
    outputs = probe(x[None] if x.ndim == 3 else x[:1], training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    bands = []
    for out in outputs:
        a = np.asarray(ops.convert_to_numpy(out))[0]
        if a.ndim == 1:  # a vector (pooled features, logits): one row of bars
            a = a[None, None, :]
        elif keras.config.image_data_format() == "channels_first":
            a = np.moveaxis(a, 0, -1)
        n = min(a.shape[-1], max_channels)
        rows = math.ceil(n / columns)
        band = np.full((rows * (tile + pad) + pad, columns * (tile + pad) + pad), 255, dtype="uint8")
        for c in range(n):
            r, k = divmod(c, columns)
            band[pad + r * (tile + pad):pad + r * (tile + pad) + tile,
                 pad + k * (tile + pad):pad + k * (tile + pad) + tile] = _tile(a[..., c], tile)
        bands.append(band)
        bands.append(np.full((pad * 2, band.shape[1]), 128, dtype="uint8"))  # separator between layers
    grid = np.concatenate(bands[:-1], axis=0)
    if path is not None:
        keras.utils.save_img(path, grid[..., None], data_format="channels_last", scale=False)
    return grid
