"""The exported engines as comparison sources: kzoo's model, exported by ``kzoo.export`` and timed in its runtime.

Per model, each engine source builds kzoo's model (as the ``kzoo`` source does), exports it into a temporary
folder with :func:`kzoo.export.export` (so the artifact has passed the format's parity check against the Keras
model before it is timed; a failure is reported in the table, not timed), and loads it per batch size in its
own runtime (:func:`kzoo.export.runtimes.load`) with ``threads`` intra-op threads. A step is one runtime call
on a batch already in host memory, which is where these runtimes read it; the call returns NumPy outputs, so
it is synchronised. The artifact has a dynamic batch (exported once per model); OpenVINO, which compiles for
one shape, is compiled for the batch being timed.

The ``-opt`` sources export ``kzoo.optimize_for_inference(model)`` (``kzoo export --optimize``), without the
layers the format cannot hold (LiteRT: no WinogradConv2D). Engines run float32 inference only.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import ClassVar

import numpy as np

from kzoo.bench.candidate import Candidate
from kzoo.bench.flops import count_flops
from kzoo.bench.measure import prepare_with_backoff
from kzoo.errors import ExportError, UnknownModel
from kzoo.export import formats

OPTIMIZED_SUFFIX = "-opt"


class EngineCandidate(Candidate):
    """kzoo's model exported for ``engine`` (a :data:`kzoo.export.ENGINES` name) and run in that runtime."""

    engine: ClassVar[str] = ""
    optimize: ClassVar[bool] = False
    inference_only = True

    _export = None  # (path, facts about the exported model), or the exception exporting raised
    _folder = None  # the temporary folder holding the artifact (removed with it)

    @classmethod
    def problem(cls) -> str | None:
        try:
            formats.for_engine(cls.engine).require()
        except ExportError as error:
            return str(error)
        return None

    def start_model(self, model_name):
        self._export = self._folder = None  # the previous model's artifact goes with its folder
        try:
            self._export = self._exported(model_name)
        except Exception as exc:  # noqa: BLE001 - reported in the table, the sweep goes on
            self._export = exc

    def _exported(self, model_name):
        from kzoo.bench.source_table import build_model
        from kzoo.export.entry import export

        if self.precision != "float32":
            raise ValueError(f"the {self.engine} engine is timed in float32 only, not {self.precision}")
        fmt = formats.for_engine(self.engine)
        fmt.require()
        build = self.build or build_model
        model = build(model_name, "kzoo", image_size=self.image_size, precision=self.precision)
        facts = {"image_size": tuple(int(s) for s in model.inputs[0].shape[1:3]),
                 "params": int(model.count_params()), "gflops_per_image": count_flops(model) / 1e9}
        self._folder = tempfile.TemporaryDirectory(prefix="kzoo-bench-")
        path = Path(self._folder.name) / ("model" + (fmt.suffix or (".onnx" if fmt.name == "onnx" else "")))
        t0 = time.perf_counter()
        result = export(model, path, format=fmt.name, optimize=self.optimize, model_name=_known(model_name))
        worst = max(result.parity["random"]["max_rel_diff"], result.parity["image"]["max_rel_diff"])
        self.log(f"exported {model_name} for {self.name} in {time.perf_counter() - t0:.1f}s; parity max relative "
                 f"difference {worst:.1e} (tolerance {result.parity['tolerance']:.0e})")
        return result.path, dict(facts, parity_max_rel_diff=worst)

    def input_size(self):
        if self._export is None or isinstance(self._export, Exception):
            return None
        return self._export[1]["image_size"]

    def prepare(self, model_name, batch_size, result, shared_size=None):
        if isinstance(self._export, Exception):
            raise self._export
        path, facts = self._export
        result.image_size = facts["image_size"]
        result.params = facts["params"]
        result.gflops_per_image = facts["gflops_per_image"]
        return prepare_with_backoff(lambda b: self._make_step(path, facts["image_size"], b, result), batch_size,
                                    log=self.log)

    def _make_step(self, path, size, batch, result):
        from kzoo.export import runtimes

        runner = runtimes.load(formats.for_engine(self.engine).name, path, threads=self.threads, batch=batch)
        result.backend = runner.describe()
        x = np.random.default_rng(0).uniform(0, 1, (batch, *size, 3)).astype(np.float32)
        return lambda: runner(x)


def _known(model_name):
    """The kzoo name, so the export's parity image gets the model's preprocessing; None for an unknown one."""
    from kzoo import index

    try:
        return index.get(model_name).name
    except UnknownModel:
        return None


def _engine_candidate(engine: str, optimize: bool, style: str) -> type:
    name = engine + (OPTIMIZED_SUFFIX if optimize else "")
    doc = (f"kzoo's model{', optimised (kzoo export --optimize),' if optimize else ''} exported for and run "
           f"in {engine}.")
    return type(f"Engine_{name.replace('-', '_')}", (EngineCandidate,),
                {"name": name, "engine": engine, "optimize": optimize, "framework": engine,
                 "plot_style": style, "__doc__": doc, "__module__": __name__})


_STYLES = {"onnxruntime": "D", "openvino": "v", "litert": "P", "tensorflow": "x"}
ENGINE_CANDIDATES = tuple(_engine_candidate(engine, optimize, ("-." if optimize else ":") + _STYLES.get(engine, "*"))
                          for engine in formats.ENGINES for optimize in (False, True))
