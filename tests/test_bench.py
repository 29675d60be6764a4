"""The measuring core on a tiny model: structure of the results, FLOP counting, OOM halving, CLI.

No timing assertions: speed is measured in benchmarks/, never asserted in unit tests.
"""

import csv
import json
import math
import os

import keras
import numpy as np
import pytest

from kzoo import bench
from kzoo.bench import environment, keras_candidates, sweep


def tiny_convnet(num_classes=10, size=8):
    """Hand-countable: every layer's multiply-adds are written next to it."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)  # 8*8 * 4 * 3*3*3 = 6912
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", name="dw")(x)  # 4*4 * 4 * 9 = 576
    x = keras.layers.SeparableConv2D(6, 3, padding="same", name="sep")(x)  # 4*4 * 4 * (9 + 6) = 960
    x = keras.layers.Conv2D(6, 1, groups=2, name="grouped")(x)  # 4*4 * 6 * 1 * 6/2 = 288
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="fc")(x)  # 6 * 10 = 60
    return keras.Model(inputs, outputs, name="tiny")


TINY_MACS = 6912 + 576 + 960 + 288 + 60


def test_count_macs_by_hand():
    model = tiny_convnet()
    assert bench.count_macs(model) == TINY_MACS
    assert bench.count_flops(model) == 2 * TINY_MACS


def test_count_macs_nested_and_transpose():
    inner = tiny_convnet()
    inputs = keras.Input((8, 8, 3))
    x = inner(inputs)
    x = keras.layers.Dense(3)(x)  # 10 * 3 = 30
    outer = keras.Model(inputs, x)
    assert bench.count_macs(outer) == TINY_MACS + 30

    t_in = keras.Input((4, 4, 2))
    t_out = keras.layers.Conv2DTranspose(5, 3, strides=2, padding="same")(t_in)  # 4*4 * 2 * 5 * 9 = 1440
    assert bench.count_macs(keras.Model(t_in, t_out)) == 1440


def test_count_macs_resnet50_matches_published():
    """Keras ResNet50 (v1) is ~3.86 GMACs at 224 px; the count must land there, not on v1.5's 4.1."""
    model = keras.applications.ResNet50(weights=None)
    assert bench.count_macs(model) / 1e9 == pytest.approx(3.86, abs=0.02)


def test_optimized_model_counts_the_same_function():
    """Folding and Winograd change how the 3x3 convs are computed, not the function's nominal MACs."""
    import kzoo
    from kzoo.winograd import WinogradConv2D

    model = kzoo.ResNet50(weights=None, input_shape=(64, 64, 3), include_top=False)
    fast = kzoo.optimize_for_inference(model, winograd=True, batch_size=8)
    assert any(isinstance(layer, WinogradConv2D) for layer in fast.layers)
    assert bench.count_macs(fast) == bench.count_macs(model)


class FakeOOM(Exception):
    pass


def test_is_out_of_memory_classification():
    class ResourceExhaustedError(Exception):
        pass

    assert bench.is_out_of_memory(MemoryError())
    assert bench.is_out_of_memory(ResourceExhaustedError("OOM when allocating tensor"))
    assert bench.is_out_of_memory(RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying"))
    assert bench.is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate"))
    assert not bench.is_out_of_memory(ValueError("bad shape"))


def test_prepare_halves_batch_on_oom():
    seen = []

    def make_step(batch):
        seen.append(batch)

        def step():
            if batch > 2:
                raise MemoryError(f"batch {batch} does not fit")

        return step

    prepared = bench.prepare_with_backoff(make_step, 8)
    assert prepared.batch_size == 2
    assert prepared.oom_retries == 2
    assert seen == [8, 4, 2]
    assert prepared.compile_s >= 0


def test_prepare_gives_up_at_batch_one_and_passes_other_errors():
    def always_oom(batch):
        raise MemoryError("nothing fits")

    with pytest.raises(MemoryError):
        bench.prepare_with_backoff(always_oom, 4)

    def broken(batch):
        raise ValueError("not a memory problem")

    with pytest.raises(ValueError):
        bench.prepare_with_backoff(broken, 4)


def _tiny_build(name, source, image_size=None, precision="float32"):
    with bench.dtype_policy(precision):
        return tiny_convnet()


def test_run_benchmarks_structure():
    results = bench.run_benchmarks(
        ["tiny"], [2, 4], sources=("kzoo", "keras"), warmup=1, repeats=2, min_time=0.01, build=_tiny_build
    )
    assert [(r.source, r.requested_batch_size) for r in results] == [
        ("kzoo", 2), ("keras", 2), ("kzoo", 4), ("keras", 4)]
    for r in results:
        assert r.error is None
        assert r.backend == keras.backend.backend()
        assert r.mode == "infer" and r.precision == "float32" and r.jit is False
        assert r.batch_size == r.requested_batch_size and r.oom_retries == 0
        assert r.image_size == (8, 8)
        assert r.repeats == 2 and r.steps >= 2 and len(r.step_ms) == r.steps
        assert len(r.block_images_per_s) == 2
        assert r.ms_per_batch_min <= r.ms_per_batch <= r.ms_per_batch_max
        assert r.images_per_s_min <= r.images_per_s_max and r.images_per_s > 0
        assert r.cpu_ms_per_batch >= 0 and r.compile_s > 0 and r.warmup_steps == 1
        assert r.gflops_per_image == pytest.approx(2 * TINY_MACS / 1e9)
        assert r.params == tiny_convnet().count_params()
        assert r.achieved_tflops > 0
    rs = bench.ratios(results)
    assert [(r.source, r.baseline, r.batch_size) for r in rs] == [("kzoo", "keras", 2), ("kzoo", "keras", 4)]
    for r in rs:
        assert r.images_per_s_ratio > 0 and r.cpu_time_ratio is not None
        assert r.pair_ratio_min <= r.images_per_s_ratio <= r.pair_ratio_max
    table = bench.format_table(results)
    assert "tiny" in table and "x keras" in table


def test_run_benchmarks_train_and_oom_injection(monkeypatch):
    real = bench.make_keras_step

    def flaky(model, batch, mode="infer", jit=False, seed=0):
        if batch > 2:
            raise MemoryError(f"injected OOM at batch {batch}")
        return real(model, batch, mode, jit, seed)

    monkeypatch.setattr(keras_candidates, "make_keras_step", flaky)
    (result,) = bench.run_benchmarks(
        ["tiny"], [8], mode="train", sources=("kzoo",), warmup=1, repeats=1, min_time=0.01, build=_tiny_build
    )
    assert result.error is None
    assert (result.requested_batch_size, result.batch_size, result.oom_retries) == (8, 2, 2)
    assert result.mode == "train" and result.images_per_s > 0


def test_build_errors_are_reported_not_raised():
    def build(name, source, **kw):
        if source == "keras":
            raise LookupError("no such keras model")
        return _tiny_build(name, source, **kw)

    results = bench.run_benchmarks(["tiny"], [2], sources=("kzoo", "keras"), warmup=1, repeats=1,
                                   min_time=0.01, build=build)
    assert results[0].error is None
    assert "LookupError" in results[1].error and results[1].images_per_s is None
    assert bench.ratios(results) == []
    assert "error" in bench.format_table(results)


def test_device_peaks_from_reference():
    tflops, basis = bench.device_peak("mixed_bfloat16", "NVIDIA H100 80GB HBM3")
    assert tflops == 989.4 and "BF16" in basis and "dense" in basis
    assert bench.device_peak("float32", "NVIDIA H200")[0] == 494.7
    assert bench.device_peak("mixed_float16", "NVIDIA A100-SXM4-80GB")[0] == 312.0
    assert bench.device_peak("mixed_bfloat16", "Some Other GPU") == (None, None)


def test_cpu_peak_counts_only_the_threads_used(monkeypatch):
    monkeypatch.setattr(environment, "_cpu_flags", lambda: {"fma", "avx2"})
    monkeypatch.setattr(environment, "_cpu_mhz", lambda: 2000.0)
    monkeypatch.setattr(environment.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(environment, "_compute_threads", None)
    assert bench.device_peak("float32", "CPU x")[0] == pytest.approx(4 * 2.0e9 * 32 / 1e12)
    monkeypatch.setattr(environment, "_compute_threads", 1)
    tflops, basis = bench.device_peak("float32", "CPU x")
    assert tflops == pytest.approx(2.0e9 * 32 / 1e12) and "1 cores" in basis


def test_keras_application_names():
    assert bench.keras_application("resnet50") is keras.applications.ResNet50
    assert bench.keras_application("efficientnetv2s") is keras.applications.EfficientNetV2S
    assert bench.keras_application("mobilenetv3small") is keras.applications.MobileNetV3Small
    assert bench.keras_application("resnet_v1_50") is None


def test_result_names_encode_environment(tmp_path):
    env = {"backend": "jax", "accelerator": "NVIDIA H100 80GB HBM3", "cpu": "x"}
    stem = bench.result_stem(env, "infer", "mixed_bfloat16", True)
    assert stem == "bench-infer-mixed_bfloat16-jax-jit-h100_80gb_hbm3"
    out = bench.resolve_output(str(tmp_path) + os.sep, env, "infer", "mixed_bfloat16", True, ".json")
    assert out == os.path.join(str(tmp_path), stem + ".json")
    assert bench.resolve_output(str(tmp_path / "mine.csv"), env, "infer", "float32", False, ".csv").endswith(
        "mine.csv")


def test_cli_writes_json_csv_plot(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TF_CPU_ALLOCATOR_USE_BFC", raising=False)  # cli_main sets it; undone after the test
    monkeypatch.setattr(sweep, "build_model", _tiny_build)
    outdir = str(tmp_path) + os.sep
    code = bench.cli_main([
        "resnet50", "--batch-size", "1", "2", "--repeats", "1", "--min-time", "0.01", "--warmup", "1",
        "--json", outdir, "--csv", str(tmp_path / "r.csv"), "--plot", str(tmp_path / "p.png"), "-q",
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert "resnet50" in printed and "x keras" in printed
    (json_file,) = [f for f in os.listdir(tmp_path) if f.endswith(".json")]
    assert json_file.startswith(f"bench-infer-float32-{keras.backend.backend()}-nojit-")
    payload = json.loads((tmp_path / json_file).read_text())
    assert set(payload) == {"environment", "settings", "results", "ratios"}
    assert payload["environment"]["backend"] == keras.backend.backend()
    assert len(payload["results"]) == 4 and len(payload["ratios"]) == 2
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert [r["source"] for r in rows] == ["kzoo", "keras", "kzoo", "keras"]
    assert rows[0]["ratio_vs_keras"] and not rows[1]["ratio_vs_keras"]
    if keras.backend.backend() == "tensorflow":  # the allocator TF really uses (here: chosen before this test)
        assert payload["environment"]["tf_cpu_allocator"] == bench.tf_cpu_allocator()
        assert {r["tf_cpu_allocator"] for r in rows} == {bench.tf_cpu_allocator()}
    assert (tmp_path / "p.png").stat().st_size > 1000


_ALLOCATOR_PROBE = """
import sys
from kzoo import bench
bench.use_allocator(sys.argv[1])
import tensorflow as tf
tf.ones((256, 256)).numpy()
print(bench.tf_cpu_allocator())
"""


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's CPU allocator")
@pytest.mark.parametrize("requested, user_value, onednn, expected", [
    ("bfc", None, None, "bfc"), ("bfc", "false", None, "system"),
    ("bfc", "false", "0", "system"), ("bfc", None, "0", "bfc")])  # without oneDNN, TF's statistics tell
def test_allocator_choice_reaches_tensorflow(requested, user_value, onednn, expected):
    """TF is asked which allocator it really uses; a value the user exported wins over the CLI default."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPU_ALLOCATOR_USE_BFC", "TF_ENABLE_ONEDNN_OPTS")}
    if onednn is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = onednn
    if user_value is not None:
        env["TF_CPU_ALLOCATOR_USE_BFC"] = user_value
    out = subprocess.run([sys.executable, "-c", _ALLOCATOR_PROBE, requested], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1] == expected


def test_cli_rejects_unknown_model_and_baseline(capsys, monkeypatch):
    monkeypatch.delenv("TF_CPU_ALLOCATOR_USE_BFC", raising=False)
    assert bench.cli_main(["no_such_model", "-q"]) == 2
    assert bench.cli_main(["resnet50", "--compare", "onnx", "-q"]) == 2
    assert "onnx" in capsys.readouterr().err


def test_make_step_runs_on_device_resident_batch():
    model = tiny_convnet()
    step = bench.make_keras_step(model, 3, "infer")
    out = step()
    assert np.asarray(out).shape == (3, 10)


# ---- the timm baseline: runs only where torch and timm are installed (not in CI's venv)


def test_timm_import_problem_names_the_cause(monkeypatch):
    import importlib.util
    import sys

    installed = {"torch", "timm", "triton"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name in installed else None)
    monkeypatch.setitem(sys.modules, "tensorflow", sys.modules.get("tensorflow", object()))
    monkeypatch.delitem(sys.modules, "triton", raising=False)
    assert "triton" in bench.timm_import_problem()  # importing triton after TF would crash
    assert not bench.timm_available()
    installed.discard("triton")
    assert bench.timm_import_problem() is None
    installed.discard("timm")
    assert "not installed" in bench.timm_import_problem()


def _timm():
    torch = pytest.importorskip("torch")
    pytest.importorskip("timm")
    return torch


def test_count_torch_macs_by_hand():
    torch = _timm()
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),  # 8*8 * 4 * 3*3*3 = 6912
        torch.nn.BatchNorm2d(4),
        torch.nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4),  # 4*4 * 4 * 9 = 576
        torch.nn.Conv2d(4, 6, 1, groups=2),  # 4*4 * 6 * 2 = 192
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(6, 10),  # 60
    )
    net.train()
    assert bench.count_torch_macs(net, (3, 8, 8)) == 6912 + 576 + 192 + 60
    assert net.training  # the count leaves the module as it found it


@pytest.mark.parametrize("mode", ["infer", "train"])
def test_timm_step_same_settings_as_keras(mode):
    """channels_last, the requested input size, float32, eager without jit; a train step updates."""
    torch = _timm()
    step, model = bench.make_timm_step("mobilenetv2", 2, mode=mode, image_size=64)
    assert model.kzoo_image_size == (64, 64)
    conv = model.conv_stem.weight
    assert conv.dtype == torch.float32 and conv.is_contiguous(memory_format=torch.channels_last)
    before = conv.detach().clone()
    out = step()
    if mode == "infer":
        assert tuple(out.shape) == (2, 1000) and out.dtype == torch.float32
        assert not model.training and torch.equal(conv, before)
    else:
        assert isinstance(out, float) and math.isfinite(out)
        assert model.training and not torch.equal(conv, before)


def test_timm_mobilenetv2_is_the_same_architecture():
    """timm's mobilenetv2_100 and MobileNetV2(alpha=1.0) count the same multiply-adds (the conv and
    dense shapes agree); timm's resnet50 (v1.5, stride on the 3x3) costs ~6 % more than Keras' v1."""
    _timm()
    _, tmodel = bench.make_timm_step("mobilenetv2", 1, image_size=224)
    kmodel = keras.applications.MobileNetV2(weights=None)
    assert bench.count_torch_macs(tmodel, (3, 224, 224)) == bench.count_macs(kmodel)
    _, resnet = bench.make_timm_step("resnet50", 1, image_size=224)
    assert bench.count_torch_macs(resnet, (3, 224, 224)) / 1e9 == pytest.approx(4.09, abs=0.02)


def test_run_benchmarks_with_timm_baseline():
    """The timm candidate runs interleaved with Keras at the Keras model's input size, with FLOPs."""
    _timm()

    def build(name, source, image_size=None, precision="float32"):
        with bench.dtype_policy(precision):
            return keras.applications.MobileNetV2(weights=None, input_shape=(64, 64, 3))

    results = bench.run_benchmarks(["mobilenetv2"], [2], sources=("kzoo", "timm"), warmup=1, repeats=2,
                                   min_time=0.01, build=build)
    kz, tm = results
    assert tm.error is None and tm.backend == "torch" and tm.image_size == (64, 64)
    assert tm.images_per_s > 0 and tm.params > 3_000_000 and len(tm.block_images_per_s) == 2
    assert tm.gflops_per_image == pytest.approx(kz.gflops_per_image)
    (ratio,) = bench.ratios(results)
    assert ratio.baseline == "timm" and ratio.cpu_time_ratio > 0
    assert "x timm cpu" in bench.format_table(results)


def test_threads_apply_to_torch_for_timm():
    torch = _timm()
    before = torch.get_num_threads()
    try:
        environment.set_threads(1, torch_too=True)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


# ---- exported engines (kzoo bench --engine): kzoo.export's artifact, timed in its own runtime


def _exportable_build(name, source, image_size=None, precision="float32", batch_size=None):
    """A tiny net every format holds (tf2onnx cannot take Keras' grouped conv, so tiny_convnet will not do)."""
    with bench.dtype_policy(precision):
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)  # 8*8 * 4 * 27 = 6912
        x = keras.layers.BatchNormalization(name="bn")(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", name="dw")(x)  # 4*4 * 4 * 9 = 576
        x = keras.layers.Conv2D(6, 3, padding="same", name="conv3")(x)  # 4*4 * 6 * 36 = 3456
        x = keras.layers.GlobalAveragePooling2D()(x)
        outputs = keras.layers.Dense(10, activation="softmax", name="fc")(x)  # 60
        return keras.Model(inputs, outputs, name="tiny_exportable")


EXPORTABLE_MACS = 6912 + 576 + 3456 + 60


@pytest.fixture
def export_spy(monkeypatch):
    """Records every kzoo.export the engines make and every artifact they load in a runtime."""
    from kzoo.export import entry, runtimes

    calls = {"export": [], "load": []}
    real_export, real_load = entry.export, runtimes.load

    def export(model, path, format=None, **kw):
        result = real_export(model, path, format=format, **kw)
        calls["export"].append((format, kw.get("optimize"), result))
        return result

    def load(format_name, path, threads=None, batch=None):
        calls["load"].append((format_name, threads, batch))
        return real_load(format_name, path, threads=threads, batch=batch)

    monkeypatch.setattr(entry, "export", export)
    monkeypatch.setattr(runtimes, "load", load)
    return calls


def _by_source(results, batch):
    return {r.source: r for r in results if r.requested_batch_size == batch}


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="kzoo exports from the TensorFlow backend")
def test_engine_times_the_exported_artifact_against_keras(export_spy):
    """ONNX Runtime runs kzoo.export's parity-checked artifact, with the threads asked for, interleaved with
    Keras; x keras is the median of the measured neighbouring block ratios and the CPU ratio is per step."""
    results = bench.run_benchmarks(["tiny"], [1, 3], sources=("kzoo", "onnxruntime", "onnxruntime-opt", "keras"),
                                   warmup=1, repeats=3, min_time=0.01, build=_exportable_build, threads=1)
    assert [(r.source, r.requested_batch_size) for r in results] == [
        (s, b) for b in (1, 3) for s in ("kzoo", "onnxruntime", "onnxruntime-opt", "keras")]
    # One export per model and variant, parity-checked within the format's tolerance, run per batch at 1 thread.
    assert [(fmt, optimize) for fmt, optimize, _ in export_spy["export"]] == [("onnx", False), ("onnx", True)]
    for _, optimize, exported in export_spy["export"]:
        assert exported.parity["random"]["max_rel_diff"] <= exported.parity["tolerance"] == 1e-3
        assert bool(exported.provenance["optimized"]) == optimize
    # The export's own parity run (no batch asked), then the timed sessions, per batch, with the threads asked.
    assert [c for c in export_spy["load"] if c[2] is None] == [("onnx", None, None)] * 2
    assert sorted(c for c in export_spy["load"] if c[2]) == [("onnx", 1, b) for b in (1, 1, 3, 3)]
    for batch in (1, 3):
        rows = _by_source(results, batch)
        engine, keras_row = rows["onnxruntime"], rows["keras"]
        for r in (rows["onnxruntime"], rows["onnxruntime-opt"]):
            assert r.error is None and r.backend.startswith("ONNX Runtime")
            assert r.batch_size == batch and r.image_size == (8, 8) and r.repeats == 3
            assert r.gflops_per_image == pytest.approx(2 * EXPORTABLE_MACS / 1e9)
            # img/s is the measured step times, summed (step_ms is rounded to the microsecond: ~14 us steps here).
            assert r.images_per_s == pytest.approx(batch * r.steps / (sum(r.step_ms) / 1000), rel=0.1)
            assert len(r.block_images_per_s) == 3
        ratio = {(x.source, x.baseline): x for x in bench.ratios(results) if x.batch_size == batch}
        got = ratio[("onnxruntime", "keras")]
        pairs = [a / b for a, b in zip(engine.block_images_per_s, keras_row.block_images_per_s)]
        assert got.images_per_s_ratio == pytest.approx(sorted(pairs)[1])  # the median of 3 neighbour pairs
        assert (got.pair_ratio_min, got.pair_ratio_max) == (pytest.approx(min(pairs)), pytest.approx(max(pairs)))
        assert got.cpu_time_ratio == pytest.approx(keras_row.cpu_ms_per_batch / engine.cpu_ms_per_batch)
        assert ("onnxruntime-opt", "keras") in ratio and ("kzoo", "keras") in ratio
    assert "onnxruntime-opt" in bench.format_table(results)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="kzoo exports from the TensorFlow backend")
def test_each_engine_runs_its_own_format(export_spy):
    """OpenVINO, LiteRT and TensorFlow (SavedModel) time their own artifacts; OpenVINO is compiled for the batch
    being timed; LiteRT's optimised export leaves out the Winograd layers its converter cannot hold."""
    results = bench.run_benchmarks(["tiny"], [2], sources=("openvino", "litert", "litert-opt", "tensorflow", "keras"),
                                   warmup=1, repeats=2, min_time=0.01, build=_exportable_build, threads=2)
    rows = _by_source(results, 2)
    assert rows["openvino"].backend.startswith("OpenVINO") and rows["litert"].backend.startswith("LiteRT")
    assert rows["tensorflow"].backend.startswith("TensorFlow (tf.saved_model.load)")
    assert all(r.error is None and r.images_per_s > 0 for r in results)
    assert sorted(c for c in export_spy["load"] if c[2]) == [
        ("litert", 2, 2), ("litert", 2, 2), ("openvino", 2, 2), ("tf_saved_model", 2, 2)]
    (litert_opt,) = [e for fmt, optimize, e in export_spy["export"] if fmt == "litert" and optimize]
    assert litert_opt.provenance["optimized"]["options"] == {"winograd": False}
    assert {(r.source, r.baseline) for r in bench.ratios(results)} == {
        ("openvino", "keras"), ("litert", "keras"), ("litert-opt", "keras"), ("tensorflow", "keras")}


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="kzoo exports from the TensorFlow backend")
def test_engine_failing_parity_is_reported_not_timed(monkeypatch):
    """An artifact that does not match the Keras model is an error row with no speed and no ratio."""
    from kzoo.export import parity

    real = parity.compare
    monkeypatch.setattr(parity, "compare", lambda ref, got: real(ref, [g + 1.0 for g in got]))
    results = bench.run_benchmarks(["tiny"], [1], sources=("onnxruntime", "keras"), warmup=1, repeats=1,
                                   min_time=0.01, build=_exportable_build)
    engine, keras_row = results
    assert "ParityError" in engine.error and engine.images_per_s is None
    assert keras_row.error is None and bench.ratios(results) == []


def test_cli_engine_sources_and_missing_runtime(tmp_path, monkeypatch, capsys):
    import importlib.util

    monkeypatch.delenv("TF_CPU_ALLOCATOR_USE_BFC", raising=False)
    assert bench.cli_main(["resnet50", "--engine", "keras,tensorrt", "-q"]) == 2
    assert "tensorrt" in capsys.readouterr().err
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    assert bench.cli_main(["resnet50", "--engine", "keras,onnxruntime", "-q"]) == 2
    err = capsys.readouterr().err
    assert 'pip install "kzoo[export]"' in err and "onnxruntime" in err
    monkeypatch.setattr(importlib.util, "find_spec", real)
    if keras.backend.backend() != "tensorflow":
        return
    monkeypatch.setattr(sweep, "build_model", _exportable_build)
    code = bench.cli_main(["resnet50", "--engine", "keras,litert", "--optimize", "-b", "1", "--repeats", "1",
                           "--min-time", "0.01", "--warmup", "1", "--json", str(tmp_path / "r.json"), "-q"])
    assert code == 0
    payload = json.loads((tmp_path / "r.json").read_text())
    assert payload["settings"]["sources"] == ["kzoo", "kzoo-opt", "litert", "litert-opt", "keras"]
    assert {(r["source"], r["baseline"]) for r in payload["ratios"]} == {
        (s, "keras") for s in ("kzoo", "kzoo-opt", "litert", "litert-opt")}
    assert "litert-opt" in capsys.readouterr().out
