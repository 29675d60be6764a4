"""The model index (kzoo/index.py) is the one place names resolve, it is importable without Keras, and each
row says what its family module really builds. Also: the package's shape (explicit ``__all__``, no import
cycle, no module over 600 lines) and the ``kzoo`` command's quiet, Keras-free listing."""

from __future__ import annotations

import ast
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import kzoo
from kzoo import index

PACKAGE = Path(kzoo.__file__).parent
ROWS = sorted(index.MODELS.values(), key=lambda row: row.name)


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


# ----------------------------------------------------------------------------- Keras-free name resolution

def test_names_resolve_without_keras_in_a_fresh_process():
    code = (
        "import sys, json\n"
        "import kzoo\n"
        "from kzoo import registry, index, models\n"
        "from kzoo.cli import main\n"
        "main(['list'])\n"
        "ids = [e.id for e in registry.list_weights('efficientnet_b0')]\n"
        "print(json.dumps({'ids': ids, 'aliased': index.normalise('EfficientNet-B0'),\n"
        "                  'models': models.list_models('efficientnet*')[:2],\n"
        "                  'heavy': sorted(m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules)}))\n"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    *listing, summary = result.stdout.strip().splitlines()
    facts = json.loads(summary)
    assert listing == index.names()
    assert facts["ids"] == ["efficientnetb0.imagenet", "efficientnetb0.imagenet_notop"]
    assert facts["aliased"] == "efficientnetb0"
    assert facts["models"] == ["efficientnetb0", "efficientnetb1"]
    assert facts["heavy"] == []


def test_kzoo_info_on_an_alias_lists_its_weights_and_where_its_parts_live():
    from kzoo.cli import main

    result = _run("from kzoo.cli import main; raise SystemExit(main(['info', 'efficientnet_b0']))")
    assert result.returncode == 0, result.stderr
    assert "efficientnetb0.imagenet\n" in result.stdout
    assert f"{PACKAGE / 'architectures' / 'efficientnet.py'}  (EfficientNetB0)" in result.stdout
    slim = _run("from kzoo.cli import main; raise SystemExit(main(['info', 'vgg_16']))")
    assert f"{PACKAGE / 'convert' / 'slim_vgg.py'}" in slim.stdout
    assert "vgg_16.tione" in slim.stdout
    assert main(["info", "no_such_model_xyz"]) == 1


def test_star_import_and_explicit_all():
    result = _run("import sys, kzoo\n"
                  "assert isinstance(kzoo.__all__, list) and 'ResNet50' in kzoo.__all__\n"
                  "assert 'keras' not in sys.modules, 'reading __all__ imported Keras'\n"
                  "ns = {}\n"
                  "exec('from kzoo import *', ns)\n"
                  "assert ns['ResNet50'].__name__ == 'ResNet50' and callable(ns['create_model'])\n"
                  "assert ns['resnet_v2'].preprocess_input is not None\n"
                  "print(len(kzoo.__all__))")
    assert result.returncode == 0, result.stderr
    public = {row.builder for row in ROWS if row.public}
    assert public <= set(kzoo.__all__)
    with pytest.raises(AttributeError):
        kzoo.NoSuchBuilder  # noqa: B018  (an unknown name imports no family module)


def test_one_normaliser_for_registry_converter_and_models():
    from kzoo import convert, models, registry

    for alias, canonical in (("EfficientNet_B0", "efficientnetb0"), ("googlenet", "inception_v1"),
                             ("efficientnetv2-s", "efficientnetv2s"), ("nasnet_a_mobile", "nasnet_mobile")):
        assert index.normalise(alias) == canonical
        assert registry._canonical_model(alias) == canonical
        assert convert._canonical(alias) == canonical
        assert models.get_model_spec(alias).name == canonical
    with pytest.raises(kzoo.errors.UnknownModel, match="kzoo list"):
        index.get("resnet5O")


# ----------------------------------------------------------------------------- each row against its module

@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.name)
def test_row_points_at_a_builder_that_accepts_its_arguments(row):
    from kzoo.models import get_model_spec, load_builder

    builder = load_builder(row)
    assert callable(builder) and builder.__name__ == row.builder
    parameters = inspect.signature(builder).parameters
    assert set(row.kwargs) <= set(parameters), f"{row.name}: builder takes no {set(row.kwargs) - set(parameters)}"
    assert row.builder_path.is_file() and row.builder_path.stem == builder.__module__.rsplit(".", 1)[-1]
    spec = get_model_spec(row.name)
    default = row.weights_default or parameters["weights"].default
    assert spec.default_kwargs.get("weights", parameters["weights"].default) == default
    helpers = kzoo.preprocessing.for_model(row.name)
    assert callable(helpers["preprocess_input"])


@pytest.mark.parametrize("row", [r for r in ROWS if r.rule], ids=lambda row: row.name)
def test_conversion_rule_registers_the_row(row):
    from kzoo import convert

    assert row.rule_path.is_file()
    assert row.name in convert.supported_models()
    assert convert._family(row.name).rules.__module__ == f"kzoo.convert.{row.rule}"


def test_rows_agree_with_the_registry():
    """Two sources of data about the same models: the registry's entries (from Keras' and TI-ONE's
    documents) and the index. A default tag must exist, and Keras' files were made at the builder's default
    size. (Checkpoints need not be: TF-slim's resnet_v2 weights were trained at 299 on a 224 default.)"""
    from kzoo import registry

    for row in ROWS:
        entries = registry.list_weights(row.name)
        if row.weights_default:
            assert any(e.tag == row.weights_default for e in entries), row.name
        for entry in entries:
            if entry.tag == "imagenet" and entry.input_size and entry.model not in {"mobilenet", "mobilenetv2"}:
                assert entry.input_size == row.input_size, (entry.id, entry.input_size, row.input_size)
    # Weights without a kzoo builder are those of architectures Keras 3 dropped (RegNet, ResNet-RS, ResNeXt).
    orphans = {e.id: e.available_in for e in registry.list_weights(include_superseded=True)
               if e.model not in index.MODELS}
    assert orphans and all("keras3" not in where for where in orphans.values()), orphans


def _default_size_params():
    seen = set()
    for row in ROWS:
        cheap = row.module not in seen and row.input_size <= 300
        seen.add(row.module)
        yield pytest.param(row, marks=[] if cheap else [pytest.mark.sweep], id=row.name)


@pytest.mark.parametrize("row", list(_default_size_params()))
def test_default_input_size_is_what_the_builder_makes(row):
    """With its head and no input shape, a builder picks its default size: the index must say the same.
    MobileNetV3 (as in Keras) leaves the size open even with its head: the registry check covers its 224."""
    import keras

    keras.backend.clear_session()
    model = kzoo.create_model(row.name, weights=None)
    if row.kind == "text":  # token ids of any length up to input_size (the position table's rows)
        assert [tuple(t.shape) for t in model.inputs] == [(None, None)] * 3
        assert tuple(model.get_layer("position_embedding").weights[0].shape)[0] == row.input_size
        return
    size = None if row.family == "mobilenet_v3" else row.input_size
    assert tuple(model.inputs[0].shape[1:]) == (size, size, 3)


@pytest.mark.parametrize("name", ["resnet152", "resnet_v1_101", "vgg19", "vgg_16", "densenet169", "convnextsmall"])
def test_stage_tables_have_one_home(name):
    """The builder reads its stage table from the index row: count the blocks it built."""
    import keras

    row = index.get(name)
    keras.backend.clear_session()
    model = kzoo.create_model(name, weights=None, include_top=False, input_shape=(64, 64, 3))
    layer_names = [layer.name for layer in model.layers]
    if row.family == "vgg":
        built = [sum(f"block{b}_conv{i}" in layer_names for i in range(1, 9)) for b in range(1, 6)]
    elif row.family == "resnet":
        built = [sum(n.endswith("_out") and n.startswith(f"conv{s}_block") for n in layer_names) for s in (2, 3, 4, 5)]
    elif row.family == "resnet_v1":
        built = [sum(n == f"block{b}_unit{u}_out" for u in range(1, 40) for n in layer_names) for b in (1, 2, 3, 4)]
    elif row.family == "densenet":
        built = [sum(n.endswith("_concat") and n.startswith(f"conv{s}_block") for n in layer_names)
                 for s in (2, 3, 4, 5)]
    else:  # convnext: one depthwise conv per block
        built = [sum(n.startswith(f"{model.name}_stage_{s}_block_") and n.endswith("_depthwise_conv")
                     for n in layer_names) for s in range(4)]
    assert tuple(built) == row.stages


# ----------------------------------------------------------------------------- the package's shape

def _kzoo_imports(path: Path) -> set:
    """Module-level ``kzoo.*`` imports of one file (function-level imports are lazy by design)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kzoo"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("kzoo"))
    return found


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_cycle_and_no_module_over_600_lines():
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(f): f for f in files}
    long = {str(f.relative_to(PACKAGE)): n for f in files if (n := len(f.read_text().splitlines())) > 600}
    assert not long, f"modules over 600 lines: {long}"
    graph = {name: {m for m in _kzoo_imports(path) if m in modules and m != name} for name, path in modules.items()}

    def parents(name):  # importing a.b.c runs a/__init__ and a/b/__init__ first
        return {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}

    state = {}

    def visit(node, trail):
        if state.get(node) == "done":
            return
        if state.get(node) == "open":
            cycle = trail[trail.index(node):] + [node]
            raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
        state[node] = "open"
        for target in sorted(graph[node] - parents(node)):
            visit(target, trail + [node])
        state[node] = "done"

    for name in sorted(graph):
        visit(name, [])


def test_native_log_lines_are_filtered_from_the_command():
    """TensorFlow's C++ lines (absl format) are dropped from the console script's stderr; kzoo's stay."""
    code = ("import os, sys\n"
            "from kzoo._native_logs import filter_stderr\n"
            "filter_stderr()\n"
            "import tensorflow as tf\n"
            "tf.constant([1.0]) + 1.0\n"
            "os.write(2, b'I0000 00:00:1796134849.093957   12253 port.cc:153] oneDNN custom operations\\n')\n"
            "os.write(2, b'I0000 00:00:1796137895.983577   10075 cpu_feature_guard.cc:227] This TensorFlow binary\\n'\n"
            "            b'To enable the following instructions: AVX2 AVX512F FMA, in other operations\\n')\n"
            "os.write(2, b'W0000 00:00:1796137895.983577   10075 some_op.cc:12] a native warning\\n')\n"
            "print('built resnet50 (kzoo) in 2.0s', file=sys.stderr, flush=True)\n"
            "print('kzoo: error: a message of ours', file=sys.stderr)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "KZOO_VERBOSE")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines() == ["built resnet50 (kzoo) in 2.0s", "kzoo: error: a message of ours"]
    verbose = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                             env={**env, "KZOO_VERBOSE": "1"})
    assert "I0000 00:00:1796134849.093957" in verbose.stderr  # the filter is what removed it
