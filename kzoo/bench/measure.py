"""Timing prepared steps: the compile call with OOM backoff, interleaved timed blocks, peak memory.

A step is a zero-argument callable doing one synchronised step on a device-resident batch.
"""

from __future__ import annotations

import contextlib
import gc
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kzoo.bench.environment import device_peak, keras_backend
from kzoo.bench.results import BenchResult


def is_out_of_memory(exc: BaseException) -> bool:
    """True for the out-of-memory errors of every backend (so the batch can be halved)."""
    if isinstance(exc, MemoryError):
        return True
    if type(exc).__name__ in ("ResourceExhaustedError", "OutOfMemoryError"):
        return True
    text = str(exc)
    lowered = text.lower()
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in lowered or "can't allocate memory" in lowered


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
        except Exception as exc:  # classified just below
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
    """Time prepared candidates block by block: A B C A B C ... (see the package docstring).

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
    backend = framework or keras_backend()
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
    backend = framework or keras_backend()
    with contextlib.suppress(Exception):
        if backend == "tensorflow":
            import tensorflow as tf

            if tf.config.list_physical_devices("GPU"):
                tf.config.experimental.reset_memory_stats("GPU:0")
        elif backend == "torch":
            import torch

            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
