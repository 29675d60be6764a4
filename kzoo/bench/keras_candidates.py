"""The sources whose model is a Keras model on the Keras backend: kzoo, kzoo-opt, keras.applications."""

from __future__ import annotations

import contextlib
import time

from kzoo.bench.candidate import MODES, PRECISIONS, Candidate
from kzoo.bench.flops import count_flops
from kzoo.bench.measure import prepare_with_backoff
from kzoo.timing import inference_step, on_device


@contextlib.contextmanager
def dtype_policy(precision: str):
    """Build under a global dtype policy and restore the previous one."""
    import keras

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def keras_application(name: str):
    """The keras.applications builder for a kzoo canonical name (they are its lower-cased name)."""
    import keras

    table = {n.lower(): n for n in dir(keras.applications) if n[:1].isupper()}
    attr = table.get(name.lower().replace("_", ""))
    if attr is None or "_" in name:
        return None  # TF-slim / TI-ONE models have no keras.applications twin
    return getattr(keras.applications, attr)


def _input_shape(model, batch_size):
    shape = tuple(model.inputs[0].shape[1:])
    return (batch_size, *shape)


def make_keras_step(model, batch_size: int, mode: str = "infer", jit: bool = False, seed: int = 0):
    """One synchronised step of ``model`` on a batch already on the device.

    ``jit`` means XLA for TensorFlow (off: a ``tf.function`` graph), ``jax.jit`` for JAX (off:
    op-by-op), ``torch.compile`` for torch (off: eager).
    """
    import keras
    import numpy as np

    rng = np.random.default_rng(seed)
    x = on_device(rng.uniform(0, 1, _input_shape(model, batch_size)).astype("float32"))
    if mode == "train":
        num_classes = int(model.outputs[0].shape[-1])
        y = on_device(rng.integers(0, num_classes, (batch_size,)).astype("int32"))
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=1e-4, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(),
            jit_compile=bool(jit),
        )

        def train_step():
            return model.train_on_batch(x, y)  # returns host numbers: synchronised

        return train_step
    if mode != "infer":
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return inference_step(model, x, jit)


class KerasModelCandidate(Candidate):
    """A source that builds a Keras model and times it with :func:`make_keras_step`."""

    per_batch = False  # its model depends on the batch size, so it is built again for each

    model = None  # the built model, or the exception building it raised (reported by prepare)

    @classmethod
    def create_model(cls, name: str, *, image_size=None, precision="float32", batch_size=None):
        """A randomly initialised classifier (``include_top=True``) from this source.

        ``image_size`` None keeps the model's own default input size; ``batch_size`` is for sources
        whose model depends on it (``per_batch``).
        """
        kwargs = {"weights": None}
        if image_size:
            size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
            kwargs["input_shape"] = (*size, 3)
        with dtype_policy(precision):
            return cls._create(name, kwargs, batch_size)

    @classmethod
    def _create(cls, name: str, builder_kwargs: dict, batch_size):
        raise NotImplementedError

    def _build_logged(self, model_name, **extra):
        build = self.build or (lambda name, source, **kwargs: type(self).create_model(name, **kwargs))
        try:
            t0 = time.perf_counter()
            model = build(model_name, self.name, image_size=self.image_size, precision=self.precision, **extra)
            self.log(f"built {model_name} ({self.name}) in {time.perf_counter() - t0:.1f}s")
            return model
        except Exception as exc:  # noqa: BLE001 - reported in the table, the sweep goes on
            return exc

    def start_model(self, model_name):
        if not self.per_batch:
            self.model = self._build_logged(model_name)

    def start_batch(self, model_name, batch_size):
        if self.per_batch:
            self.model = self._build_logged(model_name, batch_size=batch_size)

    def input_size(self):
        if self.model is None or isinstance(self.model, Exception):
            return None
        return tuple(int(s) for s in self.model.inputs[0].shape[1:3])

    def prepare(self, model_name, batch_size, result, shared_size=None):
        model = self.model
        if isinstance(model, Exception):
            raise model
        result.image_size = tuple(int(s) for s in model.inputs[0].shape[1:3])
        result.params = int(model.count_params())
        result.gflops_per_image = count_flops(model) / 1e9
        return prepare_with_backoff(
            lambda b: make_keras_step(model, b, self.mode, self.jit), batch_size, log=self.log
        )


class Kzoo(KerasModelCandidate):
    """kzoo's model, as ``kzoo.models.create_model`` builds it."""

    name = "kzoo"
    plot_style = "-o"

    @classmethod
    def _create(cls, name, builder_kwargs, batch_size):
        from kzoo.models import create_model

        return create_model(name, **builder_kwargs)


class KzooOptimized(Kzoo):
    """``kzoo.optimize_for_inference`` of kzoo's model: folded, with Winograd 3x3 convs.

    Built for each batch size, because the optimizer picks its Winograd tiles for the batch it will run.
    """

    name = "kzoo-opt"
    per_batch = True
    inference_only = True  # a folded model has no training behaviour
    plot_style = "-s"

    @classmethod
    def _create(cls, name, builder_kwargs, batch_size):
        model = super()._create(name, builder_kwargs, batch_size)
        from kzoo.optimize import optimize_for_inference

        return optimize_for_inference(model, batch_size=batch_size)


class KerasApplications(KerasModelCandidate):
    """The baseline: keras.applications' model of the same name."""

    name = "keras"
    baseline = True
    plot_style = "--^"

    @classmethod
    def _create(cls, name, builder_kwargs, batch_size):
        builder = keras_application(name)
        if builder is None:
            raise LookupError(f"keras.applications has no model for {name!r}")
        return builder(**builder_kwargs)
