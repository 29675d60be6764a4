"""create_model(name, features_only=True): one output per stride, named, with feature_info; bad indices fail."""

from __future__ import annotations

import numpy as np
import pytest

import kzoo
from kzoo.errors import InvalidFeatureIndex


def _features(name, **kwargs):
    kwargs.setdefault("weights", None)
    return kzoo.create_model(name, features_only=True, **kwargs)


def test_default_outputs_are_strides_4_to_32():
    model = _features("resnet50", input_shape=(64, 64, 3))
    assert model.output_names == ["stride_4", "stride_8", "stride_16", "stride_32"]
    assert [tuple(t.shape) for t in model.outputs] == [(None, 16, 16, 256), (None, 8, 8, 512), (None, 4, 4, 1024),
                                                       (None, 2, 2, 2048)]
    info = list(model.feature_info)
    assert [d["reduction"] for d in info] == [4, 8, 16, 32]
    assert [d["channels"] for d in info] == [256, 512, 1024, 2048]
    assert [d["layer"] for d in info] == ["conv2_block3_out", "conv3_block4_out", "conv4_block6_out",
                                          "conv5_block3_out"]


def test_outputs_are_the_backbone_layers():
    import keras

    model = _features("mobilenetv2", alpha=0.35, input_shape=(64, 64, 3), out_indices=(0, 1, 2, 3, 4))
    assert [d["layer"] for d in model.feature_info] == [
        "block_1_expand_relu", "block_3_expand_relu", "block_6_expand_relu", "block_13_expand_relu", "out_relu"]
    backbone = keras.Model(model.inputs[0], [model.get_layer(d["layer"]).output for d in model.feature_info])
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    for ours, direct, d in zip(model(x), backbone(x), model.feature_info):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(direct))
        assert np.asarray(ours).shape[1] == 64 // d["reduction"]


# name -> build kwargs. Every classic family; the index -> reduction mapping is checked on a real forward pass.
FAMILIES = {
    "resnet50": {}, "resnet50v2": {}, "resnet_v2_50": {}, "vgg16": {}, "xception": {}, "inceptionv3": {},
    "densenet121": {}, "mobilenet": {"alpha": 0.25}, "mobilenetv3small": {}, "mobilenetv3large": {},
    "inceptionresnetv2": {},
}
HEAVY = {"inceptionresnetv2", "xception", "densenet121", "vgg16"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.slow] if n in HEAVY else [])
                                  for n in FAMILIES])
def test_every_family_has_strides_2_to_32(name):
    model = _features(name, out_indices=(0, 1, 2, 3, 4), **FAMILIES[name])
    assert model.output_names == ["stride_2", "stride_4", "stride_8", "stride_16", "stride_32"]
    assert len({d["layer"] for d in model.feature_info}) == 5
    size = 320  # large enough that the VALID-padded Inception stems still round to the right stride
    x = np.zeros((1, size, size, 3), "float32")
    for out, d in zip(model(x), model.feature_info):
        height = np.asarray(out).shape[1]
        assert 2 ** round(np.log2(size / height)) == d["reduction"], (d, height)
        assert np.asarray(out).shape[-1] == d["channels"]


def test_pre_activation_overrides():
    v2 = _features("resnet50v2", out_indices=(0, 1, 2, 3, 4))
    assert [d["layer"] for d in v2.feature_info] == [
        "conv1_conv", "conv2_block3_preact_relu", "conv3_block4_preact_relu", "conv4_block6_preact_relu",
        "post_relu"]
    dense = _features("densenet121", out_indices=(1, 2, 3, 4))
    assert [d["layer"] for d in dense.feature_info] == ["pool2_relu", "pool3_relu", "pool4_relu", "relu"]


def test_inception_static_input_keeps_the_right_strides():
    model = _features("inceptionv3", input_shape=(75, 75, 3), out_indices=(2, 3, 4))
    assert [d["layer"] for d in model.feature_info] == ["mixed2", "mixed7", "mixed10"]
    assert [tuple(t.shape)[1:3] for t in model.outputs] == [(7, 7), (3, 3), (1, 1)]


@pytest.mark.parametrize("out_indices", [(5,), (-1,), (1, 1), (), (1.0,)])
def test_out_of_range_indices_raise(out_indices):
    with pytest.raises(InvalidFeatureIndex) as err:
        _features("mobilenet", alpha=0.25, out_indices=out_indices)
    assert isinstance(err.value, ValueError)
    assert "out_indices" in str(err.value)


def test_head_arguments_are_refused():
    with pytest.raises(ValueError, match="include_top"):
        _features("mobilenet", alpha=0.25, include_top=True)
    with pytest.raises(ValueError, match="pooling"):
        _features("mobilenet", alpha=0.25, pooling="avg")
    with pytest.raises(ValueError, match="features_only"):
        kzoo.create_model("mobilenet", weights=None, alpha=0.25, out_indices=(1,))
