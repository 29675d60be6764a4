"""The legacy h5 reader/writer against Keras' and tf_keras' own loaders, on tf_keras-written files.

Files hold the harness' random weights (compat.randomise_weights); every output comparison first asserts
that a second input moves the reference's output by far more than the comparison's tolerance
(compat.assert_input_sensitive), so that a wrongly loaded weight could not pass unseen. float32 here:
MobileNet (alpha 0.25) and InceptionV3 are shallow enough (tf_keras vs Keras 3: 2e-7 measured).
"""

import h5py
import numpy as np
import pytest

from compat import assert_input_sensitive, keras2_weights_file, random_inputs, relative_error
from kzoo.errors import IncompatibleWeights
from kzoo.formats import keras_h5

SHAPE = (32, 32, 3)


@pytest.fixture(scope="module")
def mobilenet_file():
    return keras2_weights_file("MobileNet", True, SHAPE, alpha=0.25)


def _keras_app(**kw):
    import keras

    return keras.applications.MobileNet(weights=None, input_shape=SHAPE, alpha=0.25, **kw)


def _x(seed=0):
    """Random pixels, preprocessed for MobileNet ([-1, 1])."""
    return random_inputs("MobileNet", SHAPE, seed=seed).astype("float32")


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
    assert_input_sensitive(reference, _x(0), _x(1), 0.0, "MobileNet")  # measured 1.2e-2 (softmax)
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
    assert_input_sensitive(legacy, _x(0), _x(1), 1e-6, "tf_keras MobileNet")
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
    x, x2 = (random_inputs("InceptionV3", shape, 1, seed=seed).astype("float32") for seed in (0, 1))
    assert_input_sensitive(reference, x, x2, 0.0, "InceptionV3")  # measured 6.5e-2
    assert relative_error(shifted(x), reference(x)) == 0.0


# ------------------------------------------------------------------------------------ damaged files (issue 15)
# h5py reports damage as bare OSError / KeyError / RuntimeError; kzoo must name the file and the fix.

def _copy(src, dst, cut=None):
    data = open(src, "rb").read()
    dst.write_bytes(data if cut is None else data[:cut])
    return dst


def _first_weight(group) -> str:
    name = group.attrs["weight_names"][0]
    return name.decode() if isinstance(name, bytes) else str(name)


def test_truncated_file_by_weights_path_names_file_and_fix(mobilenet_file, tmp_path):
    import kzoo
    from kzoo.errors import WeightsFileError

    size = len(open(mobilenet_file, "rb").read())
    cut = _copy(mobilenet_file, tmp_path / "cut.h5", cut=size // 2)
    expected = rf"{cut}: the file is truncated: {size // 2} bytes of the {size}.*kzoo fetch"
    with pytest.raises(WeightsFileError, match=expected):
        kzoo.MobileNet(weights=str(cut), input_shape=SHAPE, alpha=0.25)
    with pytest.raises(OSError):  # still an OSError, as h5py's was, for code that caught that
        kzoo.load_weights(_keras_app(), cut)


def test_not_hdf5_at_all(tmp_path):
    import kzoo
    from kzoo.errors import WeightsFileError

    text = tmp_path / "weights.h5"
    text.write_text("<html>404 Not Found</html>")  # what a failed download by hand often leaves
    with pytest.raises(WeightsFileError, match=rf"{text}: it is not an HDF5 file"):
        kzoo.load_weights(_keras_app(), text)


def test_hdf5_but_no_weights(tmp_path):
    from kzoo.errors import WeightsFileError

    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(WeightsFileError, match=rf"{path} is neither a legacy Keras h5 weight file.*nor a Keras 3"):
        keras_h5.load_weights(_keras_app(), path)


def test_listed_weight_missing_from_the_file(mobilenet_file, tmp_path):
    """The layer's weight_names lists a dataset that is gone: h5py's KeyError becomes a named error."""
    from kzoo.errors import WeightsFileError

    broken = _copy(mobilenet_file, tmp_path / "broken.h5")
    with h5py.File(broken, "a") as f:
        del f["conv1"][_first_weight(f["conv1"])]
    with pytest.raises(WeightsFileError, match=rf"{broken} \(layer 'conv1'\): the file is damaged .*kernel"):
        keras_h5.load_weights(_keras_app(), broken)


def test_damaged_data_in_the_last_layer_leaves_the_model_untouched(mobilenet_file, tmp_path):
    """Every value is read before any is assigned, so an error met late leaves no half-loaded model. The
    last layer's kernel is stored gzip-compressed and its compressed bytes are overwritten: the file opens,
    shapes match, and only reading that one dataset fails."""
    from kzoo.errors import WeightsFileError

    broken = _copy(mobilenet_file, tmp_path / "late.h5")
    with h5py.File(broken, "a") as f:
        group = f["conv_preds"]
        name = _first_weight(group)
        value = group[name][()]
        del group[name]
        group.create_dataset(name, data=value, chunks=value.shape, compression="gzip")
        offset, size = group[name].id.get_chunk_info(0).byte_offset, group[name].id.get_chunk_info(0).size
    with open(broken, "r+b") as handle:
        handle.seek(offset)
        handle.write(b"\xff" * size)
    model = _keras_app()
    before = [np.array(v) for v in model.weights]
    with pytest.raises(WeightsFileError, match=rf"{broken} \(layer 'conv_preds'\): the file is damaged"):
        keras_h5.load_weights(model, broken)
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(before, model.weights))


def test_missing_path(tmp_path):
    from kzoo.errors import WeightsFileError

    with pytest.raises(WeightsFileError, match="does not exist"):
        keras_h5.load_weights(_keras_app(), tmp_path / "nothing.h5")


def _vlen_legacy_file(path):
    """A legacy file with variable-length string name lists, as tf_keras writes them: the strings live in
    HDF5's global heap ("GCOL"), which ends with a free-space object (index 0, then its size)."""
    names = ["conv1", "fc"]
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array(names, dtype=h5py.string_dtype())
        for name in names:
            group = f.create_group(name)
            group.attrs["weight_names"] = np.array([f"{name}/kernel:0"], dtype=h5py.string_dtype())
            group.create_dataset(f"{name}/kernel:0", data=np.ones((3, 3), "float32"))
    return path


def _zero_global_heap_free_space(path):
    """Zero the size of the global heap's free-space object: HDF5 1.14.6 then loops forever reading the names."""
    data = bytearray(path.read_bytes())
    at = data.index(b"GCOL") + 16  # past signature, version, reserved and the collection size
    while int.from_bytes(data[at:at + 2], "little") != 0:  # objects: index, refcount, reserved, size, data
        at += 16 + (int.from_bytes(data[at + 8:at + 16], "little") + 7) // 8 * 8
    data[at + 8:at + 16] = bytes(8)
    path.write_bytes(bytes(data))


def test_a_file_that_hangs_hdf5_is_an_error_not_a_hang(tmp_path, monkeypatch):
    """Found by tests/test_fuzz_readers.py (27 of 5000 h5 mutants hung, 1 crashed): kzoo reads an unverified
    file in a child process first and stops it after KZOO_H5_PROBE_TIMEOUT seconds."""
    import subprocess
    import sys

    from kzoo.errors import WeightsFileError

    path = _vlen_legacy_file(tmp_path / "loops.h5")
    assert [n for n, _ in keras_h5.read_weights(path)] == ["conv1", "fc"]  # readable before the damage
    _zero_global_heap_free_space(path)
    raw = f"import h5py; list(h5py.File({str(path)!r})['conv1'].attrs['weight_names'])"
    try:
        subprocess.run([sys.executable, "-c", raw], timeout=5, capture_output=True)
        hangs = False
    except subprocess.TimeoutExpired:
        hangs = True
    monkeypatch.setenv("KZOO_H5_PROBE_TIMEOUT", "5")
    expected = "HDF5 was still reading it after 5 s" if hangs else "the file is damaged"  # an HDF5 that no longer loops
    with pytest.raises(WeightsFileError, match=rf"{path}: {expected}"):
        keras_h5.read_weights(path)


def test_a_probe_killed_by_a_signal_is_an_error(tmp_path, monkeypatch):
    """The child's death (HDF5 1.14.6 dies of SIGSEGV on a fuzzed file) is reported, and this process lives."""
    from kzoo.errors import WeightsFileError

    path = _vlen_legacy_file(tmp_path / "crashes.h5")
    monkeypatch.setattr(keras_h5, "_PROBE_CODE", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    with pytest.raises(WeightsFileError, match=rf"{path}: reading it killed HDF5 \(SIGSEGV"):
        keras_h5.read_weights(path)
    monkeypatch.setenv("KZOO_H5_PROBE", "0")  # the switch for bytes verified by hash: read here directly
    assert [n for n, _ in keras_h5.read_weights(path)] == ["conv1", "fc"]
