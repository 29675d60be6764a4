"""The legacy h5 reader/writer against Keras' and tf_keras' own loaders, on tf_keras-written files."""

import h5py
import numpy as np
import pytest

from compat import keras2_weights_file, relative_error
from kzoo.errors import IncompatibleWeights
from kzoo.formats import keras_h5

SHAPE = (32, 32, 3)


@pytest.fixture(scope="module")
def mobilenet_file():
    return keras2_weights_file("MobileNet", True, SHAPE, alpha=0.25)


def _keras_app(**kw):
    import keras

    return keras.applications.MobileNet(weights=None, input_shape=SHAPE, alpha=0.25, **kw)


def _x():
    return np.random.default_rng(0).uniform(0, 255, (2, *SHAPE)).astype("float32")


def test_load_by_name_equals_keras_own_loader(mobilenet_file):
    reference, ours = _keras_app(), _keras_app()
    reference.load_weights(mobilenet_file)
    report = keras_h5.load_weights(ours, mobilenet_file)
    assert report.ok and len(report.loaded) == len([l for l in ours.layers if l.weights])
    for a, b in zip(reference.weights, ours.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_load_by_name_ignores_layer_order(mobilenet_file, tmp_path):
    layers = keras_h5.read_weights(mobilenet_file)
    shuffled = tmp_path / "shuffled.h5"
    keras_h5.write_weights(shuffled, list(reversed(layers)))
    reference, ours = _keras_app(), _keras_app()
    reference.load_weights(mobilenet_file)
    keras_h5.load_weights(ours, shuffled)
    assert relative_error(ours(_x()), reference(_x())) == 0.0


def test_missing_layer_is_named(mobilenet_file, tmp_path):
    layers = [entry for entry in keras_h5.read_weights(mobilenet_file) if entry[0] != "conv_pw_3"]
    broken = tmp_path / "missing.h5"
    keras_h5.write_weights(broken, layers)
    model = _keras_app()
    before = [v.numpy().copy() for v in model.weights]
    with pytest.raises(IncompatibleWeights, match="conv_pw_3") as err:
        keras_h5.load_weights(model, broken)
    assert str(broken) in str(err.value) and "skip_mismatch" in str(err.value)
    # strict means nothing was assigned
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, model.weights))


def test_shape_mismatch_and_skip_report(mobilenet_file):
    model = _keras_app(classes=10)  # head differs from the file's 1000 classes
    with pytest.raises(IncompatibleWeights, match="conv_preds"):
        keras_h5.load_weights(model, mobilenet_file)
    report = keras_h5.load_weights(model, mobilenet_file, skip_mismatch=True)
    assert [name for name, _ in report.mismatched] == ["conv_preds"]
    assert "conv_preds" in report.skipped and "conv_preds" in str(report)


def test_notop_model_reports_unexpected_head(mobilenet_file):
    import keras

    notop = keras.applications.MobileNet(weights=None, include_top=False, input_shape=SHAPE, alpha=0.25)
    with pytest.raises(IncompatibleWeights, match="not in the model"):
        keras_h5.load_weights(notop, mobilenet_file)
    report = keras_h5.load_weights(notop, mobilenet_file, skip_mismatch=True)
    assert report.unexpected == ["conv_preds"]


def test_saved_file_loads_into_tf_keras(mobilenet_file, tmp_path):
    import tf_keras

    model = _keras_app()
    keras_h5.load_weights(model, mobilenet_file)
    out = tmp_path / "saved.h5"
    keras_h5.save_weights(model, out)
    legacy = tf_keras.applications.MobileNet(weights=None, input_shape=SHAPE, alpha=0.25)
    legacy.load_weights(str(out))  # tf_keras reads legacy files by order
    assert relative_error(legacy(_x()).numpy(), model(_x())) < 1e-6


def test_long_layer_name_lists_are_chunked(tmp_path):
    names = [f"layer_with_a_long_name_{i:05d}" for i in range(4000)]
    path = tmp_path / "many.h5"
    keras_h5.write_weights(path, [(n, []) for n in names])
    with h5py.File(path) as f:
        assert "layer_names" not in f.attrs and "layer_names0" in f.attrs
    assert [n for n, _ in keras_h5.read_weights(path)] == names


def test_not_a_weight_file(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(IncompatibleWeights, match="not a legacy Keras h5"):
        keras_h5.read_weights(path)


def test_headless_model_may_accept_a_file_with_head(mobilenet_file):
    import keras

    notop = keras.applications.MobileNet(weights=None, include_top=False, input_shape=SHAPE, alpha=0.25)
    report = keras_h5.load_weights(notop, mobilenet_file, allow_unexpected=True)
    assert report.unexpected == ["conv_preds"] and not report.missing
    reference = _keras_app()
    reference.load_weights(mobilenet_file)
    np.testing.assert_array_equal(notop.get_layer("conv1").kernel.numpy(), reference.get_layer("conv1").kernel.numpy())


def test_auto_named_layers_pair_by_order_whatever_the_session_counter():
    """InceptionV3's layers are unnamed: their names depend on what the session built before."""
    import keras

    shape = (75, 75, 3)
    path = keras2_weights_file("InceptionV3", False, shape)
    reference = keras.applications.InceptionV3(weights=None, include_top=False, input_shape=shape)
    reference.load_weights(path)  # Keras pairs by order
    keras.applications.InceptionV3(weights=None, include_top=False, input_shape=(80, 80, 3))  # shift counters
    shifted = keras.applications.InceptionV3(weights=None, include_top=False, input_shape=shape)
    assert shifted.layers[1].name != reference.layers[1].name
    report = keras_h5.load_weights(shifted, path)
    assert report.ok and report.paired_by_order
    x = np.random.default_rng(0).uniform(0, 255, (1, *shape)).astype("float32")
    assert relative_error(shifted(x), reference(x)) == 0.0
