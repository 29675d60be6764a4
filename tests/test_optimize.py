"""optimize_for_inference computes the same function as the model it rewrites.

Deep random-weight nets are chaotic in float32 (testing_notes.md), so the model families are
compared in float64 with a tight tolerance; one shallow float32 case checks the 1e-5 promise directly.
BN moving statistics, gammas, betas and biases are randomised: with default initialisers a wrong
fold (swapped mean/variance, forgotten epsilon) would pass unnoticed.
"""

import keras
import numpy as np
import pytest

import kzoo
from kzoo.optimize import optimize_for_inference, winograd_tile
from kzoo.winograd import WinogradConv2D


def randomize(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            for var in layer.weights:
                short = var.path.rsplit("/", 1)[-1]
                if short in ("gamma", "moving_variance"):
                    var.assign(rng.uniform(0.5, 1.5, var.shape).astype(var.dtype))
                else:
                    var.assign(rng.normal(0, 0.1, var.shape).astype(var.dtype))
        elif getattr(layer, "use_bias", False) and getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(0, 0.1, layer.bias.shape).astype(layer.bias.dtype))
    return model


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def _rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max() / np.abs(a).max()


def _count(model, cls):
    return sum(isinstance(layer, cls) for layer in _all_layers(model))


@pytest.fixture
def float64():
    keras.config.set_floatx("float64")
    try:
        yield
    finally:
        keras.config.set_floatx("float32")


FAMILIES = [
    # (kzoo name, input size, BN layers that cannot be folded: they follow an add/concat/activation)
    ("resnet50", 32, 0),
    ("mobilenetv2", 32, 0),
    ("efficientnetb0", 32, 0),
    ("densenet121", 32, None),  # BN-ReLU-Conv: the BN after concatenations stay
]


@pytest.mark.parametrize("name,size,left", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_same_function_float64(float64, name, size, left):
    model = randomize(kzoo.create_model(name, weights=None, input_shape=(size, size, 3), include_top=True))
    # Winograd on (the default on CPU, forced for GPU runs), planned for batch 32 so that even these
    # 32-px maps have enough tiles: every eligible ResNet50 conv runs F(4x4, 3x3). Any batch computes the same.
    fast = optimize_for_inference(model, winograd=True, batch_size=32)
    x = np.random.default_rng(1).normal(size=(2, size, size, 3))
    err = _rel_err(model(x, training=False), fast(x, training=False))
    assert err < 1e-10, f"{name}: relative error {err:.2e}"
    bn_before = _count(model, keras.layers.BatchNormalization)
    bn_after = _count(fast, keras.layers.BatchNormalization)
    assert bn_after < bn_before
    if left is not None:
        assert bn_after == left
    assert len(fast.layers) < len(model.layers)
    if name == "resnet50":  # its 3x3 convs with >= 128 channels run as Winograd
        assert _count(fast, WinogradConv2D) == 13
    if name in ("mobilenetv2", "efficientnetb0"):  # their stride-2 pads are exactly "same" pads
        assert _count(model, keras.layers.ZeroPadding2D) > 0
        assert _count(fast, keras.layers.ZeroPadding2D) == 0
    assert fast.input_shape == model.input_shape and fast.output_shape == model.output_shape


def test_same_function_float32_within_1e5():
    model = randomize(kzoo.create_model("mobilenetv2", weights=None, input_shape=(96, 96, 3)))
    fast = optimize_for_inference(model)
    x = np.random.default_rng(2).uniform(-1, 1, size=(4, 96, 96, 3)).astype("float32")
    assert _rel_err(model(x, training=False), fast(x, training=False)) < 1e-5


def test_names_kept_weights_independent():
    model = randomize(kzoo.create_model("resnet50", weights=None, input_shape=(64, 64, 3)))
    fast = optimize_for_inference(model)
    names = {layer.name for layer in fast.layers}
    assert "conv2_block2_1_conv" in names and "conv2_block2_1_bn" not in names
    assert "conv2_block2_1_relu" not in names  # fused into the conv
    assert fast.get_layer("conv2_block2_1_conv").get_config()["activation"] == "relu"
    assert fast.get_layer("conv2_block1_add").__class__ is keras.layers.Add
    # the downsampling blocks' shortcut and first 1x1 convs read the same tensor: merged, named after both
    for stage in (2, 3, 4, 5):
        assert f"conv{stage}_block1_1_conv_and_conv{stage}_block1_0_conv" in names
    # The original is untouched and shares no variables with the result.
    before = model.get_layer("conv1_conv").kernel.numpy().copy()
    fast.get_layer("conv1_conv").kernel.assign(np.zeros_like(before))
    np.testing.assert_array_equal(model.get_layer("conv1_conv").kernel.numpy(), before)


def _small_net(bn_kwargs=None, conv_kwargs=None):
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(5, 3, padding="same", name="c1", **(conv_kwargs or {}))(inputs)
    x = keras.layers.BatchNormalization(name="b1", **(bn_kwargs or {}))(x)
    x = keras.layers.Activation("swish", name="a1")(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False, name="dw")(x)
    x = keras.layers.BatchNormalization(name="b2", **(bn_kwargs or {}))(x)
    x = keras.layers.ReLU(max_value=6.0, name="r2")(x)
    x = keras.layers.SeparableConv2D(4, 3, padding="same", use_bias=False, name="sep")(x)
    x = keras.layers.BatchNormalization(name="b3")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.5, name="drop")(x)
    x = keras.layers.Dense(7, name="fc")(x)
    x = keras.layers.BatchNormalization(name="b4")(x)
    return keras.Model(inputs, x)


@pytest.mark.parametrize(
    "bn_kwargs,conv_kwargs",
    [({}, {}), ({"scale": False}, {}), ({"center": False}, {"use_bias": False}),
     ({"scale": False, "center": False, "epsilon": 0.1}, {})],
    ids=["plain", "no-scale", "no-center-no-bias", "bare-bn"],
)
def test_bn_variants_and_layer_kinds(float64, bn_kwargs, conv_kwargs):
    model = randomize(_small_net(bn_kwargs, conv_kwargs), seed=3)
    fast = optimize_for_inference(model)
    x = np.random.default_rng(4).normal(size=(3, 6, 6, 3))
    assert _rel_err(model(x, training=False), fast(x, training=False)) < 1e-12
    kinds = [type(layer).__name__ for layer in fast.layers]
    assert "BatchNormalization" not in kinds and "Dropout" not in kinds
    assert "Activation" not in kinds and "ReLU" not in kinds
    assert fast.get_layer("c1").get_config()["activation"] in ("swish", "silu")
    assert fast.get_layer("dw").get_config()["activation"] == "relu6"


@pytest.mark.parametrize("size", [8, 9])
def test_padding_folding(float64, size):
    inputs = keras.Input((size, size, 2))
    x = keras.layers.ZeroPadding2D(((0, 1), (0, 1)), name="pad_end")(inputs)  # "same" for even sizes
    x = keras.layers.DepthwiseConv2D(3, strides=2, name="dw_s2")(x)
    x = keras.layers.ZeroPadding2D(1, name="pad_sym")(x)  # "same" for 3x3 stride 1, any size
    x = keras.layers.Conv2D(3, 3, name="conv_s1")(x)
    x = keras.layers.ZeroPadding2D(1, name="pad_s2")(x)  # 3x3 stride 2: "same" pads 0/1 or 1/1
    x = keras.layers.Conv2D(3, 3, strides=2, name="conv_s2")(x)
    model = randomize(keras.Model(inputs, x), seed=11)
    fast = optimize_for_inference(model)
    v = np.random.default_rng(12).normal(size=(2, size, size, 2))
    assert _rel_err(model(v, training=False), fast(v, training=False)) < 1e-12
    names = {layer.name for layer in fast.layers}
    assert "pad_sym" not in names
    assert ("pad_end" in names) == (size % 2 == 1)
    assert fast.get_layer("conv_s1").get_config()["padding"] == "same"


def test_unfoldable_patterns_left_alone(float64):
    inputs = keras.Input((5, 5, 2))
    a = keras.layers.Conv2D(3, 1, activation="relu", name="act_conv")(inputs)
    a = keras.layers.BatchNormalization(name="after_relu")(a)  # BN after a nonlinearity
    b = keras.layers.Conv2D(3, 1, name="two_readers")(inputs)
    b_bn = keras.layers.BatchNormalization(name="bn_two_readers")(b)
    shared = keras.layers.Conv2D(3, 1, name="shared")
    c = keras.layers.BatchNormalization(name="bn_shared")(shared(a))
    d = shared(b_bn)
    out = keras.layers.Concatenate()([a, b, b_bn, c, d])
    model = randomize(keras.Model(inputs, out), seed=5)
    fast = optimize_for_inference(model)
    x = np.random.default_rng(6).normal(size=(2, 5, 5, 2))
    assert _rel_err(model(x, training=False), fast(x, training=False)) < 1e-12
    names = {layer.name for layer in fast.layers}
    assert {"after_relu", "bn_two_readers", "bn_shared"} <= names


def test_nested_and_sequential(float64):
    inner = _small_net()
    inputs = keras.Input((6, 6, 3))
    outer = randomize(keras.Model(inputs, keras.layers.Dense(2, name="head")(inner(inputs))), seed=7)
    fast = optimize_for_inference(outer)
    x = np.random.default_rng(8).normal(size=(2, 6, 6, 3))
    assert _rel_err(outer(x, training=False), fast(x, training=False)) < 1e-12
    assert _count(fast, keras.layers.BatchNormalization) == 0

    seq = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization()])
    randomize(seq, seed=9)
    fast_seq = optimize_for_inference(seq)
    v = np.random.default_rng(10).normal(size=(5, 4))
    assert _rel_err(seq(v, training=False), fast_seq(v, training=False)) < 1e-12


def test_subclassed_model_is_refused():
    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="functional"):
        optimize_for_inference(Sub())


# ----------------------------------------------------------------------------------------------
# Winograd


def _winograd_pair(h, w, cin, cout, tile, activation=None, use_bias=True, seed=0):
    """A Conv2D with random weights and the WinogradConv2D made from it."""
    conv = keras.layers.Conv2D(cout, 3, padding="same", activation=activation, use_bias=use_bias)
    conv.build((None, h, w, cin))
    rng = np.random.default_rng(seed)
    conv.set_weights([rng.normal(size=v.shape) for v in conv.weights])
    return conv, WinogradConv2D.from_conv2d(conv, tile=tile)


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("h,w,activation,use_bias", [(8, 8, None, True), (7, 9, "relu", True),
                                                     (1, 5, "swish", False), (13, 6, None, False)])
def test_winograd_layer_equals_conv2d_float64(float64, tile, h, w, activation, use_bias):
    conv, wino = _winograd_pair(h, w, 5, 6, tile, activation, use_bias)
    x = np.random.default_rng(1).normal(size=(3, h, w, 5))
    y = wino(x)
    assert tuple(y.shape) == (3, h, w, 6)
    assert _rel_err(conv(x), y) < 1e-12


@pytest.mark.parametrize("tile", [2, 4])
def test_winograd_layer_float32_rounding(tile):
    """Rounding against the float64 truth, not against TF's float32 conv: that conv is itself off by
    1.4e-6 where oneDNN runs it (AMD EPYC), 3e-7 without oneDNN. Measured: F(2x2) 4.7e-7, F(4x4) 3.9e-6."""
    conv, wino = _winograd_pair(28, 28, 128, 128, tile)
    truth = keras.layers.Conv2D(128, 3, padding="same", dtype="float64")
    truth.build((None, 28, 28, 128))
    truth.set_weights(conv.get_weights())
    x = np.random.default_rng(2).normal(size=(2, 28, 28, 128)).astype("float32")
    err = _rel_err(truth(x.astype("float64")), wino(x))
    assert err < (1e-6 if tile == 2 else 1e-5), err


def test_winograd_config_round_trip(tmp_path):
    inputs = keras.Input((9, 10, 4))
    conv, wino = _winograd_pair(9, 10, 4, 3, 4, "relu")
    model = keras.Model(inputs, wino(inputs))
    assert WinogradConv2D.from_config(wino.get_config()).get_config() == wino.get_config()
    model.save(tmp_path / "w.keras")
    loaded = keras.saving.load_model(tmp_path / "w.keras")
    x = np.random.default_rng(3).normal(size=(2, 9, 10, 4)).astype("float32")
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(loaded(x)))
    assert isinstance(loaded.layers[-1], WinogradConv2D) and loaded.layers[-1].tile == 4


def _resnet_like(size, channels):
    """Bottleneck-style blocks: conv-BN-ReLU, 3x3 conv-BN-ReLU, add. Plus convs Winograd must skip."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(channels, 1, name="stem")(inputs)
    for i in range(2):
        y = keras.layers.Conv2D(channels, 3, padding="same", name=f"b{i}_conv")(x)
        y = keras.layers.BatchNormalization(name=f"b{i}_bn")(y)
        y = keras.layers.Activation("relu", name=f"b{i}_relu")(y)
        x = keras.layers.Add()([x, y])
    x = keras.layers.Conv2D(channels, 3, strides=2, padding="same", name="stride2")(x)
    x = keras.layers.Conv2D(channels, 3, dilation_rate=2, padding="same", name="dilated")(x)
    x = keras.layers.Conv2D(channels, 3, name="valid")(x)
    x = keras.layers.Conv2D(64, 3, padding="same", name="narrow")(x)  # < 128 channels: not worth it
    return keras.Model(inputs, x)


@pytest.mark.parametrize("size,tile", [(15, 2), (29, 4)])
def test_optimize_resnet_like_uses_winograd(float64, size, tile):
    model = randomize(_resnet_like(size, 128), seed=13)
    fast = optimize_for_inference(model, winograd=True)
    x = np.random.default_rng(14).normal(size=(2, size, size, 3))
    assert _rel_err(model(x, training=False), fast(x, training=False)) < 1e-12
    for i in range(2):
        layer = fast.get_layer(f"b{i}_conv")
        assert isinstance(layer, WinogradConv2D) and layer.tile == tile
        assert layer.get_config()["activation"] == "relu"
    for name in ("stride2", "dilated", "valid", "narrow"):
        assert type(fast.get_layer(name)) is keras.layers.Conv2D
    plain = optimize_for_inference(model, winograd=False)
    assert _count(plain, WinogradConv2D) == 0
    assert _rel_err(model(x, training=False), plain(x, training=False)) < 1e-12


def _fixed_race(times):
    """A stand-in for kzoo.winograd_tuning._race_tiles: given times, and a record of what was raced."""
    calls = []

    def race(batch, shape, filters, activation, dtype_policy):
        calls.append((batch, shape, filters, activation))
        return dict(times)

    return race, calls


@pytest.mark.parametrize("times, expected", [
    ({0: 1.0, 2: 0.6, 4: 0.5}, 4),
    ({0: 1.0, 2: 0.6, 4: 0.7}, 2),
    ({0: 1.0, 2: 0.97, 4: 0.99}, 0),  # within the noise margin: stay direct
    ({0: 1.0, 2: 1.3, 4: 1.2}, 0),
])
def test_auto_on_cpu_keeps_the_fastest_timed_way(monkeypatch, times, expected):
    """"auto" on a CPU times direct / F(2x2) / F(4x4) per distinct conv and keeps the fastest."""
    import kzoo.devices
    import kzoo.winograd_tuning

    race, calls = _fixed_race(times)
    monkeypatch.setattr(kzoo.winograd_tuning, "_race_tiles", race)
    monkeypatch.setattr(kzoo.winograd_tuning, "_TUNED", {})
    monkeypatch.setattr(kzoo.devices, "accelerator_name", lambda: None)
    model = _resnet_like(15, 128)
    fast = optimize_for_inference(model)
    tiles = {layer.name: layer.tile for layer in fast.layers if isinstance(layer, WinogradConv2D)}
    # eligible: the 3x3 stride-1 "same" convs with >= 64 channels; not stride2, dilated, valid
    assert tiles == ({name: expected for name in ("b0_conv", "b1_conv", "narrow")} if expected else {})
    # b0_conv and b1_conv have the same shape, batch and activation: timed once for both
    assert sorted(calls) == [(1, (6, 6, 128), 64, "linear"), (1, (15, 15, 128), 128, "relu")]
    monkeypatch.setattr(kzoo.devices, "accelerator_name", lambda: "Some GPU")
    assert _count(optimize_for_inference(model), WinogradConv2D) == 0  # not measured on GPUs: off


def test_tuned_tile_real_race_and_cache(monkeypatch):
    """The real race runs on this backend, returns a tile, and is not re-run for the same conv."""
    import kzoo.winograd_tuning
    from kzoo.winograd_tuning import tuned_winograd_tile

    monkeypatch.setattr(kzoo.winograd_tuning, "_TUNED", {})
    conv = keras.layers.Conv2D(64, 3, padding="same")
    x = keras.KerasTensor((2, 12, 12, 64))
    conv.build(x.shape)
    assert tuned_winograd_tile(conv, x) in (0, 2, 4)
    raced = []
    monkeypatch.setattr(kzoo.winograd_tuning, "_race_tiles", lambda *a: raced.append(a) or {0: 1, 2: 1, 4: 1})
    tuned_winograd_tile(conv, x)
    assert raced == []  # cached
    assert tuned_winograd_tile(conv, x, batch_size=3) == 0 and len(raced) == 1  # another batch: timed
    small = keras.layers.Conv2D(32, 3, padding="same")
    small.build((None, 12, 12, 64))
    assert tuned_winograd_tile(small, x) == 0 and len(raced) == 1  # < 64 channels: never timed
    strided = keras.layers.Conv2D(64, 3, strides=2, padding="same")
    strided.build((None, 12, 12, 64))
    assert tuned_winograd_tile(strided, x) == 0 and len(raced) == 1


def test_winograd_argument_is_checked():
    with pytest.raises(ValueError, match="winograd must be"):
        optimize_for_inference(_resnet_like(15, 128), winograd="fast")


def test_cpu_threads_follows_the_backend_setting():
    import os

    from kzoo.devices import cpu_threads

    n = cpu_threads()
    assert 1 <= n <= (os.cpu_count() or 1)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        configured = tf.config.threading.get_intra_op_parallelism_threads()
        assert n == (configured or len(os.sched_getaffinity(0)))


def test_winograd_shape_rule():
    conv = keras.layers.Conv2D(256, 3, padding="same")
    # Batch unknown -> planned for batch 1: 4x4 tiles from 32 per call, 2x2 from 49, else the direct conv.
    assert winograd_tile(conv, keras.KerasTensor((None, 28, 28, 128))) == 4  # 49 tiles of 4x4
    assert winograd_tile(conv, keras.KerasTensor((None, 14, 14, 256))) == 2  # 16 of 4x4, 49 of 2x2
    assert winograd_tile(conv, keras.KerasTensor((None, 7, 7, 512))) == 0  # 16 of 2x2
    # The batch the model will run changes the plan: from the argument, else the input's static batch.
    assert winograd_tile(conv, keras.KerasTensor((None, 14, 14, 256)), batch_size=2) == 4
    assert winograd_tile(conv, keras.KerasTensor((None, 7, 7, 512)), batch_size=8) == 4
    assert winograd_tile(conv, keras.KerasTensor((None, 7, 7, 512)), batch_size=4) == 2
    assert winograd_tile(conv, keras.KerasTensor((8, 7, 7, 512))) == 4
    assert winograd_tile(conv, keras.KerasTensor((None, 56, 56, 64))) == 0  # < 128 channels
    assert winograd_tile(conv, keras.KerasTensor((None, None, None, 256))) == 0  # size unknown


def test_batch_size_hint_reaches_nested_models():
    inner = _resnet_like(7, 128)
    outer_in = keras.Input((7, 7, 3))
    outer = keras.Model(outer_in, inner(outer_in))
    tiles = lambda m: sorted(layer.tile for layer in _all_layers(m) if isinstance(layer, WinogradConv2D))  # noqa: E731
    assert tiles(optimize_for_inference(outer, winograd=True)) == []
    assert tiles(optimize_for_inference(outer, winograd=True, batch_size=8)) == [4, 4]


def test_resnet50_float32_with_winograd_within_1e5():
    # At 224x224 and batch 1: conv3 (128 channels, 28x28) runs F(4x4, 3x3), conv4 F(2x2, 3x3), conv5 directly.
    model = randomize(kzoo.create_model("resnet50", weights=None, input_shape=(224, 224, 3)))
    fast = optimize_for_inference(model, winograd=True)
    assert sorted(layer.tile for layer in fast.layers if isinstance(layer, WinogradConv2D)) == [2] * 6 + [4] * 4
    x = np.random.default_rng(15).uniform(-1, 1, size=(1, 224, 224, 3)).astype("float32")
    assert _rel_err(model(x, training=False), fast(x, training=False)) < 1e-5


_JAX_CHILD = """
import keras, numpy as np
keras.config.set_floatx("float64")
from kzoo.optimize import optimize_for_inference
from kzoo.winograd_tuning import _TUNED
from kzoo.winograd import WinogradConv2D
rng = np.random.default_rng(0)
inputs = keras.Input((16, 16, 64))
x = keras.layers.Conv2D(128, 3, padding="same", name="a")(inputs)
x = keras.layers.BatchNormalization(name="bn")(x)
x = keras.layers.Activation("relu")(x)
x = keras.layers.Conv2D(128, 3, padding="same", activation="relu", name="b")(x)
model = keras.Model(inputs, x)
for var in model.weights:
    var.assign(rng.uniform(0.5, 1.5, var.shape) if "variance" in var.path else rng.normal(0, 0.1, var.shape))
data = rng.normal(size=(4, 16, 16, 64))
def rel(a, b):
    return float(np.abs(np.asarray(a) - b).max() / np.abs(b).max())
original = np.asarray(model(data, training=False))
folded = np.asarray(optimize_for_inference(model, winograd=False)(data, training=False))
# Keras' own JAX BatchNormalization differs from conv-with-folded-BN by ~7e-8 in float64 (measured)
assert rel(folded, original) < 1e-6, rel(folded, original)
for choice in ("tune", True):
    fast = optimize_for_inference(model, winograd=choice, batch_size=4)
    assert rel(fast(data, training=False), folded) < 1e-12, (choice, rel(fast(data, training=False), folded))
assert sorted(k[3:] for k in _TUNED) == [(4, 16, 16, 64, 128, "relu"), (4, 16, 16, 128, 128, "relu")], _TUNED
print(keras.backend.backend(), sum(isinstance(l, WinogradConv2D) for l in fast.layers))
"""


def test_tuned_optimizer_on_jax():
    """The tuner races on JAX (jitted) too, and every choice computes the same function (float64)."""
    import os
    import subprocess
    import sys

    pytest.importorskip("jax")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_ENABLE_X64="1", JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-c", _JAX_CHILD], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-2:] == ["jax", "1"]  # winograd=True, the rule: "b" only ("a" has 64 < 128 inputs)


def _siblings_net():
    """Three 1x1 convs on one tensor (BN+ReLU, BN only, bare with its own activation), a strided pair,
    and a 1x1 conv on another tensor that must stay alone."""
    inputs = keras.Input((8, 8, 6))
    a = keras.layers.Conv2D(5, 1, name="a")(inputs)
    a = keras.layers.BatchNormalization(name="a_bn")(a)
    a = keras.layers.Activation("relu", name="a_relu")(a)
    b = keras.layers.Conv2D(7, 1, name="b")(inputs)
    b = keras.layers.BatchNormalization(name="b_bn")(b)
    c = keras.layers.Conv2D(3, 1, activation="tanh", name="c")(inputs)
    d = keras.layers.Conv2D(4, 1, strides=2, name="d")(inputs)
    e = keras.layers.Conv2D(4, 1, strides=2, use_bias=False, name="e")(inputs)
    f = keras.layers.Conv2D(3, 1, name="alone")(a)
    x = keras.layers.Concatenate()([a, b, c, f])
    y = keras.layers.Add()([d, e])
    return keras.Model(inputs, [x, y])


def test_sibling_1x1_convs_merge_into_one_same_function(float64, tmp_path):
    model = randomize(_siblings_net())
    fast = optimize_for_inference(model)
    names = {layer.name for layer in fast.layers}
    assert {"a_and_b_and_c", "d_and_e", "alone"} <= names
    assert not {"a", "b", "c", "d", "e", "a_bn", "b_bn", "a_relu"} & names
    x = np.random.default_rng(1).normal(size=(2, 8, 8, 6))
    for want, got, compiled in zip(model(x, training=False), fast(x, training=False), fast.predict(x, verbose=0)):
        assert _rel_err(want, got) < 1e-12
        assert _rel_err(want, compiled) < 1e-12  # also traced (TF name scopes restrict layer names)
    kept = optimize_for_inference(model, merge_siblings=False)
    assert {"a", "b", "c", "d", "e"} <= {layer.name for layer in kept.layers}
    # the merged model saves and loads (ChannelSplit is a registered layer)
    path = str(tmp_path / "merged.keras")
    fast.save(path)
    loaded = keras.saving.load_model(path)
    for want, got in zip(fast(x), loaded(x)):
        np.testing.assert_array_equal(np.asarray(want), np.asarray(got))
