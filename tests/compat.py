"""The compatibility harness: proves a kzoo builder is weight-compatible with keras.applications.

For one builder name and one configuration it
1. builds the tf_keras (Keras 2) ``keras.applications`` model with random weights -- BatchNorm moving
   statistics, biases and Normalization statistics randomised too -- and saves them in the legacy h5
   layout, exactly as the released files were written;
2. loads that file into keras.applications (Keras 3, Keras' own loader) and into kzoo, by ``weights=path``
   and by Keras' own ``model.load_weights`` (which reads legacy files by weighted-layer order);
3. saves the kzoo model's weights back out with ``kzoo.formats.keras_h5.save_weights`` and loads them into
   the keras.applications model (its weights wiped first);
4. compares outputs on random inputs (logits, with the head), and layer names, weight names and shapes
   one for one.

Everything runs in float64 (see shared/reference/testing_notes.md: float32 comparisons of deep random
nets are chaotic), so the tolerance stays tight.

A comparison must be able to see a mistake. With BatchNorm variances in U(0.5, 1.5) and the initialisers'
kernel scale the signal died with depth: a random MobileNetV2 moved 6e-10 between two inputs, and a
swapped beta / moving_mean pair in its first BatchNorm changed the output by 8e-12, far inside 1e-5. So
the weights are drawn for every layer to show (``randomise_weights``: He-normal kernels, BatchNorm
variances near 0.1, gammas near sqrt(0.1)), inputs are what each family expects (``random_inputs``), and
every comparison first asserts that the reference's output moves with its input by at least
max(100 x tolerance, 1e-3) (``assert_outputs_differ`` / ``assert_input_sensitive``).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import tempfile

import numpy as np

RTOL = 1e-5
SENSITIVITY: dict = {}  # (name, include_top, kwargs) -> (reference's relative input change, worst error)
_FIXTURE_DIR = tempfile.mkdtemp(prefix="kzoo-compat-")
# float64 weight files of the big models run to hundreds of MB each: never leave them behind.
atexit.register(shutil.rmtree, _FIXTURE_DIR, ignore_errors=True)


@contextlib.contextmanager
def float64():
    import keras
    import tf_keras

    old3, old2 = keras.config.floatx(), tf_keras.backend.floatx()
    keras.config.set_floatx("float64")
    tf_keras.backend.set_floatx("float64")
    try:
        yield
    finally:
        keras.config.set_floatx(old3)
        tf_keras.backend.set_floatx(old2)


# How random weights are drawn (randomise_weights; the slim tests' checkpoints follow the same rules).
# The aim is a net in which every layer matters: the input's signal must reach the output (or an early
# mapping error is invisible) without growing so much that late offsets vanish beside it (or a late one
# is). Measured on random tf_keras nets (float64): BatchNorm variances in U(0.5, 1.5) with the
# initialisers' (Glorot) kernels leave a MobileNetV2 moving ~1e-9 between two inputs; variances near 0.1
# with gamma near 1 give each BatchNorm a gain of ~3, so ResNet50 / DenseNet121 / InceptionV3 outputs
# reach 1e13-1e18 and a swapped beta pair in their last BatchNorm changes the output by 0.0; and
# MobileNet (v1) moved ~1e-6 under either, because Keras' Glorot initialiser counts a depthwise kernel's
# channels as fan-in (std ~0.02 on 512 channels), so every depthwise layer divides the signal by ~20.
# So: He-normal kernels everywhere (a conv + ReLU keeps its input's scale, depthwise fan-in = its
# window), BatchNorm variances near 0.1 and gamma near sqrt(0.1), i.e. a BatchNorm gain
# gamma / sqrt(variance) spread around 1. Variances near 0.1 also make a variance read as a std (3x) or a
# wrong epsilon (1e-3 vs 1.001e-5 is 1% of 0.1) visible, and keep gamma and variance apart.
# A BatchNorm without gamma (scale=False: InceptionV3, InceptionResNetV2) has gain 1 / sqrt(variance):
# its variance is drawn near 1 instead, or each of those layers would multiply the signal by ~3.
GAMMA_RANGE = (0.15, 0.45)  # sqrt(0.1) * U(0.5, 1.5); LayerNorm and ConvNeXt's LayerScale too
# EfficientNet B0-B7 (swish, and squeeze-excite gates that halve the signal in every block) is below
# critical at gain 1: measured on B0, the output moved 9e-4 between two inputs and a swapped pair of
# the first BatchNorm's variances changed it by 9e-6. Its gammas are drawn 1.1x larger (B0: 3e-2 and
# 2e-4); at 1.5x it is past critical (outputs 1e5-1e9, late offsets invisible). Matched on model.name.
BN_GAIN = {"efficientnetb": 1.1}
BN_VARIANCE_RANGE = (0.05, 0.15)
BN_VARIANCE_RANGE_NO_GAMMA = (0.5, 1.5)
OFFSET_STD = 0.1  # beta, moving_mean, bias: N(0, 0.1)
# The weighted input Normalization of EfficientNet B0-B7 (weights mean/variance/count) standardises pixels
# in [0, 1] (after Rescaling(1/255)): data-like statistics, the variance spanning both the true pixel
# variance (std**2 ~ 0.05) and the released files' convention of storing the std (~0.23) as variance.
# Both stay away from the build-time 0 / 1, so statistics that are not applied on load show.
INPUT_MEAN_RANGE = (0.3, 0.6)
INPUT_VARIANCE_RANGE = (0.04, 0.25)
# The sensitivity rule: see required_sensitivity / assert_outputs_differ.
SENSITIVITY_FACTOR = 100
MIN_SENSITIVITY = 1e-3
KERNELS = ("kernel", "depthwise_kernel", "pointwise_kernel", "weights", "depthwise_weights",
           "pointwise_weights")


def fan_in(name: str, shape: tuple) -> int:
    """Inputs summed into one output unit: a (kh, kw, in, out) conv or (in, out) dense kernel sums over all
    but its last axis, a depthwise (kh, kw, in, multiplier) kernel over its window only."""
    if "depthwise" in name:
        return int(np.prod(shape[:2]))
    return int(np.prod(shape[:-1]))


def he_normal(rng, name: str, shape: tuple):
    """std sqrt(2 / fan_in): a conv or dense layer followed by ReLU keeps its input's scale."""
    return rng.normal(0.0, np.sqrt(2.0 / fan_in(name, shape)), shape)


def _path(var) -> str:
    return getattr(var, "path", None) or var.name  # Keras 3 variables have .path; tf.Variables a scoped name


def random_value(name: str, shape: tuple, rng, *, with_gamma: bool, gain: float = 1.0):
    """The random value for a variable whose last name component is ``name`` (Keras or TF-slim names), or
    None for one to keep (Normalization's count, TF's global_step). ``with_gamma``: the variable's layer
    has a gamma (decides a BatchNorm variance's range). Raises for a variable no rule covers."""
    if name in ("count", "global_step"):
        return None
    if name == "gamma":
        return gain * rng.uniform(*GAMMA_RANGE, shape)
    if name == "moving_variance":
        return rng.uniform(*(BN_VARIANCE_RANGE if with_gamma else BN_VARIANCE_RANGE_NO_GAMMA), shape)
    if name == "variance":
        return rng.uniform(*INPUT_VARIANCE_RANGE, shape)
    if name == "mean":
        return rng.uniform(*INPUT_MEAN_RANGE, shape)
    if name in ("beta", "moving_mean", "bias", "biases"):
        return rng.normal(0.0, OFFSET_STD, shape)
    if name in KERNELS and len(shape) >= 2:
        return he_normal(rng, name, shape)
    raise AssertionError(f"no randomisation rule for a variable named {name!r} {shape}")


def layers_with_gamma(paths) -> set:
    """The scopes (path up to the last '/') that hold a gamma."""
    return {p.rsplit("/", 1)[0] for p in paths if p.split("/")[-1].split(":")[0] == "gamma"}


def randomise_weights(model, seed: int):
    """Random values for every variable, scaled so that every layer's weights show in the output.

    Kernels He-normal; gamma (BatchNorm, LayerNorm, LayerScale) U(0.15, 0.45), x1.1 in EfficientNet B0-B7
    (BN_GAIN); BatchNorm moving_variance U(0.05, 0.15) (U(0.5, 1.5) where the layer has no gamma), beta and
    moving_mean N(0, 0.1); biases N(0, 0.1); Normalization (EfficientNet's input statistics) mean
    U(0.3, 0.6), variance U(0.04, 0.25). See the comments above GAMMA_RANGE for the measurements.
    """
    rng = np.random.default_rng(seed)
    gain = next((g for prefix, g in BN_GAIN.items() if model.name.lower().startswith(prefix)), 1.0)
    paths = [_path(var) for var in model.weights]
    with_gamma = layers_with_gamma(paths)
    values = []
    for var, path in zip(model.weights, paths):
        current = np.asarray(var.numpy())
        leaf = path.split("/")[-1].split(":")[0]
        value = None
        if np.issubdtype(current.dtype, np.floating):
            value = random_value(leaf, tuple(var.shape), rng, with_gamma=path.rsplit("/", 1)[0] in with_gamma,
                                 gain=gain)
        values.append(current if value is None else np.asarray(value, dtype=current.dtype))
    model.set_weights(values)


def required_sensitivity(tol: float) -> float:
    """The least relative output change between two inputs that makes a comparison at ``tol`` meaningful:
    ``max(100 * tol, 1e-3)`` (1e-3 at the harness' 1e-5; 1e-2 at the slim tests' 1e-4; 1e-3 for exact
    comparisons, whose tolerance is 0)."""
    return max(SENSITIVITY_FACTOR * tol, MIN_SENSITIVITY)


def assert_outputs_differ(out1, out2, tol: float, what: str = "reference") -> float:
    """``out1``/``out2``: a reference's outputs on two different inputs. Asserts that they differ by at
    least ``required_sensitivity(tol)`` relative to ``out1`` (the same measure as the comparison's:
    max |difference| / max |output|), and returns that change.

    A comparison passes within ``tol`` whatever was mapped wrong when the output hardly depends on the
    input, i.e. on the early layers (random deep nets whose signal died with depth, or a saturated
    softmax). Requiring 100x the tolerance means an early-layer error that changes the output a hundredth
    as much as a new input does is still seen. A case that cannot reach this compares pre-softmax
    (``classifier_activation=None``); the bar is never lowered.
    """
    change = relative_error(out2, out1)
    bar = required_sensitivity(tol)
    assert change >= bar, (f"{what}: two different inputs move the output by only {change:.2e} (relative), "
                           f"less than {bar:.0e} = max({SENSITIVITY_FACTOR} x tolerance {tol:g}, "
                           f"{MIN_SENSITIVITY:g}): the comparison could not see a mapping error")
    return change


def assert_input_sensitive(reference_fn, x1, x2, tol: float, what: str = "reference") -> float:
    """Run ``reference_fn`` on two different inputs ``x1``, ``x2`` and ``assert_outputs_differ``; returns
    the relative change."""
    return assert_outputs_differ(np.asarray(reference_fn(x1)), np.asarray(reference_fn(x2)), tol, what)


@functools.lru_cache(maxsize=None)
def keras2_weights_file(name: str, include_top: bool, input_shape: tuple, seed: int = 0, **kwargs) -> str:
    """A legacy h5 written by tf_keras from its keras.applications model with random weights (cached)."""
    import tf_keras

    kw = dict(sorted(kwargs.items()))
    tag = "_".join(f"{k}{v}" for k, v in kw.items())
    path = os.path.join(_FIXTURE_DIR, f"{name}_{int(include_top)}_{'x'.join(map(str, input_shape))}_{tag}_{seed}.h5")
    with float64():
        tf_keras.backend.clear_session()
        model = getattr(tf_keras.applications, name)(
            weights=None, include_top=include_top, input_shape=input_shape, **kw)
        randomise_weights(model, seed)
        model.save_weights(path)
    return path


def _fresh_build(builder, **kwargs):
    """Build from cleared name counters, so auto-named layers (``conv2d_7``) line up on both sides."""
    import keras

    keras.backend.clear_session()
    return builder(**kwargs)


def _wipe(model):
    model.set_weights([np.zeros(tuple(v.shape), dtype=v.dtype) for v in model.weights])


def relative_error(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = max(float(np.max(np.abs(expected))), 1e-12)
    return float(np.max(np.abs(actual - expected))) / scale


def weight_signature(model) -> list:
    """(layer name, [(weight name, shape), ...]) for every weighted layer, in model order."""
    return [(layer.name, [(v.name.split("/")[-1], tuple(v.shape)) for v in layer.weights])
            for layer in model.layers if layer.weights]


def random_inputs(name: str, shape: tuple, batch: int = 2, seed: int = 1):
    """Random pixels in [0, 255] through ``keras.applications``' ``preprocess_input`` for ``name``'s family,
    i.e. what the model is built for: [-1, 1] for MobileNet, Xception, Inception, NASNet; caffe (BGR, mean
    subtracted) for VGG, ResNet; torch for DenseNet; raw pixels where the model rescales itself
    (EfficientNet, ConvNeXt, MobileNetV3). Raw [0, 255] into a [-1, 1] net puts its first layers ~100x
    off scale: with ReLU6 saturated there, early weights barely show (measured: ResNet50V2 output 8e4
    instead of 4e2, and a swapped pair of the first BatchNorm's betas 5e-5 instead of 2e-2)."""
    import importlib

    import keras

    pixels = np.random.default_rng(seed).uniform(0, 255, (batch, *shape))
    module = importlib.import_module(getattr(keras.applications, name).__module__)
    with float64():
        return np.asarray(keras.ops.convert_to_numpy(module.preprocess_input(pixels.copy())), np.float64)


def softmax(logits):
    logits = np.asarray(logits, np.float64)
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def check_compat(name: str, include_top: bool, input_shape: tuple, rtol: float = RTOL, batch: int = 2,
                 keras_kwargs: dict | None = None, kzoo_name: str | None = None, **kwargs) -> dict:
    """Run the four proofs for ``kzoo.<name>`` against ``keras.applications.<name>``.

    ``kwargs`` go to both builders (e.g. ``alpha``). Returns the measured relative errors. First asserts
    that the reference's output moves with its input far more than ``rtol`` (``assert_outputs_differ``;
    the inputs are ``random_inputs``), and records (input sensitivity, worst error) in ``SENSITIVITY``.

    With the head, the proofs compare logits (``classifier_activation=None`` on both sides): a random
    net's 1000-way softmax saturates (measured: two inputs move VGG16's probabilities by 1e-11 and
    ResNet50's by 0.0), which would leave nothing for the comparison to see. The default softmax head is
    then proven on its own: kzoo's model built with it must give softmax(reference logits).
    """
    import keras

    import kzoo
    from kzoo.formats import keras_h5

    path = keras2_weights_file(name, include_top, tuple(input_shape), **kwargs)
    logits = include_top and "classifier_activation" not in kwargs
    build_kwargs = dict(include_top=include_top, input_shape=tuple(input_shape), **kwargs)
    if logits:
        build_kwargs["classifier_activation"] = None
    reference_builder = getattr(keras.applications, name)
    ours_builder = getattr(kzoo, kzoo_name or name)
    errors = {}
    x = random_inputs(name, tuple(input_shape), batch, seed=1)
    x2 = random_inputs(name, tuple(input_shape), batch, seed=2)
    with float64():
        reference = _fresh_build(reference_builder, weights=None, **build_kwargs, **(keras_kwargs or {}))
        reference.load_weights(path)
        expected = np.asarray(reference(x, training=False))
        sensitivity = assert_outputs_differ(expected, np.asarray(reference(x2, training=False)), rtol,
                                            f"keras.applications.{name} include_top={include_top}")

        ours = _fresh_build(ours_builder, weights=path, **build_kwargs)
        assert weight_signature(ours) == weight_signature(reference), f"{name}: weight layout differs"
        assert [layer.name for layer in ours.layers] == [layer.name for layer in reference.layers], (
            f"{name}: layer names differ")
        errors["kzoo_weights_path"] = relative_error(ours(x, training=False), expected)

        # Keras' own legacy loader reads by weighted-layer order; wipe the weights first so the
        # comparison can only pass if that loader filled every one of them.
        _wipe(ours)
        ours.load_weights(path)
        errors["keras_load_weights"] = relative_error(ours(x, training=False), expected)

        roundtrip = os.path.join(_FIXTURE_DIR, f"roundtrip_{name}_{int(include_top)}.h5")
        keras_h5.save_weights(ours, roundtrip)
        _wipe(reference)
        reference.load_weights(roundtrip)
        os.remove(roundtrip)
        errors["into_keras_applications"] = relative_error(reference(x, training=False), expected)

        if logits:  # the default head: softmax of the logits proven above
            default_kwargs = {k: v for k, v in build_kwargs.items() if k != "classifier_activation"}
            with_softmax = _fresh_build(ours_builder, weights=path, **default_kwargs)
            errors["kzoo_softmax_head"] = relative_error(with_softmax(x, training=False), softmax(expected))
    worst = max(errors.values())
    SENSITIVITY[(name, include_top, tuple(sorted(kwargs.items())))] = (sensitivity, worst)
    print(f"{name} include_top={include_top} {kwargs}: input sensitivity {sensitivity:.3g}, "
          f"worst relative error {worst:.3g}")
    assert worst <= rtol, f"{name} include_top={include_top}: relative errors {errors} exceed {rtol}"
    return errors
