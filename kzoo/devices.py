"""Which device the active Keras backend computes on (shared by the optimizer and the benchmarks)."""

from __future__ import annotations


def accelerator_name() -> str | None:
    """The GPU the active backend computes on, or None for CPU."""
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                details = tf.config.experimental.get_device_details(gpus[0])
                return details.get("device_name", "GPU")
        elif backend == "jax":
            import jax

            dev = jax.devices()[0]
            if dev.platform != "cpu":
                return dev.device_kind
        elif backend == "torch":
            import torch

            if torch.cuda.is_available():
                return torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - a backend that cannot list devices computes on the CPU
        return None
    return None
