"""preprocess_input / decode_predictions behave exactly like keras.applications' (values, in-place effects,
errors), and the shipped ImageNet class index is Keras' file byte for byte."""

from __future__ import annotations

import hashlib
import importlib
from importlib import resources

import numpy as np
import pytest

from kzoo import preprocessing

KERAS_CLASS_INDEX_MD5 = "c2c37ea517e94d9795004a39431a14cb"  # keras/src/applications/imagenet_utils.py


def _image(shape, dtype):
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, shape).astype(dtype)


@pytest.mark.parametrize("mode", ["caffe", "tf", "torch"])
@pytest.mark.parametrize("data_format,shape", [
    ("channels_last", (2, 5, 4, 3)), ("channels_last", (5, 4, 3)),
    ("channels_first", (2, 3, 5, 4)), ("channels_first", (3, 5, 4)),
])
@pytest.mark.parametrize("dtype", ["float32", "float64", "uint8"])
def test_numpy_matches_keras_including_in_place_effects(mode, data_format, shape, dtype):
    from keras.applications import imagenet_utils

    theirs_in, ours_in = _image(shape, dtype), _image(shape, dtype)
    expected = imagenet_utils.preprocess_input(theirs_in, data_format=data_format, mode=mode)
    actual = preprocessing.preprocess_input(ours_in, data_format=data_format, mode=mode)
    assert actual.dtype == expected.dtype
    np.testing.assert_array_equal(actual, expected)
    np.testing.assert_array_equal(ours_in, theirs_in)  # Keras writes over float inputs; so do we


@pytest.mark.parametrize("mode", ["caffe", "tf", "torch"])
@pytest.mark.parametrize("data_format,shape", [
    ("channels_last", (2, 5, 4, 3)), ("channels_last", (5, 4, 3)),
    ("channels_first", (2, 3, 5, 4)), ("channels_first", (3, 5, 4)),
])
def test_tensor_matches_keras(mode, data_format, shape):
    from keras import ops
    from keras.applications import imagenet_utils

    x = _image(shape, "float32")
    expected = imagenet_utils.preprocess_input(ops.convert_to_tensor(x), data_format=data_format, mode=mode)
    actual = preprocessing.preprocess_input(ops.convert_to_tensor(x), data_format=data_format, mode=mode)
    np.testing.assert_allclose(ops.convert_to_numpy(actual), ops.convert_to_numpy(expected), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("kwargs", [{"mode": "pytorch"}, {"data_format": "NHWC"}])
def test_errors_match_keras(kwargs):
    from keras.applications import imagenet_utils

    x = _image((1, 2, 2, 3), "float32")
    with pytest.raises(ValueError) as theirs:
        imagenet_utils.preprocess_input(x.copy(), **kwargs)
    with pytest.raises(ValueError) as ours:
        preprocessing.preprocess_input(x.copy(), **kwargs)
    assert str(ours.value) == str(theirs.value)


# kzoo family module -> (keras.applications module, expected mode)
FAMILIES = {
    "resnet": "resnet", "resnet_v2": "resnet_v2", "vgg": "vgg16", "xception": "xception",
    "inception_v3": "inception_v3", "inception_resnet_v2": "inception_resnet_v2", "densenet": "densenet",
    "mobilenet": "mobilenet", "mobilenet_v2": "mobilenet_v2", "mobilenet_v3": "mobilenet_v3",
}


@pytest.mark.parametrize("family,keras_module", sorted(FAMILIES.items()))
def test_family_preprocess_input_matches_keras_module(family, keras_module):
    import keras

    import kzoo

    ours = importlib.import_module(f"kzoo.architectures.{family}")
    theirs = getattr(keras.applications, keras_module)
    x = _image((2, 4, 4, 3), "float32")
    np.testing.assert_array_equal(ours.preprocess_input(x.copy()), theirs.preprocess_input(x.copy()))
    assert getattr(kzoo, family).preprocess_input is ours.preprocess_input
    assert callable(ours.decode_predictions)


def test_builders_carry_their_family_preprocessing():
    import keras

    import kzoo

    x = _image((1, 4, 4, 3), "float32")
    np.testing.assert_array_equal(kzoo.ResNet50V2.preprocess_input(x.copy()),
                                  keras.applications.resnet_v2.preprocess_input(x.copy()))
    np.testing.assert_array_equal(kzoo.ResNet50.preprocess_input(x.copy()),
                                  keras.applications.resnet50.preprocess_input(x.copy()))
    np.testing.assert_array_equal(kzoo.DenseNet121.preprocess_input(x.copy()),
                                  keras.applications.densenet.preprocess_input(x.copy()))


def test_shipped_class_index_is_keras_file():
    data = resources.files("kzoo").joinpath("data", "imagenet_class_index.json").read_bytes()
    assert hashlib.md5(data).hexdigest() == KERAS_CLASS_INDEX_MD5
    index = preprocessing.class_index()
    assert len(index) == 1000 and index["0"] == ["n01440764", "tench"]


def test_decode_predictions_matches_keras(monkeypatch):
    from keras.src.applications import imagenet_utils  # the module that holds the cached index

    # Keras would download the same file; hand it ours (md5-identical, see above) to stay offline.
    monkeypatch.setattr(imagenet_utils, "CLASS_INDEX", preprocessing.class_index())
    preds = np.random.default_rng(3).random((3, 1000)).astype("float32")
    assert preprocessing.decode_predictions(preds, top=4) == imagenet_utils.decode_predictions(preds, top=4)
    top1 = preprocessing.decode_predictions(np.eye(1000, dtype="float32")[[2]], top=1)
    assert top1[0][0][:2] == ("n01484850", "great_white_shark")


def test_decode_predictions_shape_error_matches_keras():
    from keras.applications import imagenet_utils

    bad = np.zeros((2, 10))
    with pytest.raises(ValueError) as theirs:
        imagenet_utils.decode_predictions(bad)
    with pytest.raises(ValueError) as ours:
        preprocessing.decode_predictions(bad)
    assert str(ours.value) == str(theirs.value)
