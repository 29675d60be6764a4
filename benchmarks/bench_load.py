"""Weight loading: build + load for ResNet50, EfficientNetB0 and NASNetLarge -- kzoo's loader against
Keras' own ``model.load_weights`` against a raw h5py read of every dataset (the I/O floor), same run.

    python -m pytest benchmarks/bench_load.py --benchmark-only

The weight files are written once per session (random weights, legacy Keras-2 h5 layout as the
released files use) so nothing is downloaded. Rounds after the first read from the page cache: this
is the warm-load figure; the first-touch cost is in the warm-up round, excluded.
Groups: "<model> load" (load into a built model), "<model> build+load", and "resnet50 load by layout"
(today's file beside the fchollet v0.2 layout and its Theano variant, read by kzoo.formats.keras_legacy).
"""

from __future__ import annotations

import os

import h5py
import pytest

from kzoo import bench

MODELS = {"resnet50": 3, "efficientnetb0": 3, "nasnetlarge": 1}  # name -> rounds


def _kzoo_builder(name):
    from kzoo.errors import UnknownModel
    from kzoo.models import create_model, get_model_spec

    try:
        get_model_spec(name)
    except UnknownModel:
        return None
    return lambda: create_model(name, weights=None)


def _keras_builder(name):
    app = bench.keras_application(name)
    return lambda: app(weights=None)


@pytest.fixture(scope="module", params=list(MODELS))
def weights_file(request, tmp_path_factory):
    from kzoo.formats.keras_h5 import save_weights

    name = request.param
    model = _keras_builder(name)()
    path = tmp_path_factory.mktemp("weights") / f"{name}_random.h5"
    save_weights(model, path)
    size = path.stat().st_size
    del model
    return name, path, size


def _read_every_dataset(path):
    arrays = []

    def visit(_, obj):
        if isinstance(obj, h5py.Dataset):
            arrays.append(obj[()])

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return arrays


def _record(benchmark, size):
    benchmark.extra_info["file_MB"] = round(size / 1e6, 1)
    benchmark.extra_info["MB/s"] = round(size / benchmark.stats.stats.mean / 1e6, 1)


def test_raw_h5py_read(benchmark, weights_file):
    name, path, size = weights_file
    benchmark.group = f"{name} load"
    arrays = benchmark.pedantic(_read_every_dataset, args=(path,), rounds=MODELS[name], warmup_rounds=1)
    assert arrays
    _record(benchmark, size)


def test_kzoo_load(benchmark, weights_file):
    from kzoo.formats.keras_h5 import load_weights

    name, path, size = weights_file
    build = _kzoo_builder(name)
    if build is None:
        pytest.skip(f"kzoo has no {name} builder yet")
    model = build()
    benchmark.group = f"{name} load"
    report = benchmark.pedantic(load_weights, args=(model, path), rounds=MODELS[name], warmup_rounds=1)
    assert report.ok
    _record(benchmark, size)


def test_keras_load(benchmark, weights_file):
    name, path, size = weights_file
    model = _keras_builder(name)()
    benchmark.group = f"{name} load"
    benchmark.pedantic(model.load_weights, args=(str(path),), rounds=MODELS[name], warmup_rounds=1)
    _record(benchmark, size)


def test_kzoo_build_and_load(benchmark, weights_file):
    from kzoo.formats.keras_h5 import load_weights

    name, path, size = weights_file
    build = _kzoo_builder(name)
    if build is None:
        pytest.skip(f"kzoo has no {name} builder yet")
    benchmark.group = f"{name} build+load"
    benchmark.pedantic(lambda: load_weights(build(), path), rounds=MODELS[name], warmup_rounds=0)


def test_keras_build_and_load(benchmark, weights_file):
    name, path, size = weights_file
    build = _keras_builder(name)
    benchmark.group = f"{name} build+load"
    benchmark.pedantic(lambda: build().load_weights(str(path)), rounds=MODELS[name], warmup_rounds=0)


# --------------------------------------------------------------------------------------------- old layouts
# ResNet50 in today's layout beside the same architecture's v0.2 release layout (the legacy resnet50.py of
# keras-applications 1.0.8, Keras 1 names, read by the rename rule with the BatchNorm epsilon folded) and
# its Theano-ordered variant (kernels transposed and rotated too), all loaded by kzoo into one kzoo ResNet50.
#     python -m pytest benchmarks/bench_load.py --benchmark-only -k layouts

LAYOUT_ROUNDS = 5


@pytest.fixture(scope="module")
def resnet50_layouts(tmp_path_factory):
    import tf_keras
    from keras_applications import resnet50
    from test_legacy_keras import th_kernel, write_keras1

    from kzoo.formats.keras_h5 import save_weights

    folder = tmp_path_factory.mktemp("layouts")
    today = folder / "resnet50_today.h5"
    save_weights(_keras_builder("resnet50")(), today)
    kw = dict(backend=tf_keras.backend, layers=tf_keras.layers, models=tf_keras.models, utils=tf_keras.utils)
    old = resnet50.ResNet50(weights=None, include_top=True, **kw)
    layers = [(layer.name, type(layer).__name__, layer.get_weights()) for layer in old.layers]
    v02 = write_keras1(folder / "resnet50_v0.2_layout.h5", layers)
    th = write_keras1(folder / "resnet50_v0.2_th_layout.h5",
                      [(n, c, [th_kernel(v) if v.ndim == 4 else v for v in vals]) for n, c, vals in layers], suffix="")
    del old
    return {"today": str(today), "v0.2 (Keras 1, renamed, eps folded)": v02,
            "v0.2 th (+ kernels transposed, rotated)": th}


@pytest.mark.parametrize("layout", ["today", "v0.2 (Keras 1, renamed, eps folded)",
                                    "v0.2 th (+ kernels transposed, rotated)"])
def test_resnet50_layouts_kzoo_load(benchmark, resnet50_layouts, layout):
    from kzoo.formats.keras_h5 import load_weights

    path = resnet50_layouts[layout]
    model = _kzoo_builder("resnet50")()
    benchmark.group = "resnet50 load by layout"
    kwargs = {"dim_ordering": "th"} if "th" in layout.split() else {}
    report = benchmark.pedantic(load_weights, args=(model, path), kwargs=kwargs, rounds=LAYOUT_ROUNDS,
                                warmup_rounds=1)
    assert report.ok
    _record(benchmark, os.path.getsize(path))
