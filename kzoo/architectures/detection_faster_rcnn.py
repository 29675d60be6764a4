"""Faster R-CNN ResNet-50 / ResNet-101 and R-FCN ResNet-101 as Keras detectors:
``kzoo.create_model("faster_rcnn_resnet50_coco", weights="coco")``, ``"faster_rcnn_resnet101_coco"`` (the
``faster_rcnn_resnet101_coco_11_06_2017`` archive), ``"rfcn_resnet101_coco"``.

The Object Detection API's ``faster_rcnn_resnet50_coco_2018_01_28`` (TI-ONE's Faster R-CNN), as
tensorflow/models research/object_detection ``meta_architectures/faster_rcnn_meta_arch.py`` runs it at inference:

1. first stage: slim ResNet v1 conv1..block3 at output stride 16 (``kzoo.architectures.resnet_v1``);
2. RPN: the 3x3 ReLU6 conv ``Conv`` (512) and ``FirstStageBoxPredictor``'s two 1x1 convs (12 anchors a cell:
   box codes and background/object logits);
3. proposals (``kzoo.detection.two_stage.rpn_proposals``): grid anchors, decoding, softmax, NMS;
4. ``crop_and_resize`` of block3 to ``initial_crop_size`` (14x14) per proposal, a 2x2 stride-2 max-pool;
5. second stage: block4 on the 7x7 crops, global average pool, ``SecondStageBoxPredictor``'s two dense layers
   (per-class box codes, 91 class logits with the background first);
6. per-class decoding, the softmax score converter and per-class NMS (``second_stage_detections``).

R-FCN (``rfcn_resnet101_coco_2018_01_28``, ``meta_architectures/rfcn_meta_arch.py``) shares 1-3 and 6 on a
ResNet-101; its steps 4-5 are block4 on the whole block3 map and position-sensitive score maps
(:func:`rfcn_box_classifier`).

Input: an RGB batch, 0-255, already resized (the API's ``keep_aspect_ratio_resizer`` makes the shorter side 600,
the longer at most 1024); the mean subtraction is inside the model. Any input size works (the anchors follow the
feature map). Outputs (``postprocess=True``): ``detection_boxes`` (normalised ``[ymin, xmin, ymax, xmax]``),
``detection_scores``, ``detection_classes`` (COCO ids, ``kzoo.detection.coco_labels()``), ``num_detections``.
``postprocess=False``: the heads and proposals (``rpn_box_encodings``, ``rpn_objectness_logits``, ``proposals``,
``num_proposals``, ``refined_box_encodings (N, P, 90, 4)``, ``class_logits (N, P, 91)``).

Settings come from ``pipeline_config`` (path, text or parsed), else the archive's own ``pipeline.config`` when
``weights="coco"``, else the registry entry (the sample config's values).
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers

from kzoo.architectures import _common, _factory, resnet_v1

__all__ = ["FasterRCNNResNet50COCO", "FasterRCNNResNet101COCO", "RFCNResNet101COCO"]

BOX_CODE_SIZE = 4


class RegionProposals(layers.Layer):
    """RPN heads -> normalised proposals (``kzoo.detection.two_stage.rpn_proposals``); TensorFlow backend."""

    def __init__(self, settings, **kwargs):
        super().__init__(**kwargs)
        self.settings = settings

    def call(self, images, features, box_encodings, objectness_logits):
        import tensorflow as tf

        from kzoo.detection.two_stage import rpn_proposals

        return rpn_proposals(box_encodings, objectness_logits, tf.shape(features)[1:3], tf.shape(images)[1:3],
                             self.settings)

    def get_config(self):
        return {**super().get_config(), "settings": self.settings}


class ProposalCrops(layers.Layer):
    """``(N, H, W, C)`` features and ``(N, P, 4)`` boxes -> ``(N * P, size, size, C)`` bilinear crops."""

    def __init__(self, crop_size, **kwargs):
        super().__init__(**kwargs)
        self.crop_size = int(crop_size)

    def call(self, features, proposals):
        from keras import ops

        from kzoo.detection.crops import crop_and_resize

        count = ops.shape(proposals)[1]
        indices = ops.repeat(ops.arange(ops.shape(proposals)[0]), count)
        return crop_and_resize(features, ops.reshape(proposals, (-1, 4)), indices, (self.crop_size,) * 2)

    def get_config(self):
        return {**super().get_config(), "crop_size": self.crop_size}


class PerImage(layers.Layer):
    """``(N * P, ...)`` -> ``(N, P, *shape)``, N and P read from the proposals."""

    def __init__(self, shape, **kwargs):
        super().__init__(**kwargs)
        self.shape = tuple(shape)

    def call(self, values, proposals):
        from keras import ops

        return ops.reshape(values, (ops.shape(proposals)[0], ops.shape(proposals)[1], *self.shape))

    def get_config(self):
        return {**super().get_config(), "shape": list(self.shape)}


class SecondStagePostprocess(layers.Layer):
    def __init__(self, settings, **kwargs):
        super().__init__(**kwargs)
        self.settings = settings

    def call(self, images, refined_box_encodings, class_logits, proposals, num_proposals):
        import tensorflow as tf

        from kzoo.detection.two_stage import second_stage_detections

        return second_stage_detections(refined_box_encodings, class_logits, proposals, num_proposals,
                                       tf.shape(images)[1:3], self.settings)

    def get_config(self):
        return {**super().get_config(), "settings": self.settings}


def detector_settings(model_name, pipeline_config=None, weights=None) -> dict:
    """Faster R-CNN / R-FCN settings: ``pipeline_config`` (settings dict, parsed config, path or text), else the
    archive's ``pipeline.config`` for ``weights="coco"``, else the registry entry's."""
    from kzoo import registry
    from kzoo.architectures.detection_ssd import CONFIG_MEMBER, read_archive_member
    from kzoo.detection import pipeline_config as reader
    from kzoo.detection.two_stage import faster_rcnn_settings

    if pipeline_config is not None:
        if isinstance(pipeline_config, reader.Message):
            return faster_rcnn_settings(pipeline_config)
        if isinstance(pipeline_config, dict):
            return pipeline_config
        text = str(pipeline_config)
        if "{" not in text and Path(text).is_file():
            return faster_rcnn_settings(reader.read(text), text)
        return faster_rcnn_settings(reader.parse(text))
    entry = registry.resolve_weights(_factory.registered_name(model_name), "coco", False)
    if weights == "coco" and entry.conversion["detection"]["pipeline_config"]:
        from kzoo import sources

        archive = sources.fetch(entry)
        text = read_archive_member(archive, CONFIG_MEMBER)
        return faster_rcnn_settings(reader.parse(text, f"{archive}:{CONFIG_MEMBER}"))
    return dict(entry.conversion["detection"]["settings"])


def mean_rgb(model_name) -> list:
    from kzoo import registry

    entry = registry.resolve_weights(_factory.registered_name(model_name), "coco", False)
    return list(entry.conversion["detection"]["preprocessing"]["mean_rgb"])


def first_stage(model_name, backbone, images, settings):
    """Mean subtraction, conv1..block3 at the config's stride, the RPN conv and box predictor."""
    from kzoo import index
    from kzoo.detection.two_stage import anchors_per_cell

    mean = mean_rgb(model_name)
    x = layers.Rescaling(1.0, offset=[-m for m in mean], name="preprocess")(images)
    stages = index.get(backbone).stages
    plan = resnet_v1.unit_plan(stages[:3], settings["first_stage_features_stride"])
    block3 = resnet_v1.resnet_v1_blocks(resnet_v1.stem(x), plan)
    rpn = layers.Conv2D(512, 3, padding="same", activation="relu6", name="Conv")(block3)
    anchors = anchors_per_cell(settings)
    codes = layers.Conv2D(anchors * BOX_CODE_SIZE, 1, name="FirstStageBoxPredictor_BoxEncodingPredictor")(rpn)
    logits = layers.Conv2D(anchors * 2, 1, name="FirstStageBoxPredictor_ClassPredictor")(rpn)
    codes = layers.Reshape((-1, BOX_CODE_SIZE), name="rpn_box_encodings")(codes)
    logits = layers.Reshape((-1, 2), name="rpn_objectness_logits")(logits)
    proposals, counts = RegionProposals(settings, name="proposals")(images, block3, codes, logits)
    return block3, codes, logits, proposals, counts


class PositionSensitiveCrops(layers.Layer):
    """R-FCN: ``(N, H, W, bins * D)`` score maps and ``(N, P, 4)`` boxes -> ``(N * P, D)``, each bin cropped from
    its own channel group and all averaged (``kzoo.detection.crops.position_sensitive_crop``, global pool)."""

    def __init__(self, crop_size, bins, **kwargs):
        super().__init__(**kwargs)
        self.crop_size, self.bins = tuple(crop_size), tuple(bins)

    def call(self, features, proposals):
        from keras import ops

        from kzoo.detection.crops import position_sensitive_crop

        count = ops.shape(proposals)[1]
        indices = ops.repeat(ops.arange(ops.shape(proposals)[0]), count)
        crops = position_sensitive_crop(features, ops.reshape(proposals, (-1, 4)), indices, self.crop_size,
                                        self.bins, global_pool=True)
        return ops.reshape(crops, (-1, ops.shape(crops)[-1]))

    def get_config(self):
        return {**super().get_config(), "crop_size": list(self.crop_size), "bins": list(self.bins)}


def box_classifier(backbone, block3, proposals, settings):
    """Faster R-CNN's second stage: 14x14 crops, 2x2 max-pool, block4, average pool, ``MaskRCNNBoxPredictor``'s
    two dense layers -> ``(N * P, classes * 4)`` codes and ``(N * P, classes + 1)`` logits."""
    from kzoo import index

    crops = ProposalCrops(settings["initial_crop_size"], name="crop_and_resize")(block3, proposals)
    x = layers.MaxPooling2D(settings["maxpool_kernel_size"], strides=settings["maxpool_stride"],
                            name="crop_pool")(crops)
    x = resnet_v1.resnet_v1_blocks(x, resnet_v1.unit_plan(index.get(backbone).stages[3:], first_block=4))
    x = layers.GlobalAveragePooling2D(name="SecondStageBoxPredictor_AvgPool")(x)
    classes = settings["num_classes"]
    box = layers.Dense(classes * BOX_CODE_SIZE, name="SecondStageBoxPredictor_BoxEncodingPredictor")(x)
    return box, layers.Dense(classes + 1, name="SecondStageBoxPredictor_ClassPredictor")(x)


def rfcn_box_classifier(backbone, block3, proposals, settings):
    """R-FCN's second stage (``rfcn_meta_arch.py``, ``RfcnBoxPredictor``): block4 on the whole block3 map, a 1x1
    ReLU ``reduce_depth`` conv, two linear 1x1 convs to position-sensitive score maps (bins x classes x 4 codes,
    bins x (classes + 1) logits), each pooled per proposal by the position-sensitive crop."""
    from kzoo import index

    rfcn = settings["rfcn"]
    x = resnet_v1.resnet_v1_blocks(block3, resnet_v1.unit_plan(index.get(backbone).stages[3:], first_block=4))
    x = layers.Conv2D(rfcn["depth"], 1, activation="relu", name="SecondStageBoxPredictor_reduce_depth")(x)
    bins = rfcn["spatial_bins"][0] * rfcn["spatial_bins"][1]
    classes = settings["num_classes"]
    locations = layers.Conv2D(bins * classes * BOX_CODE_SIZE, 1, name="SecondStageBoxPredictor_refined_locations")(x)
    scores = layers.Conv2D(bins * (classes + 1), 1, name="SecondStageBoxPredictor_class_predictions")(x)
    crop = PositionSensitiveCrops(rfcn["crop_size"], rfcn["spatial_bins"], name="position_sensitive_crop")
    return crop(locations, proposals), crop(scores, proposals)


# The second stage's class-dependent layers (their shapes follow num_classes); everything else is class-agnostic.
CLASS_HEADS = {box_classifier: ("SecondStageBoxPredictor_BoxEncodingPredictor",
                                "SecondStageBoxPredictor_ClassPredictor"),
               rfcn_box_classifier: ("SecondStageBoxPredictor_refined_locations",
                                     "SecondStageBoxPredictor_class_predictions")}


def two_stage_detector(model_name, backbone, second_stage, weights, input_tensor, input_shape, pipeline_config,
                       postprocess, name, num_classes=None):
    from kzoo.architectures.detection_ssd import load_for_new_classes

    from kzoo import registry

    settings = detector_settings(model_name, pipeline_config, weights)
    # The checkpoint's class count is the registry's (a config such as the pets one may ask for another).
    checkpoint_classes = registry.resolve_weights(_factory.registered_name(model_name), "coco", False).num_classes
    if num_classes is not None:
        settings = {**settings, "num_classes": int(num_classes)}
    request = _factory.Weights(weights, model_name, False, 1)
    input_shape = _common.obtain_input_shape(input_shape or (None, None, 3), default_size=600, min_size=33,
                                             require_flatten=False, pretrained=False)
    images = _common.make_input(input_tensor, input_shape)
    block3, codes, logits, proposals, counts = first_stage(model_name, backbone, images, settings)
    box, cls = second_stage(backbone, block3, proposals, settings)
    classes = settings["num_classes"]
    refined = PerImage((classes, BOX_CODE_SIZE), name="refined_box_encodings")(box, proposals)
    class_logits = PerImage((classes + 1,), name="class_logits")(cls, proposals)
    if postprocess:
        outputs = SecondStagePostprocess(settings, name="postprocess")(images, refined, class_logits, proposals,
                                                                       counts)
    else:
        outputs = {"rpn_box_encodings": codes, "rpn_objectness_logits": logits, "proposals": proposals,
                   "num_proposals": counts, "refined_box_encodings": refined, "class_logits": class_logits}
    model = keras.Model(_common.model_inputs(input_tensor, images), outputs, name=name)
    model.detection_settings = settings
    if settings["num_classes"] == checkpoint_classes or weights is None:
        return request.load(model)
    return load_for_new_classes(model, request, CLASS_HEADS[second_stage])


def _no_classifier(include_top, pooling, name):
    if include_top or pooling is not None:
        raise ValueError(f"{name} is a detector: include_top and pooling do not apply.")


def FasterRCNNResNet50COCO(include_top=False, weights="coco", input_tensor=None, input_shape=None, pooling=None,
                           pipeline_config=None, postprocess=True, num_classes=None, name="faster_rcnn_resnet50_coco"):
    """The Faster R-CNN ResNet-50 COCO detector (see the module docstring).

    ``num_classes`` (default: the config's, 90) other than the checkpoint's rebuilds the second stage's two
    class-dependent layers for fine-tuning (``SecondStageBoxPredictor``'s ``ClassPredictor`` and per-class
    ``BoxEncodingPredictor``); the backbone, the class-agnostic RPN and block4 load from ``weights``, and
    ``model.weights_report`` lists the tensors ``kept`` and ``reinitialised``."""
    _no_classifier(include_top, pooling, name)
    return two_stage_detector("faster_rcnn_resnet50_coco", "resnet_v1_50", box_classifier, weights, input_tensor,
                              input_shape, pipeline_config, postprocess, name, num_classes)


def FasterRCNNResNet101COCO(include_top=False, weights="coco", input_tensor=None, input_shape=None, pooling=None,
                            pipeline_config=None, postprocess=True, num_classes=None,
                            name="faster_rcnn_resnet101_coco"):
    """Faster R-CNN ResNet-101 COCO: the ResNet-50 detector at depth 101, with weights from
    ``faster_rcnn_resnet101_coco_11_06_2017``, the archive the UAI-Train recipe fine-tunes. That archive has no
    ``pipeline.config``: the settings are the sample ``faster_rcnn_resnet101_coco.config``'s unless
    ``pipeline_config`` is given -- the recipe's ``faster_rcnn_resnet101_pets.config`` (37 classes) builds the
    pets detector, with the class-dependent heads re-initialised as ``num_classes`` does."""
    _no_classifier(include_top, pooling, name)
    return two_stage_detector("faster_rcnn_resnet101_coco", "resnet_v1_101", box_classifier, weights, input_tensor,
                              input_shape, pipeline_config, postprocess, name, num_classes)


def RFCNResNet101COCO(include_top=False, weights="coco", input_tensor=None, input_shape=None, pooling=None,
                      pipeline_config=None, postprocess=True, num_classes=None, name="rfcn_resnet101_coco"):
    """The R-FCN ResNet-101 COCO detector: Faster R-CNN's first stage and post-processing, R-FCN's position-
    sensitive box classifier (see :func:`rfcn_box_classifier`). ``num_classes``: as Faster R-CNN's; the
    re-initialised layers are the position-sensitive ``class_predictions`` and ``refined_locations`` convs
    (``reduce_depth`` is class-agnostic and kept)."""
    _no_classifier(include_top, pooling, name)
    return two_stage_detector("rfcn_resnet101_coco", "resnet_v1_101", rfcn_box_classifier, weights, input_tensor,
                              input_shape, pipeline_config, postprocess, name, num_classes)


preprocess_input = None  # the mean subtraction is inside the model (index mode "none")
