"""The slim-style builders (resnet_v1, inception v1/v2/v4, shufflenet_v2) reproduce their TF-slim
networks: a random-weight slim graph is saved as a checkpoint, converted with
``kzoo.convert_checkpoint``, and the kzoo model's logits must match slim's within 1e-4 (relative to
the largest logit) on random inputs.

resnet_v1 and inception v1/v2 come from ``tf_slim.nets``. Inception v4 and ShuffleNet v2 are not
shipped by tf_slim, so this file writes independent TF1 reference graphs (tf.compat.v1 + tf_slim
layers) from the published definitions (tensorflow/models research/slim/nets/inception_v4.py,
TropComplique/shufflenet-v2-tensorflow architecture.py), with their variable names.

Weights are redrawn by the harness' rules (``_ckpt_helpers.randomise_graph_variables``: He-normal
kernels, BN variances near 0.1 with gamma near sqrt(0.1), random betas / moving means / biases), so
activations stay O(1) and every layer shows in the logits; and every comparison first asserts that the
two inputs of the batch move slim's logits by at least 100x the tolerance (``compat.assert_outputs_differ``).
"""

from __future__ import annotations

import tarfile

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
slim = pytest.importorskip("tf_slim")

import keras  # noqa: E402
from _ckpt_helpers import randomise_graph_variables  # noqa: E402
from compat import assert_input_sensitive, assert_outputs_differ  # noqa: E402

import kzoo  # noqa: E402
from kzoo.convert.slim_shufflenet import LABELS_ENV, devkit_to_keras  # noqa: E402
from kzoo.errors import ConversionError  # noqa: E402
from kzoo.models import create_model, get_model_spec  # noqa: E402

v1 = tf.compat.v1
RTOL = 1e-4


# ------------------------------------------------------------------------------------------------
# Harness
# ------------------------------------------------------------------------------------------------


def slim_reference(build, size, tmp_path, *, seed=0, batch=2, input_range=(-1.0, 1.0), archive=False,
                   weight_gain=None):
    """Build ``build(images) -> logits`` in a TF1 graph with random weights; save V1 and V2
    checkpoints (and, if ``archive``, a .tar.gz of the V2 one); return (paths, inputs, logits)."""
    rng = np.random.default_rng(seed)
    inputs = rng.uniform(*input_range, (batch, size, size, 3)).astype(np.float32)
    for folder in ("v1", "v2"):
        (tmp_path / folder).mkdir()
    graph = tf.Graph()
    with graph.as_default():
        images = v1.placeholder(tf.float32, (None, size, size, 3))
        logits = build(images)
        v1.train.get_or_create_global_step()
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            randomise_graph_variables(session, rng, weight_gain)
            expected = session.run(logits, {images: inputs})
            paths = {
                "v1": v1.train.Saver(write_version=v1.train.SaverDef.V1).save(
                    session, str(tmp_path / "v1" / "model.ckpt"), write_meta_graph=False),
                "v2": v1.train.Saver().save(session, str(tmp_path / "v2" / "model.ckpt"), write_meta_graph=False),
            }
    if archive:
        paths["tgz"] = str(tmp_path / "model.tar.gz")
        # Random weights do not compress: level 1 keeps this cheap.
        with tarfile.open(paths["tgz"], "w:gz", compresslevel=1) as tar:
            for item in (tmp_path / "v2").iterdir():
                tar.add(item, arcname=f"ckpt/{item.name}")
    return paths, inputs, expected


def kzoo_logits(model_name, checkpoints, inputs, tmp_path):
    """Convert each checkpoint; the first h5 goes through ``weights=path``, the others are loaded
    into the same model. Yields (logits, report) per checkpoint."""
    model = None
    for tag, checkpoint in checkpoints.items():
        output = tmp_path / f"{model_name}_{tag}.h5"
        report = kzoo.convert_checkpoint(checkpoint, model_name, output=output, progress=False)
        if model is None:
            model = create_model(model_name, weights=str(output), input_shape=inputs.shape[1:],
                                 classifier_activation=None)
        else:
            kzoo.load_weights(model, str(output))
        yield np.asarray(model(inputs, training=False)), report


def assert_logits_close(actual, expected):
    assert actual.shape == expected.shape and len(expected) >= 2
    # The inputs must matter, or a wrong mapping could still "match": the batch's two different inputs
    # must move slim's logits by >= 100x the tolerance.
    change = assert_outputs_differ(expected[:1], expected[1:2], RTOL, "slim logits")
    error = np.abs(actual - expected).max() / np.abs(expected).max()
    print(f"input sensitivity {change:.2e}, max relative logit error {error:.2e}")
    assert error < RTOL, f"max relative logit error {error:.2e}"


def check_model(model_name, build, size, tmp_path, formats=("v1", "v2"), *, class_order=None, **kwargs):
    paths, inputs, expected = slim_reference(build, size, tmp_path, archive="tgz" in formats, **kwargs)
    if expected.shape[-1] == 1001:
        expected = expected[:, 1:]  # the converter drops slim's background class by default
    if class_order is not None:
        expected = expected[:, class_order]
    reports = []
    for actual, report in kzoo_logits(model_name, {fmt: paths[fmt] for fmt in formats}, inputs, tmp_path):
        assert_logits_close(actual, expected)
        reports.append(report)
    return reports


def _unused(report):
    return {name for names in report.unused.values() for name in names}


# ------------------------------------------------------------------------------------------------
# Nets that tf_slim ships
# ------------------------------------------------------------------------------------------------


def _tf_slim_net(function, scope_fn, **kwargs):
    def build(images):
        with slim.arg_scope(scope_fn()):
            logits, _ = function(images, is_training=False, **kwargs)
        return tf.reshape(logits, (tf.shape(logits)[0], -1))

    return build


RESNET_GAIN = {"bottleneck_v1/conv3/": 0.3}


def test_resnet_v1_50_matches_slim(tmp_path):
    from tf_slim.nets import resnet_v1

    build = _tf_slim_net(resnet_v1.resnet_v1_50, resnet_v1.resnet_arg_scope, num_classes=1000)
    # 112: even sizes everywhere, where conv2d_same and 'same' padding differ.
    reports = check_model("resnet_v1_50", build, 112, tmp_path, formats=("v1", "v2", "tgz"), weight_gain=RESNET_GAIN)
    assert _unused(reports[0]) == {"global_step"}
    assert reports[0].classes == 1000 and not reports[0].background_dropped


@pytest.mark.sweep  # 101 and 152: the rules test_resnet_v1_50_matches_slim proves, on longer stage tables
@pytest.mark.parametrize("depth", [101, 152])
def test_resnet_v1_deep_matches_slim(depth, tmp_path):
    from tf_slim.nets import resnet_v1

    build = _tf_slim_net(getattr(resnet_v1, f"resnet_v1_{depth}"), resnet_v1.resnet_arg_scope,
                         num_classes=1000)
    check_model(f"resnet_v1_{depth}", build, 64, tmp_path, formats=("v2",), weight_gain=RESNET_GAIN)


def test_inception_v1_matches_slim(tmp_path):
    from tf_slim.nets import inception_v1

    # tf_slim's v1 head is a fixed 7x7 VALID pool: 224 is the size where it is global.
    build = _tf_slim_net(inception_v1.inception_v1, inception_v1.inception_v1_arg_scope, num_classes=1001)
    reports = check_model("inception_v1", build, 224, tmp_path, batch=2)
    assert reports[0].background_dropped and reports[0].classes == 1000


def test_inception_v2_matches_slim(tmp_path):
    from tf_slim.nets import inception_v2

    # Smaller inputs shrink slim's 7x7 head pool to the whole map, i.e. a global average.
    build = _tf_slim_net(inception_v2.inception_v2, inception_v2.inception_v2_arg_scope, num_classes=1001)
    check_model("inception_v2", build, 128, tmp_path)


# ------------------------------------------------------------------------------------------------
# Inception v4: independent reference after research/slim/nets/inception_v4.py
# ------------------------------------------------------------------------------------------------


def _inception_scope():
    """inception_utils.inception_arg_scope at inference: conv + BN(no gamma, eps 1e-3) + ReLU."""
    return slim.arg_scope(
        [slim.conv2d], activation_fn=tf.nn.relu, normalizer_fn=slim.batch_norm,
        normalizer_params={"epsilon": 1e-3, "scale": False, "is_training": False})


def _v4_branches(net, branches):
    """branches: per Branch_i a list of ops ("conv", filters, kernel, scope[, stride, padding]),
    ("max"|"avg", scope[, stride, padding]), or ("split", [op], [op]) for v4-C's parallel convs."""
    outputs = []
    for index, ops in enumerate(branches):
        with v1.variable_scope(f"Branch_{index}"):
            x = net
            for op in ops:
                kind = op[0]
                if kind == "conv":
                    _, filters, kernel, scope, *rest = op
                    stride, padding = (rest + [1, "SAME"])[:2] if rest else (1, "SAME")
                    x = slim.conv2d(x, filters, kernel, stride=stride, padding=padding, scope=scope)
                elif kind in ("max", "avg"):
                    _, scope, *rest = op
                    stride, padding = (rest + [1, "SAME"])[:2] if rest else (1, "SAME")
                    pool = slim.max_pool2d if kind == "max" else slim.avg_pool2d
                    x = pool(x, [3, 3], stride=stride, padding=padding, scope=scope)
                else:  # split
                    x = tf.concat([slim.conv2d(x, f, k, scope=s) for _, f, k, s in op[1:]], axis=3)
            outputs.append(x)
    return tf.concat(outputs, axis=3)


V4_A = [[("conv", 96, [1, 1], "Conv2d_0a_1x1")],
        [("conv", 64, [1, 1], "Conv2d_0a_1x1"), ("conv", 96, [3, 3], "Conv2d_0b_3x3")],
        [("conv", 64, [1, 1], "Conv2d_0a_1x1"), ("conv", 96, [3, 3], "Conv2d_0b_3x3"),
         ("conv", 96, [3, 3], "Conv2d_0c_3x3")],
        [("avg", "AvgPool_0a_3x3"), ("conv", 96, [1, 1], "Conv2d_0b_1x1")]]
V4_REDUCTION_A = [[("conv", 384, [3, 3], "Conv2d_1a_3x3", 2, "VALID")],
                  [("conv", 192, [1, 1], "Conv2d_0a_1x1"), ("conv", 224, [3, 3], "Conv2d_0b_3x3"),
                   ("conv", 256, [3, 3], "Conv2d_1a_3x3", 2, "VALID")],
                  [("max", "MaxPool_1a_3x3", 2, "VALID")]]
V4_B = [[("conv", 384, [1, 1], "Conv2d_0a_1x1")],
        [("conv", 192, [1, 1], "Conv2d_0a_1x1"), ("conv", 224, [1, 7], "Conv2d_0b_1x7"),
         ("conv", 256, [7, 1], "Conv2d_0c_7x1")],
        [("conv", 192, [1, 1], "Conv2d_0a_1x1"), ("conv", 192, [7, 1], "Conv2d_0b_7x1"),
         ("conv", 224, [1, 7], "Conv2d_0c_1x7"), ("conv", 224, [7, 1], "Conv2d_0d_7x1"),
         ("conv", 256, [1, 7], "Conv2d_0e_1x7")],
        [("avg", "AvgPool_0a_3x3"), ("conv", 128, [1, 1], "Conv2d_0b_1x1")]]
V4_REDUCTION_B = [[("conv", 192, [1, 1], "Conv2d_0a_1x1"), ("conv", 192, [3, 3], "Conv2d_1a_3x3", 2, "VALID")],
                  [("conv", 256, [1, 1], "Conv2d_0a_1x1"), ("conv", 256, [1, 7], "Conv2d_0b_1x7"),
                   ("conv", 320, [7, 1], "Conv2d_0c_7x1"), ("conv", 320, [3, 3], "Conv2d_1a_3x3", 2, "VALID")],
                  [("max", "MaxPool_1a_3x3", 2, "VALID")]]
V4_C = [[("conv", 256, [1, 1], "Conv2d_0a_1x1")],
        [("conv", 384, [1, 1], "Conv2d_0a_1x1"),
         ("split", ("conv", 256, [1, 3], "Conv2d_0b_1x3"), ("conv", 256, [3, 1], "Conv2d_0c_3x1"))],
        [("conv", 384, [1, 1], "Conv2d_0a_1x1"), ("conv", 448, [3, 1], "Conv2d_0b_3x1"),
         ("conv", 512, [1, 3], "Conv2d_0c_1x3"),
         ("split", ("conv", 256, [1, 3], "Conv2d_0d_1x3"), ("conv", 256, [3, 1], "Conv2d_0e_3x1"))],
        [("avg", "AvgPool_0a_3x3"), ("conv", 256, [1, 1], "Conv2d_0b_1x1")]]


def inception_v4_reference(images, num_classes=1001):
    blocks = ([("Mixed_5" + c, V4_A) for c in "bcde"] + [("Mixed_6a", V4_REDUCTION_A)]
              + [("Mixed_6" + c, V4_B) for c in "bcdefgh"] + [("Mixed_7a", V4_REDUCTION_B)]
              + [("Mixed_7" + c, V4_C) for c in "bcd"])
    with v1.variable_scope("InceptionV4"), _inception_scope():
        net = slim.conv2d(images, 32, [3, 3], stride=2, padding="VALID", scope="Conv2d_1a_3x3")
        net = slim.conv2d(net, 32, [3, 3], padding="VALID", scope="Conv2d_2a_3x3")
        net = slim.conv2d(net, 64, [3, 3], scope="Conv2d_2b_3x3")
        with v1.variable_scope("Mixed_3a"):
            net = _v4_branches(net, [[("max", "MaxPool_0a_3x3", 2, "VALID")],
                                     [("conv", 96, [3, 3], "Conv2d_0a_3x3", 2, "VALID")]])
        with v1.variable_scope("Mixed_4a"):
            net = _v4_branches(net, [
                [("conv", 64, [1, 1], "Conv2d_0a_1x1"), ("conv", 96, [3, 3], "Conv2d_1a_3x3", 1, "VALID")],
                [("conv", 64, [1, 1], "Conv2d_0a_1x1"), ("conv", 64, [1, 7], "Conv2d_0b_1x7"),
                 ("conv", 64, [7, 1], "Conv2d_0c_7x1"), ("conv", 96, [3, 3], "Conv2d_1a_3x3", 1, "VALID")]])
        with v1.variable_scope("Mixed_5a"):
            net = _v4_branches(net, [[("conv", 192, [3, 3], "Conv2d_1a_3x3", 2, "VALID")],
                                     [("max", "MaxPool_1a_3x3", 2, "VALID")]])
        for name, block in blocks:
            with v1.variable_scope(name):
                net = _v4_branches(net, block)
                if name == "Mixed_6h":
                    mixed_6h = net
        with v1.variable_scope("AuxLogits"):  # training-only head: in the checkpoint, not in Keras
            aux = slim.avg_pool2d(mixed_6h, [5, 5], stride=3, padding="VALID", scope="AvgPool_1a_5x5")
            aux = slim.conv2d(aux, 128, [1, 1], scope="Conv2d_1b_1x1")
            aux = slim.conv2d(aux, 768, aux.shape[1:3], padding="VALID", scope="Conv2d_2a")
            slim.fully_connected(slim.flatten(aux), num_classes, activation_fn=None, scope="Aux_logits")
        with v1.variable_scope("Logits"):
            net = slim.avg_pool2d(net, net.shape[1:3], padding="VALID", scope="AvgPool_1a")
            return slim.fully_connected(slim.flatten(net), num_classes, activation_fn=None, scope="Logits")


def test_inception_v4_matches_reference(tmp_path):
    # 139: the smallest size where the aux head's 5x5/3 pool still fits (on a 7x7 Mixed_6h).
    reports = check_model("inception_v4", inception_v4_reference, 139, tmp_path, formats=("v2",), batch=2)
    unused = _unused(reports[0])
    assert "InceptionV4/AuxLogits/Aux_logits/weights" in unused
    assert "auxiliary head" in reports[0].unused


# ------------------------------------------------------------------------------------------------
# ShuffleNet v2: independent reference after TropComplique/shufflenet-v2-tensorflow
# ------------------------------------------------------------------------------------------------


def _shufflenet_bn(x):
    # tf.layers.batch_normalization(name='batch_norm'): gamma + beta, eps 1e-3.
    return slim.batch_norm(x, scale=True, epsilon=1e-3, is_training=False, scope="batch_norm")


def _dw(x, stride, scope):
    with v1.variable_scope(scope):
        kernel = v1.get_variable("depthwise_weights", [3, 3, x.shape[3], 1], tf.float32)
        return _shufflenet_bn(tf.nn.depthwise_conv2d(x, kernel, [1, stride, stride, 1], "SAME"))


def _pw(x, filters, scope):
    return slim.conv2d(x, filters, [1, 1], activation_fn=tf.nn.relu, normalizer_fn=_shufflenet_bn, scope=scope)


def _shuffle(x, y):
    # stack on a new axis 3, swap it behind the channels, flatten: x0, y0, x1, y1, ...
    z = tf.transpose(tf.stack([x, y], axis=3), [0, 1, 2, 4, 3])
    shape = tf.shape(x)
    z = tf.reshape(z, [shape[0], shape[1], shape[2], 2 * x.shape[3]])
    return tf.split(z, 2, axis=3)


def shufflenet_v2_reference(images, stage2_channels=48, num_classes=1000):
    x = 2.0 * images - 1.0
    with v1.variable_scope("ShuffleNetV2"):
        x = slim.conv2d(x, 24, [3, 3], stride=2, padding="SAME", activation_fn=tf.nn.relu,
                        normalizer_fn=_shufflenet_bn, scope="Conv1")
        x = slim.max_pool2d(x, [3, 3], stride=2, padding="SAME", scope="MaxPool")
        out_channels = stage2_channels
        for stage, units in (("Stage2", 4), ("Stage3", 8), ("Stage4", 4)):
            with v1.variable_scope(stage):
                channels = x.shape[3]
                with v1.variable_scope("unit_1"):
                    y = _pw(x, channels, "conv1x1_before")
                    y = _dw(y, 2, "depthwise")
                    y = _pw(y, out_channels // 2, "conv1x1_after")
                    with v1.variable_scope("second_branch"):
                        x = _dw(x, 2, "depthwise")
                        x = _pw(x, out_channels // 2, "conv1x1_after")
                for unit in range(2, units + 1):
                    with v1.variable_scope(f"unit_{unit}"):
                        x, y = _shuffle(x, y)
                        half = x.shape[3]
                        x = _pw(_dw(_pw(x, half, "conv1x1_before"), 1, "depthwise"), half, "conv1x1_after")
                x = tf.concat([x, y], axis=3)
            out_channels *= 2
        x = _pw(x, 1024, "Conv5")
    x = tf.reduce_mean(x, axis=[1, 2])
    return slim.fully_connected(x, num_classes, activation_fn=None, scope="classifier")


@pytest.fixture
def devkit_labels(tmp_path, monkeypatch):
    """A stand-in for the author's integer_encoding.json: the Keras wnids in a random 'devkit' order."""
    import json

    index = kzoo.preprocessing.class_index()
    wnids = [index[str(k)][0] for k in range(1000)]
    order = np.random.default_rng(7).permutation(1000)
    path = tmp_path / "integer_encoding.json"
    path.write_text(json.dumps({wnids[k]: int(i) for i, k in enumerate(order)}))
    monkeypatch.setenv(LABELS_ENV, str(path))
    return order  # devkit class i is Keras class order[i]


def test_shufflenet_v2_050_matches_reference(tmp_path, devkit_labels):
    # Both take RGB in [0, 1]. The checkpoint's classes are in devkit order, kzoo's in Keras' order.
    reports = check_model("shufflenet_v2_050", shufflenet_v2_reference, 96, tmp_path, formats=("v1", "v2"),
                class_order=devkit_to_keras(), input_range=(0.0, 1.0))
    # The converted file is a plain legacy h5: Keras' own load_weights reads it too.
    # Logits: an exact comparison still needs outputs that move with the input (assert_input_sensitive).
    model = create_model("shufflenet_v2_050", weights=None, input_shape=(96, 96, 3), classifier_activation=None)
    model.load_weights(reports[0].output)
    reference = create_model("shufflenet_v2_050", input_shape=(96, 96, 3), weights=str(reports[0].output),
                             classifier_activation=None)
    x, x2 = np.random.default_rng(3).uniform(0, 1, (2, 1, 96, 96, 3)).astype(np.float32)
    assert_input_sensitive(lambda v: reference.predict(v, verbose=0), x, x2, 0.0, "shufflenet_v2_050")
    np.testing.assert_array_equal(model.predict(x, verbose=0), reference.predict(x, verbose=0))


def test_devkit_permutation_follows_the_label_file(devkit_labels):
    perm = devkit_to_keras()
    assert sorted(perm) == list(range(1000))
    # Keras class k sits in checkpoint column perm[k]; the file put Keras class order[i] at devkit i.
    assert all(devkit_labels[perm[k]] == k for k in range(1000))


def test_devkit_label_file_missing_or_wrong(tmp_path, monkeypatch):
    monkeypatch.delenv(LABELS_ENV, raising=False)
    with pytest.raises(ConversionError, match=LABELS_ENV):
        devkit_to_keras()
    bad = tmp_path / "wnids.txt"
    bad.write_text("n01440764\n" * 1000)
    monkeypatch.setenv(LABELS_ENV, str(bad))
    with pytest.raises(ConversionError, match="once each"):
        devkit_to_keras()


# ------------------------------------------------------------------------------------------------
# Builder plumbing
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,builder,params", [
    ("resnet_v1_50", "ResNetV1_50", 25_610_152),
    ("inception_v1", "InceptionV1", 6_632_184),
    ("inception_v2", "InceptionV2", 11_198_112),
    ("shufflenet_v2_050", "ShuffleNetV2", 1_374_744),
])
def test_builders_are_registered_with_keras_signature(name, builder, params):
    model = create_model(name, weights=None)
    assert model.count_params() == params  # slim's counts with a 1000-class head
    assert getattr(kzoo, builder) is get_model_spec(name).builder
    notop = create_model(name, weights=None, include_top=False, pooling="avg", input_shape=(96, 96, 3))
    assert len(notop.output_shape) == 2
    with pytest.raises(ValueError):
        create_model(name, weights="not-a-tag")
    # "tione" (the default) is a known tag: it is checked like Keras checks "imagenet", before any fetch.
    with pytest.raises(ValueError, match="classes"):
        create_model(name, weights="tione", classes=10)


def test_preprocess_input_follows_slim():
    pixels = np.array([[[[0.0, 127.5, 255.0]]]])
    np.testing.assert_allclose(kzoo.inception.preprocess_input(pixels.copy()), [[[[-1.0, 0.0, 1.0]]]])
    # vgg_preprocessing: RGB order kept, RGB means subtracted, no scaling
    np.testing.assert_allclose(kzoo.resnet_v1.preprocess_input(pixels.copy()),
                               [[[[-123.68, 127.5 - 116.78, 255.0 - 103.94]]]], rtol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(kzoo.resnet_v1.preprocess_input(
        keras.ops.convert_to_tensor(pixels))), [[[[-123.68, 127.5 - 116.78, 255.0 - 103.94]]]], rtol=1e-6)
    # ShuffleNet v2 standardises inside the model: it takes [0, 1]
    np.testing.assert_allclose(kzoo.shufflenet_v2.preprocess_input(pixels.copy()), [[[[0.0, 0.5, 1.0]]]])
    assert kzoo.ShuffleNetV2.preprocess_input is kzoo.shufflenet_v2.preprocess_input


def test_strided_resnet_v1_unit_is_the_last_one():
    model = create_model("resnet_v1_50", weights=None, include_top=False, input_shape=(224, 224, 3))
    assert model.get_layer("block1_unit2_out").output.shape[1] == 56
    assert model.get_layer("block1_unit3_out").output.shape[1] == 28
    assert model.get_layer("block1_unit3_bottleneck_v1_conv2").strides == (2, 2)
    assert model.get_layer("block4_unit3_out").output.shape[1] == 7


@pytest.mark.parametrize("name,layers", [
    ("resnet_v1_50", ["block1_unit2_out", "block2_unit3_out", "block3_unit5_out", "block4_unit3_out"]),
    ("shufflenet_v2_050", ["MaxPool", "Stage2", "Stage3", "Conv5_relu"]),
])
def test_features_only(name, layers):
    model = create_model(name, weights=None, features_only=True, input_shape=(224, 224, 3))
    assert [info["layer"] for info in model.feature_info] == layers
    assert [output.shape[1] for output in model.outputs] == [56, 28, 14, 7]


def test_shufflenet_round_trips_through_keras_saving(tmp_path):
    model = create_model("shufflenet_v2_050", weights=None, input_shape=(64, 64, 3), classes=10)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = np.random.default_rng(1).uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
