"""The compatibility harness: proves a kzoo builder is weight-compatible with keras.applications.

For one builder name and one configuration it
1. builds the tf_keras (Keras 2) ``keras.applications`` model with random weights -- BatchNorm moving
   statistics, biases and Normalization statistics randomised too -- and saves them in the legacy h5
   layout, exactly as the released files were written;
2. loads that file into keras.applications (Keras 3, Keras' own loader) and into kzoo, by ``weights=path``
   and by Keras' own ``model.load_weights`` (which reads legacy files by weighted-layer order);
3. saves the kzoo model's weights back out with ``kzoo.formats.keras_h5.save_weights`` and loads them into
   the keras.applications model (its weights wiped first);
4. compares outputs on random inputs, and layer names, weight names and shapes one for one.

Everything runs in float64 (see shared/reference/testing_notes.md: float32 comparisons of deep random
nets are chaotic), so the tolerance stays tight.
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


def randomise_weights(model, seed: int):
    """Random values for every variable that default initialisers would leave trivial."""
    rng = np.random.default_rng(seed)
    values = []
    for var in model.weights:
        name = var.name.split("/")[-1].split(":")[0]
        shape = tuple(var.shape)
        current = var.numpy()
        if name in ("gamma", "moving_variance", "variance"):
            value = rng.uniform(0.5, 1.5, shape)
        elif name in ("beta", "moving_mean", "bias", "mean"):
            value = rng.normal(0.0, 0.1, shape)
        elif name == "count" or not np.issubdtype(current.dtype, np.floating):
            value = current
        else:  # kernels: keep the initialiser's scale, new random values
            scale = float(np.std(current)) or 0.05
            value = rng.normal(0.0, scale, shape)
        values.append(np.asarray(value, dtype=current.dtype))
    model.set_weights(values)


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


def check_compat(name: str, include_top: bool, input_shape: tuple, rtol: float = RTOL, batch: int = 2,
                 keras_kwargs: dict | None = None, kzoo_name: str | None = None, **kwargs) -> dict:
    """Run the four proofs for ``kzoo.<name>`` against ``keras.applications.<name>``.

    ``kwargs`` go to both builders (e.g. ``alpha``). Returns the measured relative errors.
    """
    import keras

    import kzoo
    from kzoo.formats import keras_h5

    path = keras2_weights_file(name, include_top, tuple(input_shape), **kwargs)
    build_kwargs = dict(include_top=include_top, input_shape=tuple(input_shape), **kwargs)
    reference_builder = getattr(keras.applications, name)
    ours_builder = getattr(kzoo, kzoo_name or name)
    errors = {}
    with float64():
        reference = _fresh_build(reference_builder, weights=None, **build_kwargs, **(keras_kwargs or {}))
        reference.load_weights(path)
        x = np.random.default_rng(1).uniform(0, 255, (batch, *input_shape))
        expected = np.asarray(reference(x, training=False))

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
    worst = max(errors.values())
    assert worst <= rtol, f"{name} include_top={include_top}: relative errors {errors} exceed {rtol}"
    return errors
