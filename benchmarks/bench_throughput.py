"""Inference and training throughput through the same core as ``kzoo bench`` (pytest-benchmark view).

    python -m pytest benchmarks/bench_throughput.py --benchmark-only
    KZOO_BENCH_MODELS=resnet50,efficientnetb0 KZOO_BENCH_BATCH=16 python -m pytest benchmarks/bench_throughput.py --benchmark-only

Each benchmark is one synchronised step (``kzoo.bench.make_keras_step``) on a device-resident batch;
the compile call and warm-up rounds are excluded. Groups are (model, mode, batch): compare the sources
inside a group. pytest-benchmark runs the candidates one after the other, so on a shared machine the
ratio printed by ``kzoo bench`` (interleaved blocks, same run) is the one to quote; this suite gives
the pytest-benchmark statistics and history (``--benchmark-autosave``).

Environment: KZOO_BENCH_MODELS (default resnet50,mobilenetv2,efficientnetb0), KZOO_BENCH_BATCH (8),
KZOO_BENCH_ROUNDS (5), KZOO_BENCH_PRECISION (float32), KZOO_BENCH_JIT (backend default; 0/1).
"""

from __future__ import annotations

import os

import pytest

from kzoo import bench
from kzoo.bench.environment import keras_backend

MODELS = os.environ.get("KZOO_BENCH_MODELS", "resnet50,mobilenetv2,efficientnetb0").split(",")
BATCH = int(os.environ.get("KZOO_BENCH_BATCH", "8"))
ROUNDS = int(os.environ.get("KZOO_BENCH_ROUNDS", "5"))
PRECISION = os.environ.get("KZOO_BENCH_PRECISION", "float32")
_JIT = os.environ.get("KZOO_BENCH_JIT")
JIT = bench.default_jit() if _JIT is None else _JIT not in ("0", "false", "no")

_MODELS = {}


def _model(name, source):
    key = (name, source)
    if key not in _MODELS:
        _MODELS.clear()  # one architecture in memory at a time
        _MODELS[key] = bench.build_model(name, source, precision=PRECISION, batch_size=BATCH)
    return _MODELS[key]


def _run(benchmark, name, source, mode):
    model = _model(name, source)
    prepared = bench.prepare_with_backoff(lambda b: bench.make_keras_step(model, b, mode, JIT), BATCH)
    benchmark.group = f"{name} {mode} batch {BATCH} {PRECISION} {'jit' if JIT else 'no-jit'}"
    benchmark.pedantic(prepared.step, rounds=ROUNDS, iterations=1, warmup_rounds=2)
    mean = benchmark.stats.stats.mean
    gflops = bench.count_flops(model) / 1e9
    benchmark.extra_info.update(
        backend=keras_backend(), device=bench.device_name(), batch=prepared.batch_size,
        tf_cpu_allocator=bench.tf_cpu_allocator() if keras_backend() == "tensorflow" else None,
        compile_s=round(prepared.compile_s, 3), gflops_per_image=round(gflops, 3),
        images_per_s=round(prepared.batch_size / mean, 2),
    )


@pytest.mark.parametrize("source", ["kzoo", "kzoo-opt", "keras"])
@pytest.mark.parametrize("name", MODELS)
def test_inference(benchmark, name, source):
    _run(benchmark, name, source, "infer")


@pytest.mark.parametrize("source", ["kzoo", "keras"])
@pytest.mark.parametrize("name", MODELS)
def test_training(benchmark, name, source):
    _run(benchmark, name, source, "train")
