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


def cpu_threads() -> int:
    """How many CPU threads one op of the active backend may use (its intra-op parallelism).

    TensorFlow: its intra-op setting, where 0 (the default) means one thread per core this process
    may run on. torch: ``torch.get_num_threads()``. JAX: XLA's CPU client uses every such core.
    """
    import os

    import keras

    try:
        available = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        available = os.cpu_count() or 1
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        configured = tf.config.threading.get_intra_op_parallelism_threads()
        return configured if configured > 0 else available
    if backend == "torch":
        import torch

        return int(torch.get_num_threads())
    return available
