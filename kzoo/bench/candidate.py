"""The interface of a comparison source: what the sweep asks of kzoo, keras.applications, timm, ..."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

MODES = ("infer", "train")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


class Candidate:
    """One comparison source, set up for one model of a sweep and asked for a step per batch size.

    Adding a source (an inference engine, another zoo) is a subclass that sets ``name`` and implements
    :meth:`prepare` (plus the hooks it needs), registered in ``kzoo.bench.source_table.SOURCES``.
    The sweep calls, per model: :meth:`start_model`; then per batch size: :meth:`start_batch` on
    every candidate, then :meth:`prepare` on each, then times all prepared steps interleaved.
    """

    name: ClassVar[str] = ""  # the string in ``--compare`` / ``sources`` and in the result's ``source``
    baseline: ClassVar[bool] = False  # kzoo is measured against it: a ratio and an "x NAME" column
    framework: ClassVar[str | None] = None  # what computes when not the Keras backend ("torch")
    inference_only: ClassVar[bool] = False  # left out of train sweeps
    plot_style: ClassVar[str] = "-"  # matplotlib format of its line in ``--plot``

    def __init__(self, *, mode: str = "infer", precision: str = "float32", jit: bool = False,
                 image_size=None, build: Callable | None = None, log: Callable | None = None,
                 threads: int | None = None):
        """``image_size`` None keeps each model's own input size. ``build(name, source, image_size=,
        precision=[, batch_size=])`` replaces how a Keras model is built (tests inject a tiny one);
        sources that build no Keras model ignore it. ``threads`` is for a source with its own thread
        setting (an exported engine's session); None keeps its default. The Keras backend's threads
        are set per process (:func:`kzoo.bench.environment.set_threads`)."""
        self.mode = mode
        self.precision = precision
        self.jit = jit
        self.image_size = image_size
        self.build = build
        self.log = log or (lambda msg: None)
        self.threads = threads

    @classmethod
    def problem(cls) -> str | None:
        """Why this source cannot run in this process, or None. Must not import TensorFlow."""
        return None

    @classmethod
    def available(cls) -> bool:
        """Whether it can run here; it may import its framework, so ask before Keras loads a backend."""
        return cls.problem() is None

    def start_model(self, model_name: str) -> None:
        """Before the batch sizes of ``model_name``: build what does not depend on the batch."""

    def start_batch(self, model_name: str, batch_size: int) -> None:
        """Before ``batch_size`` is prepared: build what depends on the batch."""

    def input_size(self) -> tuple | None:
        """(height, width) of the model :meth:`start_model` built, or None when it built none."""
        return None

    def prepare(self, model_name: str, batch_size: int, result, shared_size=None):
        """Make the step for ``batch_size`` and run its first call, halving the batch on out-of-memory
        (:func:`kzoo.bench.measure.prepare_with_backoff`); returns that ``Prepared``.

        Records the model's ``image_size``, ``params`` and ``gflops_per_image`` on ``result``. Raises
        whatever stops it; the sweep reports it in ``result.error``. ``shared_size`` is the (h, w) the
        other candidates take, for a source that builds its model in another framework.
        """
        raise NotImplementedError
