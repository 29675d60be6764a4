"""Synchronised inference calls on the active Keras backend, and an interleaved race between them.

Shared by :mod:`kzoo.bench` (model throughput) and :mod:`kzoo.optimize` (which times the ways it could
compute a layer and keeps the fastest). A step is a zero-argument callable that returns only once the
device has finished: a host copy on TensorFlow, ``block_until_ready`` on JAX, ``cuda.synchronize``
on torch.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable


def on_device(array):
    """``array`` placed where the active backend computes (GPU when there is one)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpu = tf.config.list_logical_devices("GPU")
        with tf.device(gpu[0].name if gpu else "/CPU:0"):
            return tf.identity(tf.convert_to_tensor(array))
    if backend == "jax":
        import jax

        return jax.device_put(array, jax.devices()[0])
    return keras.ops.convert_to_tensor(array)


def inference_step(model, x, jit: bool = False) -> Callable:
    """A synchronised ``model(x, training=False)`` on a device-resident ``x``.

    ``jit`` means XLA for TensorFlow (off: a ``tf.function`` graph), ``jax.jit`` for JAX (off:
    op-by-op), ``torch.compile`` for torch (off: eager).
    """
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        forward = tf.function(lambda t: model(t, training=False), jit_compile=bool(jit))

        def tf_step():
            return keras.tree.map_structure(lambda t: t.numpy(), forward(x))

        return tf_step
    if backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        def forward(tv, ntv, t):
            return model.stateless_call(tv, ntv, t, training=False)[0]

        if jit:
            forward = jax.jit(forward)

        def jax_step():
            return jax.block_until_ready(forward(trainable, non_trainable, x))

        return jax_step
    if backend == "torch":
        import torch

        module = torch.compile(model) if jit else model

        def torch_step():
            with torch.inference_mode():
                out = module(x, training=False)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            return out

        return torch_step
    raise RuntimeError(f"unsupported Keras backend {backend!r}")


def race(steps: dict, rounds: int = 5, warmup: int = 2) -> dict:
    """Median wall seconds per call of each step, the steps alternating call by call.

    Alternating makes a change of machine load hit every candidate alike; the warm-up calls (the
    first traces and compiles) are not timed.
    """
    for step in steps.values():
        for _ in range(warmup):
            step()
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}
