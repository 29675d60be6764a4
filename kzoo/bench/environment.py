"""Where a number was measured: backend, device, its dense peak, threads, TF's CPU allocator."""

from __future__ import annotations

import contextlib
import os
import platform
import sys

from kzoo.devices import accelerator_name

# Dense (no 2:4 sparsity) peaks in TFLOPS, from NVIDIA's published datasheets (H100/H200, A100, L4, ...).
# float32 on these GPUs runs matmuls/convs as TF32 by default in TensorFlow and JAX, so the TF32
# tensor-core peak is the honest ceiling for "float32"; the basis is always printed next to the %.
GPU_PEAKS_TFLOPS = {
    "H200": {"float32": (494.7, "TF32 tensor core"), "bf16": (989.4, "BF16 tensor core"),
             "fp16": (989.4, "FP16 tensor core")},
    "H100": {"float32": (494.7, "TF32 tensor core"), "bf16": (989.4, "BF16 tensor core"),
             "fp16": (989.4, "FP16 tensor core")},
    "A100": {"float32": (156.0, "TF32 tensor core"), "bf16": (312.0, "BF16 tensor core"),
             "fp16": (312.0, "FP16 tensor core")},
}
_PRECISION_KEY = {"float32": "float32", "mixed_bfloat16": "bf16", "mixed_float16": "fp16"}

ALLOCATORS = ("bfc", "system")
TF_BFC_VARIABLE = "TF_CPU_ALLOCATOR_USE_BFC"

# The compute threads `kzoo bench --threads` set (None: all cores); the CPU peak counts only these.
_compute_threads: int | None = None


def keras_backend() -> str:
    import keras

    return keras.backend.backend()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cpu_mhz() -> float | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return float(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return None


def device_name() -> str:
    return accelerator_name() or f"CPU {cpu_model()}"


def device_peak(precision: str, device: str | None = None):
    """(TFLOPS, basis) of the device's dense peak for ``precision``, or (None, None) if unknown.

    GPUs: H100/H200/A100 from the reference tables. CPU: an *estimate*, cores x clock x FLOP/cycle
    (32 for AVX2+FMA, 64 for AVX-512), for float32 only; cores are the ``--threads`` when fewer.
    """
    device = device or device_name()
    key = _PRECISION_KEY[precision]
    for gpu, peaks in GPU_PEAKS_TFLOPS.items():
        if gpu in device.upper():
            tflops, what = peaks[key]
            return tflops, f"{gpu} dense {what} {tflops:g} TFLOPS"
    if device.startswith("CPU") and precision == "float32":
        flags, mhz = _cpu_flags(), _cpu_mhz()
        if mhz and "fma" in flags:
            per_cycle = 64 if "avx512f" in flags else 32 if "avx2" in flags else 16
            cores = min(os.cpu_count() or 1, _compute_threads or os.cpu_count() or 1)
            tflops = cores * mhz * 1e6 * per_cycle / 1e12
            return tflops, (
                f"est. CPU fp32 {cores} cores x {mhz / 1000:.2f} GHz x {per_cycle} FLOP/cycle = "
                f"{tflops * 1000:.0f} GFLOPS"
            )
    return None, None


def default_jit() -> bool:
    """XLA/jit on where it helps by default: accelerators on TF, always on JAX; off for TF on CPU
    (XLA was slower than a tf.function graph for CNNs on the 2-core CPU we measured) and torch."""
    backend = keras_backend()
    if backend == "jax":
        return True
    if backend == "tensorflow":
        return accelerator_name() is not None
    return False


def set_threads(n: int | None, torch_too: bool = False):
    """``n`` compute threads (and one inter-op thread) for the Keras backend, and for torch when
    it computes too (the Keras torch backend, or the timm baseline), so a comparison is fair."""
    global _compute_threads
    if not n:
        return
    _compute_threads = int(n)
    backend = keras_backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with contextlib.suppress(RuntimeError):  # only possible before TF initialises
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(1)
    if backend == "torch" or torch_too:
        import torch

        torch.set_num_threads(n)
        with contextlib.suppress(RuntimeError):  # only possible before torch's first parallel op
            torch.set_num_interop_threads(1)


def use_allocator(kind: str) -> None:
    """Choose TensorFlow's CPU allocator: ``bfc`` (a reusing pool) or ``system`` (malloc).

    Must run before TensorFlow allocates its first tensor (importing it is fine). A value the user
    already put in the environment wins: it is their experiment.
    """
    if kind not in ALLOCATORS:
        raise ValueError(f"allocator must be one of {ALLOCATORS}, got {kind!r}")
    os.environ.setdefault(TF_BFC_VARIABLE, "true" if kind == "bfc" else "false")


def tf_cpu_allocator() -> str:
    """The CPU allocator TensorFlow actually uses in this process (initialises TF's CPU device).

    Asked of TF rather than read from the variable, which has no effect once TF has allocated: without
    oneDNN only the BFC pool keeps the statistics ``get_memory_info`` returns. With oneDNN on (TF's default
    on CPUs it accelerates, e.g. AMD EPYC) every CPU allocator keeps them, so there the variable TF read
    at its first allocation is the answer.
    """
    import tensorflow as tf

    try:
        tf.config.experimental.get_memory_info("CPU:0")
    except ValueError:
        return "system"
    if _onednn_enabled():
        return "system" if os.environ.get(TF_BFC_VARIABLE, "").strip().lower() in ("false", "0") else "bfc"
    return "bfc"


def _onednn_enabled() -> bool:
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # pragma: no cover - a TF without the probe: trust the statistics
        return False
    return bool(_pywrap_util_port.IsMklEnabled())


def environment() -> dict:
    """Everything a reader needs to reproduce a number: versions, device, threads, flags."""
    import keras
    import numpy as np

    env = {
        "backend": keras_backend(),
        "device": device_name(),
        "accelerator": accelerator_name(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_isa": sorted(f for f in _cpu_flags() if f in ("avx2", "fma", "avx512f", "amx_tile", "avx512_bf16")),
        "python": platform.python_version(),
        "keras": keras.__version__,
        "numpy": np.__version__,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }
    try:
        from kzoo import __version__ as kzoo_version

        env["kzoo"] = kzoo_version
    except ImportError:  # pragma: no cover
        pass
    backend = env["backend"]
    if backend == "tensorflow":
        import tensorflow as tf

        env["tensorflow"] = tf.__version__
        env["tf_intra_op_threads"] = tf.config.threading.get_intra_op_parallelism_threads()
        env["tf_inter_op_threads"] = tf.config.threading.get_inter_op_parallelism_threads()
        env["tf32"] = tf.config.experimental.tensor_float_32_execution_enabled()
        env["tf_cpu_allocator"] = tf_cpu_allocator()
        try:
            from tensorflow.python.util import _pywrap_util_port

            env["onednn"] = bool(_pywrap_util_port.IsMklEnabled())
        except Exception:  # noqa: BLE001 - private flag, informative only
            env["onednn"] = None
    elif backend == "jax":
        import jax

        env["jax"] = jax.__version__
        env["jax_default_matmul_precision"] = str(jax.config.jax_default_matmul_precision)
    if backend == "torch" or "torch" in sys.modules:  # also for the timm baseline: its threads count
        import torch

        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
        env["torch_interop_threads"] = torch.get_num_interop_threads()
    if "timm" in sys.modules:  # never import it here: after TensorFlow that can crash (timm_import_problem)
        env["timm"] = sys.modules["timm"].__version__
    return env
