"""Deployment: ``kzoo.export(model_or_name, path, format=...)`` writes a SavedModel, ONNX, OpenVINO or LiteRT
artifact with Keras' own exporter, runs it in its own runtime against the Keras model before anyone gets it,
and writes where its weights came from beside it.

Modules, each with one job:
    entry       the entry: format, path, model, optional optimisation, export, parity, provenance, commit
    formats     the four formats: layout, packages needed (and the pip line), runtime, tolerance and why
    staging     writing beside the path and moving into place, so the path holds nothing or a proven artifact
    runtimes    running an artifact in TensorFlow, ONNX Runtime, OpenVINO or LiteRT, without Keras
    parity      seeded random images, a drawn scene, and the figures (max relative difference, top-5 agreement)
    provenance  the weights a builder actually loaded, hashed; the kzoo.json document
    diagnose    naming the layer a format cannot hold
    predict     ``kzoo predict``: top-5 classes of image files with a model, on Keras or an exported engine

``kzoo.export`` is this package *and* callable as the function: ``import kzoo.export.runtimes`` (or any
submodule) sets the attribute ``kzoo.export`` to the package, so a plain function there would be replaced by it;
a callable package stays the function.
"""

import sys
import types

from kzoo.export.entry import ExportResult, export
from kzoo.export.formats import ENGINES, FORMATS

__all__ = ["ENGINES", "FORMATS", "ExportResult", "export"]


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return export(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
