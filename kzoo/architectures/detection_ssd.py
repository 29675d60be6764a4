"""SSD InceptionV2 as a Keras detector: ``kzoo.create_model("ssd_inception_v2_coco", weights="coco")``.

The Object Detection API's ``ssd_inception_v2_coco_2018_01_28`` (TI-ONE's SSD): the feature extractor
(``kzoo.architectures.inception.ssd_feature_maps``), the convolutional box predictor, and -- with
``postprocess=True`` -- anchors, box decoding, the score converter and per-class NMS (``kzoo.detection.ssd``).

Input: an RGB image batch, 0-255, already at the config's fixed size (300x300; the API's resizer is bilinear).
The ``(2 / 255) x - 1`` scaling is inside the model. Outputs (``postprocess=True``): ``detection_boxes``
(normalised ``[ymin, xmin, ymax, xmax]``), ``detection_scores``, ``detection_classes`` (COCO ids,
``kzoo.detection.coco_labels()``), ``num_detections``; with ``postprocess=False``: ``box_encodings (N, A, 4)``
and ``class_logits (N, A, 91)``, the raw head outputs (slot 0 = background).

Settings (anchors, box coder, NMS) come from ``pipeline_config`` (a path or the text), else from the archive's
own ``pipeline.config`` when ``weights="coco"``, else from the registry entry (the sample config's values).
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers

from kzoo.architectures import _common, _factory, inception

__all__ = ["SSDInceptionV2COCO"]

MODEL_NAME = "ssd_inception_v2_coco"
CONFIG_MEMBER = "pipeline.config"
MAX_CONFIG_BYTES = 1 << 20


class DetectionPostprocess(keras.layers.Layer):
    """Anchors, decoding, score conversion and NMS (``kzoo.detection.ssd.postprocess``); TensorFlow backend."""

    def __init__(self, anchors, settings, **kwargs):
        super().__init__(**kwargs)
        self.anchors, self.settings = anchors, settings

    def call(self, box_encodings, class_logits):
        from kzoo.detection.ssd import postprocess

        return postprocess(box_encodings, class_logits, self.anchors, self.settings)

    def get_config(self):
        return {**super().get_config(), "anchors": self.anchors.tolist(), "settings": self.settings}


def read_archive_member(archive, suffix: str) -> str:
    """The text of the archive member whose name ends in ``suffix`` (read, never extracted)."""
    import tarfile

    from kzoo.errors import ConversionError

    with tarfile.open(archive) as tar:
        for member in tar:
            if member.isfile() and (member.name == suffix or member.name.endswith("/" + suffix)):
                if member.size > MAX_CONFIG_BYTES:
                    break
                return tar.extractfile(member).read().decode("utf-8")
    raise ConversionError(f"{archive}: no {suffix} (under {MAX_CONFIG_BYTES} bytes) in the archive. Pass "
                          f"pipeline_config= (the detector's config) explicitly.")


def detector_settings(pipeline_config=None, weights=None) -> dict:
    from kzoo import registry
    from kzoo.detection import pipeline_config as reader
    from kzoo.detection.ssd import ssd_settings

    if pipeline_config is not None:
        if isinstance(pipeline_config, dict) and not isinstance(pipeline_config, reader.Message):
            return pipeline_config  # already settings
        if isinstance(pipeline_config, reader.Message):
            return ssd_settings(pipeline_config)
        text = str(pipeline_config)
        if "{" not in text and Path(text).is_file():
            return ssd_settings(reader.read(text), text)
        return ssd_settings(reader.parse(text))
    entry = registry.resolve_weights(_factory.registered_name(MODEL_NAME), "coco", False)
    if weights == "coco":
        from kzoo import sources

        archive = sources.fetch(entry)
        return ssd_settings(reader.parse(read_archive_member(archive, CONFIG_MEMBER), f"{archive}:{CONFIG_MEMBER}"))
    return dict(entry.conversion["detection"]["settings"])


def SSDInceptionV2COCO(include_top=False, weights="coco", input_tensor=None, input_shape=None, pooling=None,
                       pipeline_config=None, postprocess=True, num_classes=None, name=MODEL_NAME):
    """The SSD InceptionV2 COCO detector (see the module docstring).

    ``num_classes`` (default: the config's, 90) other than the checkpoint's builds new ``ClassPredictor`` heads
    for fine-tuning: everything else (feature extractor, box encoders) loads from ``weights``, the class heads
    keep Keras' initialisers, and ``model.weights_report`` lists the tensors ``kept`` and ``reinitialised``.
    """
    import numpy as np

    from kzoo.detection.ssd import anchor_box_specs, box_predictor, ssd_anchors

    if include_top or pooling is not None:
        raise ValueError("SSDInceptionV2COCO is a detector: include_top and pooling do not apply.")
    settings = detector_settings(pipeline_config, weights)
    checkpoint_classes = settings["num_classes"]
    if num_classes is not None:
        settings = {**settings, "num_classes": int(num_classes)}
    request = _factory.Weights(weights, MODEL_NAME, False, 1)
    size = tuple(settings["image_size"])
    input_shape = _common.obtain_input_shape(input_shape or (*size, 3), default_size=size[0], min_size=32,
                                             require_flatten=False, pretrained=False)
    images = _common.make_input(input_tensor, input_shape)
    x = layers.Rescaling(2.0 / 255.0, offset=-1.0, name="preprocess")(images)
    feature_maps = inception.ssd_feature_maps(x)
    specs = anchor_box_specs(settings)
    box_encodings, class_logits = box_predictor(feature_maps, settings["num_classes"], specs)
    if postprocess:
        if None in tuple(images.shape[1:3]):
            raise ValueError("postprocess=True needs a fixed input size (the anchors depend on it).")
        grid = [tuple(int(d) for d in m.shape[1:3]) for m in feature_maps]
        anchors = ssd_anchors(grid, settings, image_size=tuple(images.shape[1:3]))
        outputs = DetectionPostprocess(np.asarray(anchors), settings, name="postprocess")(box_encodings, class_logits)
    else:
        outputs = {"box_encodings": box_encodings, "class_logits": class_logits}
    model = keras.Model(_common.model_inputs(input_tensor, images), outputs, name=name)
    model.detection_settings = settings
    if settings["num_classes"] == checkpoint_classes or weights is None:
        return request.load(model)
    heads = {layer.name for layer in model.layers if layer.name.endswith("_ClassPredictor")}
    return load_for_new_classes(model, request, heads)


def load_for_new_classes(model, request, class_layers):
    """Load every weight whose shape still fits; the ``class_layers`` (the only ones whose shape depends on the
    class count) keep their fresh initialisation. Anything else that does not fit is an error, not a silent skip.
    Sets ``model.weights_report``: ``kept`` and ``reinitialised`` (``layer/weight`` names) and ``source``."""
    from kzoo.errors import IncompatibleWeights
    from kzoo.formats import keras_h5

    path, entry = request.local_file()
    report = keras_h5.load_weights(model, path, skip_mismatch=True, allow_unexpected=False, probe=entry is None)
    fresh = {layer for layer, _ in report.mismatched}
    unexpected = sorted(fresh - set(class_layers))
    if unexpected or report.missing:
        raise IncompatibleWeights(f"{path}: only the class-dependent heads {sorted(class_layers)} may change with "
                                  f"num_classes, but {unexpected + list(report.missing)} do not fit either. Is it a "
                                  f"{model.name} weight file?")
    kept, reinitialised = [], []
    for layer in model.layers:
        for weight in layer.weights:
            (reinitialised if layer.name in fresh else kept).append(f"{layer.name}/{weight.name}")
    model.weights_report = {"kept": kept, "reinitialised": reinitialised, "source": path}
    return model


preprocess_input = None  # the scaling is inside the model (index mode "none")
