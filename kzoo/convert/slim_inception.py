"""TF-slim ``inception_v1``, ``inception_v2``, ``inception_v4`` checkpoints -> kzoo ``InceptionV1/V2/V4``
(``kzoo.architectures.inception``).

``InceptionV1/Mixed_3b/Branch_1/Conv2d_0b_3x3/{weights, BatchNorm/*}`` (no gamma) ->
``Mixed_3b_Branch_1_Conv2d_0b_3x3`` (+ ``_bn``); v2's stem ``Conv2d_1a_7x7/{depthwise_weights,
pointwise_weights, biases}`` -> the SeparableConv2D ``Conv2d_1a_7x7``; the logits (v1
``Logits/Conv2d_0c_1x1``, v2 ``Logits/Conv2d_1c_1x1``, both 1x1 convs; v4 ``Logits/Logits``, a
fully-connected layer) -> ``predictions``, background class 0 dropped unless kept. ``AuxLogits/*``
(v4) has no Keras counterpart and is reported unused.
"""

from __future__ import annotations

import re

from kzoo.convert._base import dense, register_family
from kzoo.convert._slim_scopes import layer_rules

_BRANCH = re.compile(r"^(Mixed_\d[a-z])_(Branch_\d)_(\w+)$")

SCOPES = {"inception_v1": "InceptionV1", "inception_v2": "InceptionV2", "inception_v4": "InceptionV4"}
LOGITS = {"inception_v1": "Logits/Conv2d_0c_1x1", "inception_v2": "Logits/Conv2d_1c_1x1",
          "inception_v4": "Logits/Logits"}


def scope_of(layer_name: str) -> str:
    match = _BRANCH.match(layer_name)
    return "/".join(match.groups()) if match else layer_name


def inception_rules(model, ctx):
    top = SCOPES[ctx.model_name]
    yield from layer_rules(model, lambda name: f"{top}/{scope_of(name)}")
    yield from dense("predictions", f"{top}/{LOGITS[ctx.model_name]}")


for _name, _top in SCOPES.items():
    register_family(_name, head=f"{_top}/{LOGITS[_name]}/biases")(inception_rules)
