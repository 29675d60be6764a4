"""kzoo.export, ``kzoo export`` and ``kzoo predict``.

Every builder family is exported to every format and the artifact is run *by this file's own runners* (the
runtimes' plain APIs, not kzoo.export.runtimes) against the Keras model, so a wrong parity figure in kzoo
cannot pass its own test. Models carry random weights made informative (BN statistics recorded from a batch,
head re-centred) so outputs depend on the input: each case also asserts two inputs give different outputs,
else a runtime that ignored its input would pass. Small inputs (32 px, the builders' minimum elsewhere) keep
it affordable; the heavy families run only with KZOO_FULL_SWEEP=1 (``SWEEP`` below says which and why).
"""

from __future__ import annotations

import hashlib
import json
import os

import keras
import numpy as np
import pytest

import kzoo
from kzoo.errors import ExportError, KzooError, ParityError
from loopback import env, register, server, weights_entry  # noqa: F401 (fixtures)

# Test-side bounds on max |artifact - keras| / max |keras|: float32 rounding in a random-weight network,
# measured up to ~1e-4 (README, "Deployment"); a wrong layout or a dropped layer differs by 1e-1 or more.
BOUND = {"tf_saved_model": 1e-3, "onnx": 1e-3, "openvino": 1e-3, "litert": 1e-3}
FORMATS = ("tf_saved_model", "onnx", "openvino", "litert")
SUFFIX = {"tf_saved_model": "", "onnx": ".onnx", "openvino": "", "litert": ".tflite"}

# (family module, model, input size, builder arguments). The smallest model of each family.
FAMILIES = [
    ("mobilenet_v2", "mobilenetv2", 32, {}),
    ("mobilenet_v3", "mobilenetv3small", 32, {}),
    ("efficientnet", "efficientnetb0", 32, {}),
    ("shufflenet_v2", "shufflenet_v2_050", 32, {}),
    ("mobilenet", "mobilenet", 32, {"alpha": 0.25}),
    ("resnet", "resnet50", 32, {}),
    ("resnet (v2)", "resnet50v2", 32, {}),
    ("resnet_v1", "resnet_v1_50", 32, {}),
    ("vgg", "vgg16", 32, {}),
    ("densenet", "densenet121", 32, {}),
    ("efficientnet_v2", "efficientnetv2b0", 32, {}),
    ("convnext", "convnexttiny", 32, {}),
    ("inception", "inception_v1", 32, {}),
    ("inception_v3", "inceptionv3", 75, {}),
    ("inception_resnet_v2", "inceptionresnetv2", 75, {}),
    ("xception", "xception", 71, {}),
    ("nasnet", "nasnetmobile", 32, {}),
]
# Run by default: families whose four exports together take under ~50 s here (small graphs, few weights);
# efficientnetb0 for its input Normalization (exported as constants), swish (OpenVINO's extra outputs), depthwise
# convs and squeeze-excite; shufflenet_v2_050 (TI-ONE's) for its channel shuffle. mobilenetv2's ops are a subset
# of these two's but for ReLU6, so it runs with the sweep.
DEFAULT = {"shufflenet_v2_050", "efficientnetb0"}
# Everything else (sweep): tf2onnx alone spends 15-75 s on a model with many weights or hundreds of layers
# (vgg16 50 s, resnet50 25 s, inception_v4 74 s), and a family's four formats take 45-190 s.
SWEEP = {name for _, name, _, _ in FAMILIES} - DEFAULT
# What a format cannot hold, and a layer the error must name. ConvNeXt to ONNX: Keras runs its grouped
# (depthwise) Conv2D as an XLA-compiled function tf2onnx cannot inline, and exact GELU lowers to Erfc, which
# tf2onnx does not map.
CANNOT_HOLD = {("convnexttiny", "onnx"): "convnext_tiny_stage_0_block_0_depthwise_conv"}


def informative(model, x, seed=0):
    """Give ``model``'s random weights outputs that depend on the input.

    One training-mode call with BN momentum 0 records each BN's batch statistics as its moving statistics,
    so inference keeps every layer's activations near unit scale. Two choices keep the network from being
    chaotic (a 1e-6 change of the input changing EfficientNet's output by 1e-2 to 1, measured), which float32
    rounding in any two runtimes would then expose: each variance gets half the layer's median variance
    added (a near-constant channel is not amplified 30x), and beta stays 0 (random shifts push swish and the
    squeeze-excite sigmoids where they amplify). gamma is random in [0.5, 1.5]. The classifier is then
    rescaled and re-centred on ``x``'s features so the logits spread (std 3) across inputs.
    """
    rng = np.random.default_rng(seed)
    norms = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0
    model(x, training=True)
    for layer in norms:
        layer.momentum = 0.99
        variance = np.asarray(layer.moving_variance)
        layer.moving_variance.assign((variance + 0.5 * np.median(variance)).astype("float32"))
        if layer.gamma is not None:
            layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape).astype("float32"))
    head = [layer for layer in model._flatten_layers() if getattr(layer, "kernel", None) is not None][-1]
    features = np.asarray(keras.Model(model.inputs, head.input)(x, training=False)).reshape(len(x), -1)
    kernel = np.asarray(head.kernel)
    logits = features @ kernel.reshape(features.shape[1], -1)
    scale = 3.0 / (logits - logits.mean(0)).std()
    head.kernel.assign((kernel * scale).astype("float32"))
    if getattr(head, "bias", None) is not None:
        head.bias.assign((-logits.mean(0) * scale).astype("float32"))
    return model


def images(count, size, seed):
    """Varied RGB images in [0, 255]: each its own colour cast and contrast (this file's, not kzoo's)."""
    rng = np.random.default_rng(seed)
    cast = rng.uniform(30, 220, (count, 1, 1, 3))
    return np.clip(cast + rng.uniform(-60, 60, (count, size, size, 3)), 0, 255).astype("float32")


def run_artifact(fmt, path, x):
    """The artifact's first output for ``x``, through the runtime's own API."""
    path = str(path)
    if fmt == "tf_saved_model":
        import tensorflow as tf

        loaded = tf.saved_model.load(path)
        return loaded.serve(tf.constant(x)).numpy()
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: x})[0]
    if fmt == "openvino":
        import openvino

        compiled = openvino.Core().compile_model(os.path.join(path, "model.xml"), "CPU",
                                                 {"INFERENCE_PRECISION_HINT": "f32"})
        return compiled(x)[compiled.outputs[0]]
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def relative(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def same_top5(got, expected, bound):
    """Both give the same five best classes in every row, except where Keras' 5th and 6th scores are closer
    than the rounding the bound allows (a tie any two runtimes may break either way)."""
    scale = np.max(np.abs(expected))
    for g, e in zip(got, expected):
        order = np.sort(e)[::-1]
        if order[4] - order[5] > 2 * bound * scale and set(np.argsort(g)[-5:]) != set(np.argsort(e)[-5:]):
            return False
    return True


_BUILT = {}


def family_model(name, size, kwargs):
    """One informative model per family for the whole file (each format exports the same one)."""
    if name not in _BUILT:
        keras.utils.set_random_seed(0)
        model = kzoo.create_model(name, weights=None, input_shape=(size, size, 3), **kwargs)
        preprocess = kzoo.preprocessing.for_model(name)["preprocess_input"]
        informative(model, preprocess(images(8, size, seed=1)))
        _BUILT[name] = (model, preprocess(images(3, size, seed=2)))
    return _BUILT[name]


def family_cases():
    for family, name, size, kwargs in FAMILIES:
        marks = [pytest.mark.sweep] if name in SWEEP else []
        for fmt in FORMATS:
            yield pytest.param(name, size, kwargs, fmt, id=f"{family}-{name}-{fmt}", marks=marks)


# --------------------------------------------------------------------------------------------- every family

@pytest.mark.parametrize("name,size,kwargs,fmt", family_cases())
def test_family_exports_with_parity(name, size, kwargs, fmt, tmp_path):
    model, x = family_model(name, size, kwargs)
    expected = np.asarray(model(x, training=False))
    assert relative(expected[0], expected[1]) > 0.05, "the model barely depends on its input"
    path = tmp_path / f"{name}{SUFFIX[fmt]}"
    if (name, fmt) in CANNOT_HOLD:
        with pytest.raises(ExportError, match=f"{fmt} cannot hold layer '{CANNOT_HOLD[name, fmt]}'"):
            kzoo.export(model, path, format=fmt, model_name=name)
        assert list(tmp_path.iterdir()) == []
        return

    result = kzoo.export(model, path, format=fmt, model_name=name)

    got = run_artifact(fmt, path, x)
    assert got.shape == expected.shape
    assert relative(got, expected) < BOUND[fmt]
    assert same_top5(got, expected, BOUND[fmt])
    # kzoo's own figures (its inputs, not ours) are within the same bound.
    for kind in ("random", "image"):
        assert 0 <= result.parity[kind]["max_rel_diff"] <= BOUND[fmt]
        assert 0 <= result.parity[kind]["top5_agreement"] <= 1
    assert result.parity["random"]["spread"] > 0.01
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind


# --------------------------------------------------------------------------------------------- optimize

@pytest.fixture(scope="module")
def small():
    """An informative MobileNetV2 at 32 px, and inputs for it (the cheapest family)."""
    return family_model("mobilenetv2", 32, {})


@pytest.mark.parametrize("fmt", ["onnx", "litert"])
def test_optimize_exports_the_optimized_graph_where_the_format_holds_it(fmt, small, tmp_path):
    model, x = small
    path = tmp_path / f"opt{SUFFIX[fmt]}"
    result = kzoo.export(model, path, format=fmt, model_name="mobilenetv2", optimize=True)
    assert relative(run_artifact(fmt, path, x), np.asarray(model(x, training=False))) < BOUND[fmt]
    # LiteRT cannot hold WinogradConv2D (see test below): kzoo optimises without it there, and says so.
    expected_options = {"winograd": False} if fmt == "litert" else {}
    assert result.provenance["optimized"]["options"] == expected_options
    assert result.provenance["parity"]["reference"].endswith("before optimize_for_inference")


def test_a_fixed_batch_size_is_the_artifacts_input_batch(small, tmp_path):
    import onnxruntime

    model, x = small  # 3 images; kzoo's own check runs 4 random ones, so it must pad a second batch of 3
    path = tmp_path / "b3.onnx"
    result = kzoo.export(model, path, batch_size=3, model_name="mobilenetv2")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [3, 32, 32, 3]
    assert relative(run_artifact("onnx", path, x), np.asarray(model(x, training=False))) < BOUND["onnx"]
    assert result.provenance["input_shape"] == [3, 32, 32, 3] and result.parity["random"]["inputs"] == 4


# --------------------------------------------------------------------------------------------- bad input

def _left_in(folder):
    return sorted(p.name for p in folder.iterdir())


def test_unknown_format_is_an_error_naming_the_formats(small, tmp_path):
    model, _ = small
    with pytest.raises(ExportError, match="coreml.*tf_saved_model, onnx, openvino, litert"):
        kzoo.export(model, tmp_path / "m", format="coreml")
    with pytest.raises(ExportError, match="Name a format"):
        kzoo.export(model, tmp_path / "m.bin")  # no format, and the suffix says none
    assert _left_in(tmp_path) == []


def _winograd_model():
    from kzoo.winograd import WinogradConv2D

    inputs = keras.Input((8, 8, 3))
    layer = WinogradConv2D(4, tile=2, name="wino_conv")
    outputs = keras.layers.GlobalAveragePooling2D()(layer(inputs))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    layer.set_conv_weights(rng.normal(size=(3, 3, 3, 4)), rng.normal(size=4))
    return model


def test_a_layer_the_format_cannot_hold_is_named_before_exporting(tmp_path):
    with pytest.raises(ExportError, match=r"litert cannot hold layer 'wino_conv' \(WinogradConv2D\)"):
        kzoo.export(_winograd_model(), tmp_path / "w.tflite")
    assert _left_in(tmp_path) == []


class _Svd(keras.layers.Layer):
    """Singular values: a TensorFlow op no converter here maps (ONNX, OpenVINO, TensorFlow Lite lack it)."""

    def call(self, x):
        return keras.ops.svd(keras.ops.reshape(x, (-1, 4, 4)), compute_uv=False)


@pytest.mark.parametrize("fmt", ["onnx", "openvino", "litert"])
def test_an_op_the_converter_lacks_names_its_layer(fmt, tmp_path):
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(1, 1, name="mix")(inputs)
    model = keras.Model(inputs, keras.layers.Flatten()(_Svd(name="svd_layer")(x)))
    path = tmp_path / f"svd{SUFFIX[fmt]}"
    with pytest.raises(ExportError, match=rf"{fmt} cannot hold layer 'svd_layer': its op Svd"):
        kzoo.export(model, path, format=fmt)
    assert _left_in(tmp_path) == []


def test_unwritable_paths_are_errors(small, tmp_path):
    model, _ = small
    blocker = tmp_path / "a_file"
    blocker.write_bytes(b"x")
    with pytest.raises(ExportError, match="is not a folder"):
        kzoo.export(model, blocker / "m.onnx")
    with pytest.raises(ExportError, match="does not exist"):
        kzoo.export(model, tmp_path / "missing" / "m.onnx")
    with pytest.raises(ExportError, match="ending with .tflite"):
        kzoo.export(model, tmp_path / "m.lite", format="litert")
    assert _left_in(tmp_path) == ["a_file"]


def test_an_existing_path_needs_force_and_is_replaced_whole(small, tmp_path):
    model, x = small
    path = tmp_path / "m.onnx"
    path.write_bytes(b"an older artifact")
    (tmp_path / "m.onnx.kzoo.json").write_text("{}")
    with pytest.raises(ExportError, match="already exists.*force"):
        kzoo.export(model, path, model_name="mobilenetv2")
    assert path.read_bytes() == b"an older artifact"

    kzoo.export(model, path, model_name="mobilenetv2", force=True)
    assert relative(run_artifact("onnx", path, x), np.asarray(model(x, training=False))) < BOUND["onnx"]
    assert json.loads((tmp_path / "m.onnx.kzoo.json").read_text())["format"] == "onnx"
    assert _left_in(tmp_path) == ["m.onnx", "m.onnx.kzoo.json"]


@pytest.mark.parametrize("fmt", ["tf_saved_model", "onnx"])
def test_a_failed_parity_check_leaves_the_old_artifact_untouched(fmt, small, tmp_path, monkeypatch):
    model, _ = small
    path = tmp_path / f"m{SUFFIX[fmt]}"
    if fmt == "tf_saved_model":  # an older artifact (its bytes are all that matters here)
        (path / "variables").mkdir(parents=True)
        (path / "saved_model.pb").write_bytes(b"old graph")
        (path / "variables" / "variables.index").write_bytes(b"old index")
        (path / "kzoo.json").write_text('{"old": true}')
    else:
        path.write_bytes(b"old onnx")
        (tmp_path / "m.onnx.kzoo.json").write_text('{"old": true}')
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    import kzoo.export.runtimes as runtimes

    real_load = runtimes.load

    class Drifting:  # a runtime whose numbers are 1% off (a wrong precision, say)
        def __init__(self, runner):
            self.runner, self.batch = runner, runner.batch

        def __call__(self, x):
            return [out * 1.01 for out in self.runner(x)]

        def describe(self):
            return "drifting"

    monkeypatch.setattr(runtimes, "load", lambda *args, **kwargs: Drifting(real_load(*args, **kwargs)))
    with pytest.raises(ParityError, match="differs from the Keras model by .*Nothing was written"):
        kzoo.export(model, path, format=fmt, model_name="mobilenetv2", force=True)
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before


def test_a_missing_engine_names_the_pip_line(small, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(ExportError, match=r'onnxruntime.*pip install "kzoo\[export\]"'):
        kzoo.export(small[0], tmp_path / "m.onnx")
    assert _left_in(tmp_path) == []


def test_weights_apply_to_names_not_built_models(small, tmp_path):
    with pytest.raises(ExportError, match="built model"):
        kzoo.export(small[0], tmp_path / "m.onnx", weights="imagenet")


# --------------------------------------------------------------------------------------------- provenance

def test_provenance_of_a_weights_file(small, tmp_path):
    model, _ = small
    weights = tmp_path / "mine.weights.h5"
    model.save_weights(weights)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    out = tmp_path / "saved"

    result = kzoo.export("mobilenetv2", out, format="tf_saved_model", weights=str(weights), input_size=32)

    doc = json.loads((out / "kzoo.json").read_text())
    assert result.provenance_path == out / "kzoo.json"
    assert doc["model"] == "mobilenetv2" and doc["format"] == "tf_saved_model"
    assert doc["weights"]["sha256"] == digest and doc["weights"]["file_name"] == "mine.weights.h5"
    assert doc["weights"]["registry_id"] is None  # a file no registry entry describes
    assert doc["preprocessing"] == "tf" and doc["input_size"] == [32, 32]
    assert doc["classes"] == 1000 and len(doc["class_index"]) == 1000
    assert doc["class_index"][0] == ["n01440764", "tench"] and doc["class_index"][999] == ["n15075141", "toilet_tissue"]
    assert doc["versions"]["keras"] == keras.__version__ and doc["versions"]["kzoo"] == kzoo.__version__
    assert doc["parity"]["random"]["inputs"] == 4 and doc["parity"]["image"]["inputs"] == 1
    assert doc["parity"]["tolerance"] > 0 and doc["parity"]["tolerance_why"]
    assert all((out / name).is_file() for name in doc["files"])


def test_provenance_without_weights_invents_nothing(tmp_path):
    kzoo.export("mobilenetv2", tmp_path / "m.tflite", weights=None, input_size=32)
    weights = json.loads((tmp_path / "m.tflite.kzoo.json").read_text())["weights"]
    assert weights == {"argument": None, "registry_id": None, "file_name": None, "sha256": None,
                       "loaded_sha256": None}


@pytest.mark.network
def test_provenance_of_registry_weights_names_the_entry_and_its_hash(server, register, tmp_path):
    import tf_keras

    legacy = tf_keras.applications.MobileNet(alpha=0.25, weights=None, input_shape=(32, 32, 3), include_top=False)
    legacy.save_weights(tmp_path / "notop.h5")  # Keras 2's h5 layout, as the released files
    data = (tmp_path / "notop.h5").read_bytes()
    url = server.serve("/weights/mobilenet_test_notop.h5", data)
    # The entry's preprocessing (caffe) differs from the index row's (tf): the entry's must win.
    register(weights_entry("mobilenet.test.notop", data, [url], preprocessing="caffe"))
    out = tmp_path / "saved"
    kzoo.export("mobilenet", out, format="tf_saved_model", weights="test", alpha=0.25, input_size=32,
                include_top=False, pooling="avg")
    doc = json.loads((out / "kzoo.json").read_text())
    assert doc["weights"]["registry_id"] == "mobilenet.test.notop"
    assert doc["weights"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert doc["preprocessing"] == "caffe"
    assert doc["class_index"] is None  # a 256-feature headless model has no class index


# --------------------------------------------------------------------------------------------- command line

def _cli(capsys, *argv):
    from kzoo.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_cli_export_and_its_errors(capsys, tmp_path):
    path = tmp_path / "m.onnx"
    code, out, err = _cli(capsys, "export", "mobilenetv2", "-o", str(path), "--weights", "none", "--input-size", "32")
    assert code == 0, err
    assert "onnx artifact" in out and "max relative difference" in out and path.is_file()
    code, _, err = _cli(capsys, "export", "mobilenetv2", "-o", str(path), "--weights", "none", "--input-size", "32")
    assert code == 1 and "already exists" in err and err.startswith("kzoo: error:")
    code, _, err = _cli(capsys, "export", "nosuchnet", "-o", str(tmp_path / "x.onnx"))
    assert code == 1 and "Unknown model" in err
    assert _cli(capsys, "export", "mobilenetv2", "-o", str(tmp_path / "y"), "--format", "coreml")[0] == 2
    assert _left_in(tmp_path) == ["m.onnx", "m.onnx.kzoo.json"]


def _picture(path, size):
    """A drawn picture (this file's): a sky, a red square and green ground."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), (90, 150, 230))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, size * 2 // 3, size, size], fill=(40, 150, 50))
    draw.rectangle([size // 4, size // 3, size // 2, size * 2 // 3], fill=(200, 40, 30))
    image.save(path)
    return path


def test_cli_predict_prints_the_same_top5_on_keras_and_onnxruntime(capsys, tmp_path):
    keras.utils.set_random_seed(0)
    model = kzoo.create_model("mobilenetv2", weights=None)
    informative(model, images(8, 224, seed=3) / 127.5 - 1)
    weights = tmp_path / "w.weights.h5"
    model.save_weights(weights)
    picture = _picture(tmp_path / "scene.png", 300)

    # What the test expects, computed here: the picture resized to 224, scaled to [-1, 1] (MobileNetV2's "tf"
    # mode), run through Keras, labels read from kzoo's class index file.
    pixels = np.asarray(keras.utils.img_to_array(keras.utils.load_img(picture, target_size=(224, 224),
                                                                      interpolation="bilinear")))
    scores = np.asarray(model(pixels[None] / 127.5 - 1, training=False))[0]
    with open(os.path.join(os.path.dirname(kzoo.__file__), "data", "imagenet_class_index.json")) as f:
        labels = json.load(f)
    expected = [labels[str(i)][1] for i in np.argsort(scores)[::-1][:5]]

    printed = {}
    for engine in ("keras", "onnxruntime"):
        code, out, err = _cli(capsys, "predict", str(picture), "--model", "mobilenetv2", "--weights", str(weights),
                              "--engine", engine)
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0] == str(picture) and len(lines) == 6
        printed[engine] = [line.split()[2] for line in lines[1:]]
    assert printed["keras"] == expected
    assert set(printed["onnxruntime"]) == set(expected)  # the order of near-equal scores may differ


def test_cli_predict_errors(capsys, tmp_path):
    code, _, err = _cli(capsys, "predict", str(tmp_path / "nope.png"), "--model", "mobilenetv2", "--weights", "none")
    assert code == 1 and "No such image file" in err
    assert _cli(capsys, "predict", "x.png", "--model", "mobilenetv2", "--engine", "tensorrt")[0] == 2


def test_errors_are_kzoo_errors():
    assert issubclass(ExportError, KzooError) and issubclass(ParityError, ExportError)
