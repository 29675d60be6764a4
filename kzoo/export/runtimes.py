"""Running an exported artifact in its own runtime: TensorFlow for a SavedModel, ONNX Runtime, OpenVINO, LiteRT.

``load(format, path, threads=None)`` returns a :class:`Runner`: ``runner(x)`` takes one float32 NHWC batch
and returns the outputs as a list of NumPy arrays, in the Keras model's output order. No Keras code runs:
this is what a deployment would run, which is the point of checking it. ``threads`` sets the runtime's own
intra-op thread count where it has one per session (ONNX Runtime, OpenVINO, LiteRT); TensorFlow's is set
per process (``tf.config.threading``) and is left alone. ``batch`` fixes a dynamic batch dimension where the
runtime compiles for one shape (OpenVINO: ``kzoo bench`` times a fixed batch, as a server would run it); the
other runtimes size their tensors per call and ignore it.
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

import numpy as np

from kzoo.errors import ExportError
from kzoo.export import formats


class Runner:
    """One loaded artifact. ``batch`` is its fixed batch size, or None when any batch runs."""

    format: str = ""
    batch: int | None = None
    version: str = ""

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{formats.FORMATS[self.format].runtime} {self.version}".strip()


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


class SavedModelRunner(Runner):
    format = "tf_saved_model"

    def __init__(self, path: Path, threads=None, batch=None):
        import tensorflow as tf

        self._tf = tf
        self._loaded = tf.saved_model.load(os.fspath(path))  # held: its functions reference its variables
        self._fn = self._loaded.signatures["serving_default"]
        spec = self._fn.structured_input_signature[1]
        self._input_name, shape = next(iter((k, v.shape) for k, v in spec.items()))
        self.batch = shape[0] if shape[0] is not None else None
        # serving_default names its outputs output_0, output_1, ... in the model's order.
        self._outputs = sorted(self._fn.structured_outputs, key=_output_rank)
        self.version = tf.__version__

    def __call__(self, x):
        result = self._fn(**{self._input_name: self._tf.constant(x)})
        return [result[k].numpy() for k in self._outputs]


class OnnxRunner(Runner):
    format = "onnx"

    def __init__(self, path: Path, threads=None, batch=None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
        first = self._session.get_inputs()[0]
        self._input_name = first.name
        self.batch = first.shape[0] if isinstance(first.shape[0], int) else None
        self.version = ort.__version__

    def __call__(self, x):
        return self._session.run(None, {self._input_name: x})


class OpenVinoRunner(Runner):
    format = "openvino"

    def __init__(self, path: Path, threads=None, batch=None):
        import openvino as ov

        xml = Path(path)
        if xml.is_dir():
            found = sorted(xml.glob("*.xml"))
            if len(found) != 1:
                raise ExportError(f"{path} should hold one OpenVINO .xml file, found {len(found)}.")
            xml = found[0]
        config = {"INFERENCE_PRECISION_HINT": "f32"}  # the CPU plugin's bf16 default on AMX CPUs is not f32
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        core = ov.Core()
        model = core.read_model(os.fspath(xml))
        shape = model.inputs[0].get_partial_shape()
        if batch and shape[0].is_dynamic and shape[1:].is_static:
            model.reshape([int(batch), *(d.get_length() for d in shape[1:])])
        self._compiled = core.compile_model(model, "CPU", config)
        self._request = self._compiled.create_infer_request()
        shape = self._compiled.inputs[0].get_partial_shape()
        self.batch = shape[0].get_length() if shape[0].is_static else None
        self.version = ov.get_version()

    def __call__(self, x):
        self._request.infer({0: x})
        return [np.array(self._request.get_output_tensor(i).data) for i in range(len(self._compiled.outputs))]


class LiteRtRunner(Runner):
    format = "litert"

    def __init__(self, path: Path, threads=None, batch=None):
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=os.fspath(path), num_threads=int(threads) if threads else None)
        detail = self._interpreter.get_input_details()[0]
        self._input = detail["index"]
        self.batch = None if detail["shape_signature"][0] == -1 else int(detail["shape"][0])
        self._shape = None
        # The signature's outputs are output_0, output_1, ... in the model's order; map them to tensors.
        runner = self._interpreter.get_signature_runner()
        named = runner.get_output_details()
        self._outputs = [named[k]["index"] for k in sorted(named, key=_output_rank)]
        self.version = _version("ai-edge-litert")

    def __call__(self, x):
        if self._shape != x.shape:
            self._interpreter.resize_tensor_input(self._input, x.shape, strict=self.batch is not None)
            self._interpreter.allocate_tensors()
            self._shape = x.shape
        self._interpreter.set_tensor(self._input, x)
        self._interpreter.invoke()
        return [self._interpreter.get_tensor(i).copy() for i in self._outputs]


def _output_rank(name: str):
    tail = str(name).rsplit("_", 1)[-1]
    return (0, int(tail), name) if tail.isdigit() else (1, 0, name)


_RUNNERS = {cls.format: cls for cls in (SavedModelRunner, OnnxRunner, OpenVinoRunner, LiteRtRunner)}


def load(format_name: str, path, threads=None, batch=None) -> Runner:
    """Load the artifact at ``path`` (a file, or the folder of a folder format) in its runtime."""
    fmt = formats.get(format_name)
    fmt.require()
    return _RUNNERS[fmt.name](Path(path), threads, batch)


def run_batched(runner: Runner, x: np.ndarray) -> list[np.ndarray]:
    """``runner`` over all of ``x``: in one call, or in chunks of the artifact's fixed batch (the last chunk
    padded with copies of its final row, the padding dropped from the outputs)."""
    if runner.batch is None or runner.batch == len(x):
        return runner(np.ascontiguousarray(x, np.float32))
    pieces = []
    for start in range(0, len(x), runner.batch):
        chunk = x[start:start + runner.batch]
        n = len(chunk)
        if n < runner.batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], runner.batch - n, axis=0)])
        pieces.append([out[:n] for out in runner(np.ascontiguousarray(chunk, np.float32))])
    return [np.concatenate(parts) for parts in zip(*pieces)]
