"""``kzoo.export(model_or_name, path, format=...)``: a deployable artifact, proven against its Keras model.

Order of work, cheapest refusal first: the format and its packages, the path (exists? writable?), then the
model is built (weights fetched and verified as ``create_model`` does), optionally optimised, checked for
layers the format cannot hold, written by Keras' exporter into a temporary folder beside ``path``, loaded in
its own runtime and compared with the Keras model (:mod:`kzoo.export.parity`). Only an artifact within the
format's tolerance is moved to ``path``, with its provenance (:mod:`kzoo.export.provenance`); on any failure
nothing is left there and an artifact already at ``path`` (``force=True``) is untouched
(:mod:`kzoo.export.staging`).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kzoo.errors import ExportError, ParityError, UnknownModel
from kzoo.export import diagnose, formats, parity, provenance, runtimes
from kzoo.export.staging import PROVENANCE_NAME, SIDECAR_SUFFIX, Staging, sidecar, weights_bytes

_UNSET = object()
OPENVINO_XML = "model.xml"


@dataclass
class ExportResult:
    path: Path
    format: str
    provenance_path: Path
    provenance: dict = field(repr=False)

    @property
    def parity(self) -> dict:
        return self.provenance["parity"]

    def summary(self) -> str:
        p = self.parity
        lines = [f"{self.format} artifact: {self.path}", f"provenance: {self.provenance_path}",
                 f"parity ({p['runtime']}, tolerance {p['tolerance']:.0e} relative):"]
        for kind in ("random", "image"):
            fig = p[kind]
            top5 = "n/a" if fig["top5_agreement"] is None else f"{fig['top5_agreement']:.0%}"
            lines.append(f"  {kind:<7} {fig['inputs']} input(s): max relative difference {fig['max_rel_diff']:.2e}, "
                         f"top-5 agreement {top5}")
        if self.provenance.get("optimized"):
            lines.append(f"optimized: {self.provenance['optimized']['note']}")
        return "\n".join(lines)


def export(model_or_name, path, format=None, *, weights=_UNSET, batch_size=None, optimize=False, force=False,
           input_size=None, model_name=None, image=None, **model_kwargs) -> ExportResult:
    """Export a model with Keras' exporter, prove it in its runtime, record its provenance.

    Args:
        model_or_name: a kzoo model name (built here, as ``kzoo.create_model(name, weights=..., **model_kwargs)``)
            or a built Keras functional model with one image input (channels last, fixed height and width).
        path: the artifact: a folder for ``tf_saved_model`` and ``openvino`` (``model.xml`` + ``model.bin``
            inside), a file for ``onnx`` and ``litert`` (which must end with ``.tflite``).
        format: ``"tf_saved_model"``, ``"onnx"``, ``"openvino"`` or ``"litert"``; None: from the suffix
            (``.onnx``, ``.tflite``).
        weights: for a name: a registry tag, a weights file, or None (random); default: the model's default.
        batch_size: a fixed batch for the artifact; None: any batch (dynamic first dimension).
        optimize: export ``kzoo.optimize_for_inference(model)`` (BN folded, activations fused, Winograd convs
            where timed faster) instead of the model, without the layers the format cannot hold.
        force: replace an artifact already at ``path`` (only once the new one has passed parity).
        input_size: for a name: build at this square input size (``input_shape=(s, s, 3)``).
        model_name: for a built model: the kzoo model it is, so its preprocessing is known and recorded.
        image: a picture file for the parity check (default: a scene kzoo draws).
        **model_kwargs: more ``create_model`` arguments for a name (``include_top``, ``alpha``, ...).

    Returns:
        An :class:`ExportResult` (path, provenance and its parity figures).

    Raises:
        ExportError: unknown format, missing package (names the ``pip install``), an existing ``path``
            without ``force``, an unwritable folder, a layer the format cannot hold (named).
        ParityError: the artifact differs from the Keras model by more than the format's tolerance.
    """
    fmt = _pick_format(format, path)
    _check_backend(fmt)
    fmt.require()
    if fmt.suffix and not os.fspath(path).lower().endswith(fmt.suffix):
        raise ExportError(f"A {fmt.name} artifact is a file ending with {fmt.suffix} (Keras' exporter insists); "
                          f"got {path}.")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 1):
        raise ExportError(f"batch_size must be a positive integer or None, got {batch_size!r}.")
    staging = Staging(path, folder=fmt.folder, force=force)  # refuses an existing or unwritable path first
    model, name, loaded, argument = _resolve(model_or_name, weights, input_size, model_name, model_kwargs)
    shape = image_input(model)
    mode = preprocessing_mode(name, loaded)
    exported, optimized = model, False
    if optimize:
        from kzoo.optimize import optimize_for_inference

        options = fmt.optimize_options()
        exported = optimize_for_inference(model, batch_size=batch_size, **options)
        off = ", ".join(f"{k}={v}" for k, v in options.items())
        optimized = {"options": options,
                     "note": f"optimize_for_inference({off or 'defaults'})"
                             + (f": {fmt.name} cannot hold WinogradConv2D" if options else "")}
    diagnose.held_layers_check(exported, fmt)
    inputs, references = _references(model, shape, mode, image)  # also calls the model, as Keras' ONNX export needs
    if exported is not model:
        keras_outputs(exported, inputs["image"])
    staging.needed = weights_bytes(exported)  # named if the disk fills up
    with staging as stage:
        target = stage.artifact / OPENVINO_XML if fmt.name == "openvino" else stage.artifact
        _write(exported, target, fmt, shape, batch_size)
        try:
            runner = runtimes.load(fmt.name, stage.artifact)
        except ExportError:
            raise
        except Exception as error:  # any runtime failure is the format not holding the model
            raise diagnose.explain(error, exported, fmt, fmt.runtime) from error
        try:
            outputs = {kind: runtimes.run_batched(runner, x) for kind, x in inputs.items()}
        except Exception as error:  # e.g. an op the interpreter lacks, found when it runs
            raise diagnose.explain(error, exported, fmt, fmt.runtime) from error
        try:
            figures = {kind: parity.compare(references[kind], outputs[kind]) for kind in inputs}
        except ValueError as error:  # a different number or shape of outputs
            raise ParityError(f"The {fmt.name} artifact does not match the Keras model: {error}. Nothing was "
                              f"written at {stage.path}.") from error
        worst = max(figures["random"].max_rel_diff, figures["image"].max_rel_diff)
        if not worst <= fmt.tolerance:  # `not <=` also catches NaN
            raise ParityError(
                f"The {fmt.name} artifact of {name or model.name} differs from the Keras model by {worst:.2e} "
                f"(max relative difference; tolerance {fmt.tolerance:.0e} because {fmt.tolerance_why}). "
                f"Top-5 agreement: random {_pct(figures['random'])}, image {_pct(figures['image'])}. "
                f"Nothing was written at {stage.path}.")
        document = _document(model, name, fmt, stage, shape, batch_size, mode, argument, loaded, optimized,
                             figures, runner, image)
        provenance.write(stage.provenance, document)
        del runner  # the runtime lets go of the files before they move
        final = stage.commit()
    proof = final / PROVENANCE_NAME if fmt.folder else sidecar(final)
    return ExportResult(final, fmt.name, proof, document)


# --------------------------------------------------------------------------------------------- steps

def _pick_format(format, path):
    if format is not None:
        return formats.get(format)
    fmt = formats.from_path(path)
    if fmt is None:
        raise ExportError(f"Name a format for {path} (format=, kzoo export --format): one of "
                          f"{', '.join(formats.FORMATS)}.")
    return fmt


def _check_backend(fmt) -> None:
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ExportError(f"kzoo exports with Keras' TensorFlow-backend exporters; this process runs the "
                          f"{keras.backend.backend()!r} backend. Set KERAS_BACKEND=tensorflow (the weights are "
                          f"the same on every backend).")


def _resolve(model_or_name, weights, input_size, model_name, model_kwargs):
    """``(model, kzoo name or None, weights loaded, weights argument)``."""
    if not isinstance(model_or_name, str):
        if weights is not _UNSET or input_size is not None or model_kwargs:
            raise ExportError("weights=, input_size= and builder arguments apply to a model *name*; a built "
                              "model is exported with the weights it holds.")
        from kzoo import index

        name = index.normalise(model_name) if model_name else None
        if name is not None:
            index.get(name)  # an unknown name is an error, not a silent "no preprocessing"
        return model_or_name, name, [], None
    from kzoo.models import create_model

    kwargs = dict(model_kwargs)
    if weights is not _UNSET:
        kwargs["weights"] = weights
    if input_size is not None:
        kwargs.setdefault("input_shape", (int(input_size), int(input_size), 3))
    with provenance.recording() as loaded:
        model = create_model(model_or_name, **kwargs)
    try:
        from kzoo import index

        name = index.get(model_or_name).name
    except UnknownModel:  # a user's registered builder
        name = str(model_or_name).lower()
    argument = loaded[-1].argument if loaded else (None if weights is _UNSET else weights)
    return model, name, loaded, argument


def image_input(model) -> tuple:
    import keras

    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1:
        raise ExportError(f"kzoo export takes a functional model with one image input; {model.name!r} has "
                          f"{len(inputs or [])}.")
    shape = tuple(inputs[0].shape)
    if keras.config.image_data_format() != "channels_last" or len(shape) != 4 or shape[-1] != 3 \
            or None in shape[1:]:
        raise ExportError(f"kzoo export takes channels-last RGB images of a fixed size; {model.name!r} takes "
                          f"{shape}. Build it with input_shape=(height, width, 3).")
    return shape


def preprocessing_mode(name, loaded):
    """The registry entry's preprocessing mode for the weights loaded, else the index row's, else None."""
    entry = loaded[-1].entry if loaded else None
    if entry is not None and entry.preprocessing:
        return entry.preprocessing
    if name is None:
        return None
    from kzoo import index

    try:
        return index.get(name).preprocessing
    except UnknownModel:
        return None


def _write(model, target, fmt, shape, batch_size) -> None:
    import keras

    signature = None
    if batch_size is not None:
        signature = [keras.InputSpec(shape=(batch_size, *shape[1:]), dtype=model.inputs[0].dtype,
                                     name=model.inputs[0].name)]
    try:
        with _normalization_as_constants(model):
            model.export(os.fspath(target), format=fmt.name, verbose=False, input_signature=signature)
    except Exception as error:  # every converter failure becomes one ExportError
        raise diagnose.explain(error, model, fmt, "Keras' exporter") from error
    if fmt.name == "openvino":
        _drop_dead_openvino_results(target, len(model.outputs))
    if fmt.name == "onnx":  # tf2onnx writes ops it could not convert as they are, and says so only in a log
        ops, nodes = diagnose.onnx_unknown_nodes(target)
        if ops:
            raise diagnose.cannot_hold(model, fmt, ops, "\n".join(nodes), "tf2onnx")


@contextlib.contextmanager
def _normalization_as_constants(model):
    """Keras' Normalization layer computes with a snapshot of its statistics (eager tensors, not variables:
    EfficientNet's, EfficientNetV2's and ConvNeXt's input normalisation). Traced, a snapshot is a captured
    input that tf2onnx leaves as an unfed graph input and OpenVINO as an extra parameter; as NumPy arrays
    the same values trace as constants. The layers get their snapshot back afterwards."""
    import keras

    layers = [layer for layer in model._flatten_layers(include_self=False)
              if isinstance(layer, keras.layers.Normalization) and layer.built]
    saved = [(layer.mean, layer.variance) for layer in layers]
    try:
        for layer in layers:
            layer.mean = np.asarray(keras.ops.convert_to_numpy(layer.mean))
            layer.variance = np.asarray(keras.ops.convert_to_numpy(layer.variance))
        yield
    finally:
        for layer, (mean, variance) in zip(layers, saved):
            layer.mean, layer.variance = mean, variance


def _drop_dead_openvino_results(xml, keep: int) -> None:
    """OpenVINO's TensorFlow frontend makes every op output nobody reads a model output: ShuffleNet's channel
    shuffles leave scalar batch-size slices, and each swish (a TF custom gradient: IdentityN) a second copy of
    its activation. The traced function's own outputs are its ``Identity``, ``Identity_1``, ... tensors; when
    exactly ``keep`` results carry those names, the others are dropped, so the artifact has the Keras model's
    outputs and nothing else. Otherwise the file is left as it is and parity reports the mismatch."""
    import re

    import openvino as ov

    model = ov.Core().read_model(os.fspath(xml))
    results = model.get_results()
    own = [r for r in results if any(re.fullmatch(r"Identity(_\d+)?:0", n) for n in r.output(0).get_names())
           or any(re.fullmatch(r"Identity(_\d+)?:0", n) for n in r.input_value(0).get_names())]
    if len(results) == keep or len(own) != keep:
        return
    for result in results:
        if result not in own:
            model.remove_result(result)
    # The weights file is memory-mapped by `model`: write beside it and rename, never over it in place.
    xml = Path(xml)
    pruned = xml.with_name("pruned.xml")
    ov.serialize(model, os.fspath(pruned))  # as Keras' exporter writes it (no fp16 compression)
    del model, results, own
    os.replace(pruned.with_suffix(".bin"), xml.with_suffix(".bin"))
    os.replace(pruned, xml)


def keras_outputs(model, x) -> list[np.ndarray]:
    from keras import ops, tree

    return [np.asarray(ops.convert_to_numpy(o)) for o in tree.flatten(model(x, training=False))]


def _references(model, shape, mode, image) -> tuple[dict, dict]:
    """The parity inputs (preprocessed as the model expects) and the Keras model's outputs for them."""
    from kzoo.preprocessing import for_mode

    preprocess = for_mode(mode) if mode else (lambda x, data_format=None: x)
    height, width = shape[1], shape[2]
    picture = parity.load_image(image, height, width) if image is not None else parity.scene_image(height, width)
    inputs = {kind: np.ascontiguousarray(preprocess(raw.copy()), np.float32)
              for kind, raw in (("random", parity.random_images(height, width)), ("image", picture[None]))}
    return inputs, {kind: keras_outputs(model, x) for kind, x in inputs.items()}


def _pct(figures) -> str:
    return "n/a" if figures.top5_agreement is None else f"{figures.top5_agreement:.0%}"


def _document(model, name, fmt, stage, shape, batch_size, mode, argument, loaded, optimized, figures, runner,
              image) -> dict:
    outputs = model.outputs
    classes = int(outputs[0].shape[-1]) if len(outputs) == 1 and len(outputs[0].shape) == 2 else None
    files = stage.files() + [PROVENANCE_NAME] if fmt.folder else [stage.path.name, stage.path.name + SIDECAR_SUFFIX]
    return {
        "kzoo_export": provenance.SCHEMA,
        "model": name,
        "keras_model_name": model.name,
        "format": fmt.name,
        "artifact": stage.path.name,
        "files": sorted(files),
        "created": provenance.now(),
        "weights": provenance.weights_record(argument, loaded),
        "preprocessing": mode,
        "input_size": [int(shape[1]), int(shape[2])],
        "input_shape": [batch_size, int(shape[1]), int(shape[2]), int(shape[3])],
        "classes": classes,
        "class_index": provenance.class_index_for(classes),
        "optimized": optimized,
        "parity": {
            "runtime": runner.describe(),
            "reference": "the Keras model" + (" before optimize_for_inference" if optimized else ""),
            "tolerance": fmt.tolerance,
            "tolerance_why": fmt.tolerance_why,
            "metric": "max |artifact - keras| / max |keras| over all outputs; top-5 agreement: share of rows "
                      "with the same five best classes",
            "random": {**figures["random"].as_dict(), "seed": parity.RANDOM_SEED},
            "image": {**figures["image"].as_dict(),
                      "source": os.path.basename(os.fspath(image)) if image is not None else "kzoo scene"},
        },
        "versions": provenance.versions(runner.describe()),
    }
