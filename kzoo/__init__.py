"""kzoo: a hashed, verified model zoo for Keras, weight-compatible with keras.applications.

The public API is re-exported here lazily, so ``import kzoo`` (and ``kzoo list``) does not import Keras
or TensorFlow until a model is actually built. ``__all__`` is explicit: the functions below, the
Keras-style builders of :mod:`kzoo.index` (``kzoo.ResNet50``) and the family modules
(``kzoo.resnet.preprocess_input``).
"""

from kzoo import errors, index

__version__ = "0.1.0"

# name -> (module, attribute): everything public that is not a Keras-style builder or family module.
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
    "export": ("kzoo.export", None),  # a callable package: kzoo.export(model, path, format=...)
    "preprocessing": ("kzoo.preprocessing", None),
}
_BUILDERS = tuple(sorted(index.public_builders()))
_FAMILIES = index.families()

__all__ = ["__version__", "errors", "index", *_API, *_BUILDERS, *_FAMILIES]


def __getattr__(name):
    import importlib
    import importlib.util

    if name in _API:
        module_name, attr = _API[name]
        module = importlib.import_module(module_name)
        value = module if attr is None else getattr(module, attr)
    elif name in _BUILDERS or name in _FAMILIES:
        from kzoo.architectures import find_public

        value = find_public(name)
    elif not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        # a real submodule (``kzoo.registry``) must not pull in Keras via the builders
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module 'kzoo' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
