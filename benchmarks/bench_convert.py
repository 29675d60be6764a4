"""Checkpoint -> h5 conversion speed for a resnet_v2_50-sized checkpoint (25.6 M floats, ~100 MB), and for
PaddlePaddle's ResNet50 (v1.5) as the 2019 per-variable folder and as a .pdparams.

Reports MB/s (checkpoint bytes read per second) and the ratio to the I/O floor: reading the
checkpoint's bytes plus writing as many bytes as the h5 has, with plain file I/O. Goal: within 2x.

The Keras model the converter plans against is built once in warm-up (``_plan`` caches it per
process): it costs the same for any checkpoint size and is not I/O. The cold figure, with the
model build, is in ``extra_info["cold_seconds"]``.

    python -m pytest benchmarks/bench_convert.py --benchmark-only -q -s
    python -m pytest benchmarks/bench_convert.py --benchmark-only -q -s -k paddle    # the Paddle sources only
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

pytest.importorskip("tensorflow")

from _ckpt_helpers import v2_files, write_checkpoint  # noqa: E402

from kzoo.convert import _family, _plan, convert_checkpoint  # noqa: E402

MODEL = "resnet_v2_50"


def _checkpoint_arrays(model_name: str) -> dict:
    """Random arrays under the slim names and shapes the rules expect (a 1001-class head)."""
    plan, _ = _plan(model_name, 1000, True, True, 1001, ())
    rng = np.random.default_rng(0)
    arrays = {}
    for _, slots in plan:
        for slot in slots:
            shape = list(slot.shape)
            if slot.rule.class_axis is not None:
                shape[-1] += 1  # the background class
                if len(shape) == 2:  # slim's logits are a 1x1 conv
                    shape = [1, 1] + shape
            arrays[slot.rule.variable] = rng.standard_normal(shape, dtype=np.float32)
    return arrays


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_convert")
    arrays = _checkpoint_arrays(MODEL)
    return {
        "V2": Path(write_checkpoint(root / "v2" / "model.ckpt", arrays, "V2")),
        "V1": Path(write_checkpoint(root / "v1" / f"{MODEL}.ckpt", arrays, "V1")),
        "out": root / "out.h5",
    }


def _floor_seconds(files, out_bytes: int, out_path: Path, repeats: int = 5) -> float:
    """Best of ``repeats``: read every checkpoint file, write ``out_bytes`` to a file."""
    payload = np.random.default_rng(1).bytes(out_bytes)
    best = float("inf")
    for _ in range(repeats):
        out_path.unlink(missing_ok=True)  # a fresh file each time, as for the conversion (see below)
        start = time.perf_counter()
        for f in files:
            with open(f, "rb") as handle:
                while handle.read(1 << 24):
                    pass
        with open(out_path, "wb") as handle:
            handle.write(payload)
        best = min(best, time.perf_counter() - start)
    os.remove(out_path)
    return best


def _component_seconds(src, out_path: Path, repeats: int = 3) -> tuple[float, float]:
    """Best of ``repeats`` for the two passes no converter built on TF's reader and h5py can skip:
    ``get_tensor`` of every variable, and an h5py write of those arrays (one dataset each, no names)."""
    from kzoo.formats.tf_checkpoint import open_checkpoint

    read_best = write_best = float("inf")
    for _ in range(repeats):
        with open_checkpoint(src) as ckpt:
            start = time.perf_counter()
            arrays = [ckpt.read(name) for name in ckpt.shapes()]
            read_best = min(read_best, time.perf_counter() - start)
        out_path.unlink(missing_ok=True)
        start = time.perf_counter()
        with h5py.File(out_path, "w") as f:
            for i, array in enumerate(arrays):
                f.create_dataset(str(i), data=array)
        write_best = min(write_best, time.perf_counter() - start)
    out_path.unlink(missing_ok=True)
    return read_best, write_best


@pytest.mark.parametrize("version", ["V2", "V1"])
def test_convert_speed(benchmark, checkpoints, version):
    src, out = checkpoints[version], checkpoints["out"]
    _plan.cache_clear()
    start = time.perf_counter()
    report = convert_checkpoint(src, MODEL, out)  # cold: builds the Keras model once
    cold = time.perf_counter() - start
    files = v2_files(src) if version == "V2" else [src]
    read_bytes = sum(f.stat().st_size for f in files if not f.name == "checkpoint")
    floor = _floor_seconds(files, report.bytes_written, out.with_suffix(".floor"))
    tf_read, h5_write = _component_seconds(src, out.with_suffix(".parts"))

    # Each round writes a new file: unlinking the previous 100 MB output (~50 ms) is not conversion work.
    report = benchmark.pedantic(convert_checkpoint, args=(src, MODEL, out), rounds=5, warmup_rounds=1,
                                setup=lambda: out.unlink(missing_ok=True))
    seconds = benchmark.stats.stats.min
    info = {
        "checkpoint_MB": round(read_bytes / 1e6, 1),
        "h5_MB": round(report.bytes_written / 1e6, 1),
        "MB_per_s": round(read_bytes / 1e6 / seconds, 1),
        "floor_seconds": round(floor, 4),
        "ratio_to_floor": round(seconds / floor, 2),
        "cold_seconds": round(cold, 2),
        # The two unavoidable passes alone, as multiples of the floor: the bound for this design.
        "tf_read_seconds": round(tf_read, 4),
        "h5_write_seconds": round(h5_write, 4),
        "passes_ratio_to_floor": round((tf_read + h5_write) / floor, 2),
        "family": _family(MODEL).name,
    }
    benchmark.extra_info.update(info)
    print(f"\n{MODEL} {version}: {info}")


# ---------------------------------------------------------------------------------------------
# PaddlePaddle: ResNet50 (v1.5) from the 2019 per-variable folder and from a .pdparams
# ---------------------------------------------------------------------------------------------

PADDLE_MODEL = "resnet50_v1_5"


@pytest.fixture(scope="module")
def paddle_sources(tmp_path_factory):
    """Random ResNet50 parameters under the 2019 names, as 267 LoDTensor files (kzoo's writer, byte-identical to
    Paddle's save op: tests/test_paddle.py) and as one .pdparams pickle (what ``paddle.save`` writes)."""
    import pickle

    from kzoo.formats.paddle import write_tensor

    plan, _ = _plan(PADDLE_MODEL, 1000, True, False, 1000, ())
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("bench_convert_paddle")
    folder = root / "ResNet50_pretrained"
    folder.mkdir()
    arrays = {}
    for _, slots in plan:
        for slot in slots:
            shape = slot.shape
            if len(shape) == 4:  # Keras HWIO -> Paddle OIHW
                shape = (shape[3], shape[2], shape[0], shape[1])
            arrays[slot.rule.variable] = rng.standard_normal(shape, dtype=np.float32)
            (folder / slot.rule.variable).write_bytes(write_tensor(arrays[slot.rule.variable]))
    pdparams = root / "ResNet50_pretrained.pdparams"
    pdparams.write_bytes(pickle.dumps(arrays, protocol=4))
    return {"folder": folder, "pdparams": pdparams, "out": root / "out.h5"}


@pytest.mark.parametrize("source", ["folder", "pdparams"])
def test_convert_paddle_speed(benchmark, paddle_sources, source):
    src, out = paddle_sources[source], paddle_sources["out"]
    _plan.cache_clear()
    start = time.perf_counter()
    report = convert_checkpoint(src, PADDLE_MODEL, out)  # cold: builds the Keras model once
    cold = time.perf_counter() - start
    files = sorted(src.iterdir()) if src.is_dir() else [src]
    read_bytes = sum(f.stat().st_size for f in files)
    floor = _floor_seconds(files, report.bytes_written, out.with_suffix(".floor"))
    report = benchmark.pedantic(convert_checkpoint, args=(src, PADDLE_MODEL, out), rounds=5, warmup_rounds=1,
                                setup=lambda: out.unlink(missing_ok=True))
    seconds = benchmark.stats.stats.min
    info = {"source_MB": round(read_bytes / 1e6, 1), "files": len(files), "h5_MB": round(report.bytes_written / 1e6, 1),
            "MB_per_s": round(read_bytes / 1e6 / seconds, 1), "floor_seconds": round(floor, 4),
            "ratio_to_floor": round(seconds / floor, 2), "cold_seconds": round(cold, 2),
            "family": _family(PADDLE_MODEL).name}
    benchmark.extra_info.update(info)
    print(f"\n{PADDLE_MODEL} {source}: {info}")
