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
are not part of the backbone and are reported unused.
"""

from __future__ import annotations

from kzoo.convert._base import register_family
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


for _depth in (50, 101):
    # The "head" only identifies the layout: a detection checkpoint has a second-stage block4.
    register_family(f"{RULES}:resnet_v1_{_depth}",
                    head=f"{SECOND_STAGE}/{{model}}/block4/unit_1/bottleneck_v1/conv1/weights")(od_resnet_v1_rules)
