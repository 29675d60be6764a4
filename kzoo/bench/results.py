"""The records a sweep produces: one measured point, and one kzoo-against-baseline ratio."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


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
