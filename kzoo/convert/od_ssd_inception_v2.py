"""TF Object Detection API ``ssd_inception_v2_coco`` checkpoints -> kzoo ``SSDInceptionV2``
(``kzoo.architectures.inception``).

``FeatureExtractor/InceptionV2/Mixed_4b/Branch_1/Conv2d_0b_3x3/{weights, BatchNorm/{gamma, beta, ...}}`` ->
``Mixed_4b_Branch_1_Conv2d_0b_3x3`` (+ ``_bn``); the stem ``Conv2d_1a_7x7/{depthwise_weights,
pointwise_weights, BatchNorm/*}`` (no biases) -> the SeparableConv2D ``Conv2d_1a_7x7`` and ``Conv2d_1a_7x7_bn``;
the extra layers ``FeatureExtractor/InceptionV2/Mixed_5c_2_Conv2d_2_3x3_s2_512/...`` keep their names. The box
predictor heads ``BoxPredictor_<i>/{BoxEncodingPredictor, ClassPredictor}/{weights, biases}`` -> the detector's
(``ssd_inception_v2_coco``) Conv2D ``BoxPredictor_<i>_BoxEncodingPredictor`` / ``..._ClassPredictor``; the
feature extractor alone (``ssd_inception_v2``) reports them unused.
"""

from __future__ import annotations

import re

from kzoo.convert._base import register_family
from kzoo.convert._slim_scopes import layer_rules
from kzoo.convert.slim_inception import scope_of

SCOPE = "FeatureExtractor/InceptionV2"


PREDICTOR = re.compile(r"^(BoxPredictor_\d+)_(\w+)$")


def variable_scope(layer_name: str) -> str:
    """``BoxPredictor_0_ClassPredictor`` -> ``BoxPredictor_0/ClassPredictor`` (top level); the rest under
    ``FeatureExtractor/InceptionV2``."""
    match = PREDICTOR.match(layer_name)
    return "/".join(match.groups()) if match else f"{SCOPE}/{scope_of(layer_name)}"


# The "head" only identifies the layout: the last extra feature layer exists in SSD InceptionV2 checkpoints only.
@register_family("ssd_inception_v2", "ssd_inception_v2_coco", head=f"{SCOPE}/Mixed_5c_2_Conv2d_5_3x3_s2_128/weights")
def ssd_inception_v2_rules(model, ctx):
    yield from layer_rules(model, variable_scope)
