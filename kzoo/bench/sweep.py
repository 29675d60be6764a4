"""The sweep: every model x batch size, the candidates of each point prepared and timed interleaved."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable

from kzoo.bench.candidate import MODES, PRECISIONS
from kzoo.bench.environment import default_jit, device_name, keras_backend
from kzoo.bench.measure import measure_interleaved, peak_memory_bytes, reset_peak_memory
from kzoo.bench.results import BenchResult
from kzoo.bench.source_table import SOURCES, build_model

# `kzoo bench` with no arguments: a ~1 minute check of what kzoo offers for speed.
QUICK_MODELS = ("resnet50", "mobilenetv2")
QUICK_BATCH = 8


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"


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
    threads: int | None = None,
) -> list[BenchResult]:
    """Measure every model x batch size, each source interleaved with the others.

    ``build(name, source, image_size=, precision=)`` returns a Keras model (default
    :func:`build_model`); it is how tests inject a tiny model. ``kzoo-opt`` is built once per batch
    size, with ``batch_size=`` too, because the optimizer tunes its Winograd tiles to the batch.
    ``timm`` runs only when torch and timm are importable (it is skipped with a note otherwise).
    An engine source (``onnxruntime``, ``openvino``, ``litert``, ``tensorflow``, and their ``-opt``) exports
    kzoo's model once per model and runs it in its runtime with ``threads`` intra-op threads (None: the
    runtime's default).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    models, batch_sizes, sources = list(models), [int(b) for b in batch_sizes], list(sources)
    for source in sources:
        if source not in SOURCES:
            raise ValueError(f"unknown source {source!r}; expected one of {tuple(SOURCES)}")
    if mode == "train":
        sources = [s for s in sources if not SOURCES[s].inference_only]
    jit = default_jit() if jit is None else bool(jit)
    build = build or build_model
    log = log or (lambda msg: None)
    backend, device = keras_backend(), device_name()
    results: list[BenchResult] = []
    total = len(models) * len(batch_sizes)
    done = 0
    for name in models:
        # New candidates per model, so the previous model's memory goes with them.
        candidates = [SOURCES[source](mode=mode, precision=precision, jit=jit, image_size=image_size,
                                      build=build, log=log, threads=threads) for source in sources]
        for candidate in candidates:
            candidate.start_model(name)
        # timm gets the Keras models' input size (timm's own default may differ, e.g. EfficientNet-B3)
        keras_size = next((size for size in (c.input_size() for c in candidates) if size is not None), None)
        for batch in batch_sizes:
            for candidate in candidates:
                candidate.start_batch(name, batch)
            done += 1
            log(f"[{done}/{total}] {name} {mode} batch {batch} {precision} "
                f"{'jit' if jit else 'no-jit'}: {', '.join(sources)}")
            timed = []
            for candidate in candidates:
                res = BenchResult(name, candidate.name, mode, precision, jit, batch, batch,
                                  backend=candidate.framework or backend, device=device)
                prepared = None
                try:
                    reset_peak_memory(candidate.framework)
                    prepared = candidate.prepare(name, batch, res, shared_size=image_size or keras_size)
                except Exception as exc:  # noqa: BLE001 - one failing candidate must not end the run
                    res.error = _error_text(exc)
                    log(f"  {candidate.name}: {res.error}")
                timed.append((res, prepared))
            measure_interleaved(timed, warmup=warmup, repeats=repeats, min_time=min_time, log=log)
            for candidate, (res, prepared) in zip(candidates, timed):
                if prepared is not None:
                    res.peak_memory_bytes = peak_memory_bytes(candidate.framework)
            results.extend(res for res, _ in timed)
            del timed
            gc.collect()
        del candidates
        gc.collect()
    return results
