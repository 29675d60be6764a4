"""One module per architecture family. Each module lists its Keras-style builders in ``__all__``
and registers them with ``kzoo.models.register_model``.

Builders carry their family's ``preprocess_input`` and ``decode_predictions`` as attributes, so
``kzoo.ResNet50.preprocess_input`` works as well as ``kzoo.resnet.preprocess_input``.
"""

import importlib
import pkgutil


def _family_modules():
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            yield info.name


def find_public(name):
    """A builder function (``ResNet50``) or a family module (``resnet``), or None."""
    if name in set(_family_modules()):
        return importlib.import_module(f"{__name__}.{name}")
    for family in _family_modules():
        module = importlib.import_module(f"{__name__}.{family}")
        if name in getattr(module, "__all__", ()):
            builder = getattr(module, name)
            for helper in ("preprocess_input", "decode_predictions"):
                if hasattr(module, helper) and not hasattr(builder, helper):
                    setattr(builder, helper, getattr(module, helper))
            return builder
    return None


def public_names():
    names = []
    for family in _family_modules():
        module = importlib.import_module(f"{__name__}.{family}")
        names.append(family)
        names.extend(getattr(module, "__all__", ()))
    return names
