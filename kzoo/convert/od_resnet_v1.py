"""TF Object Detection API Faster R-CNN / R-FCN checkpoints -> kzoo ``ResNetV1_50/101`` backbones
(``kzoo.architectures.resnet_v1``), rule set ``od_resnet_v1`` (a registry entry's ``conversion.rules``).

The detector builds slim's ResNet v1 twice (tensorflow/models research/object_detection
``models/faster_rcnn_resnet_v1_feature_extractor.py``):

- ``FirstStageFeatureExtractor/resnet_v1_50/{conv1, block1..block3}`` -- the RPN trunk, read here;
- ``FirstStageFeatureExtractor/resnet_v1_50/block4`` -- built because the full slim net is built, never used
  and never trained (the API restores both stages from one dict where the second stage's block4 wins).
  **Never read**: it is reported unused;
- ``SecondStageFeatureExtractor/resnet_v1_50/block4`` -- the box classifier's block4, run on 7x7 crops; the
  Keras backbone's block4 comes from here.

Inside each prefix the names are the slim classification net's, so the mapping is the prefix plus
``slim_resnet_v1.scope_of``. The heads (``Conv``, ``FirstStageBoxPredictor``, ``SecondStageBoxPredictor``)
are not part of the backbone and are reported unused by the backbone rules; the whole detectors
(``faster_rcnn_resnet50_coco``, ``faster_rcnn_resnet101_coco``, ``rfcn_resnet101_coco``) read them too
(``od_detector_rules``).
"""

from __future__ import annotations

import re

from kzoo.convert._base import dense, register_family
from kzoo.convert._slim_scopes import layer_rules
from kzoo.convert.slim_resnet_v1 import scope_of

RULES = "od_resnet_v1"
FIRST_STAGE = "FirstStageFeatureExtractor"
SECOND_STAGE = "SecondStageFeatureExtractor"
SECOND_STAGE_BLOCKS = ("block4",)  # what the box classifier runs on its crops


def stage_of(layer_name: str) -> str:
    """The extractor scope a backbone layer's weights come from."""
    return SECOND_STAGE if layer_name.startswith(tuple(f"{b}_" for b in SECOND_STAGE_BLOCKS)) else FIRST_STAGE


def variable_scope(model_name: str, layer_name: str) -> str:
    """``block4_unit1_bottleneck_v1_conv1`` -> ``SecondStageFeatureExtractor/resnet_v1_50/block4/unit_1/...``."""
    return f"{stage_of(layer_name)}/{model_name}/{scope_of(layer_name)}"


def od_resnet_v1_rules(model, ctx):
    yield from layer_rules(model, lambda name: variable_scope(ctx.model_name, name))


# The whole detectors (kzoo.architectures.detection_faster_rcnn): the backbone as above, plus the heads.
DETECTORS = {"faster_rcnn_resnet50_coco": "resnet_v1_50", "faster_rcnn_resnet101_coco": "resnet_v1_101",
             "rfcn_resnet101_coco": "resnet_v1_101"}
HEADS = re.compile(r"^(Conv|FirstStageBoxPredictor|SecondStageBoxPredictor)(?:_(\w+))?$")


def detector_scope(backbone: str, layer_name: str) -> str:
    """``Conv`` -> ``Conv`` (the RPN conv has no scope); ``FirstStageBoxPredictor_ClassPredictor`` ->
    ``FirstStageBoxPredictor/ClassPredictor``; backbone layers as :func:`variable_scope`."""
    match = HEADS.match(layer_name)
    if match:
        return "/".join(part for part in match.groups() if part)
    return variable_scope(backbone, layer_name)


def od_detector_rules(model, ctx):
    backbone = DETECTORS[ctx.model_name]
    yield from layer_rules(model, lambda name: detector_scope(backbone, name))
    for layer in model.layers:
        if type(layer).__name__ == "Dense":  # the box classifier: linear layers on the pooled block4
            yield from dense(layer.name, detector_scope(backbone, layer.name), head=False)


for _depth in (50, 101):
    # The "head" only identifies the layout: a detection checkpoint has a second-stage block4.
    register_family(f"{RULES}:resnet_v1_{_depth}",
                    head=f"{SECOND_STAGE}/{{model}}/block4/unit_1/bottleneck_v1/conv1/weights")(od_resnet_v1_rules)

# The "head" identifies the second stage's box predictor: MaskRCNNBoxPredictor's or RfcnBoxPredictor's.
DETECTOR_HEADS = {"faster_rcnn": "SecondStageBoxPredictor/ClassPredictor/weights",
                  "rfcn": "SecondStageBoxPredictor/class_predictions/weights"}
for _detector, _backbone in DETECTORS.items():
    # Faster R-CNN ResNet-50 and -101 share the head: the second stage's block4 tells the depth.
    register_family(_detector, f"{RULES}:{_detector}", head=DETECTOR_HEADS[_detector.split("_resnet")[0]],
                    requires=[f"{SECOND_STAGE}/{_backbone}/block4/unit_1/bottleneck_v1/conv1/weights"]
                    )(od_detector_rules)
