"""ConvNeXt Tiny / Small / Base / Large / XLarge (Liu et al., 2022), weight-compatible with
``keras.applications.convnext``.

A variant is its blocks per stage (the index rows' ``stages``, :mod:`kzoo.index`) and its channels per
stage (``WIDTHS``). Layer names, weighted-layer order and weight shapes are keras.applications': the stem
and each downsampling step are small nested ``Sequential`` models (``<name>_stem``,
``<name>_downsampling_block_<i>``), as in Keras, because the released h5 files store their weights under
those nested groups. With ``include_preprocessing=True`` (default) the builders take pixels in [0, 255];
``weights`` is None, 'imagenet', another registry tag for the model, or a .h5 / .weights.h5 path.

Two layers are kzoo's own (Keras' are private classes), registered for serialization as ``kzoo>...``:
- ``LayerScale``: multiplies by a learned per-channel vector, the weight named ``gamma`` as in the
  released h5 files and in tf_keras. (Keras 3 leaves that weight unnamed, so there it shows up as
  ``variable_<n>``; the shape and position are the same, which is all its loader uses.)
- ``StochasticDepth``: drops the residual branch per batch while training. Keras' builders fix the drop
  rate to 0, in which case the branch ends in ``Activation("linear", name="<block>_identity")`` instead,
  as in Keras.

With ``include_top=False`` the model ends with the optional global pooling and a weighted
``LayerNormalization``, which Keras leaves auto-named; kzoo names it ``layer_normalization`` (its name in
a fresh session, and in the released notop files) so that name-based loading does not depend on what
else was built before.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops
from keras.models import Model, Sequential

from kzoo import index
from kzoo.architectures import _common, _factory
from kzoo.preprocessing import decode_predictions, passthrough_preprocess_input as preprocess_input  # noqa: F401

__all__ = ["ConvNeXtTiny", "ConvNeXtSmall", "ConvNeXtBase", "ConvNeXtLarge", "ConvNeXtXLarge"]

# variant: channels per stage (its blocks per stage are the index row's ``stages``); every default input is 224.
WIDTHS = {
    "tiny": (96, 192, 384, 768),
    "small": (96, 192, 384, 768),
    "base": (128, 256, 512, 1024),
    "large": (192, 384, 768, 1536),
    "xlarge": (256, 512, 1024, 2048),
}
DEFAULT_SIZE = 224
LAYER_NORM_EPS = 1e-6
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)

WEIGHTS_ERROR = (
    "The `weights` argument should be either "
    "`None` (random initialization), `imagenet` "
    "(pre-training on ImageNet), "
    "or the path to the weights file to be loaded."
)
CLASSES_ERROR = (
    'If using `weights="imagenet"` with `include_top=True`, '
    "`classes` should be 1000. "
    "Received classes={classes}"
)


@keras.saving.register_keras_serializable(package="kzoo")
class LayerScale(layers.Layer):
    """``x * gamma`` with a learned per-channel ``gamma`` (CaiT's layer scale), starting at ``init_values``."""

    def __init__(self, init_values, projection_dim, **kwargs):
        super().__init__(**kwargs)
        self.init_values = init_values
        self.projection_dim = projection_dim

    def build(self, input_shape):
        self.gamma = self.add_weight(name="gamma", shape=(self.projection_dim,),
                                     initializer=keras.initializers.Constant(self.init_values), trainable=True)

    def call(self, x):
        return x * ops.cast(self.gamma, x.dtype)

    def get_config(self):
        return {**super().get_config(), "init_values": self.init_values, "projection_dim": self.projection_dim}


@keras.saving.register_keras_serializable(package="kzoo")
class StochasticDepth(layers.Layer):
    """While training, zero the whole residual branch with probability ``drop_path_rate`` (per batch)."""

    def __init__(self, drop_path_rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.drop_path_rate = drop_path_rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=None):
        if not training or not self.drop_path_rate:
            return x
        keep = 1.0 - self.drop_path_rate
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        mask = ops.floor(keep + keras.random.uniform(shape, seed=self.seed_generator, dtype=x.dtype))
        return x / keep * mask

    def get_config(self):
        return {**super().get_config(), "drop_path_rate": self.drop_path_rate, "seed": self.seed}


def convnext_block(x, dim, drop_path_rate, layer_scale_init_value, prefix):
    """Depthwise 7x7, LayerNorm, pointwise MLP (as Dense layers, x4 width, GELU), layer scale, residual."""
    inputs = x
    x = layers.Conv2D(dim, 7, padding="same", groups=dim, name=f"{prefix}_depthwise_conv")(x)
    x = layers.LayerNormalization(epsilon=LAYER_NORM_EPS, name=f"{prefix}_layernorm")(x)
    x = layers.Dense(4 * dim, name=f"{prefix}_pointwise_conv_1")(x)
    x = layers.Activation("gelu", name=f"{prefix}_gelu")(x)
    x = layers.Dense(dim, name=f"{prefix}_pointwise_conv_2")(x)
    if layer_scale_init_value is not None:
        x = LayerScale(layer_scale_init_value, dim, name=f"{prefix}_layer_scale")(x)
    if drop_path_rate:
        x = StochasticDepth(drop_path_rate, name=f"{prefix}_stochastic_depth")(x)
    else:
        x = layers.Activation("linear", name=f"{prefix}_identity")(x)
    return inputs + x  # an op, not a layer: Keras' graph has no named Add here either


def downsampling_layers(name, dims):
    """The stem (4x4/4 conv + LayerNorm) and three LayerNorm + 2x2/2 conv steps, as nested Sequentials."""
    stem = Sequential([
        layers.Conv2D(dims[0], 4, strides=4, name=f"{name}_stem_conv"),
        layers.LayerNormalization(epsilon=LAYER_NORM_EPS, name=f"{name}_stem_layernorm"),
    ], name=f"{name}_stem")
    steps = [stem]
    for i in range(3):
        steps.append(Sequential([
            layers.LayerNormalization(epsilon=LAYER_NORM_EPS, name=f"{name}_downsampling_layernorm_{i}"),
            layers.Conv2D(dims[i + 1], 2, strides=2, name=f"{name}_downsampling_conv_{i}"),
        ], name=f"{name}_downsampling_block_{i}"))
    return steps


def build_convnext(variant, *, include_top, include_preprocessing, weights, input_tensor, input_shape, pooling,
                   classes, classifier_activation, name, drop_path_rate=0.0, layer_scale_init_value=1e-6):
    # Not _factory.build: Keras checks the data format first, puts the preprocessing layer (which depends
    # on the resolved input shape) before the stem, and checks the model name after building.
    if keras.config.image_data_format() == "channels_first":
        raise ValueError(
            "ConvNeXt does not support the `channels_first` image data "
            "format. Switch to `channels_last` by editing your local "
            "config file at ~/.keras/keras.json"
        )
    model_name = f"convnext{variant}"
    depths, dims = index.get(model_name).stages, WIDTHS[variant]
    weights_name = f"convnext_{variant}"
    request = _factory.Weights(weights, model_name, include_top, classes, weights_error=WEIGHTS_ERROR,
                               classes_error=CLASSES_ERROR)
    input_shape = _common.obtain_input_shape(input_shape, DEFAULT_SIZE, 32, include_top, request.pretrained)
    img_input = _common.make_input(input_tensor, input_shape)

    x = img_input
    if include_preprocessing and input_shape[-1] == 3:
        x = layers.Normalization(mean=[m * 255 for m in IMAGENET_MEAN_RGB],
                                 variance=[(s * 255) ** 2 for s in IMAGENET_STDDEV_RGB],
                                 name=f"{name}_prestem_normalization")(x)

    rates = [float(r) for r in np.linspace(0.0, drop_path_rate, sum(depths))]
    first = 0
    for stage, (downsample, depth, dim) in enumerate(zip(downsampling_layers(name, dims), depths, dims)):
        x = downsample(x)
        for j in range(depth):
            x = convnext_block(x, dim, rates[first + j], layer_scale_init_value, f"{name}_stage_{stage}_block_{j}")
        first += depth

    if include_top:
        _common.validate_activation(classifier_activation, weights)
        x = layers.GlobalAveragePooling2D(name=f"{name}_head_gap")(x)
        x = layers.LayerNormalization(epsilon=LAYER_NORM_EPS, name=f"{name}_head_layernorm")(x)
        x = layers.Dense(classes, activation=classifier_activation, name=f"{name}_head_dense")(x)
    else:
        x = _common.pooling_head(x, pooling, "global_average_pooling2d", "global_max_pooling2d")
        x = layers.LayerNormalization(epsilon=LAYER_NORM_EPS, name="layer_normalization")(x)

    inputs = _common.model_inputs(input_tensor, img_input)
    if isinstance(inputs, (list, tuple)):
        inputs = inputs[0]
    model = Model(inputs=inputs, outputs=x, name=name)

    if request.pretrained and weights_name not in name:  # Keras' guard against a name that picks another file
        raise ValueError(
            f'Model name "{name}" does not match weights variant '
            f'"{weights_name}". When using imagenet weights, model name '
            f'must contain the weights variant (e.g., "convnext_'
            f'{variant}").'
        )
    return request.load(model)


def ConvNeXtTiny(include_top=True, include_preprocessing=True, weights="imagenet", input_tensor=None,
                 input_shape=None, pooling=None, classes=1000, classifier_activation="softmax",
                 name="convnext_tiny"):
    """Instantiates ConvNeXt Tiny, as keras.applications.ConvNeXtTiny (see the module docstring)."""
    return build_convnext("tiny", include_top=include_top, include_preprocessing=include_preprocessing,
                          weights=weights, input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                          classes=classes, classifier_activation=classifier_activation, name=name)


def ConvNeXtSmall(include_top=True, include_preprocessing=True, weights="imagenet", input_tensor=None,
                  input_shape=None, pooling=None, classes=1000, classifier_activation="softmax",
                  name="convnext_small"):
    """Instantiates ConvNeXt Small, as keras.applications.ConvNeXtSmall (see the module docstring)."""
    return build_convnext("small", include_top=include_top, include_preprocessing=include_preprocessing,
                          weights=weights, input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                          classes=classes, classifier_activation=classifier_activation, name=name)


def ConvNeXtBase(include_top=True, include_preprocessing=True, weights="imagenet", input_tensor=None,
                 input_shape=None, pooling=None, classes=1000, classifier_activation="softmax",
                 name="convnext_base"):
    """Instantiates ConvNeXt Base, as keras.applications.ConvNeXtBase (see the module docstring)."""
    return build_convnext("base", include_top=include_top, include_preprocessing=include_preprocessing,
                          weights=weights, input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                          classes=classes, classifier_activation=classifier_activation, name=name)


def ConvNeXtLarge(include_top=True, include_preprocessing=True, weights="imagenet", input_tensor=None,
                  input_shape=None, pooling=None, classes=1000, classifier_activation="softmax",
                  name="convnext_large"):
    """Instantiates ConvNeXt Large, as keras.applications.ConvNeXtLarge (see the module docstring)."""
    return build_convnext("large", include_top=include_top, include_preprocessing=include_preprocessing,
                          weights=weights, input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                          classes=classes, classifier_activation=classifier_activation, name=name)


def ConvNeXtXLarge(include_top=True, include_preprocessing=True, weights="imagenet", input_tensor=None,
                   input_shape=None, pooling=None, classes=1000, classifier_activation="softmax",
                   name="convnext_xlarge"):
    """Instantiates ConvNeXt XLarge, as keras.applications.ConvNeXtXLarge (see the module docstring)."""
    return build_convnext("xlarge", include_top=include_top, include_preprocessing=include_preprocessing,
                          weights=weights, input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                          classes=classes, classifier_activation=classifier_activation, name=name)
