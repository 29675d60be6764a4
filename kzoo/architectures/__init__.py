"""One module per architecture family: a stage table and small block functions, built through
``_factory`` (the one builder path). Which builder makes which model is data in :mod:`kzoo.index`.
"""

import importlib

from kzoo import index


def find_public(name):
    """A Keras-style builder (``ResNet50``) or a family module (``resnet``), or None. Imports one module."""
    if name in index.families():
        return importlib.import_module(f"{__name__}.{name}")
    row = index.public_builders().get(name)
    if row is None:
        return None
    module = importlib.import_module(f"{__name__}.{row.module}")
    builder = getattr(module, name)
    # kzoo.ResNet50.preprocess_input, as the family module's (kzoo.resnet.preprocess_input)
    helpers = importlib.import_module(f"kzoo.preprocessing").for_model(row.name)
    for attr, value in helpers.items():
        if not hasattr(builder, attr):
            setattr(builder, attr, value)
    return builder


def public_names():
    return sorted(set(index.families()) | set(index.public_builders()))
