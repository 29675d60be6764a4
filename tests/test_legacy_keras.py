"""Superseded Keras weight layouts (kzoo/formats/keras_legacy.py) load into today's builders.

The references are the *old* architectures: keras-applications 1.0.8 built on tf_keras (its legacy
``resnet50.py`` has the v0.1/v0.2 names, order and BatchNorm epsilon), with random weights (tests/compat.py's
randomisation: He-scaled kernels, BatchNorm variances near 0.1), written by this test in the layout of the
released files (Keras 1: root attribute ``layer_names`` only, ``conv1_W:0``, ``bn_conv1_running_std:0``).
Theano files are written from a tf_keras model by the inverse transform, and one case is checked against an
independent true-convolution computation (scipy), which no transform-and-inverse mistake can pass.
Everything runs in float64; each comparison first shows that the reference moves with its input.
"""

from __future__ import annotations

import os
import shutil
import warnings

import h5py
import numpy as np
import pytest

from compat import assert_input_sensitive, float64, randomise_weights, relative_error
from kzoo.errors import IncompatibleWeights, WeightsFileError
from kzoo.formats import keras_h5, keras_legacy
from loopback import env, register, weights_entry  # noqa: F401  (pytest fixtures)

TOL = 1e-6
RESNET_SHAPE = (64, 64, 3)
KERAS1_SUFFIXES = {"Conv2D": ("W", "b"), "Dense": ("W", "b"),
                   "BatchNormalization": ("gamma", "beta", "running_mean", "running_std")}


def _ka_kwargs():
    import tf_keras

    return dict(backend=tf_keras.backend, layers=tf_keras.layers, models=tf_keras.models, utils=tf_keras.utils)


def write_keras1(path, layers, suffix=":0"):
    """``layers``: ``[(name, class name, [arrays])]`` -> a file in the Keras 1 layout (keras 1.2.2
    ``engine/topology.py`` save_weights): only ``layer_names`` at the root, every layer listed, datasets named
    after the Keras 1 variables (``:0`` under TensorFlow)."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [name.encode() for name, _, _ in layers]
        for name, class_name, values in layers:
            group = f.create_group(name)
            names = [f"{name}_{s}{suffix}" for s in KERAS1_SUFFIXES.get(class_name, ())][:len(values)]
            group.attrs["weight_names"] = [n.encode() for n in names]
            for n, v in zip(names, values):
                group.create_dataset(n, data=np.asarray(v, np.float32))
    return str(path)


def _float32_weights(model):
    """Round a float64 model's weights through float32 (the files store float32), so file == model."""
    model.set_weights([np.asarray(w, np.float32).astype(np.float64) for w in model.get_weights()])
    return [(layer.name, type(layer).__name__, layer.get_weights()) for layer in model.layers]


def _x(shape, seed):
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (2, *shape))


# ------------------------------------------------------------------------------------------ ResNet50 v0.2

@pytest.fixture(scope="module")
def resnet_v0(tmp_path_factory):
    """The legacy ResNet50 (keras-applications 1.0.8 ``resnet50.py``) with random weights: top and notop files
    in the Keras 1 layout, and the old model's logits / pooled features on two inputs."""
    import tf_keras
    from keras_applications import resnet50

    folder = tmp_path_factory.mktemp("resnet_v0")
    with float64():
        tf_keras.backend.clear_session()
        old = resnet50.ResNet50(weights=None, include_top=True, input_shape=RESNET_SHAPE, **_ka_kwargs())
        randomise_weights(old, seed=3)
        layers = _float32_weights(old)
        pooled = tf_keras.Model(old.input, old.get_layer("avg_pool").output)
        w, b = old.get_layer("fc1000").get_weights()
        xs = [_x(RESNET_SHAPE, s) for s in (0, 1)]
        features = [pooled.predict(x, verbose=0) for x in xs]
    top = write_keras1(folder / "old_resnet.h5", layers)
    notop = write_keras1(folder / "old_resnet_notop.h5", [la for la in layers if la[0] != "fc1000"])
    order = [name for name, _, values in layers if values]
    return dict(top=top, notop=notop, xs=xs, features=features, logits=[f @ w + b for f in features],
                layers={name: values for name, _, values in layers}, order=order, all=layers)


def _kzoo_resnet(weights, include_top=True, **kw):
    import keras

    import kzoo

    keras.backend.clear_session()
    if include_top:
        kw.setdefault("classifier_activation", None)
    else:
        kw.setdefault("pooling", "avg")
    return kzoo.ResNet50(weights=weights, include_top=include_top, input_shape=RESNET_SHAPE, **kw)


def test_resnet50_v0_names_follow_the_rule():
    assert keras_legacy.resnet50_v0_name("res2a_branch2a") == "conv2_block1_1_conv"
    assert keras_legacy.resnet50_v0_name("bn4f_branch2c") == "conv4_block6_3_bn"
    assert keras_legacy.resnet50_v0_name("res5a_branch1") == "conv5_block1_0_conv"
    assert keras_legacy.resnet50_v0_name("bn_conv1") == "conv1_bn"
    assert keras_legacy.resnet50_v0_name("fc1000") == "predictions"


def test_resnet50_v0_keras1_file_reproduces_the_old_model(resnet_v0):
    """weights=<path> (top) and kzoo.load_weights (notop): kzoo's ResNet50 computes the old model's function,
    with the BatchNorm epsilon folded by default. The fold is necessary: bn_epsilon="raw" loads the stored
    numbers, which under today's epsilon compute something else."""
    import kzoo

    assert_input_sensitive(lambda i: resnet_v0["logits"][i], 0, 1, TOL, "legacy ResNet50 logits")
    with float64():
        model = _kzoo_resnet(resnet_v0["top"])
        assert relative_error(model.predict(resnet_v0["xs"][0], verbose=0), resnet_v0["logits"][0]) < TOL
        keras_h5.load_weights(model, resnet_v0["top"], bn_epsilon="raw")
        assert relative_error(model.predict(resnet_v0["xs"][0], verbose=0), resnet_v0["logits"][0]) > 100 * TOL
        stored = resnet_v0["layers"]["bn2a_branch2a"][3]
        np.testing.assert_array_equal(model.get_layer("conv2_block1_1_bn").moving_variance.numpy(), stored)
        headless = _kzoo_resnet(None, include_top=False)
        report = kzoo.load_weights(headless, resnet_v0["notop"])
        assert report.layout.keras1 and report.layout.names == "resnet50_v0"
        assert relative_error(headless.predict(resnet_v0["xs"][1], verbose=0), resnet_v0["features"][1]) < TOL


def test_resnet50_v0_same_shaped_kernels_are_not_swapped(resnet_v0):
    """Keras' by-order loader puts res2a_branch2c's kernel into conv2_block1_0_conv (same shape, other
    order); kzoo's rule puts res2a_branch1's there."""
    file_order = resnet_v0["order"]
    assert file_order.index("res2a_branch1") > file_order.index("res2a_branch2c")  # the old order
    shortcut = resnet_v0["layers"]["res2a_branch1"][0]
    main = resnet_v0["layers"]["res2a_branch2c"][0]
    model = _kzoo_resnet(resnet_v0["top"])
    np.testing.assert_array_equal(model.get_layer("conv2_block1_0_conv").kernel.numpy(), shortcut)
    np.testing.assert_array_equal(model.get_layer("conv2_block1_3_conv").kernel.numpy(), main)
    with pytest.raises(ValueError):  # stage 3 stops Keras, after stage 2 was loaded swapped
        model.load_weights(resnet_v0["top"])
    np.testing.assert_array_equal(model.get_layer("conv2_block1_0_conv").kernel.numpy(), main)


def _mirror_entry(entry_id, path, tmp_path, **fields):
    """A user-registry copy of a shipped entry, pinned to the fixture's bytes, served from a mirror folder."""
    import kzoo.registry as registry

    shipped = registry.get_entry(entry_id).to_dict()
    mirror = tmp_path / "mirror"
    mirror.mkdir(exist_ok=True)
    shutil.copy(path, mirror / shipped["file_name"])
    data = (mirror / shipped["file_name"]).read_bytes()
    entry = weights_entry(entry_id, data, file_name=shipped["file_name"])
    entry.update({k: shipped[k] for k in ("model", "tag", "include_top", "variant", "superseded_by",
                                          "num_classes", "input_size", "preprocessing")})
    entry.update(fields)
    return entry, str(mirror)


def test_resnet50_v0_by_registry_id(resnet_v0, register, tmp_path, monkeypatch):
    """weights="resnet50.imagenet_notop@dlm-v0.2": fetched (here from a mirror), then read by the rule."""
    entry, mirror = _mirror_entry("resnet50.imagenet_notop@dlm-v0.2", resnet_v0["notop"], tmp_path)
    register(entry)
    monkeypatch.setenv("KZOO_MIRRORS", mirror)
    with float64():
        model = _kzoo_resnet("resnet50.imagenet_notop@dlm-v0.2", include_top=False)
        assert relative_error(model.predict(resnet_v0["xs"][0], verbose=0), resnet_v0["features"][0]) < TOL
    with pytest.raises(IncompatibleWeights, match="no classifier head"):
        _kzoo_resnet("resnet50.imagenet_notop@dlm-v0.2", include_top=True)
    with pytest.raises(IncompatibleWeights, match="for model 'resnet50', not 'vgg16'"):
        import kzoo

        kzoo.VGG16(weights="resnet50.imagenet_notop@dlm-v0.2", include_top=False)


# ------------------------------------------------------------------------------------------ Theano ordering

def th_kernel(kernel):
    """The inverse of kzoo's rule: a (rows, cols, in, out) correlation kernel as Theano stored it."""
    return np.ascontiguousarray(kernel[::-1, ::-1].transpose(3, 2, 0, 1))


def th_dense(dense, hwc):
    h, w, c = hwc
    return dense.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(h * w * c, -1)


def _small_net(lib, shape=(20, 18, 3)):
    """Convolutions of several shapes, a max-pool, then Flatten -> Dense (the VGG head's situation)."""
    inp = lib.Input(shape)
    x = lib.layers.Conv2D(6, (7, 7), strides=2, activation="relu", name="c1")(inp)
    x = lib.layers.Conv2D(5, (1, 3), padding="same", activation="relu", name="c2")(x)
    x = lib.layers.Conv2D(4, (3, 3), padding="same", name="c3")(x)
    x = lib.layers.MaxPooling2D(name="pool")(x)
    x = lib.layers.Flatten(name="flatten")(x)
    return lib.Model(inp, lib.layers.Dense(7, name="fc")(x))


def _th_layers(model):
    """The Theano file of a channels-last model: every kernel and the flattened Dense rows inverted."""
    hwc = tuple(int(d) for d in model.get_layer("flatten").input.shape[1:])
    out = []
    for layer in model.layers:
        values = layer.get_weights()
        if values and values[0].ndim == 4:
            values = [th_kernel(values[0]), *values[1:]]
        elif layer.name == "fc":
            values = [th_dense(values[0], hwc), values[1]]
        out.append((layer.name, type(layer).__name__, values))
    return out


@pytest.fixture(scope="module")
def small_th(tmp_path_factory):
    import tf_keras

    folder = tmp_path_factory.mktemp("th")
    with float64():
        tf_keras.backend.clear_session()
        ref = _small_net(tf_keras)
        randomise_weights(ref, seed=5)
        _float32_weights(ref)
        xs = [_x((20, 18, 3), s) for s in (0, 1)]
        outs = [ref.predict(x, verbose=0) for x in xs]
        th_layers = _th_layers(ref)
    named = write_keras1(folder / "small_th_dim_ordering_th_kernels.h5", th_layers, suffix="")
    plain = write_keras1(folder / "small.h5", th_layers, suffix="")
    return dict(named=named, plain=plain, xs=xs, outs=outs, th_layers={n: v for n, _, v in th_layers})


def _load_small(path, **kw):
    import keras

    keras.backend.clear_session()
    model = _small_net(keras)
    report = keras_h5.load_weights(model, path, **kw)
    return model, report


@pytest.mark.parametrize("which, found_from", [("named", "file name"), ("plain", "kernel shapes")])
def test_theano_file_equals_the_tf_keras_model(small_th, which, found_from):
    assert_input_sensitive(lambda i: small_th["outs"][i], 0, 1, TOL, "small net")
    with float64():
        model, report = _load_small(small_th[which])
        assert report.layout.dim_ordering == "th" and report.layout.dim_ordering_from == found_from
        assert relative_error(model.predict(small_th["xs"][0], verbose=0), small_th["outs"][0]) < TOL


def test_theano_detected_from_the_registry_entry(small_th, register, tmp_path, monkeypatch):
    """A known release says th in its variant, whatever the name and shapes; an argument overrides it."""
    data = open(small_th["plain"], "rb").read()
    entry = weights_entry("smallnet.imagenet", data, file_name="small.h5", variant={"dim_ordering": "th"})
    (known,) = register(entry)
    with float64():
        _, report = _load_small(small_th["plain"], release=known)
        assert report.layout.dim_ordering_from == "registry"
        with pytest.raises(IncompatibleWeights):  # told "tf": the Theano kernels do not fit
            _load_small(small_th["plain"], release=known, dim_ordering="tf")


@pytest.mark.parametrize("drop", ["rotation", "transpose", "dense_rows"])
def test_each_theano_transform_is_necessary(small_th, monkeypatch, drop):
    if drop == "rotation":
        monkeypatch.setattr(keras_legacy, "th_kernel_to_tf", lambda k: np.ascontiguousarray(k.transpose(2, 3, 1, 0)))
    elif drop == "transpose":
        monkeypatch.setattr(keras_legacy, "th_kernel_to_tf", lambda k: k)
    else:
        monkeypatch.setattr(keras_legacy, "th_dense_rows_to_tf", lambda w, hwc: w)
    with float64():
        try:
            model, _ = _load_small(small_th["named"])
        except IncompatibleWeights:
            assert drop == "transpose"  # the shapes no longer fit
            return
        assert relative_error(model.predict(small_th["xs"][0], verbose=0), small_th["outs"][0]) > 100 * TOL


def test_theano_file_against_true_convolution():
    """Theano's semantics computed with scipy (true convolution over NCHW, Flatten over (C, H, W)) from the
    file's numbers alone: kzoo's channels-last model must agree."""
    import keras
    from scipy.signal import convolve2d

    rng = np.random.default_rng(11)
    w1, b1 = rng.normal(0, 0.3, (4, 3, 3, 5)), rng.normal(0, 0.1, 4)  # (out, in, rows, cols)
    wd, bd = rng.normal(0, 0.1, (4 * 6 * 4, 3)), rng.normal(0, 0.1, 3)
    x = rng.uniform(-1, 1, (3, 8, 8))  # (C, H, W)
    conv = np.stack([sum(convolve2d(x[i], w1[o, i], mode="valid") for i in range(3)) + b1[o] for o in range(4)])
    expected = np.maximum(conv, 0).reshape(-1) @ wd + bd
    with float64():
        keras.backend.clear_session()
        inp = keras.Input((8, 8, 3))
        y = keras.layers.Conv2D(4, (3, 5), activation="relu", name="conv")(inp)
        y = keras.layers.Dense(3, name="fc")(keras.layers.Flatten()(y))
        model = keras.Model(inp, y)
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = write_keras1(os.path.join(tmp, "net.h5"), [("conv", "Conv2D", [w1, b1]), ("fc", "Dense", [wd, bd])])
            keras_h5.load_weights(model, path, dim_ordering="th")
        got = model.predict(x.transpose(1, 2, 0)[None], verbose=0)[0]
    np.testing.assert_allclose(got, expected.astype(np.float32), rtol=1e-5, atol=1e-5)


def test_vgg16_theano_file_with_head(tmp_path):
    """KA 1.0.8 VGG16 (today's names) with its head at 64x64, classes=10: block5 is 2x2x512, so fc1's rows
    must be reordered; the file is named as the released Theano file (no hash known: a warning)."""
    import tf_keras
    from keras_applications import vgg16

    import kzoo

    shape = (64, 64, 3)
    with float64():
        tf_keras.backend.clear_session()
        old = vgg16.VGG16(weights=None, input_shape=shape, classes=10, **_ka_kwargs())  # softmax head: logits below
        randomise_weights(old, seed=7)
        _float32_weights(old)
        logits = tf_keras.Model(old.input, old.get_layer("predictions").input)
        xs = [_x(shape, s) * 50 for s in (0, 1)]
        refs = [logits.predict(x, verbose=0) @ old.get_layer("predictions").get_weights()[0]
                + old.get_layer("predictions").get_weights()[1] for x in xs]
        layers = []
        for layer in old.layers:
            values = layer.get_weights()
            if values and values[0].ndim == 4:
                values = [th_kernel(values[0]), values[1]]
            elif layer.name == "fc1":
                values = [th_dense(values[0], (2, 2, 512)), values[1]]
            layers.append((layer.name, type(layer).__name__, values))
        path = write_keras1(tmp_path / "vgg16_weights_th_dim_ordering_th_kernels.h5", layers, suffix="")
        assert_input_sensitive(lambda i: refs[i], 0, 1, TOL, "VGG16 logits")
        with pytest.warns(keras_legacy.NotAReleasedCopy):
            model = kzoo.VGG16(weights=path, input_shape=shape, classes=10, classifier_activation=None)
        assert relative_error(model.predict(xs[0], verbose=0), refs[0]) < TOL


# ------------------------------------------------------------------------------ DenseNet / NASNet / InceptionV3

def test_densenet_v0_8_loads_by_order(register, tmp_path, monkeypatch):
    """A DenseNet file whose layer names match nothing (as v0.8's did) loads by order when the registry says
    so (weights=<id>), or with by_order=True; without either, the strict loader refuses it."""
    import keras
    import tf_keras
    from keras_applications import densenet

    import kzoo

    shape = (32, 32, 3)
    with float64():
        tf_keras.backend.clear_session()
        old = densenet.DenseNet121(weights=None, include_top=False, pooling="avg", input_shape=shape,
                                   **_ka_kwargs())
        randomise_weights(old, seed=9)
        _float32_weights(old)
        xs = [_x(shape, s) for s in (0, 1)]
        refs = [old.predict(x, verbose=0) for x in xs]
        layers = [(f"layer_{i}", [(f"layer_{i}/w{j}:0", v) for j, v in enumerate(la.get_weights())])
                  for i, la in enumerate(old.layers)]
    source = tmp_path / "v08.h5"
    keras_h5.write_weights(source, layers, keras_version="2.1.5")
    assert_input_sensitive(lambda i: refs[i], 0, 1, TOL, "DenseNet121")
    entry, mirror = _mirror_entry("densenet121.imagenet_notop@dlm-v0.8", source, tmp_path,
                                  legacy={"pair_by": "order", "same_numbers_as_current": None})
    register(entry)
    monkeypatch.setenv("KZOO_MIRRORS", mirror)
    with float64():
        keras.backend.clear_session()
        model = kzoo.DenseNet121(weights="densenet121.imagenet_notop@dlm-v0.8", include_top=False, pooling="avg",
                                 input_shape=shape)
        assert relative_error(model.predict(xs[0], verbose=0), refs[0]) < TOL
        with pytest.raises(IncompatibleWeights, match="not in the file"):
            keras_h5.load_weights(model, source)
        report = keras_h5.load_weights(model, source, by_order=True)
        assert report.ok and report.layout.names == "order"


def test_inception_v3_2016_is_a_clear_error(tmp_path):
    import keras

    import kzoo

    layers = [("convolution2d_1", "Conv2D", [np.zeros((3, 3, 3, 32)), np.zeros(32)]),
              ("batchnormalization_1", "BatchNormalization", [np.ones(32), np.zeros(32), np.zeros(32), np.ones(32)])]
    path = write_keras1(tmp_path / "inception.h5", layers)
    keras.backend.clear_session()
    model = kzoo.InceptionV3(weights=None, include_top=False, input_shape=(75, 75, 3))
    with pytest.raises(IncompatibleWeights, match="InceptionV3 v0.2"):
        keras_h5.load_weights(model, path)


# ------------------------------------------------------------------------------------------ a user's own file
# A small Theano-ordered file, named like a released one: the layout comes from the contents, the release from
# the hash.

RELEASED_NAME = "vgg16_weights_th_dim_ordering_th_kernels_notop.h5"


def test_a_file_named_like_a_release_is_identified_by_hash(small_th, register, tmp_path):
    data = open(small_th["plain"], "rb").read()
    (known,) = register(weights_entry("smallnet.imagenet", data, file_name=RELEASED_NAME,
                                      variant={"dim_ordering": "th"}))
    path = tmp_path / RELEASED_NAME
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error", keras_legacy.NotAReleasedCopy)
        with float64():
            model, report = _load_small(path)
    assert report.release == "smallnet.imagenet" and report.layout.dim_ordering_from == "registry"
    assert relative_error(model.predict(small_th["xs"][0], verbose=0), small_th["outs"][0]) < TOL


def test_a_file_named_like_a_release_but_not_one_warns_and_loads(small_th, env, tmp_path):
    """The released name, other bytes: a warning, then it loads as the user's own file."""
    path = tmp_path / RELEASED_NAME
    shutil.copy(small_th["plain"], path)
    with pytest.warns(keras_legacy.NotAReleasedCopy, match="not a released copy"), float64():
        model, report = _load_small(path)
    assert report.release is None and report.layout.dim_ordering == "th"
    assert relative_error(model.predict(small_th["xs"][0], verbose=0), small_th["outs"][0]) < TOL


@pytest.mark.parametrize("damage", ["truncated", "not hdf5"])
def test_a_damaged_file_named_like_a_release_names_the_path(small_th, env, tmp_path, damage):
    path = tmp_path / RELEASED_NAME
    data = open(small_th["plain"], "rb").read()
    path.write_bytes(data[:len(data) // 2] if damage == "truncated" else b"<html>404</html>" * 100)
    with pytest.warns(keras_legacy.NotAReleasedCopy), pytest.raises(WeightsFileError, match=str(path)):
        _load_small(path)


def test_kzoo_info_says_how_a_superseded_release_loads(env, capsys):
    from kzoo import cli

    assert cli.main(["info", "densenet121.imagenet@dlm-v0.8"]) == 0
    out = capsys.readouterr().out
    assert "by layer order" in out and "as densenet121.imagenet: unknown" in out
    assert "kzoo.DenseNet121(weights='densenet121.imagenet@dlm-v0.8')" in out
    assert cli.main(["info", "resnet50.imagenet@dlm-v0.2-th"]) == 0
    out = capsys.readouterr().out
    assert "Theano (th)" in out and "renamed by rule" in out and "bn_epsilon='raw'" in out
    assert cli.main(["info", "inceptionv3.imagenet@dlm-v0.2"]) == 0
    assert "loads:         no: a different network" in capsys.readouterr().out


@pytest.mark.sweep
def test_resnet50_v0_theano_file(resnet_v0, tmp_path):
    """Rename rule, epsilon fold and Theano kernels together (each proven alone above), on the full net."""
    layers = [(name, kind, [th_kernel(v) if v.ndim == 4 else v for v in values])
              for name, kind, values in resnet_v0["all"]]
    path = write_keras1(tmp_path / "resnet50_weights_th_dim_ordering_th_kernels.h5", layers, suffix="")
    with float64(), pytest.warns(keras_legacy.NotAReleasedCopy):
        model = _kzoo_resnet(path)
        assert relative_error(model.predict(resnet_v0["xs"][0], verbose=0), resnet_v0["logits"][0]) < TOL
