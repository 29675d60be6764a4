"""Reading results: kzoo / baseline ratios, the printed table, JSON, CSV, the plot, and their file names."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import statistics

from kzoo.bench.results import BenchResult, Ratio
from kzoo.bench.source_table import BASELINES, DETECTION_BASELINES, OURS, SOURCES


def shown_baselines(results: list[BenchResult]) -> tuple:
    """The ratio columns: ``--compare``'s baselines, and the detection workload's where it ran."""
    return BASELINES + tuple(b for b in DETECTION_BASELINES if any(r.source == b for r in results))


def ratios(results: list[BenchResult], baselines=None) -> list[Ratio]:
    """kzoo and kzoo-opt (or a detector) against each baseline with the same model/mode/precision/jit/batch."""
    baselines = shown_baselines(results) if baselines is None else baselines
    out = []
    key = lambda r: (r.model, r.mode, r.precision, r.jit, r.requested_batch_size)
    by_key = {}
    for r in results:
        by_key.setdefault(key(r), {})[r.source] = r
    for group in by_key.values():
        for source in OURS:
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


def _ratio_map(ratio_list: list[Ratio]) -> dict:
    return {(r.model, r.source, r.mode, r.precision, r.jit, r.batch_size, r.baseline): r for r in ratio_list}


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
    rmap = _ratio_map(ratios(results) if ratio_list is None else ratio_list)
    headers = ["model", "source", "mode", "precision", "jit", "batch", "img/s", "img/s min-max",
               "ms/batch", "cpu ms", "compile s", "GFLOP/img", "%peak"]
    baselines = shown_baselines(results)
    headers += [column for base in baselines for column in (f"x {base}", f"x {base} cpu")]
    rows = []
    for r in results:
        if r.error:
            rows.append([r.model, r.source, r.mode, r.precision, "jit" if r.jit else "-",
                         str(r.requested_batch_size), "error: " + r.error[:60]] + [""] * (len(headers) - 7))
            continue
        key = (r.model, r.source, r.mode, r.precision, r.jit, r.requested_batch_size)
        batch = str(r.batch_size) + ("" if r.batch_size == r.requested_batch_size else f" (<{r.requested_batch_size})")
        row = [
            r.model, r.source, r.mode, r.precision, "jit" if r.jit else "-", batch,
            _fmt(r.images_per_s), f"{_fmt(r.images_per_s_min)}-{_fmt(r.images_per_s_max)}",
            _fmt(r.ms_per_batch), _fmt(r.cpu_ms_per_batch, ".0f"), _fmt(r.compile_s, ".2f"),
            _fmt(r.gflops_per_image, ".2f"), _fmt(r.pct_of_peak, ".1f"),
        ]
        for base in baselines:
            versus = rmap.get(key + (base,))
            row += [_ratio_cell(versus), _fmt(versus.cpu_time_ratio, ".3f") if versus else ""]
        rows.append(row)
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

    rmap = _ratio_map(ratios(results))
    fields = list(BenchResult.__dataclass_fields__)
    fields.remove("step_ms")
    baselines = shown_baselines(results)
    extra = [column for base in baselines for column in (f"ratio_vs_{base}", f"cpu_ratio_vs_{base}")]
    extra += ["cpu", "keras_version", "tf_cpu_allocator"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields + extra)
        writer.writeheader()
        for r in results:
            row = r.row()
            key = (r.model, r.source, r.mode, r.precision, r.jit, r.requested_batch_size)
            for base in baselines:
                versus = rmap.get(key + (base,))
                row[f"ratio_vs_{base}"] = versus.images_per_s_ratio if versus else None
                row[f"cpu_ratio_vs_{base}"] = versus.cpu_time_ratio if versus else None
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
    for (model, source), points in sorted(series.items()):
        points.sort()
        style = SOURCES[source].plot_style if source in SOURCES else "-"
        ax.plot([p[0] for p in points], [p[1] for p in points], style, label=f"{model} ({source})")
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
