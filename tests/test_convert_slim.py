"""TF-slim checkpoints -> kzoo models, proven against TF-slim's own logits.

For each net: build it in a ``tf.Graph()`` with random weights, BN statistics and biases (the
harness' rules, ``_ckpt_helpers.randomise_graph_variables``: He-normal kernels, BN variances near 0.1,
so every layer shows in the logits), save V1 and V2 checkpoints and a ``.tar.gz`` of them, convert each,
check the three h5 files agree, load one into the kzoo model and compare logits with slim's on the same
random inputs (float32, max |diff| / max |slim logit| < 1e-4), after asserting that the batch's two
inputs move slim's logits by >= 100x that (``compat.assert_outputs_differ``). vgg_16/19 and
resnet_v2_50/101/152 and inception_v3 come from the tf_slim package; mobilenet_v2(_140) and nasnet_mobile
are not in it, so this file holds an independent TF1 reference of each (tf_slim layers, the published
definition and variable names).
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
slim = pytest.importorskip("tf_slim")

import keras  # noqa: E402
from _ckpt_helpers import make_tar, randomise_graph_variables, read_all, saver, v2_files, write_checkpoint  # noqa: E402
from compat import assert_outputs_differ  # noqa: E402

import kzoo  # noqa: E402
import kzoo.convert as convert  # noqa: E402
from kzoo.convert import cli_main, convert_checkpoint, converted_weights_path  # noqa: E402
from kzoo.errors import ConversionError, UnknownModel  # noqa: E402
from kzoo.formats.keras_h5 import read_weights  # noqa: E402

TOLERANCE = 1e-4


# ---------------------------------------------------------------------------------------------
# Reference nets not shipped by tf_slim, written from the published definitions
# (tensorflow/models research/slim nets/mobilenet/mobilenet_v2.py + conv_blocks.py, and
# nets/nasnet/nasnet.py + nasnet_utils.py), with the same variable scopes.
# ---------------------------------------------------------------------------------------------


def _make_divisible(value, divisor=8, min_value=8):
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


# (expansion t, output channels c, repeats n, first stride s) of MobileNetV2's V2_DEF
_MOBILENET_V2_BLOCKS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                        (6, 160, 3, 2), (6, 320, 1, 1)]


def mobilenet_v2_reference(images, depth_multiplier=1.0, num_classes=1001):
    """MobileNetV2 (Sandler et al. 2018) with slim's scopes: Conv, expanded_conv[_i]/{expand,
    depthwise,project}, Conv_1, Logits/Conv2d_1c_1x1; ReLU6, linear bottlenecks, BN with gamma."""
    def depth(channels):
        return _make_divisible(channels * depth_multiplier)

    conv_scope = slim.arg_scope([slim.conv2d, slim.separable_conv2d], normalizer_fn=slim.batch_norm,
                                activation_fn=tf.nn.relu6, padding="SAME")
    bn_scope = slim.arg_scope([slim.batch_norm], is_training=False, center=True, scale=True, epsilon=1e-3)
    with conv_scope, bn_scope, tf.compat.v1.variable_scope("MobilenetV2"):
        net = slim.conv2d(images, depth(32), [3, 3], stride=2, scope="Conv")
        index = 0
        for expansion, channels, repeats, first_stride in _MOBILENET_V2_BLOCKS:
            for repeat in range(repeats):
                stride = first_stride if repeat == 0 else 1
                with tf.compat.v1.variable_scope("expanded_conv" + (f"_{index}" if index else "")):
                    block_input, in_channels = net, int(net.shape[-1])
                    inner = _make_divisible(in_channels * expansion)
                    if inner > in_channels:
                        net = slim.conv2d(net, inner, [1, 1], scope="expand")
                    net = slim.separable_conv2d(net, None, [3, 3], depth_multiplier=1, stride=stride,
                                                scope="depthwise")
                    net = slim.conv2d(net, depth(channels), [1, 1], activation_fn=None, scope="project")
                    if stride == 1 and in_channels == int(net.shape[-1]):
                        net = net + block_input
                index += 1
        last = 1280 if depth_multiplier <= 1 else _make_divisible(1280 * depth_multiplier)
        net = slim.conv2d(net, last, [1, 1], scope="Conv_1")
        with tf.compat.v1.variable_scope("Logits"):
            net = tf.reduce_mean(net, [1, 2], keepdims=True)
            logits = slim.conv2d(net, num_classes, [1, 1], activation_fn=None, normalizer_fn=None,
                                 scope="Conv2d_1c_1x1")
        return tf.squeeze(logits, [1, 2])


# NASNet-A cells (Zoph et al. 2018), as nasnet_utils.NasNetA{Normal,Reduction}Cell define them.
_NASNET_NORMAL = dict(
    operations=["separable_5x5_2", "separable_3x3_2", "separable_5x5_2", "separable_3x3_2", "avg_pool_3x3",
                "none", "avg_pool_3x3", "avg_pool_3x3", "separable_3x3_2", "none"],
    hiddenstate_indices=[0, 1, 1, 1, 0, 1, 1, 1, 0, 0], used_hiddenstates=[1, 0, 0, 0, 0, 0, 0])
_NASNET_REDUCTION = dict(
    operations=["separable_5x5_2", "separable_7x7_2", "max_pool_3x3", "separable_7x7_2", "avg_pool_3x3",
                "separable_5x5_2", "none", "avg_pool_3x3", "separable_3x3_2", "max_pool_3x3"],
    hiddenstate_indices=[0, 1, 0, 1, 0, 1, 3, 2, 2, 0], used_hiddenstates=[1, 1, 1, 0, 0, 0, 0])


def _factorized_reduction(net, filters):
    """Stride-2 1x1 'conv' on two offset pixel grids, concatenated (path1_conv, path2_conv)."""
    path1 = tf.nn.avg_pool2d(net, 1, 2, "VALID")
    path1 = slim.conv2d(path1, filters // 2, 1, scope="path1_conv")
    path2 = tf.pad(net, [[0, 0], [0, 1], [0, 1], [0, 0]])[:, 1:, 1:, :]
    path2 = tf.nn.avg_pool2d(path2, 1, 2, "VALID")
    path2 = slim.conv2d(path2, filters // 2 + filters % 2, 1, scope="path2_conv")
    return slim.batch_norm(tf.concat([path1, path2], axis=3), scope="final_path_bn")


def _nasnet_operation(net, operation, stride, filters):
    if operation.startswith("separable"):
        size = int(operation.split("_")[1][0])
        for layer in (1, 2):
            net = tf.nn.relu(net)
            net = slim.separable_conv2d(net, filters, size, depth_multiplier=1, stride=stride if layer == 1 else 1,
                                        scope=f"separable_{size}x{size}_{layer}")
            net = slim.batch_norm(net, scope=f"bn_sep_{size}x{size}_{layer}")
        return net
    if operation == "none":
        assert stride == 1 and int(net.shape[-1]) == filters  # true for NASNet-A Mobile
        return net
    pool = slim.avg_pool2d if operation.startswith("avg") else slim.max_pool2d
    return pool(net, 3, stride=stride, padding="SAME")


def _nasnet_cell(net, prev, scope, filters, stride, cell):
    with tf.compat.v1.variable_scope(scope):
        if prev is None:  # first stem cell: the previous "layer" is the input itself, unadjusted
            prev = net
        elif int(prev.shape[2]) != int(net.shape[2]):
            prev = _factorized_reduction(tf.nn.relu(prev), filters)
        elif int(prev.shape[-1]) != filters:
            prev = slim.batch_norm(slim.conv2d(tf.nn.relu(prev), filters, 1, scope="prev_1x1"), scope="prev_bn")
        net = slim.batch_norm(slim.conv2d(tf.nn.relu(net), filters, 1, scope="1x1"), scope="beginning_bn")
        states = [net, prev]
        ops, idx = cell["operations"], cell["hiddenstate_indices"]
        for k in range(5):
            with tf.compat.v1.variable_scope(f"comb_iter_{k}"):
                outputs = []
                for side, i in (("left", 2 * k), ("right", 2 * k + 1)):
                    with tf.compat.v1.variable_scope(side):
                        original = idx[i] < 2
                        outputs.append(_nasnet_operation(states[idx[i]], ops[i], stride if original else 1, filters))
                states.append(outputs[0] + outputs[1])
        return tf.concat([s for s, used in zip(states, cell["used_hiddenstates"]) if not used], axis=3)


def nasnet_mobile_reference(images, num_classes=1001):
    """NASNet-A Mobile 4@1056: imagenet stem (conv0 + 2 reduction cells), 3 x 4 normal cells with
    reduction cells between, final_layer/FC. No top-level scope, as in slim."""
    conv_scope = slim.arg_scope([slim.conv2d, slim.separable_conv2d], activation_fn=None, biases_initializer=None)
    bn_scope = slim.arg_scope([slim.batch_norm], is_training=False, scale=True, epsilon=1e-3)
    with conv_scope, bn_scope:
        net = slim.batch_norm(slim.conv2d(images, 32, 3, stride=2, padding="VALID", scope="conv0"), scope="conv0_bn")
        outputs = [None, net]
        for i, scaling in enumerate((0.25, 0.5)):
            net = _nasnet_cell(net, outputs[-2], f"cell_stem_{i}", int(44 * scaling), 2, _NASNET_REDUCTION)
            outputs.append(net)
        scaling = 1.0
        for cell_num in range(12):
            if cell_num in (4, 8):
                scaling *= 2
                net = _nasnet_cell(net, outputs[-2], f"reduction_cell_{cell_num // 4 - 1}", int(44 * scaling), 2,
                                   _NASNET_REDUCTION)
                outputs.append(net)
            net = _nasnet_cell(net, outputs[-2], f"cell_{cell_num}", int(44 * scaling), 1, _NASNET_NORMAL)
            outputs.append(net)
        with tf.compat.v1.variable_scope("final_layer"):
            net = tf.reduce_mean(tf.nn.relu(net), [1, 2])
            return slim.fully_connected(net, num_classes, activation_fn=None, scope="FC")


# ---------------------------------------------------------------------------------------------
# Building, randomising and saving a slim net
# ---------------------------------------------------------------------------------------------


def _slim_net(name):
    from tf_slim.nets import inception_v3, resnet_v2, vgg

    def resnet(depth):
        def build(x):
            with slim.arg_scope(resnet_v2.resnet_arg_scope()):
                logits, _ = getattr(resnet_v2, f"resnet_v2_{depth}")(x, 1001, is_training=False)
            return tf.squeeze(logits, [1, 2])
        return build

    def vgg_net(x):
        with slim.arg_scope(vgg.vgg_arg_scope()):
            return getattr(vgg, name)(x, 1000, is_training=False)[0]

    def inception(x):
        with slim.arg_scope(inception_v3.inception_v3_arg_scope()):
            return inception_v3.inception_v3(x, 1001, is_training=False)[0]

    builders = {
        "resnet_v2_50": resnet(50), "resnet_v2_101": resnet(101), "resnet_v2_152": resnet(152),
        "vgg_16": vgg_net, "vgg_19": vgg_net, "inception_v3": inception,
        "mobilenet_v2": mobilenet_v2_reference,
        "mobilenet_v2_140": lambda x: mobilenet_v2_reference(x, 1.4),
        "nasnet_mobile": nasnet_mobile_reference,
    }
    return builders[name]


# Input sizes: the smallest that exercise every stride (and odd/even padding cases); VGG needs 224.
SIZES = {"resnet_v2_50": 64, "resnet_v2_101": 64, "resnet_v2_152": 64, "vgg_16": 224, "vgg_19": 224,
         "inception_v3": 139, "mobilenet_v2": 96, "mobilenet_v2_140": 96, "nasnet_mobile": 96}
# slim VGG is fed RGB; the converted weights take Keras' BGR "caffe" input (first conv flipped).
BGR_INPUT = {"vgg_16", "vgg_19"}


@dataclass
class SlimNet:
    name: str
    v1: Path
    v2: Path
    archive: Path
    inputs: np.ndarray
    logits: np.ndarray


def build_slim_net(root: Path, name: str, batch: int = 2, seed: int = 0) -> SlimNet:
    rng = np.random.default_rng(seed)
    size = SIZES[name]
    inputs = rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
    v1, v2 = root / "v1" / f"{name}.ckpt", root / "v2" / "model.ckpt"
    v1.parent.mkdir(parents=True, exist_ok=True)
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, (None, size, size, 3))
        logits = _slim_net(name)(images)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            randomise_graph_variables(session, rng)
            expected = session.run(logits, {images: inputs})
            saver("V1").save(session, str(v1), write_meta_graph=False)
            if name not in BGR_INPUT:  # VGG is shipped, and converted here, as a V1 archive only (see FORMS)
                saver("V2").save(session, str(v2), write_meta_graph=False)
    # The TI-ONE-style archive: both checkpoints, V2's "checkpoint" state file picks one. VGG's
    # archive holds its V1 file only (as TI-ONE ships VGG), to keep the test's disk use down.
    members = {f"{name}/{v1.name}": v1}
    if name not in BGR_INPUT:
        members.update({f"{name}/{f.name}": f for f in v2_files(v2)})
        members[f"{name}/checkpoint"] = v2.parent / "checkpoint"
    archive = make_tar(root / f"{name}.tar.gz", members)
    return SlimNet(name, v1, v2, archive, inputs, expected)


@pytest.fixture(scope="module")
def slim_nets(tmp_path_factory):
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = build_slim_net(tmp_path_factory.mktemp(name), name)
        return cache[name]

    return get


@pytest.fixture(autouse=True)
def fresh_keras():
    keras.backend.clear_session()
    yield
    keras.backend.clear_session()


def _require_builder(name):
    try:
        kzoo.models.get_model_spec(name)
    except UnknownModel:
        pytest.skip(f"the kzoo builder for {name} is not registered yet")


def _relative_error(actual, expected):
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def _assert_logits_match(actual, expected):
    """kzoo's logits within TOLERANCE of slim's, after asserting that the batch's two different inputs move
    slim's logits by >= 100x TOLERANCE (else a wrong mapping could still match)."""
    assert actual.shape == expected.shape and len(expected) >= 2
    change = assert_outputs_differ(expected[:1], expected[1:2], TOLERANCE, "slim logits")
    error = _relative_error(actual, expected)
    print(f"input sensitivity {change:.2e}, max relative logit error {error:.2e}")
    assert error < TOLERANCE, f"max relative logit error {error:.2e}"


def _kzoo_logits(name, weights, inputs, classes=1000, **kwargs):
    keras.backend.clear_session()
    model = kzoo.create_model(name, weights=str(weights), input_shape=inputs.shape[1:], classes=classes,
                              classifier_activation=None, **kwargs)
    if name in BGR_INPUT:
        inputs = inputs[..., ::-1]
    return model, np.asarray(model(inputs, training=False))


def _assert_same_files(a, b):
    # weightless layers (e.g. the auto-named input layer) carry nothing to compare
    layers_a, layers_b = ([(n, w) for n, w in read_weights(f) if w] for f in (a, b))
    assert [n for n, _ in layers_a] == [n for n, _ in layers_b]
    for (_, wa), (_, wb) in zip(layers_a, layers_b):
        assert [n for n, _ in wa] == [n for n, _ in wb]
        for (_, x), (_, y) in zip(wa, wb):
            np.testing.assert_array_equal(x, y)


SLIM_SHIPPED = ["resnet_v2_50", "inception_v3",
                pytest.param("vgg_16", marks=pytest.mark.slow), pytest.param("vgg_19", marks=pytest.mark.sweep),
                pytest.param("resnet_v2_101", marks=pytest.mark.sweep),
                pytest.param("resnet_v2_152", marks=pytest.mark.sweep)]  # sweep: same rules as 16 / 50
REFERENCE_ONLY = ["mobilenet_v2", "mobilenet_v2_140", "nasnet_mobile"]
# Every checkpoint form (V1, V2 and the TI-ONE archive) converts to the same file: proven on the shipped ResNet (one
# reader serves every net); VGG converts the form TI-ONE ships it in (a V1-only archive), the other
# nets their V2 checkpoint.
FORMS = {"resnet_v2_50": ("V1", "V2", "archive"), "vgg_16": ("archive",), "vgg_19": ("archive",)}


@pytest.mark.parametrize("name", SLIM_SHIPPED + REFERENCE_ONLY)
def test_converted_logits_match_slim(name, slim_nets, tmp_path):
    _require_builder(name)
    net = slim_nets(name)
    # Keras' InceptionV3 layers are auto-named (conv2d_17): the converter's model and the one
    # compared below must both be built in a fresh Keras session for the names to agree.
    keras.backend.clear_session()
    convert._plan.cache_clear()
    outputs = {}
    sources = {"V1": net.v1, "V2": net.v2, "archive": net.archive}
    for kind in FORMS.get(name, ("V2",)):
        report = convert_checkpoint(sources[kind], name, tmp_path / f"{kind}.h5")
        outputs[kind] = report.output
        archived = "V1" if name in BGR_INPUT else "V2"
        assert report.checkpoint_format == {"V1": "V1", "V2": "V2", "archive": archived}[kind]
        assert report.output.stat().st_size == report.bytes_written > 0
    first, *others = outputs.values()
    for other in others:
        _assert_same_files(first, other)

    expected = net.logits[:, 1:] if net.logits.shape[1] == 1001 else net.logits
    model, actual = _kzoo_logits(name, first, net.inputs)
    assert report.classes == 1000 and report.background_dropped == (net.logits.shape[1] == 1001)
    _assert_logits_match(actual, expected)
    assert np.argmax(actual, 1).tolist() == np.argmax(expected, 1).tolist()

    # Keras' own loader (legacy h5, by layer order) reads the same file into the same weights.
    loaded = [np.asarray(w) for w in model.weights]
    for w in model.weights:
        w.assign(np.zeros(w.shape, w.dtype))
    keras.Model.load_weights(model, str(first))
    for before, w in zip(loaded, model.weights):
        np.testing.assert_array_equal(before, np.asarray(w))


def test_keep_background(slim_nets, tmp_path):
    net = slim_nets("resnet_v2_50")
    report = convert_checkpoint(net.v1, "resnet_v2_50", tmp_path / "bg.h5", keep_background=True)
    assert report.classes == 1001 and not report.background_dropped
    _, actual = _kzoo_logits("resnet_v2_50", report.output, net.inputs, classes=1001)
    _assert_logits_match(actual, net.logits)


def test_notop_file(slim_nets, tmp_path):
    net = slim_nets("resnet_v2_50")
    report = convert_checkpoint(net.v2, "resnet_v2_50", tmp_path / "notop.h5", include_top=False)
    assert sorted(report.unused["classification head (include_top=False)"]) == [
        "resnet_v2_50/logits/biases", "resnet_v2_50/logits/weights"]
    model = kzoo.create_model("resnet_v2_50", weights=str(report.output), include_top=False,
                              input_shape=(64, 64, 3))
    assert all(name != "predictions" for name, _ in read_weights(report.output))
    assert model.get_layer("post_bn").weights[0].shape == (2048,)


def test_moving_averages_and_unused_report(slim_nets, tmp_path):
    """EMA shadows win by default (--no-ema reads the raw variables); slots, global_step and the
    aux head are reported as unused, not errors."""
    net = slim_nets("resnet_v2_50")
    arrays = read_all(net.v2)
    rng = np.random.default_rng(1)
    ema = {}
    for name, value in arrays.items():
        ema[name] = value + rng.normal(0, 1, value.shape).astype(value.dtype)  # raw: not what slim ran
        ema[name + "/ExponentialMovingAverage"] = value
    ema["global_step"] = np.array(1000, np.int64)
    ema["resnet_v2_50/conv1/weights/Momentum"] = arrays["resnet_v2_50/conv1/weights"]
    ema["resnet_v2_50/AuxLogits/weights"] = np.zeros((3, 3), np.float32)
    prefix = write_checkpoint(tmp_path / "ema" / "model.ckpt", ema, "V2")

    plain = convert_checkpoint(net.v2, "resnet_v2_50", tmp_path / "plain.h5")
    averaged = convert_checkpoint(prefix, "resnet_v2_50", tmp_path / "ema.h5")
    _assert_same_files(plain.output, averaged.output)
    assert averaged.ema_used == len(averaged.mapped) == len(plain.mapped)
    assert averaged.unused["training state"] == ["global_step"]
    assert averaged.unused["optimizer slots"] == ["resnet_v2_50/conv1/weights/Momentum"]
    assert averaged.unused["auxiliary head"] == ["resnet_v2_50/AuxLogits/weights"]
    assert len(averaged.unused["replaced by moving averages"]) == len(plain.mapped)
    assert "unused (optimizer slots): resnet_v2_50/conv1/weights/Momentum" in averaged.summary()

    raw = convert_checkpoint(prefix, "resnet_v2_50", tmp_path / "raw.h5", use_ema=False)
    assert raw.ema_used == 0
    conv1 = dict(dict(read_weights(raw.output))["conv1_conv"])["conv1_conv/kernel:0"]
    np.testing.assert_array_equal(conv1, ema["resnet_v2_50/conv1/weights"])


def test_wrong_architecture(slim_nets, tmp_path):
    net = slim_nets("resnet_v2_50")
    for model in ("vgg_16", "inception_v3", "resnet_v2_101"):
        with pytest.raises(ConversionError, match=rf"not a {model} checkpoint.*looks like a checkpoint for "
                                                  r"resnet_v2_50.*--model resnet_v2_50"):
            convert_checkpoint(net.v1, model, tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()
    with pytest.raises(ConversionError, match="No checkpoint conversion rules for model 'nope'"):
        convert_checkpoint(net.v1, "nope", tmp_path / "x.h5")


def test_missing_variables_and_shape_mismatch(slim_nets, tmp_path):
    net = slim_nets("resnet_v2_50")
    arrays = read_all(net.v2)
    gone = "resnet_v2_50/block2/unit_3/bottleneck_v2/conv2/BatchNorm/gamma"
    broken = {k: v for k, v in arrays.items() if k != gone}
    broken["resnet_v2_50/postnorm/beta"] = np.zeros(1024, np.float32)
    write_checkpoint(tmp_path / "missing" / "model.ckpt", broken, "V2")
    with pytest.raises(ConversionError, match=rf"1 variable\(s\) .*not in the checkpoint:\n  - {gone} "
                                              r"\(for conv3_block3_2_bn/gamma:0\)"):
        convert_checkpoint(tmp_path / "missing", "resnet_v2_50", tmp_path / "x.h5")
    broken[gone] = arrays[gone]
    write_checkpoint(tmp_path / "shape" / "model.ckpt", broken, "V2")
    with pytest.raises(ConversionError, match=r"(?s)1 shape mismatch.*resnet_v2_50/postnorm/beta \(1024,\) -> "
                                              r"post_bn/beta:0: got \(1024,\), the model needs \(2048,\)"):
        convert_checkpoint(tmp_path / "shape", "resnet_v2_50", tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()


def test_bad_checkpoint_files_are_conversion_errors(slim_nets, tmp_path):
    net = slim_nets("resnet_v2_50")
    truncated = tmp_path / "resnet_v2_50.ckpt"
    truncated.write_bytes(net.v1.read_bytes()[: net.v1.stat().st_size // 3])
    with pytest.raises(ConversionError, match="resnet_v2_50.ckpt: TensorFlow cannot open"):
        convert_checkpoint(truncated, "resnet_v2_50", tmp_path / "x.h5")
    data_only = tmp_path / "data_only"
    data_only.mkdir()
    data = [f for f in v2_files(net.v2) if ".data-" in f.name][0]
    (data_only / data.name).symlink_to(data)
    with pytest.raises(ConversionError, match="index file 'model.ckpt.index' is missing"):
        convert_checkpoint(data_only, "resnet_v2_50", tmp_path / "x.h5")


def test_progress_bar(slim_nets, tmp_path, capsys):
    net = slim_nets("resnet_v2_50")
    convert_checkpoint(net.v2, "resnet_v2_50", tmp_path / "quiet.h5")  # stderr is not a terminal
    assert capsys.readouterr().err == ""
    convert_checkpoint(net.v2, "resnet_v2_50", tmp_path / "bar.h5", progress=True)
    err = capsys.readouterr().err
    assert "kzoo convert resnet_v2_50:" in err and "%|" in err and "97.7M" in err  # a tqdm bar, in bytes


def test_cli(slim_nets, tmp_path, capsys):
    net = slim_nets("resnet_v2_50")
    out = tmp_path / "cli.h5"
    assert cli_main([str(net.archive), "--model", "resnet_v2_50", "-o", str(out), "--keep-background",
                     "--no-ema"]) == 0
    printed = capsys.readouterr().out
    assert f"-> {out}" in printed and "classes=1001" in printed
    assert dict(dict(read_weights(out))["predictions"])["predictions/bias:0"].shape == (1001,)
    assert cli_main([str(net.v1), "--model", "vgg_16", "-o", str(tmp_path / "no.h5")]) == 1
    assert "kzoo convert: error:" in capsys.readouterr().err


def test_tione_weights_convert_once(slim_nets, tmp_path, monkeypatch):
    """weights="tione": the registry entry's file comes from a local mirror folder (laid out like
    TI-ONE's checkpoints folder), is converted once, and the cached h5 is reused."""
    net = slim_nets("resnet_v2_50")
    from kzoo import registry

    entry = registry.resolve_weights("resnet_v2_50", "tione", True)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / entry.file_name).write_bytes(net.v1.read_bytes())
    monkeypatch.setenv("KZOO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("KZOO_PINS", str(tmp_path / "pins.json"))  # this checkpoint is trusted on first use
    monkeypatch.setenv("KZOO_MIRRORS", str(mirror))
    monkeypatch.setenv("KZOO_OFFLINE", "1")
    model = kzoo.create_model("resnet_v2_50", weights="tione", classifier_activation=None)
    converted = list((tmp_path / "cache" / "converted").glob("resnet_v2_50-top-*.h5"))
    assert len(converted) == 1

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted twice")

    monkeypatch.setattr(convert, "convert_checkpoint", no_conversion)
    keras.backend.clear_session()
    again = kzoo.create_model("resnet_v2_50", weights="tione", classifier_activation=None)
    for a, b in zip(model.weights, again.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    _, actual = _kzoo_logits("resnet_v2_50", converted[0], net.inputs)
    _assert_logits_match(actual, net.logits[:, 1:])


def test_converted_weights_path_keys(slim_nets, tmp_path, monkeypatch):
    net = slim_nets("resnet_v2_50")
    monkeypatch.setenv("KZOO_CACHE_DIR", str(tmp_path / "cache"))
    entry = types.SimpleNamespace(model="resnet_v2_50", include_top=True, sha256=None,
                                  conversion={"keep_background": True})
    first = converted_weights_path(entry, net.archive)
    assert first.name.startswith("resnet_v2_50-top-bg-") and first.name.endswith(
        f"-c{convert.CONVERTER_VERSION}.h5")
    assert converted_weights_path(entry, net.archive) == first
    entry.include_top = False
    second = converted_weights_path(entry, net.archive)
    assert second != first and "notop" in second.name


# ---------------------------------------------------------------------------------------------
# shufflenet_v2_050: the head's class order is the registry entry's conversion.label_order;
# KZOO_SHUFFLENET_LABELS overrides it.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shufflenet_checkpoint(tmp_path_factory):
    """A random checkpoint with every variable the shufflenet_v2_050 rules read (slim layouts are Keras')."""
    from _ckpt_helpers import random_shufflenet_checkpoint

    return random_shufflenet_checkpoint(tmp_path_factory.mktemp("shufflenet"))


def _converted_bias(path):
    return dict(dict(read_weights(path))["predictions"])["predictions/bias:0"]


def test_shufflenet_label_order_from_registry_entry(shufflenet_checkpoint, tmp_path, monkeypatch):
    from kzoo import registry
    from kzoo.convert.slim_shufflenet import LABELS_ENV

    checkpoint, arrays = shufflenet_checkpoint
    bias = arrays["classifier/biases"]
    monkeypatch.delenv(LABELS_ENV, raising=False)
    monkeypatch.setenv("KZOO_CACHE_DIR", str(tmp_path / "cache"))

    # The shipped entry says ILSVRC devkit order, whose list kzoo does not ship: the head needs the file.
    shipped = registry.get_entry("shufflenet_v2_050.tione").conversion
    assert shipped["label_order"] == "ilsvrc_devkit"
    with pytest.raises(ConversionError, match=f"ilsvrc_devkit order.*{LABELS_ENV}"):
        convert_checkpoint(checkpoint, "shufflenet_v2_050", tmp_path / "x.h5", conversion=shipped)
    # A file converted without an entry reads the registered checkpoint's block.
    with pytest.raises(ConversionError, match=f"ilsvrc_devkit order.*{LABELS_ENV}"):
        convert_checkpoint(checkpoint, "shufflenet_v2_050", tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()
    # Without the head no order is needed.
    convert_checkpoint(checkpoint, "shufflenet_v2_050", tmp_path / "notop.h5", include_top=False, conversion=shipped)

    # An entry whose head is in Keras' order: converted_weights_path hands its block to the rule, which
    # copies the head as is.
    entry = types.SimpleNamespace(model="shufflenet_v2_050", include_top=True, sha256="0" * 64,
                                  conversion={**shipped, "label_order": "alphabetical"})
    np.testing.assert_array_equal(_converted_bias(converted_weights_path(entry, Path(checkpoint).parent)), bias)

    # The environment variable overrides the entry: its file is the checkpoint's order, whatever label_order says.
    index = kzoo.preprocessing.class_index()
    keras_wnids = [index[str(k)][0] for k in range(1000)]
    order = np.random.default_rng(1).permutation(1000)  # checkpoint column j holds Keras class order[j]
    (tmp_path / "wnids.txt").write_text("\n".join(keras_wnids[k] for k in order))
    monkeypatch.setenv(LABELS_ENV, str(tmp_path / "wnids.txt"))
    for label_order in ("alphabetical", "ilsvrc_devkit"):
        report = convert_checkpoint(checkpoint, "shufflenet_v2_050", tmp_path / f"{label_order}.h5",
                                    conversion={**shipped, "label_order": label_order})
        np.testing.assert_array_equal(_converted_bias(report.output), bias[np.argsort(order)])
