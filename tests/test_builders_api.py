"""The classic builders are drop-in keras.applications replacements: same signatures, same validation errors,
same graph (layer names and classes, weight names and shapes, in order), pooling, input_tensor,
classifier_activation; plus the registered names and the TF-slim variants."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest

from kzoo import index

# Every kzoo builder that keras.applications also has, from the index: a model added later is compared
# without anyone editing a list. The modern families have their own layout tests (test_compat_modern.py).
_MODERN = {"efficientnet", "efficientnet_v2", "convnext", "nasnet"}
_KERAS_APPLICATIONS = {"ConvNeXtBase", "ConvNeXtLarge", "ConvNeXtSmall", "ConvNeXtTiny", "ConvNeXtXLarge", "DenseNet121",
                       "DenseNet169", "DenseNet201", "InceptionResNetV2", "InceptionV3", "MobileNet", "MobileNetV2",
                       "MobileNetV3Large", "MobileNetV3Small", "NASNetLarge", "NASNetMobile", "ResNet101",
                       "ResNet101V2", "ResNet152", "ResNet152V2", "ResNet50", "ResNet50V2", "VGG16", "VGG19",
                       "Xception", *(f"EfficientNetB{i}" for i in range(8)),
                       *(f"EfficientNetV2{v}" for v in ("B0", "B1", "B2", "B3", "S", "M", "L"))}
BUILDERS = sorted(row.builder for row in index.MODELS.values()
                  if row.public and row.builder in _KERAS_APPLICATIONS and row.family not in _MODERN)
SMALLEST = {"Xception": 71, "InceptionV3": 75, "InceptionResNetV2": 75}
HEAVY = {"ResNet101", "ResNet152", "ResNet101V2", "ResNet152V2", "VGG19", "InceptionResNetV2", "DenseNet169",
         "DenseNet201"}


def _pair(name):
    import keras

    import kzoo

    return getattr(keras.applications, name), getattr(kzoo, name)


def _fresh(builder, **kwargs):
    """Build from a cleared name counter, so auto-generated names are comparable."""
    import keras

    keras.backend.clear_session()
    return builder(**kwargs)


def signature(model):
    return [(layer.name, type(layer).__name__, [(v.path, tuple(v.shape)) for v in layer.weights])
            for layer in model.layers]


@pytest.mark.parametrize("name", BUILDERS)
def test_signature_equals_keras(name):
    theirs, ours = _pair(name)
    assert inspect.signature(ours) == inspect.signature(theirs)


def _graph_params():
    for name in BUILDERS:
        size = SMALLEST.get(name, 32)
        for include_top, pooling in ((False, "avg"), (True, None)):
            # The heavy ones (deeper variants of a family, and InceptionResNetV2 and VGG19, whose graphs the
            # default run compares in tests/test_compat_classic.py's numeric cases) run with the sweep.
            marks = [pytest.mark.sweep] if name in HEAVY else []
            yield pytest.param(name, size, include_top, pooling, marks=marks,
                               id=f"{name}-{'top' if include_top else 'notop'}")


@pytest.mark.parametrize("name,size,include_top,pooling", list(_graph_params()))
def test_graph_equals_keras(name, size, include_top, pooling):
    theirs, ours = _pair(name)
    kwargs = dict(weights=None, include_top=include_top, input_shape=(size, size, 3), pooling=pooling)
    reference, model = _fresh(theirs, **kwargs), _fresh(ours, **kwargs)
    assert signature(model) == signature(reference)
    assert [v.path for v in model.weights] == [v.path for v in reference.weights]  # Keras' weight order
    assert model.name == reference.name
    assert [tuple(t.shape) for t in model.outputs] == [tuple(t.shape) for t in reference.outputs]


# (builder, kwargs): inputs that Keras rejects before building anything. Messages must be identical.
INVALID = [(name, kwargs) for name in BUILDERS for kwargs in (
    {"weights": "no-such-weights"},
    {"weights": "imagenet", "classes": 10},
    {"weights": None, "include_top": False, "input_shape": (16, 16, 3)},
    {"weights": "imagenet", "include_top": True, "input_shape": (200, 200, 3)},
    {"weights": None, "include_top": True, "input_shape": (None, None, 3)},
    {"weights": "imagenet", "include_top": False, "input_shape": (256, 256, 1)},
    {"weights": None, "include_top": False, "input_shape": (64, 64)},
)] + [
    ("MobileNet", {"weights": "imagenet", "depth_multiplier": 2}),
    ("MobileNet", {"weights": "imagenet", "alpha": 0.3}),
    ("MobileNetV2", {"weights": "imagenet", "alpha": 0.2}),
    ("MobileNetV3Small", {"weights": "imagenet", "alpha": 0.5}),
    ("MobileNetV3Large", {"weights": "imagenet", "alpha": 0.75, "minimalistic": True}),
]


def _error(builder, kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            builder(**kwargs)
        except ValueError as err:
            return type(err).__name__, str(err)
        except Exception:  # e.g. Keras went on to download weights: the arguments were accepted
            return None
    return None


@pytest.mark.parametrize("name,kwargs", INVALID, ids=[f"{n}-{i}" for i, (n, _) in enumerate(INVALID)])
def test_invalid_arguments_raise_keras_errors(name, kwargs):
    theirs, ours = _pair(name)
    expected = _error(theirs, kwargs)
    if expected is None:
        pytest.skip(f"keras.applications.{name} accepts {kwargs}")
    assert _error(ours, kwargs) == expected


def test_densenet_channels_first_error_matches_keras():
    import keras

    theirs, ours = _pair("DenseNet121")
    keras.config.set_image_data_format("channels_first")
    try:
        assert _error(ours, {"weights": None}) == _error(theirs, {"weights": None}) is not None
    finally:
        keras.config.set_image_data_format("channels_last")


@pytest.mark.parametrize("name", ["MobileNet", "VGG16"])
def test_classifier_activation_error_and_options(name):
    theirs, ours = _pair(name)
    # A non-softmax activation with pretrained weights is refused (after building, as in Keras).
    bad = {"weights": "imagenet", "classifier_activation": "relu", "alpha": 0.25} if name == "MobileNet" else None
    if bad:
        assert _error(ours, bad) == _error(theirs, bad) is not None
    for activation in (None, "sigmoid"):
        kwargs = dict(weights=None, input_shape=(32, 32, 3), classifier_activation=activation, classes=7)
        if name == "MobileNet":
            kwargs["alpha"] = 0.25
        model = _fresh(ours, **kwargs)
        reference = _fresh(theirs, **kwargs)
        assert (model.get_layer("predictions").activation.__name__
                == reference.get_layer("predictions").activation.__name__)
        assert tuple(model.output.shape) == (None, 7)


def test_pooling_and_input_tensor():
    import keras

    import kzoo

    tensor = keras.Input((40, 48, 3))
    for pooling, layer_type in (("avg", "GlobalAveragePooling2D"), ("max", "GlobalMaxPooling2D"), (None, None)):
        model = kzoo.MobileNetV2(weights=None, include_top=False, input_tensor=tensor, pooling=pooling, alpha=0.35)
        assert model.inputs[0] is tensor
        if layer_type:
            assert type(model.layers[-1]).__name__ == layer_type and tuple(model.output.shape) == (None, 1280)
        else:
            assert tuple(model.output.shape) == (None, 2, 2, 1280)
    # A tensor that comes out of other layers: the model starts at its source inputs, as in Keras.
    source = keras.Input((64, 64, 3))
    scaled = keras.layers.Rescaling(1.0 / 255)(source)
    model = kzoo.ResNet50(weights=None, include_top=False, input_tensor=scaled)
    assert model.inputs[0] is source


def test_registered_names_and_aliases():
    import kzoo

    names = set(kzoo.list_models())
    expected = {"resnet50", "resnet101", "resnet152", "resnet50v2", "resnet101v2", "resnet152v2", "vgg16", "vgg19",
                "xception", "inceptionv3", "inceptionresnetv2", "densenet121", "densenet169", "densenet201",
                "mobilenet", "mobilenetv2", "mobilenetv3small", "mobilenetv3large", "vgg_16", "vgg_19",
                "inception_v3", "mobilenet_v2", "mobilenet_v2_140", "resnet_v2_50", "resnet_v2_101", "resnet_v2_152"}
    assert expected <= names
    model = kzoo.create_model("mobilenet_v2_140", weights=None, include_top=False, input_shape=(32, 32, 3))
    reference = kzoo.MobileNetV2(weights=None, include_top=False, input_shape=(32, 32, 3), alpha=1.4)
    assert [tuple(v.shape) for v in model.weights] == [tuple(v.shape) for v in reference.weights]
    assert kzoo.create_model("vgg_16", weights=None, include_top=False).count_params() == 14714688


def test_slim_resnet_v2_differs_only_in_pool1(tmp_path):
    import keras

    import kzoo
    from kzoo.architectures.resnet import resnet_v2_50
    from kzoo.formats import keras_h5

    kwargs = dict(weights=None, include_top=False, input_shape=(64, 64, 3))
    keras_model = _fresh(kzoo.ResNet50V2, **kwargs)
    slim_model = _fresh(resnet_v2_50, **kwargs)
    keras_layers = [layer.name for layer in keras_model.layers]
    assert [layer.name for layer in slim_model.layers] == [n for n in keras_layers if n != "pool1_pad"]
    assert slim_model.get_layer("pool1_pool").padding == "same"
    assert signature(slim_model)[1:] == [s for s in signature(keras_model)[1:] if s[0] != "pool1_pad"]
    # The same h5 loads into both, and into keras.applications' builder.
    rng = np.random.default_rng(0)
    keras_model.set_weights([rng.normal(0, 0.05, v.shape) for v in keras_model.weights])
    path = str(tmp_path / "resnet50v2.h5")
    keras_h5.save_weights(keras_model, path)
    slim_loaded = kzoo.create_model("resnet_v2_50", weights=path, include_top=False, input_shape=(64, 64, 3))
    keras.applications.ResNet50V2(weights=None, include_top=False, input_shape=(64, 64, 3)).load_weights(path)
    # slim's pool: pad bottom/right only, with -inf; check the stem pool against that directly.
    x = rng.uniform(-1, 1, (1, 64, 64, 3)).astype("float32")
    stem = keras.Model(slim_loaded.inputs, [slim_loaded.get_layer("conv1_conv").output,
                                            slim_loaded.get_layer("pool1_pool").output])
    conv, pooled = (np.asarray(t) for t in stem(x))
    padded = np.pad(conv, ((0, 0), (0, 1), (0, 1), (0, 0)), constant_values=-np.inf)
    manual = np.stack([np.stack([padded[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max(axis=(1, 2))
                                 for j in range(16)], axis=1) for i in range(16)], axis=1)
    np.testing.assert_allclose(pooled, manual, rtol=1e-6)
    assert not np.allclose(np.asarray(slim_loaded(x)), np.asarray(keras_model(x)))
