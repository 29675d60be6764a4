"""The measuring core behind ``kzoo bench`` and ``benchmarks/``: model throughput you can trust.

Method (see ``shared/reference/perf_anchors.md`` §4.5):

* The input is synthetic, created once and placed on the device; host-to-device copies are not timed.
* The first call is timed on its own and reported as ``compile_s`` (tracing, XLA, autotuning).
  Warm-up steps follow and are excluded.
* Every timed step is synchronised with the device (``block_until_ready`` on JAX, a host copy of the
  output on TensorFlow, ``cuda.synchronize`` on torch), and timed with ``perf_counter``. The process
  CPU time of each step is recorded too: on a shared CPU it is far less sensitive to other people's
  load than wall time, so ratios are given for both.
* Each candidate runs ``repeats`` blocks of steps of at least ``min_time`` seconds; the candidates of a
  comparison (kzoo, the optimised kzoo model, keras.applications, timm) are **interleaved** block by
  block, so a change of machine load hits all of them alike. Throughput is images / wall time of all
  blocks (as timm computes it); min and max are over blocks; ms/batch is the median step.
* On out-of-memory the batch is halved and retried; the batch actually used is reported.
* On TensorFlow the CPU allocator is TF's BFC pool (``TF_CPU_ALLOCATOR_USE_BFC=true``, unless the
  user set that variable; ``--allocator system`` keeps malloc). With malloc, every step maps fresh
  pages for its large activations and the kernel zeroes them: 3-6% of a ResNet50 step in system
  time, by an amount that depends on the process' allocation history, so ratios moved by +-5% from
  one run to the next. The pool reuses its memory, so a step measures compute. The allocator is
  recorded in the environment of every result.

Workloads: ``infer`` (a forward pass in inference mode) and ``train`` (one optimizer step: forward,
loss, backward, SGD update, via ``train_on_batch``). FLOPs are counted from the model's layer shapes
(conv, depthwise, separable, transposed conv and dense multiply-adds; 1 MAC = 2 FLOPs; BN, activations
and pooling are not counted, as fvcore and timm do). Training FLOPs are taken as 3x forward.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from kzoo.devices import accelerator_name
from kzoo.timing import inference_step, on_device

MODES = ("infer", "train")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
SOURCES = ("kzoo", "kzoo-opt", "keras", "timm")
QUICK_MODELS = ("resnet50", "mobilenetv2")
QUICK_BATCH = 8

# Dense (no 2:4 sparsity) peaks in TFLOPS, from shared/reference/perf_anchors.md §2.2.
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


# ----------------------------------------------------------------------------------------------
# results


@dataclass
class BenchResult:
    """One measured (model, source, mode, batch, precision, jit) point."""

    model: str
    source: str
    mode: str
    precision: str
    jit: bool
    batch_size: int  # the batch actually run (after any OOM halving)
    requested_batch_size: int
    image_size: tuple | None = None
    backend: str = ""
    device: str = ""
    compile_s: float | None = None
    warmup_steps: int = 0
    steps: int = 0
    repeats: int = 0
    images_per_s: float | None = None  # all timed images / all timed wall time
    images_per_s_min: float | None = None  # over repeats
    images_per_s_max: float | None = None
    ms_per_batch: float | None = None  # median step
    ms_per_batch_min: float | None = None
    ms_per_batch_max: float | None = None
    cpu_ms_per_batch: float | None = None  # median process CPU time of a step
    gflops_per_image: float | None = None
    achieved_tflops: float | None = None
    pct_of_peak: float | None = None
    peak_basis: str | None = None
    peak_memory_bytes: int | None = None
    params: int | None = None
    oom_retries: int = 0
    error: str | None = None
    block_images_per_s: list = field(default_factory=list, repr=False)  # per repeat, in order
    step_ms: list = field(default_factory=list, repr=False)

    def row(self) -> dict:
        out = dataclasses.asdict(self)
        out.pop("step_ms")
        out.pop("block_images_per_s")
        if self.image_size is not None:
            out["image_size"] = "x".join(str(s) for s in self.image_size)
        return out


@dataclass
class Ratio:
    """kzoo (or kzoo-opt) against a baseline measured in the same run with the same settings."""

    model: str
    source: str
    baseline: str
    mode: str
    precision: str
    jit: bool
    batch_size: int
    images_per_s_ratio: float | None  # > 1: kzoo faster. Median over interleaved block pairs
    cpu_time_ratio: float | None  # > 1: kzoo uses less CPU time per image (median step)
    pair_ratio_min: float | None = None  # spread of the per-pair ratios: the run's noise
    pair_ratio_max: float | None = None


# ----------------------------------------------------------------------------------------------
# environment


def _backend() -> str:
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


# The compute threads `kzoo bench --threads` set (None: all cores); the CPU peak counts only these.
_compute_threads: int | None = None


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


ALLOCATORS = ("bfc", "system")
_TF_BFC_VARIABLE = "TF_CPU_ALLOCATOR_USE_BFC"


def use_allocator(kind: str) -> None:
    """Choose TensorFlow's CPU allocator: ``bfc`` (a reusing pool) or ``system`` (malloc).

    Must run before TensorFlow allocates its first tensor (importing it is fine). A value the user
    already put in the environment wins: it is their experiment.
    """
    if kind not in ALLOCATORS:
        raise ValueError(f"allocator must be one of {ALLOCATORS}, got {kind!r}")
    os.environ.setdefault(_TF_BFC_VARIABLE, "true" if kind == "bfc" else "false")


def tf_cpu_allocator() -> str:
    """The CPU allocator TensorFlow actually uses in this process (initialises TF's CPU device).

    Asked of TF rather than read from the variable, which has no effect once TF has allocated: only
    the BFC pool keeps the statistics ``get_memory_info`` returns.
    """
    import tensorflow as tf

    try:
        tf.config.experimental.get_memory_info("CPU:0")
        return "bfc"
    except ValueError:
        return "system"


def environment() -> dict:
    """Everything a reader needs to reproduce a number: versions, device, threads, flags."""
    import keras
    import numpy as np

    env = {
        "backend": _backend(),
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


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def result_stem(env: dict, mode: str, precision: str, jit: bool) -> str:
    """``bench-infer-float32-tensorflow-nojit-cpu_amd_epyc``: the environment in the file name."""
    device = env.get("accelerator") or f"cpu {env.get('cpu', '')}"
    device = _slug(device.replace("NVIDIA", ""))
    return f"bench-{mode}-{precision}-{env['backend']}-{'jit' if jit else 'nojit'}-{device}"


def resolve_output(path: str | None, env: dict, mode: str, precision: str, jit: bool, ext: str):
    """A directory (existing, or ending in '/') gets an environment-encoded file name inside it."""
    if path is None:
        return None
    if path.endswith(os.sep) or os.path.isdir(path):
        os.makedirs(path, exist_ok=True)
        return os.path.join(path, result_stem(env, mode, precision, jit) + ext)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    return path


# ----------------------------------------------------------------------------------------------
# FLOPs


def _graph_nodes(model):
    functional = getattr(model, "_functional", None) or model  # Sequential wraps a Functional
    by_depth = getattr(functional, "_nodes_by_depth", None)
    if by_depth is None:
        return []
    nodes = []
    for depth in sorted(by_depth, reverse=True):
        nodes.extend(n for n in by_depth[depth] if n.operation is not None and not n.is_input)
    return nodes


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def layer_macs(layer, input_shape, output_shape) -> int:
    """Multiply-accumulates of one call of ``layer`` for ONE sample (shapes include the batch axis)."""
    kind = type(layer).__name__
    if kind == "Dense":
        return _prod(output_shape[1:]) * int(input_shape[-1])
    cfg = layer.get_config() if hasattr(layer, "get_config") else {}
    channels_first = cfg.get("data_format") == "channels_first"

    def split(shape):  # (spatial dims, channels)
        return (shape[2:], shape[1]) if channels_first else (shape[1:-1], shape[-1])

    if kind.startswith("Conv") and kind.endswith("Transpose"):
        in_spatial, in_ch = split(input_shape)
        return _prod(in_spatial) * int(in_ch) * int(cfg["filters"]) * _prod(cfg["kernel_size"])
    if kind.startswith("Depthwise"):
        out_spatial, out_ch = split(output_shape)
        return _prod(out_spatial) * int(out_ch) * _prod(cfg["kernel_size"])
    if kind.startswith("Separable"):
        out_spatial, out_ch = split(output_shape)
        _, in_ch = split(input_shape)
        mid = int(in_ch) * int(cfg.get("depth_multiplier", 1))
        return _prod(out_spatial) * mid * (_prod(cfg["kernel_size"]) + int(out_ch))
    if kind == "WinogradConv2D":
        # Counted as the 3x3 conv it computes, not the ~2.25-4x fewer products it does: GFLOP/img is a
        # property of the function, so kzoo-opt's %peak reads as effective throughput, comparable with keras'.
        out_spatial, out_ch = split(output_shape)
        return _prod(out_spatial) * int(out_ch) * 9 * int(split(input_shape)[1])
    if re.fullmatch(r"Conv[123]D", kind):
        out_spatial, out_ch = split(output_shape)
        _, in_ch = split(input_shape)
        groups = int(cfg.get("groups", 1))
        return _prod(out_spatial) * int(out_ch) * _prod(cfg["kernel_size"]) * int(in_ch) // groups
    return 0


def count_macs(model) -> int:
    """Multiply-accumulates per image, summed over conv/dense layers of the (nested) model graph."""
    total = 0
    for node in _graph_nodes(model):
        op = node.operation
        if _graph_nodes(op):  # a nested model: count its own graph
            total += count_macs(op)
            continue
        if not node.input_tensors or not node.outputs:
            continue
        total += layer_macs(op, tuple(node.input_tensors[0].shape), tuple(node.outputs[0].shape))
    return total


def count_flops(model) -> int:
    """Forward FLOPs per image (2 x MACs)."""
    return 2 * count_macs(model)


# ----------------------------------------------------------------------------------------------
# building models


@contextlib.contextmanager
def dtype_policy(precision: str):
    """Build under a global dtype policy and restore the previous one."""
    import keras

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def keras_application(name: str):
    """The keras.applications builder for a kzoo canonical name (they are its lower-cased name)."""
    import keras

    table = {n.lower(): n for n in dir(keras.applications) if n[:1].isupper()}
    attr = table.get(name.lower().replace("_", ""))
    if attr is None or "_" in name:
        return None  # TF-slim / TI-ONE models have no keras.applications twin
    return getattr(keras.applications, attr)


def build_model(name: str, source: str, *, image_size=None, precision="float32", batch_size=None):
    """A randomly initialised classifier (``include_top=True``) from ``source``.

    ``image_size`` None keeps the model's own default input size. ``batch_size`` is for ``kzoo-opt``:
    :func:`kzoo.optimize_for_inference` picks its Winograd tiles for the batch it will run.
    """
    kwargs = {"weights": None}
    if image_size:
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        kwargs["input_shape"] = (*size, 3)
    with dtype_policy(precision):
        if source in ("kzoo", "kzoo-opt"):
            from kzoo.models import create_model

            model = create_model(name, **kwargs)
            if source == "kzoo-opt":
                from kzoo.optimize import optimize_for_inference

                model = optimize_for_inference(model, batch_size=batch_size)
            return model
        if source == "keras":
            builder = keras_application(name)
            if builder is None:
                raise LookupError(f"keras.applications has no model for {name!r}")
            return builder(**kwargs)
    raise ValueError(f"unknown source {source!r}; expected one of {SOURCES}")


# timm names of the same architectures (timm's resnet50 is v1.5: stride in the 3x3, no conv bias).
TIMM_NAMES = {
    "resnet50": "resnet50", "resnet101": "resnet101", "resnet152": "resnet152",
    "mobilenetv2": "mobilenetv2_100", "mobilenetv3large": "mobilenetv3_large_100",
    "mobilenetv3small": "mobilenetv3_small_100", "efficientnetb0": "efficientnet_b0",
    "efficientnetb1": "efficientnet_b1", "efficientnetb2": "efficientnet_b2",
    "efficientnetb3": "efficientnet_b3", "inceptionv3": "inception_v3", "vgg16": "vgg16",
    "vgg19": "vgg19", "xception": "legacy_xception", "densenet121": "densenet121",
    "densenet169": "densenet169", "densenet201": "densenet201", "convnexttiny": "convnext_tiny",
    "convnextsmall": "convnext_small", "convnextbase": "convnext_base",
    "inceptionresnetv2": "inception_resnet_v2", "nasnetlarge": "nasnetalarge",
    "efficientnetv2s": "tf_efficientnetv2_s", "efficientnetv2m": "tf_efficientnetv2_m",
}


def timm_import_problem() -> str | None:
    """Why importing timm now would be unsafe or impossible, or None when it is fine.

    TensorFlow and triton (torch's GPU compiler, which torch imports as timm loads) each bundle LLVM;
    importing triton *after* TensorFlow segfaults the process (TF 2.21 + triton 3.8). The CLI imports
    timm before Keras, which is safe; a process that already holds TensorFlow must not try.
    """
    import importlib.util

    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("timm") is None:
        return "timm or torch is not installed (pip install torch timm to add it)"
    if ("tensorflow" in sys.modules and "triton" not in sys.modules
            and importlib.util.find_spec("triton") is not None):
        return ("TensorFlow is already imported and triton is installed: importing triton after "
                "TensorFlow crashes the process; import timm first (as `kzoo bench` does) or "
                "uninstall triton (torch needs it only for torch.compile on CUDA)")
    return None


def timm_available() -> bool:
    """torch and timm import (and are imported now, so a later TensorFlow import is safe)."""
    if timm_import_problem():
        return False
    try:
        import timm  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# ----------------------------------------------------------------------------------------------
# steps: a zero-argument callable doing one synchronised step on a device-resident batch


def is_out_of_memory(exc: BaseException) -> bool:
    """True for the out-of-memory errors of every backend (so the batch can be halved)."""
    if isinstance(exc, MemoryError):
        return True
    if type(exc).__name__ in ("ResourceExhaustedError", "OutOfMemoryError"):
        return True
    text = str(exc)
    lowered = text.lower()
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in lowered or "can't allocate memory" in lowered


def _input_shape(model, batch_size):
    shape = tuple(model.inputs[0].shape[1:])
    return (batch_size, *shape)


def make_keras_step(model, batch_size: int, mode: str = "infer", jit: bool = False, seed: int = 0):
    """One synchronised step of ``model`` on a batch already on the device.

    ``jit`` means XLA for TensorFlow (off: a ``tf.function`` graph), ``jax.jit`` for JAX (off:
    op-by-op), ``torch.compile`` for torch (off: eager).
    """
    import keras
    import numpy as np

    rng = np.random.default_rng(seed)
    x = on_device(rng.uniform(0, 1, _input_shape(model, batch_size)).astype("float32"))
    if mode == "train":
        num_classes = int(model.outputs[0].shape[-1])
        y = on_device(rng.integers(0, num_classes, (batch_size,)).astype("int32"))
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=1e-4, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(),
            jit_compile=bool(jit),
        )

        def train_step():
            return model.train_on_batch(x, y)  # returns host numbers: synchronised

        return train_step
    if mode != "infer":
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return inference_step(model, x, jit)


def count_torch_macs(module, input_shape) -> int:
    """Multiply-accumulates per image of a torch module, counted like :func:`count_macs`.

    One batch-1 forward on zeros with hooks on ``Conv*d`` and ``Linear``: a conv costs
    out_elements x in_channels / groups x kernel elements, a linear out_elements x in_features.
    BN, activations and pooling are not counted, as for the Keras models.
    """
    import torch

    total = [0]

    def conv_hook(mod, inputs, output):
        total[0] += (output[0].numel() * (mod.in_channels // mod.groups)
                     * _prod(mod.kernel_size))

    def linear_hook(mod, inputs, output):
        total[0] += output[0].numel() * mod.in_features

    hooks = []
    for sub in module.modules():
        if isinstance(sub, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
            hooks.append(sub.register_forward_hook(conv_hook))
        elif isinstance(sub, torch.nn.Linear):
            hooks.append(sub.register_forward_hook(linear_hook))
    param = next(module.parameters())
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(torch.zeros((1, *input_shape), dtype=param.dtype, device=param.device))
    finally:
        module.train(was_training)
        for hook in hooks:
            hook.remove()
    return total[0]


def make_timm_step(name: str, batch_size: int, mode="infer", jit=False, precision="float32",
                   image_size=None, seed=0):
    """timm's equivalent model as ``(step, model)``: the same settings as the Keras candidates.

    * channels_last weights and input (the layout Keras uses; torch's fast CPU/GPU conv path);
    * the same precision: float32, or autocast to bf16/fp16 for the mixed policies (with a grad
      scaler for fp16 training on CUDA, as Keras' LossScaleOptimizer); on CUDA float32 matmuls and
      convs may use TF32, because TensorFlow and JAX do by default;
    * ``torch.compile`` only when ``jit`` (eager otherwise, like a Keras run without XLA);
    * every step ends with ``cuda.synchronize`` on a GPU (CPU ops are synchronous);
    * ``image_size`` (int or (h, w)) should be the Keras model's, so both see the same pixels;
      None falls back to timm's own default.
    ``mode="train"``: one SGD step (lr 1e-4, momentum 0.9) of cross-entropy on random labels.
    """
    import timm
    import torch

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and precision == "float32":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model = timm.create_model(TIMM_NAMES[name], pretrained=False)
    size = image_size or model.pretrained_cfg.get("input_size", (3, 224, 224))[1:]
    size = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    model = model.to(device).to(memory_format=torch.channels_last)
    model.kzoo_image_size = size  # read back by run_benchmarks for the result row
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((batch_size, 3, *size), generator=gen).to(device).contiguous(
        memory_format=torch.channels_last)
    autocast_dtype = {"mixed_bfloat16": torch.bfloat16, "mixed_float16": torch.float16}.get(precision)
    autocast = (
        (lambda: torch.autocast(device_type=device, dtype=autocast_dtype))
        if autocast_dtype else contextlib.nullcontext
    )
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if mode == "infer":
        model.eval()
        run = torch.compile(model) if jit else model

        def step():
            with torch.inference_mode(), autocast():
                out = run(x)
            sync()
            return out

        return step, model
    model.train()
    num_classes = int(getattr(model, "num_classes", 1000))
    y = torch.randint(0, num_classes, (batch_size,), generator=gen).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    scaler = torch.amp.GradScaler(device, enabled=precision == "mixed_float16" and device == "cuda")
    run = torch.compile(model) if jit else model

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = loss_fn(run(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        value = loss.item()  # a host copy: the step has finished, on any device
        sync()
        return value

    return train_step, model


# ----------------------------------------------------------------------------------------------
# measuring


@dataclass
class Prepared:
    """A candidate ready to time: its step, the batch it fits, and what its first call cost."""

    step: Callable
    batch_size: int
    compile_s: float
    oom_retries: int


def prepare_with_backoff(make_step: Callable[[int], Callable], batch_size: int, *, log=None) -> Prepared:
    """Make the step for ``batch_size`` and run it once (the compile call), halving the batch on OOM.

    ``make_step(batch)`` returns a zero-argument step. Non-memory errors propagate; running out of
    memory even at batch 1 raises the last error.
    """
    retries = 0
    batch = int(batch_size)
    while True:
        try:
            step = make_step(batch)
            t0 = time.perf_counter()
            step()
            return Prepared(step, batch, time.perf_counter() - t0, retries)
        except Exception as exc:  # noqa: BLE001 - classified just below
            if not is_out_of_memory(exc) or batch <= 1:
                raise
            retries += 1
            if log:
                log(f"  out of memory at batch {batch}; retrying with {batch // 2}")
            batch //= 2
            step = None
            gc.collect()


def time_steps(step: Callable, n: int) -> list:
    """``n`` synchronised steps -> [(wall_s, cpu_s), ...]."""
    out = []
    for _ in range(n):
        c0 = time.process_time()
        t0 = time.perf_counter()
        step()
        out.append((time.perf_counter() - t0, time.process_time() - c0))
    return out


@dataclass
class _Running:
    result: BenchResult
    prepared: Prepared | None = None
    blocks: list = field(default_factory=list)  # per repeat: list of (wall, cpu)
    steps_per_block: int = 1


def measure_interleaved(candidates, *, warmup=2, repeats=3, min_time=1.0, max_steps=200, log=None):
    """Time prepared candidates block by block: A B C A B C ... (see the module docstring).

    ``candidates`` is a list of ``(BenchResult, Prepared)``; results are filled in place.
    """
    running = [_Running(r, p) for r, p in candidates if p is not None]
    for run in running:
        step_s = min(w for w, _ in time_steps(run.prepared.step, max(1, warmup)))
        run.result.warmup_steps = max(1, warmup)
        run.steps_per_block = int(min(max_steps, max(1, math.ceil(min_time / max(step_s, 1e-9)))))
    for _ in range(repeats):
        for run in running:
            run.blocks.append(time_steps(run.prepared.step, run.steps_per_block))
    for run in running:
        _summarise(run.result, run.blocks, run.prepared)
    return [r for r, _ in candidates]


def _summarise(result: BenchResult, blocks, prepared: Prepared):
    batch = prepared.batch_size
    walls = [w for block in blocks for w, _ in block]
    cpus = [c for block in blocks for _, c in block]
    per_block = [batch * len(block) / sum(w for w, _ in block) for block in blocks]
    result.batch_size = batch
    result.compile_s = prepared.compile_s
    result.oom_retries = prepared.oom_retries
    result.repeats = len(blocks)
    result.steps = len(walls)
    result.images_per_s = batch * len(walls) / sum(walls)
    result.images_per_s_min = min(per_block)
    result.images_per_s_max = max(per_block)
    result.ms_per_batch = 1000 * statistics.median(walls)
    result.ms_per_batch_min = 1000 * min(walls)
    result.ms_per_batch_max = 1000 * max(walls)
    result.cpu_ms_per_batch = 1000 * statistics.median(cpus)
    result.step_ms = [round(1000 * w, 3) for w in walls]
    result.block_images_per_s = per_block
    if result.gflops_per_image:
        factor = 3.0 if result.mode == "train" else 1.0
        result.achieved_tflops = result.images_per_s * result.gflops_per_image * factor / 1000
        peak, basis = device_peak(result.precision, result.device or None)
        if peak:
            result.pct_of_peak = 100.0 * result.achieved_tflops / peak
            result.peak_basis = basis


def peak_memory_bytes(framework: str | None = None) -> int | None:
    """Peak device memory of the process where the backend reports it (GPUs), else None.

    ``framework`` "torch" asks torch (the timm candidate) whatever the Keras backend is.
    """
    backend = framework or _backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            if tf.config.list_physical_devices("GPU"):
                return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
        elif backend == "jax":
            import jax

            stats = jax.devices()[0].memory_stats() or {}
            if "peak_bytes_in_use" in stats:
                return int(stats["peak_bytes_in_use"])
        elif backend == "torch":
            import torch

            if torch.cuda.is_available():
                return int(torch.cuda.max_memory_allocated())
    except Exception:  # noqa: BLE001 - informative only
        return None
    return None


def reset_peak_memory(framework: str | None = None):
    backend = framework or _backend()
    with contextlib.suppress(Exception):
        if backend == "tensorflow":
            import tensorflow as tf

            if tf.config.list_physical_devices("GPU"):
                tf.config.experimental.reset_memory_stats("GPU:0")
        elif backend == "torch":
            import torch

            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()


# ----------------------------------------------------------------------------------------------
# the sweep


def default_jit() -> bool:
    """XLA/jit on where it helps by default: accelerators on TF, always on JAX; off for TF on CPU
    (XLA was slower than a tf.function graph for CNNs on the 2-core CPU we measured) and torch."""
    backend = _backend()
    if backend == "jax":
        return True
    if backend == "tensorflow":
        return accelerator_name() is not None
    return False


def run_benchmarks(
    models: Iterable[str],
    batch_sizes: Iterable[int] = (QUICK_BATCH,),
    *,
    mode: str = "infer",
    precision: str = "float32",
    jit: bool | None = None,
    image_size=None,
    sources: Iterable[str] = ("kzoo", "keras"),
    warmup: int = 2,
    repeats: int = 3,
    min_time: float = 1.0,
    build: Callable | None = None,
    log: Callable | None = None,
) -> list[BenchResult]:
    """Measure every model x batch size, each source interleaved with the others.

    ``build(name, source, image_size=, precision=)`` returns a Keras model (default
    :func:`build_model`); it is how tests inject a tiny model. ``kzoo-opt`` is built once per batch
    size, with ``batch_size=`` too, because the optimizer tunes its Winograd tiles to the batch.
    ``timm`` runs only when torch and timm are importable (it is skipped with a note otherwise).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    models, batch_sizes, sources = list(models), [int(b) for b in batch_sizes], list(sources)
    if mode == "train" and "kzoo-opt" in sources:
        sources.remove("kzoo-opt")  # a folded model is for inference only
    jit = default_jit() if jit is None else bool(jit)
    build = build or build_model
    log = log or (lambda msg: None)
    backend, device = _backend(), device_name()
    results: list[BenchResult] = []
    total = len(models) * len(batch_sizes)
    done = 0
    for name in models:
        built = {}

        def build_logged(source, **extra):
            try:
                t0 = time.perf_counter()
                model = build(name, source, image_size=image_size, precision=precision, **extra)
                log(f"built {name} ({source}) in {time.perf_counter() - t0:.1f}s")
                return model
            except Exception as exc:  # noqa: BLE001 - reported in the table, the sweep goes on
                return exc

        for source in sources:
            if source not in ("timm", "kzoo-opt"):
                built[source] = build_logged(source)
        # timm gets the Keras models' input size (timm's own default may differ, e.g. EfficientNet-B3)
        keras_size = next((tuple(int(s) for s in m.inputs[0].shape[1:3])
                           for m in built.values() if not isinstance(m, Exception)), None)
        for batch in batch_sizes:
            if "kzoo-opt" in sources:
                built["kzoo-opt"] = build_logged("kzoo-opt", batch_size=batch)
            done += 1
            log(f"[{done}/{total}] {name} {mode} batch {batch} {precision} "
                f"{'jit' if jit else 'no-jit'}: {', '.join(sources)}")
            candidates = []
            for source in sources:
                res = BenchResult(name, source, mode, precision, jit, batch, batch,
                                  backend=backend if source != "timm" else "torch", device=device)
                prepared = None
                try:
                    reset_peak_memory("torch" if source == "timm" else None)
                    if source == "timm":
                        if not timm_available():
                            raise LookupError("timm/torch not installed")
                        if name not in TIMM_NAMES:
                            raise LookupError(f"no timm equivalent for {name!r}")
                        holder = {}

                        def make(b, _name=name, _holder=holder, _size=image_size or keras_size):
                            step, tmodel = make_timm_step(_name, b, mode, jit, precision, _size)
                            _holder["model"] = tmodel
                            return step

                        prepared = prepare_with_backoff(make, batch, log=log)
                        tmodel = holder["model"]
                        res.image_size = tuple(tmodel.kzoo_image_size)
                        res.params = sum(p.numel() for p in tmodel.parameters())
                        res.gflops_per_image = 2 * count_torch_macs(tmodel, (3, *res.image_size)) / 1e9
                    else:
                        model = built[source]
                        if isinstance(model, Exception):
                            raise model
                        res.image_size = tuple(int(s) for s in model.inputs[0].shape[1:3])
                        res.params = int(model.count_params())
                        res.gflops_per_image = count_flops(model) / 1e9
                        prepared = prepare_with_backoff(
                            lambda b, m=model: make_keras_step(m, b, mode, jit), batch, log=log
                        )
                except Exception as exc:  # noqa: BLE001 - one failing candidate must not end the run
                    res.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                    log(f"  {source}: {res.error}")
                candidates.append((res, prepared))
            measure_interleaved(candidates, warmup=warmup, repeats=repeats, min_time=min_time, log=log)
            for res, prepared in candidates:
                if prepared is not None:
                    res.peak_memory_bytes = peak_memory_bytes("torch" if res.source == "timm" else None)
            results.extend(res for res, _ in candidates)
            del candidates
            gc.collect()
        del built
        gc.collect()
    return results


def ratios(results: list[BenchResult], baselines=("keras", "timm")) -> list[Ratio]:
    """kzoo and kzoo-opt against each baseline with the same model/mode/precision/jit/batch."""
    out = []
    key = lambda r: (r.model, r.mode, r.precision, r.jit, r.requested_batch_size)  # noqa: E731
    by_key = {}
    for r in results:
        by_key.setdefault(key(r), {})[r.source] = r
    for group in by_key.values():
        for source in ("kzoo", "kzoo-opt"):
            ours = group.get(source)
            if ours is None or ours.images_per_s is None:
                continue
            for base in baselines:
                theirs = group.get(base)
                if theirs is None or theirs.images_per_s is None:
                    continue
                cpu_ratio = (
                    theirs.cpu_ms_per_batch / ours.cpu_ms_per_batch * ours.batch_size / theirs.batch_size
                    if ours.cpu_ms_per_batch and theirs.cpu_ms_per_batch else None
                )
                # Blocks ran interleaved (ours, theirs, ours, theirs, ...): compare neighbours, so
                # a change of machine load between blocks cancels out.
                pairs = [a / b for a, b in zip(ours.block_images_per_s, theirs.block_images_per_s)]
                wall_ratio = statistics.median(pairs) if pairs else ours.images_per_s / theirs.images_per_s
                out.append(Ratio(ours.model, source, base, ours.mode, ours.precision, ours.jit,
                                 ours.requested_batch_size, wall_ratio, cpu_ratio,
                                 min(pairs) if pairs else None, max(pairs) if pairs else None))
    return out


# ----------------------------------------------------------------------------------------------
# reporting


def _fmt(value, spec=".1f", none="-"):
    return none if value is None else format(value, spec)


def _ratio_cell(ratio):
    if ratio is None or ratio.images_per_s_ratio is None:
        return ""
    cell = f"{ratio.images_per_s_ratio:.3f}"
    if ratio.pair_ratio_min is not None and ratio.pair_ratio_max != ratio.pair_ratio_min:
        cell += f" ({ratio.pair_ratio_min:.2f}-{ratio.pair_ratio_max:.2f})"
    return cell


def format_table(results: list[BenchResult], ratio_list: list[Ratio] | None = None) -> str:
    """A fixed-width table; ratio columns give kzoo / baseline from the same run."""
    ratio_list = ratios(results) if ratio_list is None else ratio_list
    rmap = {(r.model, r.source, r.mode, r.precision, r.jit, r.batch_size, r.baseline): r for r in ratio_list}
    headers = ["model", "source", "mode", "precision", "jit", "batch", "img/s", "img/s min-max",
               "ms/batch", "cpu ms", "compile s", "GFLOP/img", "%peak", "x keras", "x keras cpu", "x timm",
               "x timm cpu"]
    rows = []
    for r in results:
        if r.error:
            rows.append([r.model, r.source, r.mode, r.precision, "jit" if r.jit else "-",
                         str(r.requested_batch_size), "error: " + r.error[:60]] + [""] * 10)
            continue
        base = (r.model, r.source, r.mode, r.precision, r.jit, r.requested_batch_size)
        vs_keras = rmap.get(base + ("keras",))
        vs_timm = rmap.get(base + ("timm",))
        batch = str(r.batch_size) + ("" if r.batch_size == r.requested_batch_size else f" (<{r.requested_batch_size})")
        rows.append([
            r.model, r.source, r.mode, r.precision, "jit" if r.jit else "-", batch,
            _fmt(r.images_per_s), f"{_fmt(r.images_per_s_min)}-{_fmt(r.images_per_s_max)}",
            _fmt(r.ms_per_batch), _fmt(r.cpu_ms_per_batch, ".0f"), _fmt(r.compile_s, ".2f"),
            _fmt(r.gflops_per_image, ".2f"), _fmt(r.pct_of_peak, ".1f"),
            _ratio_cell(vs_keras),
            _fmt(vs_keras.cpu_time_ratio, ".3f") if vs_keras else "",
            _ratio_cell(vs_timm),
            _fmt(vs_timm.cpu_time_ratio, ".3f") if vs_timm else "",
        ])
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    bases = {r.peak_basis for r in results if r.peak_basis}
    if bases:
        lines.append("%peak basis: " + "; ".join(sorted(bases)))
    return "\n".join(lines)


def write_json(path, results, env, settings):
    payload = {
        "environment": env,
        "settings": settings,
        "results": [dict(r.row(), step_ms=r.step_ms, block_images_per_s=r.block_images_per_s)
                    for r in results],
        "ratios": [dataclasses.asdict(r) for r in ratios(results)],
    }
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, default=str)


def write_csv(path, results, env):
    import csv

    rmap = {}
    for r in ratios(results):
        rmap[(r.model, r.source, r.mode, r.precision, r.jit, r.batch_size, r.baseline)] = r
    fields = list(BenchResult.__dataclass_fields__)
    fields.remove("step_ms")
    extra = ["ratio_vs_keras", "cpu_ratio_vs_keras", "ratio_vs_timm", "cpu_ratio_vs_timm", "cpu",
             "keras_version", "tf_cpu_allocator"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields + extra)
        writer.writeheader()
        for r in results:
            row = r.row()
            key = (r.model, r.source, r.mode, r.precision, r.jit, r.requested_batch_size)
            k, t = rmap.get(key + ("keras",)), rmap.get(key + ("timm",))
            row["ratio_vs_keras"] = k.images_per_s_ratio if k else None
            row["cpu_ratio_vs_keras"] = k.cpu_time_ratio if k else None
            row["ratio_vs_timm"] = t.images_per_s_ratio if t else None
            row["cpu_ratio_vs_timm"] = t.cpu_time_ratio if t else None
            row["cpu"] = env.get("cpu")
            row["keras_version"] = env.get("keras")
            row["tf_cpu_allocator"] = env.get("tf_cpu_allocator")
            writer.writerow(row)


def plot(path, results, title=None):
    """images/s against batch size, one line per (model, source). matplotlib is imported here."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {}
    for r in results:
        if r.images_per_s is not None:
            series.setdefault((r.model, r.source), []).append((r.batch_size, r.images_per_s))
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    styles = {"kzoo": "-o", "kzoo-opt": "-s", "keras": "--^", "timm": ":x"}
    for (model, source), points in sorted(series.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], styles.get(source, "-"),
                label=f"{model} ({source})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("images / s")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# CLI: kzoo bench


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kzoo bench",
        description=(
            "Measure images/s of kzoo models against keras.applications (and timm when installed), "
            "in the same run. With no arguments: a ~1 minute quick check of "
            f"{' and '.join(QUICK_MODELS)} at batch {QUICK_BATCH}, kzoo and kzoo.optimize_for_inference "
            "against keras.applications."
        ),
    )
    p.add_argument("models", nargs="*", help=f"kzoo model names (default: {' '.join(QUICK_MODELS)})")
    p.add_argument("--batch-size", "-b", type=int, nargs="+", default=None,
                   help=f"one or more batch sizes (default {QUICK_BATCH})")
    p.add_argument("--precision", choices=PRECISIONS, default="float32")
    p.add_argument("--mode", choices=MODES, default="infer")
    p.add_argument("--jit", dest="jit", action="store_true", default=None,
                   help="XLA / jax.jit / torch.compile on (default: on for GPUs and JAX)")
    p.add_argument("--no-jit", dest="jit", action="store_false")
    p.add_argument("--image-size", type=int, default=None, help="square input size (default: the model's own)")
    p.add_argument("--compare", default="keras",
                   help="comma-separated baselines: keras,timm (or 'none')")
    p.add_argument("--optimize", action="store_true",
                   help="also measure kzoo.optimize_for_inference(model) (inference)")
    p.add_argument("--repeats", type=int, default=3, help="timed blocks per candidate (default 3)")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds per timed block (default 1.0)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up steps after the compile call")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for the backend (TF intra-op / torch); default: the backend's")
    p.add_argument("--allocator", choices=ALLOCATORS, default="bfc",
                   help="TensorFlow CPU allocator: bfc, a reusing pool (default), or system malloc, which "
                        "maps and zeroes fresh pages every step; %s in the environment wins" % _TF_BFC_VARIABLE)
    p.add_argument("--json", nargs="?", const=".", default=None, metavar="OUT",
                   help="write results as JSON (a directory gets an environment-encoded file name)")
    p.add_argument("--csv", nargs="?", const=".", default=None, metavar="OUT", help="write results as CSV")
    p.add_argument("--plot", default=None, metavar="OUT.png", help="plot images/s vs batch size")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines on stderr")
    return p


def _set_threads(n: int | None, torch_too: bool = False):
    """``n`` compute threads (and one inter-op thread) for the Keras backend, and for torch when
    it computes too (the Keras torch backend, or the timm baseline), so a comparison is fair."""
    global _compute_threads
    if not n:
        return
    _compute_threads = int(n)
    backend = _backend()
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


def cli_main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    use_allocator(args.allocator)  # before TensorFlow allocates anything
    quick = not args.models and args.batch_size is None
    models = args.models or list(QUICK_MODELS)
    batch_sizes = args.batch_size or [QUICK_BATCH]
    compare = [] if args.compare.strip().lower() in ("", "none") else [
        c.strip() for c in args.compare.split(",") if c.strip()]
    for c in compare:
        if c not in ("keras", "timm"):
            print(f"kzoo bench: --compare takes keras and/or timm, got {c!r}", file=sys.stderr)
            return 2
    # The quick check shows what kzoo offers for speed, so it includes the optimised model.
    sources = ["kzoo"] + (["kzoo-opt"] if args.optimize or quick else []) + compare
    # timm (and torch, triton) must be imported before Keras brings in TensorFlow: see timm_import_problem
    if "timm" in compare and not timm_available():
        print(f"kzoo bench: the timm baseline is skipped: {timm_import_problem() or 'timm does not import'}",
              file=sys.stderr)
        sources.remove("timm")
    from kzoo.models import get_model_spec
    from kzoo.errors import UnknownModel

    try:
        models = [get_model_spec(m).name for m in models]
    except UnknownModel as exc:
        print(f"kzoo bench: {exc}", file=sys.stderr)
        return 2
    _set_threads(args.threads, torch_too="timm" in sources)
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    env = environment()
    jit = default_jit() if args.jit is None else args.jit
    if quick:
        log(f"kzoo bench quick check: {', '.join(models)} at batch {batch_sizes[0]} "
            f"({args.mode}, {args.precision}); run `kzoo bench --help` for sweeps")
    t0 = time.perf_counter()
    results = run_benchmarks(
        models, batch_sizes, mode=args.mode, precision=args.precision, jit=jit,
        image_size=args.image_size, sources=sources, warmup=args.warmup, repeats=args.repeats,
        min_time=args.min_time, log=log,
    )
    allocator = f" | {env['tf_cpu_allocator']} allocator" if "tf_cpu_allocator" in env else ""
    print(f"# {env['backend']} on {env['device']} | keras {env['keras']} | "
          f"{args.mode} {args.precision} {'jit' if jit else 'no-jit'}{allocator} | "
          f"{args.repeats} x >= {args.min_time:g}s blocks, interleaved | {time.perf_counter() - t0:.0f}s total")
    print(format_table(results))
    settings = {k: v for k, v in vars(args).items() if k not in ("json", "csv", "plot")}
    settings.update(models=models, batch_sizes=batch_sizes, sources=sources, jit=jit)
    for kind, ext, writer in (("json", ".json", lambda p: write_json(p, results, env, settings)),
                              ("csv", ".csv", lambda p: write_csv(p, results, env))):
        target = resolve_output(getattr(args, kind), env, args.mode, args.precision, jit, ext)
        if target:
            writer(target)
            print(f"wrote {target}")
    if args.plot:
        target = resolve_output(args.plot, env, args.mode, args.precision, jit, ".png")
        plot(target, results, title=f"{result_stem(env, args.mode, args.precision, jit)}")
        print(f"wrote {target}")
    failed = [r for r in results if r.error and r.source.startswith("kzoo")]
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(cli_main())
