"""The measuring core behind ``kzoo bench`` and ``benchmarks/``: model throughput you can trust.

Method (the usual rules of timing accelerated code: JAX's asynchronous dispatch docs, MLPerf's inference rules):

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

Engines (``--engine onnxruntime,openvino,litert,tensorflow``): kzoo's model exported by ``kzoo.export`` into
a temporary folder (parity-checked against the Keras model) and timed in its own runtime, with its own
intra-op thread setting (``--threads``), interleaved with the Keras candidates; ``--optimize`` adds the
export of ``optimize_for_inference``'s graph where the format holds it.

Modules: ``environment`` (device, peaks, threads, allocator), ``flops``, ``candidate`` (the interface
of a comparison source) implemented by ``keras_candidates``, ``engine_candidates`` and ``timm_candidate``
and registered in ``source_table``; ``measure`` (OOM backoff, interleaved timing), ``sweep``, ``report``
and ``cli``.
"""

from kzoo.bench.cli import cli_main
from kzoo.bench.environment import (
    default_jit,
    device_name,
    device_peak,
    tf_cpu_allocator,
    use_allocator,
)
from kzoo.bench.flops import count_flops, count_macs, count_torch_macs
from kzoo.bench.keras_candidates import dtype_policy, keras_application, make_keras_step
from kzoo.bench.measure import is_out_of_memory, prepare_with_backoff
from kzoo.bench.report import format_table, ratios, resolve_output, result_stem
from kzoo.bench.source_table import build_model
from kzoo.bench.sweep import run_benchmarks
from kzoo.bench.timm_candidate import (
    make_timm_step,
    timm_available,
    timm_import_problem,
)

__all__ = [
    "build_model", "cli_main", "count_flops", "count_macs", "count_torch_macs", "default_jit", "device_name",
    "device_peak", "dtype_policy", "format_table", "is_out_of_memory", "keras_application", "make_keras_step",
    "make_timm_step", "prepare_with_backoff", "ratios", "resolve_output", "result_stem", "run_benchmarks",
    "tf_cpu_allocator", "timm_available", "timm_import_problem", "use_allocator",
]
