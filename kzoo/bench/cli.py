"""``kzoo bench``: parse the command line, run the sweep, print the table and write the files."""

from __future__ import annotations

import argparse
import sys
import time

from kzoo.bench.candidate import MODES, PRECISIONS
from kzoo.bench.environment import (
    ALLOCATORS,
    TF_BFC_VARIABLE,
    default_jit,
    environment,
    set_threads,
    use_allocator,
)
from kzoo.bench.report import (
    format_table,
    plot,
    resolve_output,
    result_stem,
    write_csv,
    write_json,
)
from kzoo.bench.detection_candidates import is_detector
from kzoo.bench.report import ratios
from kzoo.bench.source_table import BASELINES, DETECTION_SOURCES, ENGINE_SOURCES, SOURCES
from kzoo.bench.sweep import QUICK_BATCH, QUICK_MODELS, run_benchmarks


def _canonical(name: str) -> str:
    """kzoo's canonical name of the model ``name`` designates; raises ``UnknownModel``."""
    from kzoo import index

    return index.get(name).name


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
    p.add_argument("models", nargs="*", help=f"kzoo model names (default: {' '.join(QUICK_MODELS)}); detectors "
                   "(ssd_inception_v2_coco, faster_rcnn_resnet50_coco, rfcn_resnet101_coco) run the detection "
                   "workload: the detector whole against itself without post-processing, interleaved")
    p.add_argument("--batch-size", "-b", type=int, nargs="+", default=None,
                   help=f"one or more batch sizes (default {QUICK_BATCH})")
    p.add_argument("--precision", choices=PRECISIONS, default="float32")
    p.add_argument("--mode", choices=MODES, default="infer")
    p.add_argument("--jit", dest="jit", action="store_true", default=None,
                   help="XLA / jax.jit / torch.compile on (default: on for GPUs and JAX)")
    p.add_argument("--no-jit", dest="jit", action="store_false")
    p.add_argument("--image-size", type=int, default=None, help="square input size (default: the model's own)")
    p.add_argument("--compare", default="keras",
                   help=f"comma-separated baselines: {','.join(BASELINES)} (or 'none')")
    p.add_argument("--engine", default="keras",
                   help=f"comma-separated engines that run kzoo's model: {','.join(ENGINE_SOURCES)} (default keras). "
                        "An engine other than keras times the model exported by kzoo.export (into a temporary "
                        "folder, parity-checked) in its own runtime, with --threads intra-op threads")
    p.add_argument("--optimize", action="store_true",
                   help="also measure kzoo.optimize_for_inference(model) on each engine (inference; "
                        "exported without the layers a format cannot hold)")
    p.add_argument("--repeats", type=int, default=3, help="timed blocks per candidate (default 3)")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds per timed block (default 1.0)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up steps after the compile call")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for the backend (TF intra-op / torch); default: the backend's")
    p.add_argument("--allocator", choices=ALLOCATORS, default="bfc",
                   help="TensorFlow CPU allocator: bfc, a reusing pool (default), or system malloc, which "
                        f"maps and zeroes fresh pages every step; {TF_BFC_VARIABLE} in the environment wins")
    p.add_argument("--json", nargs="?", const=".", default=None, metavar="OUT",
                   help="write results as JSON (a directory gets an environment-encoded file name)")
    p.add_argument("--csv", nargs="?", const=".", default=None, metavar="OUT", help="write results as CSV")
    p.add_argument("--plot", default=None, metavar="OUT.png", help="plot images/s vs batch size")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines on stderr")
    return p


def cli_main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    use_allocator(args.allocator)  # before TensorFlow allocates anything
    quick = not args.models and args.batch_size is None
    models = args.models or list(QUICK_MODELS)
    batch_sizes = args.batch_size or [QUICK_BATCH]
    compare = [] if args.compare.strip().lower() in ("", "none") else [
        c.strip() for c in args.compare.split(",") if c.strip()]
    for c in compare:
        if c not in BASELINES:
            print(f"kzoo bench: --compare takes {' and/or '.join(BASELINES)}, got {c!r}", file=sys.stderr)
            return 2
    engines = [e.strip().lower() for e in args.engine.split(",") if e.strip()]
    for engine in engines:
        if engine not in ENGINE_SOURCES:
            print(f"kzoo bench: --engine takes {','.join(ENGINE_SOURCES)}, got {engine!r}", file=sys.stderr)
            return 2
        problem = SOURCES[ENGINE_SOURCES[engine][0]].problem()
        if problem:  # asked for by name: an error, not a skipped row
            print(f"kzoo bench: the {engine} engine cannot run: {problem}", file=sys.stderr)
            return 2
    # The quick check shows what kzoo offers for speed, so it includes the optimised model.
    sources = [source for engine in dict.fromkeys(engines)
               for source in ENGINE_SOURCES[engine][:2 if args.optimize or quick else 1]] + compare
    # Asked before Keras brings in TensorFlow: timm (and torch, triton) must be imported first
    # (see timm_import_problem).
    for c in compare:
        if not SOURCES[c].available():
            print(f"kzoo bench: the {c} baseline is skipped: {SOURCES[c].problem() or f'{c} does not import'}",
                  file=sys.stderr)
            sources.remove(c)
    from kzoo.errors import UnknownModel

    try:
        models = [_canonical(m) for m in models]
    except UnknownModel as exc:
        print(f"kzoo bench: {exc}", file=sys.stderr)
        return 2
    detectors = [m for m in models if is_detector(m)]
    if detectors:  # the detection workload: each detector whole against itself without post-processing
        if len(detectors) != len(models) or args.mode != "infer":
            print("kzoo bench: detectors are measured on their own, in --mode infer (the detection workload); "
                  f"got {', '.join(models)} in --mode {args.mode}", file=sys.stderr)
            return 2
        sources = list(DETECTION_SOURCES)
    set_threads(args.threads, torch_too=any(SOURCES[s].framework == "torch" for s in sources))
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
        min_time=args.min_time, log=log, threads=args.threads,
    )
    allocator = f" | {env['tf_cpu_allocator']} allocator" if "tf_cpu_allocator" in env else ""
    threads = f" | {args.threads} thread(s)" if args.threads else ""
    print(f"# {env['backend']} on {env['device']} | keras {env['keras']} | "
          f"{args.mode} {args.precision} {'jit' if jit else 'no-jit'}{allocator}{threads} | "
          f"{args.repeats} x >= {args.min_time:g}s blocks, interleaved | {time.perf_counter() - t0:.0f}s total")
    print(format_table(results))
    for ratio in ratios(results):
        if ratio.source == DETECTION_SOURCES[0] and ratio.images_per_s_ratio:
            print(f"{ratio.model} batch {ratio.batch_size}: post-processing {1 - ratio.images_per_s_ratio:.1%} of "
                  f"a step (1 - x {ratio.baseline}; CPU time: {1 - (ratio.cpu_time_ratio or 1):.1%})")
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
    failed = [r for r in results if r.error and not SOURCES[r.source].baseline]
    return 1 if failed else 0
