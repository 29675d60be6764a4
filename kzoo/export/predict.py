"""``kzoo predict``: the top classes of image files, a first sanity check of weights just fetched or converted.

Images are read with ``keras.utils.load_img`` (bilinear resize to the model's input), preprocessed with the mode
of the registry entry whose weights were loaded (else the model's index row), and run on Keras or, with
``engine``, on an artifact exported for that engine into a temporary folder (with ``kzoo.export``'s parity
check, so a wrong export fails instead of printing wrong classes).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np

from kzoo.errors import ExportError

_UNSET = object()


@dataclass
class Prediction:
    image: str
    top: list  # [(wordnet id or class number, label, score)], best first


def predict(images, model: str, *, weights=_UNSET, engine: str = "keras", top: int = 5) -> list[Prediction]:
    """Top-``top`` classes of each image file for model ``model`` with ``weights`` (default: its default)."""
    from kzoo import index
    from kzoo.export import entry as export_module
    from kzoo.export import formats, parity, provenance, runtimes
    from kzoo.models import create_model
    from kzoo.preprocessing import for_mode

    images = [os.fspath(p) for p in images]
    missing = [p for p in images if not os.path.isfile(p)]
    if missing:
        raise ExportError(f"No such image file: {', '.join(missing)}.")
    fmt = None if engine == "keras" else formats.for_engine(engine)
    if fmt is not None:
        fmt.require()
    info = index.get(model)
    kwargs = {} if weights is _UNSET else {"weights": weights}
    with provenance.recording() as loaded:
        keras_model = create_model(info.name, **kwargs)
    shape = export_module.image_input(keras_model)
    mode = export_module.preprocessing_mode(info.name, loaded)
    raw = np.stack([parity.load_image(p, shape[1], shape[2]) for p in images])
    x = np.ascontiguousarray(for_mode(mode)(raw), np.float32)
    if fmt is None:
        scores = export_module.keras_outputs(keras_model, x)[0]
    else:
        with tempfile.TemporaryDirectory(prefix="kzoo-predict-") as tmp:
            target = os.path.join(tmp, "model" + (fmt.suffix or (".onnx" if fmt.name == "onnx" else "")))
            export_module.export(keras_model, target, format=fmt.name, model_name=info.name)
            runner = runtimes.load(fmt.name, target)
            scores = runtimes.run_batched(runner, x)[0]
            del runner
    return [Prediction(image, _top(row, top)) for image, row in zip(images, np.asarray(scores))]


def _top(row, k: int) -> list:
    from kzoo.preprocessing import NUM_CLASSES, class_index

    names = class_index() if row.shape[-1] == NUM_CLASSES else None
    best = np.argsort(row)[::-1][:k]
    return [(*(names[str(i)] if names else (str(i), f"class {i}")), float(row[i])) for i in best]


def format_predictions(predictions: list[Prediction]) -> str:
    lines = []
    for prediction in predictions:
        lines.append(prediction.image)
        for rank, (wnid, label, score) in enumerate(prediction.top, 1):
            lines.append(f"  {rank}. {score:8.4f}  {label:<24} {wnid}")
    return "\n".join(lines)
