"""PaddlePaddle's 2019 ImageNet models, converted by kzoo and proven against Paddle itself.

The Paddle side (tests/paddle_reference.py, in its own process) builds each 2019 model with its 2019 parameter
names, draws random weights the way tests/compat.py does (BatchNorm statistics included), saves them *with
Paddle* as the per-variable folder of the 2019 archives, as ``.pdparams`` and as a combined params file, and
computes float64 logits. kzoo converts the files (no Paddle import) and its float64 logits must match within
1e-5 relative, while two inputs move Paddle's logits by far more than that. Every transform of the rules and
every builder difference from Keras' models is then dropped once, and the comparison must fail.

Default run: ResNet50, VGG11, MobileNetV1 and SE_ResNeXt50 at full depth on a 64x64 input; the other depths
(the same rules) under ``sweep`` at 224.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from compat import assert_outputs_differ, float64, relative_error

TESTS = Path(__file__).resolve().parent
TOL = 1e-5
SIZE = 64

pytestmark = pytest.mark.skipif(importlib.util.find_spec("paddle") is None, reason="paddlepaddle is not installed")

SPECS = {
    "resnet50_v1_5": {"family": "resnet", "depth": 50, "stages": [3, 4, 6, 3]},
    "resnet101_v1_5": {"family": "resnet", "depth": 101, "stages": [3, 4, 23, 3]},
    "resnet152_v1_5": {"family": "resnet", "depth": 152, "stages": [3, 8, 36, 3]},
    "se_resnext50_32x4d": {"family": "se_resnext", "stages": [3, 4, 6, 3]},
    # At BatchNorm gain 1 a random SE_ResNeXt101 at 224 is near-chaotic: a 1e-10 input change moved its logits by
    # 9e-6, and float64 summation-order differences by 3e-5 (> 1e-5). Gammas 0.8x, as compat.BN_GAIN tunes
    # EfficientNet's the other way.
    "se_resnext101_32x4d": {"family": "se_resnext", "stages": [3, 4, 23, 3], "bn_gain": 0.8},
    "vgg11": {"family": "vgg", "stages": [1, 1, 2, 2, 2]},
    "vgg13": {"family": "vgg", "stages": [2, 2, 2, 2, 2]},
    "vgg16": {"family": "vgg", "stages": [2, 2, 3, 3, 3]},
    "vgg19": {"family": "vgg", "stages": [2, 2, 4, 4, 4]},
    "mobilenet_v1_relu": {"family": "mobilenet"},
    "paddleclas:vgg11": {"family": "vgg", "stages": [1, 1, 2, 2, 2], "layout": "paddleclas"},
    "paddleclas:mobilenet_v1_relu": {"family": "mobilenet", "layout": "paddleclas"},
    "paddleclas:resnet50_v1_5": {"family": "resnet", "depth": 50, "stages": [3, 4, 6, 3], "layout": "paddleclas"},
    "paddleclas:resnet101_v1_5": {"family": "resnet", "depth": 101, "stages": [3, 4, 23, 3], "layout": "paddleclas"},
}


@functools.lru_cache(maxsize=None)
def _session_folder() -> Path:
    """One temp folder for this process's Paddle references, removed when the process ends (VGG's files
    are ~1.5 GB at 224: left behind, a few runs fill a disk)."""
    import atexit
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="kzoo-paddle-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@functools.lru_cache(maxsize=None)
def paddle_reference(model: str, size: int = SIZE, seed: int = 0, root: str | None = None) -> Path:
    """Paddle's files and logits for ``model`` (cached per session): ``vars/``, ``model.pdparams``,
    ``params.combined``, ``inputs.npy`` (NHWC), ``logits.npy``."""
    import tempfile

    out = Path(root or tempfile.mkdtemp(prefix=f"{model.replace(':', '-')}-{size}-", dir=_session_folder()))
    inputs = np.random.default_rng(seed + 1).normal(0.0, 1.0, (2, size, size, 3))
    np.save(out / "inputs.npy", inputs)
    spec = {**SPECS[model], "size": size, "seed": seed, "out": str(out), "inputs": str(out / "inputs.npy")}
    (out / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "2"}
    result = subprocess.run([sys.executable, str(TESTS / "paddle_reference.py"), str(out / "spec.json")],
                            capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def keras_logits(model: str, h5, inputs) -> np.ndarray:
    import keras

    import kzoo

    keras.backend.clear_session()
    with float64():
        net = kzoo.create_model(model, weights=str(h5), input_shape=inputs.shape[1:], classifier_activation=None)
        return np.asarray(net.predict(inputs, verbose=0), dtype=np.float64)


def convert(src, model: str, tmp_path, name: str = "out.h5", size: int = 224):
    """kzoo's conversion. ``size``: VGG's fc6 rows are its last feature map, so a VGG converted from a
    ``size`` x ``size`` model is built at that size (the converter builds at 224)."""
    from kzoo import convert as kconvert

    kconvert._plan.cache_clear()  # rules and builders read module constants a test may have patched
    def build_at_size(name, classes, include_top):
        import kzoo

        return kzoo.create_model(name, weights=None, include_top=include_top, classes=classes,
                                 input_shape=(size, size, 3))

    original = kconvert._build_model
    if model.startswith("vgg") and size != 224:
        kconvert._build_model = build_at_size
    try:
        return kconvert.convert_checkpoint(src, model, tmp_path / name, progress=False)
    finally:
        kconvert._build_model = original
        kconvert._plan.cache_clear()


def compare(model: str, src, tmp_path, size: int = SIZE) -> float:
    """Relative error of kzoo's logits (``src`` converted) against Paddle's; asserts the sensitivity bar."""
    ref = paddle_reference(model, size)
    expected = np.load(ref / "logits.npy")
    assert_outputs_differ(expected[0], expected[1], TOL, f"Paddle {model}")
    convert(src, model, tmp_path, size=size)
    return relative_error(keras_logits(model, tmp_path / "out.h5", np.load(ref / "inputs.npy")), expected)


# ----------------------------------------------------------------------------- the proofs

@pytest.mark.parametrize("source", ["vars", "model.pdparams"])
def test_resnet50_matches_paddle(source, tmp_path):
    ref = paddle_reference("resnet50_v1_5")
    assert compare("resnet50_v1_5", ref / source, tmp_path) < TOL


def test_vgg11_matches_paddle_from_its_folder(tmp_path):
    """At 64x64 fc6 reads a 2x2x512 map: its row order matters (the sweep runs the release's 7x7 at 224)."""
    ref = paddle_reference("vgg11")
    assert compare("vgg11", ref / "vars", tmp_path) < TOL


def _member(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = 0o100644 << 16  # a regular file, as zip tools write it
    return info


from kzoo.formats.paddle import write_tensor  # noqa: E402


def test_mobilenet_matches_paddle_from_a_zip_with_mac_junk_and_the_combined_file(tmp_path):
    """The archive as issue PaddlePaddle/models#2196 describes it: ``__MACOSX/._*`` members, a ``run.log``,
    the variables one folder down; and the combined params file of ``save_vars(filename=...)``."""
    ref = paddle_reference("mobilenet_v1_relu")
    archive = tmp_path / "MobileNetV1_pretrained.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted((ref / "vars").iterdir()):
            zf.write(f, f"MobileNetV1_pretrained/{f.name}")
            zf.writestr(_member(f"__MACOSX/MobileNetV1_pretrained/._{f.name}"), b"\x00\x05\x16\x07" + bytes(60))
        zf.writestr(_member("MobileNetV1_pretrained/run.log"), "epoch 0 loss 6.9\n")
        velocity = (ref / "vars" / "conv1_weights").read_bytes()  # training state a 2019 folder may hold
        zf.writestr(_member("MobileNetV1_pretrained/conv1_weights_velocity_0"), velocity)
        zf.writestr(_member("MobileNetV1_pretrained/learning_rate_0"), write_tensor(np.array([0.1], np.float32)))
    assert compare("mobilenet_v1_relu", archive, tmp_path) < TOL
    report = convert(archive, "mobilenet_v1_relu", tmp_path, "again.h5")
    assert report.unused == {"skipped: not a tensor file": ["run.log"], "optimizer slots": ["conv1_weights_velocity_0"],
                             "training state": ["learning_rate_0"]}
    assert compare("mobilenet_v1_relu", ref / "params.combined", tmp_path) < TOL


@pytest.mark.parametrize("model", ["vgg11", "mobilenet_v1_relu", "resnet50_v1_5",
                                   pytest.param("resnet101_v1_5", marks=pytest.mark.sweep)])
def test_paddleclas_pdparams_match_paddleclas_structured_models(model, tmp_path):
    """PaddleClas' dygraph VGG / MobileNetV1 / ResNet have no parameter names: the .pdparams keys are module paths
    (ResNet101's blocks.{j} run across stages, and its stage 4 is res4a, res4b1, ... in the 2019 names)."""
    ref = paddle_reference(f"paddleclas:{model}")
    expected = np.load(ref / "logits.npy")
    assert_outputs_differ(expected[0], expected[1], TOL, f"Paddle {model}")
    report = convert(ref / "model.pdparams", model, tmp_path, size=SIZE)
    assert not report.unused
    assert relative_error(keras_logits(model, tmp_path / "out.h5", np.load(ref / "inputs.npy")), expected) < TOL


def test_se_resnext50_matches_paddle_from_a_tar(tmp_path):
    ref = paddle_reference("se_resnext50_32x4d")
    archive = tmp_path / "SE_ResNeXt50_32x4d_pretrained.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(ref / "vars", arcname="SE_ResNeXt50_32x4d_pretrained")
    assert compare("se_resnext50_32x4d", archive, tmp_path) < TOL


@pytest.mark.sweep
@pytest.mark.parametrize("model", ["resnet50_v1_5", "resnet101_v1_5", "resnet152_v1_5", "se_resnext50_32x4d",
                                   "se_resnext101_32x4d", "vgg11", "vgg13", "vgg16", "vgg19", "mobilenet_v1_relu"])
def test_full_size_matches_paddle(model, tmp_path):
    ref = paddle_reference(model, 224)
    assert compare(model, ref / "model.pdparams", tmp_path, size=224) < TOL


# ----------------------------------------------------------------------------- each transform is needed

def _fails_without(model, tmp_path, source="vars") -> float:
    err = compare(model, paddle_reference(model) / source, tmp_path)
    assert not err <= 100 * TOL, f"{model} still matches Paddle ({err:.1e}) without the transform"
    return err


@pytest.mark.parametrize("case", ["conv_layout", "bn_order", "bn_epsilon", "symmetric_padding"])
def test_resnet_transforms_are_each_needed(case, monkeypatch, tmp_path):
    from kzoo.architectures import resnet_v1_5
    from kzoo.convert import paddle_common

    if case == "conv_layout":  # kh and kw swapped: same shape, other numbers
        monkeypatch.setattr(paddle_common, "CONV_AXES", (3, 2, 1, 0))
    elif case == "bn_order":  # Keras' order taken for Paddle's: mean and variance swapped
        monkeypatch.setattr(paddle_common, "BN_VARIABLES", {**paddle_common.BN_VARIABLES, "moving_mean": "variance",
                                                            "moving_variance": "mean"})
    elif case == "bn_epsilon":
        monkeypatch.setattr(resnet_v1_5, "BN_EPSILON", 1e-3)
    else:
        monkeypatch.setattr(resnet_v1_5, "SYMMETRIC_PAD", False)
    _fails_without("resnet50_v1_5", tmp_path)


def test_stride_on_the_3x3_is_needed(tmp_path):
    """Keras' ResNet50 (stride on the first 1x1) with the same weights (zero conv biases) is another function."""
    import keras

    import kzoo

    ref = paddle_reference("resnet50_v1_5")
    convert(ref / "vars", "resnet50_v1_5", tmp_path)
    inputs, expected = np.load(ref / "inputs.npy"), np.load(ref / "logits.npy")
    keras.backend.clear_session()
    with float64():
        ours = kzoo.create_model("resnet50_v1_5", weights=str(tmp_path / "out.h5"), input_shape=inputs.shape[1:],
                                 classifier_activation=None)
        stock = kzoo.ResNet50(weights=None, input_shape=inputs.shape[1:], classifier_activation=None)
        for layer in stock.layers:
            if layer.weights:
                values = [w.numpy() for w in ours.get_layer(layer.name).weights]
                if len(layer.weights) == 2 and len(values) == 1:
                    values.append(np.zeros(layer.weights[1].shape))
                layer.set_weights(values)
        err = relative_error(stock.predict(inputs, verbose=0), expected)
    assert not err <= 100 * TOL, err


@pytest.mark.parametrize("case", ["fc6_rows", "dropout_fold"])
def test_vgg_transforms_are_each_needed(case, monkeypatch, tmp_path):
    from kzoo.convert import paddle_common, paddle_vgg

    if case == "fc6_rows":
        monkeypatch.setattr(paddle_vgg, "chw_rows_to_hwc", lambda array: array)
    else:
        monkeypatch.setattr(paddle_common, "DROPOUT_KEEP", 1.0)
    _fails_without("vgg11", tmp_path)


@pytest.mark.parametrize("case", ["depthwise_layout", "relu6", "keras_padding"])
def test_mobilenet_transforms_are_each_needed(case, monkeypatch, tmp_path):
    from kzoo.architectures import mobilenet
    from kzoo.convert import paddle_common

    if case == "depthwise_layout":
        monkeypatch.setattr(paddle_common, "DEPTHWISE_AXES", (3, 2, 0, 1))
    elif case == "relu6":
        monkeypatch.setattr(mobilenet, "RELU_MAX", 6.0)
    else:
        monkeypatch.setattr(mobilenet, "RELU_STRIDE_PAD", ((0, 1), (0, 1)))
    _fails_without("mobilenet_v1_relu", tmp_path)


def test_se_resnext_dropout_fold_is_needed(monkeypatch, tmp_path):
    from kzoo.convert import paddle_common

    monkeypatch.setattr(paddle_common, "DROPOUT_KEEP", 1.0)
    _fails_without("se_resnext50_32x4d", tmp_path)


# ----------------------------------------------------------------------------- files as the archives hold them

def test_paddleclas_se_resnext_entries_keep_fc6_as_stored():
    """PaddleClas' SE_ResNeXt has no dropout before fc6: its registry entries say ``dropout_fold: false``."""
    import kzoo
    from kzoo import registry
    from kzoo.convert import RuleContext, paddle_common, paddle_se_resnext

    model = kzoo.create_model("se_resnext50_32x4d", weights=None, input_shape=(32, 32, 3))

    def head_transform(conversion):
        ctx = RuleContext("se_resnext50_32x4d", 1000, False, True, {}, conversion)
        return next(r.transform for r in paddle_se_resnext.paddle_se_resnext_rules(model, ctx)
                    if r.layer == "predictions" and r.weight == "kernel")

    assert head_transform(registry.get_entry("se_resnext50_32x4d.paddleclas").conversion) is None
    assert head_transform(registry.get_entry("se_resnext50_32x4d.paddle").conversion) is paddle_common.after_dropout



def test_vgg_without_conv_bias_files_gets_zero_biases():
    """The released VGG archives lack ``conv*_offset`` (PaddlePaddle/models#2196): the rules then give zeros."""
    import kzoo
    from kzoo.convert import RuleContext, paddle_vgg

    model = kzoo.create_model("vgg11", weights=None, include_top=False, input_shape=(32, 32, 3))
    kernel = np.ones((64, 3, 3, 3), np.float32)

    def bias_rule(variables):
        ctx = RuleContext("vgg11", 1000, False, False, variables)
        return next(r for r in paddle_vgg.paddle_vgg_rules(model, ctx)
                    if r.layer == "block1_conv1" and r.weight == "bias")

    assert bias_rule({"conv1_1_offset": (64,)}).variable == "conv1_1_offset"
    rule = bias_rule({})
    assert rule.variable == "conv1_1_weights"  # read for its shape only
    zeros = rule.transform(kernel)
    assert zeros.shape == (64,) and not zeros.any()


def test_paddle_files_read_without_paddle_and_match_paddle_load(tmp_path):
    """kzoo's reader against Paddle's own ``paddle.load`` of the same folder (run in Paddle's process)."""
    ref = paddle_reference("mobilenet_v1_relu")
    code = ("import sys, numpy as np, paddle; d = paddle.load(sys.argv[1]); "
            "np.savez(sys.argv[2], **{k: np.asarray(v) for k, v in d.items()})")
    subprocess.run([sys.executable, "-c", code, str(ref / "vars"), str(tmp_path / "p.npz")], check=True,
                   capture_output=True, timeout=300)
    theirs = np.load(tmp_path / "p.npz")
    code = ("import sys, json; from kzoo.formats import paddle; p = paddle.open_params(sys.argv[1]); "
            "import numpy as np; np.savez(sys.argv[2], **{k: p.read(k) for k in p.shapes()}); "
            "print(json.dumps(sorted(m for m in ('paddle', 'tensorflow', 'keras') if m in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code, str(ref / "vars"), str(tmp_path / "k.npz")],
                            capture_output=True, text=True, timeout=300, cwd=TESTS.parent)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == []
    ours = np.load(tmp_path / "k.npz")
    assert sorted(ours.files) == sorted(theirs.files) and len(ours.files) == 137
    for name in ours.files:
        np.testing.assert_array_equal(ours[name], theirs[name])


# ----------------------------------------------------------------------------- bad input: one clear error each

def test_truncated_tensor_file_is_named(tmp_path):
    import shutil

    from kzoo.errors import ConversionError

    folder = tmp_path / "MobileNetV1_pretrained"
    shutil.copytree(paddle_reference("mobilenet_v1_relu") / "vars", folder)
    victim = folder / "conv6_sep_weights"
    victim.write_bytes(victim.read_bytes()[:-100])
    with pytest.raises(ConversionError, match=r"conv6_sep_weights: the tensor file is truncated"):
        convert(folder, "mobilenet_v1_relu", tmp_path)
    assert not (tmp_path / "out.h5").exists()


def test_folder_of_another_model_says_which_it_is(tmp_path):
    from kzoo.errors import ConversionError

    with pytest.raises(ConversionError, match=r"not ResNet50/101/152 parameters for resnet50_v1_5 .*they are "
                                              r"MobileNetV1 parameters: convert them with --model mobilenet_v1_relu"):
        convert(paddle_reference("mobilenet_v1_relu") / "vars", "resnet50_v1_5", tmp_path)


def test_archive_with_parent_members_is_refused(tmp_path):
    import io

    from kzoo.errors import UnsafeArchive

    archive = tmp_path / "ResNet50_pretrained.tar"
    with tarfile.open(archive, "w") as tar:
        data = (paddle_reference("mobilenet_v1_relu") / "vars" / "conv1_weights").read_bytes()
        info = tarfile.TarInfo("ResNet50_pretrained/../../conv1_weights")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(UnsafeArchive, match=r"ResNet50_pretrained/\.\./\.\./conv1_weights"):
        convert(archive, "resnet50_v1_5", tmp_path / "inner")
    assert not (tmp_path / "conv1_weights").exists() and not (tmp_path.parent / "conv1_weights").exists()


def test_pdparams_of_another_depth_names_what_is_missing(tmp_path):
    from kzoo.errors import ConversionError

    with pytest.raises(ConversionError, match=r"model\.pdparams: \d+ variable\(s\) the resnet101_v1_5 model needs "
                                              r"are not in the checkpoint:\n  - res4b1_branch2a_weights"):
        convert(paddle_reference("resnet50_v1_5") / "model.pdparams", "resnet101_v1_5", tmp_path)


def test_pdparams_never_runs_code(tmp_path):
    import pickle

    from kzoo.errors import ConversionError
    from kzoo.formats import paddle

    class Exploit:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pdparams"
    path.write_bytes(pickle.dumps({"conv1_weights": Exploit()}, protocol=4))
    with pytest.raises(ConversionError, match=r"evil\.pdparams: not a readable \.pdparams file .*refusing to build"):
        paddle.open_params(path)
    assert not (tmp_path / "pwned").exists()


def test_tensor_records_round_trip_bytes_paddle_wrote():
    from kzoo.formats import paddle

    raw = (paddle_reference("mobilenet_v1_relu") / "vars" / "conv2_1_dw_weights").read_bytes()
    array, end = paddle.read_tensor(raw)
    assert end == len(raw) and array.shape == (32, 1, 3, 3) and array.dtype == np.float32
    assert paddle.write_tensor(array) == raw


# ----------------------------------------------------------------------------- the doors: CLI and weights="paddle"

def _zip_of(folder: Path, archive: Path, inner: str) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f"{inner}/{f.name}")
    return archive


def test_cli_converts_a_paddle_archive(tmp_path, capsys):
    from kzoo.cli import main
    from kzoo.formats.keras_h5 import read_weights

    archive = _zip_of(paddle_reference("mobilenet_v1_relu") / "vars", tmp_path / "MobileNetV1_pretrained.zip",
                      "MobileNetV1_pretrained")
    out = tmp_path / "cli.h5"
    assert main(["convert", str(archive), "--model", "mobilenet_v1_relu", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"-> {out}" in printed and "paddle per-variable folder" in printed
    assert dict(dict(read_weights(out))["conv_preds"])["conv_preds/kernel:0"].shape == (1, 1, 1024, 1000)
    assert main(["convert", str(archive), "--model", "resnet50_v1_5", "-o", str(tmp_path / "no.h5")]) == 1
    assert "MobileNetV1 parameters" in capsys.readouterr().err


def test_paddle_weights_convert_once_and_are_cached(tmp_path, monkeypatch):
    """weights="paddle": the entry's archive comes from a mirror folder, is converted once (to the same weights
    as a direct conversion) and the cached h5 is reused."""
    import keras

    import kzoo
    from kzoo import convert as kconvert
    from kzoo import registry
    from kzoo.formats.keras_h5 import read_weights

    ref = paddle_reference("mobilenet_v1_relu")
    entry = registry.resolve_weights("mobilenet_v1_relu", "paddle", True)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    _zip_of(ref / "vars", mirror / entry.file_name, "MobileNetV1_pretrained")
    monkeypatch.setenv("KZOO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("KZOO_PINS", str(tmp_path / "pins.json"))  # trusted on first use
    monkeypatch.setenv("KZOO_MIRRORS", str(mirror))
    monkeypatch.setenv("KZOO_OFFLINE", "1")
    model = kzoo.create_model("mobilenet_v1_relu", weights="paddle")
    converted = list((tmp_path / "cache" / "converted").glob("mobilenet_v1_relu-top-*.h5"))
    assert len(converted) == 1
    convert(ref / "vars", "mobilenet_v1_relu", tmp_path, "direct.h5")
    direct = {name: dict(ws) for name, ws in read_weights(tmp_path / "direct.h5")}
    for name, ws in read_weights(converted[0]):
        for key, value in ws:
            np.testing.assert_array_equal(value, direct[name][key])

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted twice")

    monkeypatch.setattr(kconvert, "convert_checkpoint", no_conversion)
    keras.backend.clear_session()
    again = kzoo.create_model("mobilenet_v1_relu", weights="paddle", include_top=False, pooling="avg")
    np.testing.assert_array_equal(np.asarray(again.get_layer("conv1").kernel),
                                  np.asarray(model.get_layer("conv1").kernel))
