"""kzoo.finetune: classifier building, freezing, BN in fine-tuning, head-mismatch loading, two-phase
training, layer-wise LR decay, datasets, cached features, and distribution (TF mirrored, JAX data
parallel, each in a subprocess because devices must be configured before the backend starts)."""

import json
import logging
import os
import subprocess
import sys
import textwrap
import warnings

import keras
import numpy as np
import pytest
from keras import layers

from kzoo import finetune as ft
from kzoo.finetune import features, freezing, layer_decay, layer_lookup
from kzoo.preprocessing import preprocess_input

SHAPE = (16, 16, 3)


def tiny_backbone(name="tiny", filters=(4, 8)):
    """Two conv stages with BatchNormalization, keras.applications-style names."""
    inputs = keras.Input(SHAPE)
    x = inputs
    for stage, f in enumerate(filters, start=1):
        x = layers.Conv2D(f, 3, padding="same", name=f"block{stage}_conv")(x)
        x = layers.BatchNormalization(name=f"block{stage}_bn")(x)
        x = layers.ReLU(name=f"block{stage}_relu")(x)
        x = layers.MaxPooling2D(name=f"block{stage}_pool")(x)
    return keras.Model(inputs, x, name=name)


def tiny_classifier(num_classes=3, **kwargs):
    return ft.build_classifier(tiny_backbone(), num_classes, preprocessing="tf", **kwargs)


def random_images(n, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, *SHAPE)).astype("float32")


def separable_data(n=64, seed=0):
    """Class = dominant colour (red or blue): survives global pooling, learnable in a few steps."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.uniform(0, 100, (n, *SHAPE)).astype("float32")
    x[y == 1, ..., 0] += 150
    x[y == 0, ..., 2] += 150
    return x, y


def snapshot(model, names):
    return {n: [v.numpy().copy() for v in model.get_layer(n).weights] for n in names}


def changed(before, model):
    return {n: any(not np.array_equal(a, v.numpy()) for a, v in zip(ws, model.get_layer(n).weights))
            for n, ws in before.items()}


# --- build_classifier --------------------------------------------------------------------------


def test_classifier_takes_raw_images_and_copies_the_backbone_flat():
    backbone = tiny_backbone()
    model = ft.build_classifier(backbone, 3, preprocessing="tf", dropout=0.0)
    # flat, top-level layers with the backbone's names and weights; a copy, so .output is ours
    assert [layer.name for layer in model.layers[:3]] == ["image", "preprocessing", "block1_conv"]
    assert model.get_layer("block1_conv") is not backbone.get_layer("block1_conv")
    keras.Model(model.input, model.get_layer("block2_relu").output)  # connected to the classifier's input
    assert model.get_layer("preprocessing").mode == "tf"
    x = random_images(2)
    expected = np.mean(np.asarray(backbone(preprocess_input(x.copy(), mode="tf"))), axis=(1, 2))
    got = np.asarray(ft.feature_extractor(model)(x))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # zero-initialised head: uniform predictions before training
    np.testing.assert_allclose(np.asarray(model(x)), np.full((2, 3), 1 / 3), atol=1e-6)
    assert ft.head_layers(model) == ["avg_pool", "predictions"]


def test_binary_head_is_one_sigmoid_unit():
    model = tiny_classifier(2, pooling="max")
    head = model.get_layer("predictions")
    assert model.output_shape == (None, 1) and head.activation is keras.activations.sigmoid
    assert isinstance(model.get_layer("max_pool"), layers.GlobalMaxPooling2D)


def test_named_backbone_is_flat_with_preprocessing_inside():
    model = ft.build_classifier("mobilenetv2", 4, weights=None, input_shape=(32, 32, 3), alpha=0.35)
    names = [layer.name for layer in model.layers]
    assert names[:2] == ["image", "preprocessing"] and "block_16_project" in names
    assert model.get_layer("preprocessing").mode == "tf"
    assert names[-3:] == ["avg_pool", "top_dropout", "predictions"]


@pytest.mark.parametrize("name, mode", [("resnet50", "caffe"), ("resnet50v2", "tf"), ("densenet121", "torch"),
                                        ("efficientnetb0", "none"), ("inception_v4", "tf")])
def test_preprocessing_mode_by_name(name, mode):
    assert ft.preprocessing_mode(name) == mode


def test_unknown_preprocessing_is_an_error_not_a_guess():
    with pytest.raises(ValueError, match="preprocessing="):
        ft.build_classifier(tiny_backbone(name="my_net"), 3)


def test_saved_classifier_reloads_and_predicts_the_same(tmp_path):
    model = tiny_classifier()
    model.get_layer("predictions").set_weights([np.random.default_rng(0).normal(size=(8, 3)).astype("float32"),
                                                np.zeros(3, "float32")])
    path = tmp_path / "clf.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    x = random_images(3)
    np.testing.assert_allclose(np.asarray(reloaded(x)), np.asarray(model(x)), rtol=1e-6)
    assert ft.head_layers(reloaded)[-1] == "predictions"  # found without the in-memory record


# --- freeze / unfreeze -------------------------------------------------------------------------


def trainable_names(model):
    return [layer.name for layer in layer_lookup._leaf_layers(model) if layer.weights and layer.trainable]


def test_freeze_backbone_leaves_head_trainable():
    model = tiny_classifier()
    summary = ft.freeze(model)
    assert summary.trainable == ["predictions"] and "block1_conv" in summary.frozen
    assert "1 layers trainable" in str(summary)


@pytest.mark.parametrize("until, first_trainable", [
    ("block1_bn", "block2_conv"),  # a layer name
    ("block1", "block2_conv"),  # a stage name: every layer of the stage
    ("block*_conv", "predictions"),  # a glob: up to its last match (block2_conv); block2_bn stays frozen
    (0.5, "block2_conv"),  # a fraction of the backbone's weighted layers (2 of 4)
])
def test_freeze_until(until, first_trainable):
    model = tiny_classifier()
    ft.freeze(model, until=until)
    assert trainable_names(model)[0] == first_trainable


def test_stage_name_does_not_match_longer_numbers():
    assert freezing._matches("block1_conv", "block1") and freezing._matches("block1a_expand", "block1")
    assert not freezing._matches("block10_conv", "block1")


def test_trainable_and_exclude_scopes_like_tf_slim():
    model = tiny_classifier()
    ft.freeze(model, trainable=["block2", "predictions"], exclude=["block2_conv"], keep_bn_frozen=False)
    assert trainable_names(model) == ["block2_bn", "predictions"]


def test_unfreeze_keeps_batchnorm_frozen_by_default():
    model = tiny_classifier()
    ft.freeze(model)
    ft.unfreeze(model, start="block2")
    assert trainable_names(model) == ["block2_conv", "predictions"]
    ft.unfreeze(model, keep_bn_frozen=False)
    assert trainable_names(model) == ["block1_conv", "block1_bn", "block2_conv", "block2_bn", "predictions"]


def test_unknown_layer_names_close_candidates():
    with pytest.raises(ValueError, match="block2_conv"):
        ft.freeze(tiny_classifier(), until="block2_cnv")


def test_frozen_batchnorm_statistics_do_not_move_during_fit():
    """keras#9214: a frozen BN layer must run in inference mode, so fit() leaves its moving
    statistics alone. The control (BN trainable) shows the same fit does move them."""
    x, y = separable_data(32)
    stats = ["block1_bn", "block2_bn"]

    def fit(keep_bn_frozen):
        keras.utils.set_random_seed(0)
        model = tiny_classifier(2)
        ft.freeze(model)  # backbone frozen, BN included
        ft.unfreeze(model, keep_bn_frozen=keep_bn_frozen)  # convs train; BN frozen or not
        before = snapshot(model, stats + ["block1_conv"])
        model.compile("adam", "binary_crossentropy", jit_compile=False)
        model.fit(x, y, epochs=2, batch_size=8, verbose=0)
        return changed(before, model)

    frozen = fit(keep_bn_frozen=True)
    assert frozen == {"block1_bn": False, "block2_bn": False, "block1_conv": True}
    control = fit(keep_bn_frozen=False)
    assert control["block1_bn"] and control["block2_bn"]


# --- loading weights when the head differs ----------------------------------------------------


def test_head_mismatch_is_skipped_and_reported(tmp_path, caplog):
    from kzoo.formats.keras_h5 import save_weights

    source = tiny_classifier(10)
    source.get_layer("predictions").set_weights([np.ones((8, 10), "float32"), np.ones(10, "float32")])
    path = tmp_path / "ten_classes.h5"
    save_weights(source, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # only the head differs: no warning...
        with caplog.at_level(logging.INFO, logger="kzoo"):
            target = ft.build_classifier(tiny_backbone(), 3, preprocessing="tf", weights=str(path))
    report = target.kzoo_load_report
    assert report.skipped == ["predictions"] and "predictions" in caplog.text  # ...but it is said
    np.testing.assert_array_equal(target.get_layer("predictions").get_weights()[0], np.zeros((8, 3)))
    for name in ("block1_conv", "block2_bn"):
        for a, b in zip(source.get_layer(name).get_weights(), target.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)


def test_backbone_mismatch_warns_with_layer_names(tmp_path):
    from kzoo.formats.keras_h5 import save_weights

    path = tmp_path / "wider.h5"
    save_weights(ft.build_classifier(tiny_backbone(filters=(4, 16)), 3, preprocessing="tf"), path)
    with pytest.warns(UserWarning, match="block2_conv"):
        ft.build_classifier(tiny_backbone(), 3, preprocessing="tf", weights=str(path))


# --- two-phase training and layer decay --------------------------------------------------------


def test_fit_two_phase_trains_head_then_top():
    x, y = separable_data(32)
    model = tiny_classifier(2)
    before = snapshot(model, ["block1_conv", "block2_conv", "predictions"])
    result = ft.fit_two_phase(model, (x, y), head_epochs=1, finetune_epochs=0, lr=1e-2, batch_size=8,
                              jit_compile=False, verbose=0)
    assert changed(before, model) == {"block1_conv": False, "block2_conv": False, "predictions": True}
    assert result.head_summary.trainable == ["predictions"] and result.finetune is None
    result = ft.fit_two_phase(model, (x, y), (x, y), head_epochs=1, finetune_epochs=2, unfreeze="block2",
                              batch_size=8, jit_compile=False, verbose=0)
    assert changed(before, model) == {"block1_conv": False, "block2_conv": True, "predictions": True}
    assert len(result.history["loss"]) == 3 and "val_accuracy" in result.history
    assert model.get_layer("block2_bn").trainable is False


def test_layer_decay_scales_run_from_head_down():
    model = tiny_classifier()
    ft.unfreeze(model)
    scales = ft.layer_decay_scales(model, 0.5, groups=2)
    assert scales == {"block1_conv/kernel": 0.25, "block1_conv/bias": 0.25,
                      "block2_conv/kernel": 0.5, "block2_conv/bias": 0.5}  # head: absent, i.e. 1.0


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_layer_decay_scales_the_step_not_the_gradient(optimizer):
    """Adam is invariant to gradient scale, so only a learning-rate scale shows in its first step."""
    a = keras.Variable(np.zeros(3, "float32"), name="a")
    b = keras.Variable(np.zeros(3, "float32"), name="b")
    opt = layer_decay._make_optimizer(optimizer, 0.1, lr_scales={b.path: 0.25})
    opt.apply([np.ones(3, "float32"), np.ones(3, "float32")], [a, b])
    np.testing.assert_allclose(a.numpy(), -0.1, rtol=1e-4)
    np.testing.assert_allclose(b.numpy(), -0.025, rtol=1e-4)


def test_fit_two_phase_with_layer_decay_runs_and_saves(tmp_path):
    x, y = separable_data(32)
    model = tiny_classifier(2)
    ft.fit_two_phase(model, (x, y), head_epochs=1, finetune_epochs=1, layer_decay=0.5, batch_size=8,
                     jit_compile=False, verbose=0)
    model.save(tmp_path / "m.keras")
    keras.saving.load_model(tmp_path / "m.keras")


# --- data --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (root / cls).mkdir()
        for i in range(6):
            keras.utils.save_img(root / cls / f"{i}.png", rng.uniform(0, 255, (20, 24, 3)), scale=False)
    return root


def test_image_dataset_uses_model_size_and_head(image_folder):
    model = tiny_classifier(2)
    train, val = ft.image_dataset(image_folder, model, batch_size=4, validation_split=0.25, subset="both",
                                  augment={"flip": "horizontal", "contrast": 0.1})
    assert train.class_names == ["cats", "dogs"] == val.class_names
    x, y = next(iter(train))
    assert tuple(x.shape[1:]) == SHAPE and tuple(y.shape) == (4, 1)  # binary labels for a one-unit head
    assert float(np.max(x)) > 2.0  # raw pixels, not preprocessed
    plain = ft.image_dataset(image_folder, tiny_classifier(3), batch_size=12, shuffle=False)
    _, y = next(iter(plain))
    assert sorted(np.asarray(y).tolist()) == [0] * 6 + [1] * 6
    with pytest.raises(ValueError, match="Unknown augmentation"):
        ft.image_dataset(image_folder, model, augment={"blur": 1})


# --- cached features ---------------------------------------------------------------------------


def test_features_are_cached_and_not_recomputed(tmp_path, monkeypatch):
    model = tiny_classifier()
    x = random_images(10)
    y = np.arange(10) % 3
    calls = []
    real = features._compute_features
    monkeypatch.setattr(features, "_compute_features", lambda *a: calls.append(1) or real(*a))
    f1, l1 = ft.extract_features(model, (x, y), cache=tmp_path)
    f2, l2 = ft.extract_features(model, (x, y), cache=tmp_path)
    assert len(calls) == 1 and f1.shape == (10, 8)
    np.testing.assert_array_equal(f1, f2)
    np.testing.assert_array_equal(l1, l2)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    # a dataset with the same content in another order and batching hits the same cache
    import tensorflow as tf

    perm = np.random.default_rng(1).permutation(10)
    ds = tf.data.Dataset.from_tensor_slices((x[perm], y[perm])).batch(3)
    ft.extract_features(model, ds, cache=tmp_path)
    assert len(calls) == 1
    # new weights: new key, recomputed
    model.get_layer("block1_conv").kernel.assign(model.get_layer("block1_conv").kernel * 2)
    ft.extract_features(model, (x, y), cache=tmp_path)
    assert len(calls) == 2 and len(list(tmp_path.glob("*.npz"))) == 2


@pytest.mark.parametrize("name", ["feats.npz", "feats.h5"])
def test_single_file_cache_checks_its_key(tmp_path, monkeypatch, name):
    model = tiny_classifier()
    x = random_images(4)
    calls = []
    real = features._compute_features
    monkeypatch.setattr(features, "_compute_features", lambda *a: calls.append(1) or real(*a))
    f1, labels = ft.extract_features(model, x, cache=tmp_path / name, data_key="four-images")
    f2, _ = ft.extract_features(model, x, cache=tmp_path / name, data_key="four-images")
    assert labels is None and len(calls) == 1
    np.testing.assert_array_equal(f1, f2)
    ft.extract_features(model, x, cache=tmp_path / name, data_key="other-images")
    assert len(calls) == 2


def test_linear_probe_on_cached_features(tmp_path):
    x, y = separable_data(64)
    keras.utils.set_random_seed(0)
    model = tiny_classifier(2)
    result = ft.linear_probe(model, (x[:48], y[:48]), (x[48:], y[48:]), cache=tmp_path, epochs=60)
    assert result.train_accuracy >= 0.9 and result.val_accuracy >= 0.8
    assert len(list(tmp_path.glob("*.npz"))) == 2


# --- distribution --------------------------------------------------------------------------------

COMMON = textwrap.dedent('''
    import sys, numpy as np
    sys.path.insert(0, {tests!r})
    import keras
    from kzoo import finetune as ft
    from kzoo.finetune import layer_decay
    from test_finetune import tiny_classifier, separable_data
''')


def run_python(code, env=None, timeout=240):
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    src = COMMON.format(tests=os.path.dirname(__file__)) + textwrap.dedent(code)
    proc = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, env=full_env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    out = run_python(f'''
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            model = tiny_classifier(2)
        x, y = separable_data(64)
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
        before = model.get_layer("block1_bn").moving_mean.numpy().copy()
        result = ft.fit_two_phase(model, ds, ds, head_epochs=2, finetune_epochs=2, lr=1e-2, layer_decay=0.7,
                                  jit_compile=False, verbose=0)
        feats, labels = ft.extract_features(model, ds, cache={str(tmp_path)!r})
        print(__import__("json").dumps({{
            "replicas": strategy.num_replicas_in_sync,
            "variable_type": type(model.get_layer("predictions").kernel.value).__name__,
            "loss": result.history["loss"],
            "bn_still": bool(np.array_equal(before, model.get_layer("block1_bn").moving_mean.numpy())),
            "features": list(feats.shape)}}))
    ''')
    assert out["replicas"] == 2 and "Mirrored" in out["variable_type"]
    assert out["loss"][-1] < out["loss"][0] and out["bn_still"] and out["features"] == [64, 8]


def test_jax_data_parallel_on_two_host_devices():
    out = run_python('''
        import jax
        devices = jax.devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        keras.utils.set_random_seed(0)
        model = tiny_classifier(2)
        x, y = separable_data(64)
        result = ft.fit_two_phase(model, (x, y), (x, y), head_epochs=2, finetune_epochs=2, lr=1e-2,
                                  layer_decay=0.7, batch_size=16, verbose=0)
        a, b = keras.Variable(np.zeros(3, "float32")), keras.Variable(np.zeros(3, "float32"))
        opt = layer_decay._make_optimizer("adam", 0.1, lr_scales={b.path: 0.25})
        opt.apply([np.ones(3, "float32")] * 2, [a, b])
        print(__import__("json").dumps({
            "backend": keras.backend.backend(), "devices": len(devices),
            "sharding": str(model.get_layer("predictions").kernel.value.sharding),
            "loss": result.history["loss"],
            "decay_step": [float(a.numpy()[0]), float(b.numpy()[0])]}))
    ''', env={"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
              "JAX_PLATFORMS": "cpu"})
    assert out["backend"] == "jax" and out["devices"] == 2
    assert out["loss"][-1] < out["loss"][0]
    np.testing.assert_allclose(out["decay_step"], [-0.1, -0.025], rtol=1e-4)
