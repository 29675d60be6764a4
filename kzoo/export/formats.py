"""The four export formats: how each artifact is laid out, what it needs, which runtime proves it, and how close
that runtime must come to the Keras model.

Every artifact is written by Keras' own exporter (``model.export(path, format=...)``) from the TensorFlow
backend: Keras' other backends reach these formats through packages kzoo[export] does not install (jax2onnx,
litert_torch, torch), and the tolerances below were measured on TensorFlow.

Tolerances bound the *max relative difference* of :mod:`kzoo.export.parity`: ``max |artifact - keras| / max
|keras|`` over all outputs (relative to the output's own scale, so near-zero softmax tails cannot inflate it).
Two float32 evaluations of one network differ by rounding: about 1e-7 per operation, amplified by depth and by
how much the layers amplify a perturbation. Measured on every builder family with random weights (which
amplify more than trained ones; README, "Deployment"), the four runtimes stay within 2.2e-4 of Keras; even
TensorFlow's own graph-mode run of the Keras model differs from its eager run (up to 1.6e-4).
``--optimize`` adds BN folding and Winograd's rounding: 1.2e-4 measured. Each format's tolerance, 1e-3, is
about 5x the worst of these, and still an order of magnitude below what a real fault gives: a wrong channel
order or a dropped layer (1e-1 and more), a bf16 kernel (8 bits of mantissa: 4e-3 rounding per operation).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from kzoo.errors import ExportError

PIP_EXTRA = 'pip install "kzoo[export]"'
# The kzoo layers optimize_for_inference adds that some converter cannot hold, and why (measured: see tests).
_WINOGRAD_LITERT = ("TensorFlow Lite's converter folds WinogradConv2D's tile reshapes into a wrong element "
                    "count (tfl.reshape: 'number of elements to match') at a fixed batch, and with a dynamic "
                    "batch the interpreter rejects the tensors it sized (BytesRequired overflowed)")


@dataclass(frozen=True)
class Format:
    name: str  # Keras' format name
    folder: bool  # the artifact is a folder (kzoo.json inside) or one file (<file>.kzoo.json beside it)
    runtime: str  # what runs it at export time
    tolerance: float  # max relative difference allowed against the Keras model
    tolerance_why: str
    needs: tuple  # (module, pip name): Keras' exporter's dependencies and the runtime's
    suffix: str | None = None  # a file name ending the exporter insists on
    cannot_hold: Mapping = field(default_factory=dict)  # kzoo layer class -> why this format cannot hold it

    def missing(self) -> list[str]:
        """The pip names of what this format needs and this Python lacks."""
        return [pip for module, pip in self.needs if importlib.util.find_spec(module) is None]

    def require(self) -> None:
        missing = self.missing()
        if missing:
            raise ExportError(
                f"Exporting to {self.name} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'}"
                f" not installed. Run: {PIP_EXTRA}  (or: pip install {' '.join(missing)})")

    def optimize_options(self) -> dict:
        """``optimize_for_inference`` arguments that keep out the layers this format cannot hold."""
        return {"winograd": False} if "WinogradConv2D" in self.cannot_hold else {}


def _formats():
    same_kernels = ("TensorFlow runs the SavedModel as a graph, where Grappler and oneDNN fuse conv + BN + "
                    "activation and reorder float32 sums; measured up to 1.6e-4 from Keras' eager run (random "
                    "weights, every family), 1e-3 leaves room for deeper nets and --optimize's folding")
    other_kernels = ("{runtime} computes with its own float32 kernels (fused conv + bias + activation, another "
                     "summation order, possibly Winograd for 3x3 convolutions); measured up to 2.2e-4 from "
                     "Keras (random weights, every family), 1e-3 leaves room for deeper nets while a wrong "
                     "layout or a bf16 / fp16 kernel still fails")
    rows = [
        Format("tf_saved_model", True, "TensorFlow (tf.saved_model.load)", 1e-3, same_kernels,
               (("tensorflow", "tensorflow"),)),
        Format("onnx", False, "ONNX Runtime (CPUExecutionProvider)", 1e-3,
               other_kernels.format(runtime="ONNX Runtime"),
               (("tensorflow", "tensorflow"), ("tf2onnx", "tf2onnx"), ("onnx", "onnx"),
                ("onnxruntime", "onnxruntime"))),
        Format("openvino", True, "OpenVINO (CPU, INFERENCE_PRECISION_HINT=f32)", 1e-3,
               other_kernels.format(runtime="OpenVINO's CPU plugin, held to f32 (its default on CPUs with AMX "
                                            "is bf16: 8 mantissa bits, 4e-3 rounding per operation)"),
               (("tensorflow", "tensorflow"), ("openvino", "openvino"))),
        Format("litert", False, "LiteRT interpreter (ai_edge_litert, XNNPACK)", 1e-3,
               other_kernels.format(runtime="LiteRT's XNNPACK delegate"),
               (("tensorflow", "tensorflow"), ("ai_edge_litert", "ai-edge-litert")), suffix=".tflite",
               cannot_hold=MappingProxyType({"WinogradConv2D": _WINOGRAD_LITERT})),
    ]
    return MappingProxyType({row.name: row for row in rows})


FORMATS: Mapping[str, Format] = _formats()
# Engine names (kzoo predict --engine, kzoo bench) -> the format each one runs.
ENGINES = MappingProxyType({"tensorflow": "tf_saved_model", "onnxruntime": "onnx", "openvino": "openvino",
                            "litert": "litert"})
_SUFFIXES = {".onnx": "onnx", ".tflite": "litert"}


def get(name) -> Format:
    """The format called ``name`` (Keras' names; ``saved_model``/``tflite`` are accepted as aliases)."""
    key = str(name).lower().replace("-", "_")
    key = {"saved_model": "tf_saved_model", "savedmodel": "tf_saved_model", "tflite": "litert"}.get(key, key)
    if key not in FORMATS:
        raise ExportError(f"Unknown export format {name!r}; expected one of {', '.join(FORMATS)}.")
    return FORMATS[key]


def from_path(path) -> Format | None:
    """The format a file name implies (``.onnx``, ``.tflite``), or None."""
    import os

    return FORMATS.get(_SUFFIXES.get(os.path.splitext(os.fspath(path))[1].lower(), ""))


def for_engine(engine: str) -> Format:
    if engine not in ENGINES:
        raise ExportError(f"Unknown engine {engine!r}; expected keras or one of {', '.join(ENGINES)}.")
    return FORMATS[ENGINES[engine]]
