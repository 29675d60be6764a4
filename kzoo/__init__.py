"""kzoo: a hashed, verified model zoo for Keras, weight-compatible with keras.applications.

The public API is re-exported here lazily, so ``import kzoo`` does not import Keras or TensorFlow
until a model is actually built.
"""

from kzoo import errors  # noqa: F401  (cheap, and users catch these)

__version__ = "0.1.0"

# name -> (module, attribute): everything public that is not a Keras-style builder.
_API = {
    "create_model": ("kzoo.models", "create_model"),
    "list_models": ("kzoo.models", "list_models"),
    "register_model": ("kzoo.models", "register_model"),
    "load_weights": ("kzoo.formats.keras_h5", "load_weights"),
    "list_weights": ("kzoo.registry", "list_weights"),
    "get_weights_entry": ("kzoo.registry", "get_entry"),
    "fetch_weights": ("kzoo.sources", "fetch"),
    "convert_checkpoint": ("kzoo.convert", "convert_checkpoint"),
    "optimize_for_inference": ("kzoo.optimize", "optimize_for_inference"),
    "finetune": ("kzoo.finetune", None),
    "visualize": ("kzoo.visualize", None),
    "bench": ("kzoo.bench", None),
    "preprocessing": ("kzoo.preprocessing", None),
}


def __getattr__(name):
    import importlib
    import importlib.util

    if name in _API:
        module_name, attr = _API[name]
        module = importlib.import_module(module_name)
        value = module if attr is None else getattr(module, attr)
    elif importlib.util.find_spec(f"{__name__}.{name}") is not None:
        # a real submodule (``from kzoo import registry``) must not pull in Keras via the builders
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        # Keras-style builders (kzoo.ResNet50) and family modules (kzoo.resnet.preprocess_input).
        from kzoo.architectures import find_public

        value = find_public(name)
        if value is None:
            raise AttributeError(f"module 'kzoo' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    from kzoo.architectures import public_names

    return sorted(set(globals()) | set(_API) | set(public_names()))
