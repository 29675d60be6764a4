"""ShuffleNet v2 checkpoints of TropComplique/shufflenet-v2-tensorflow (TI-ONE ``shufflenet_v2_0.5x``)
-> kzoo ``ShuffleNetV2`` (``kzoo.architectures.shufflenet_v2``).

``ShuffleNetV2/Stage2/unit_1/second_branch/depthwise/{depthwise_weights, batch_norm/*}`` ->
``Stage2_unit1_second_branch_depthwise`` (+ ``_bn``); ``ShuffleNetV2/Conv1``, ``Conv5`` -> ``Conv1``,
``Conv5``; ``classifier/{weights [1024, 1000], biases}`` -> ``predictions``.

Class order: the checkpoint was trained with labels in ILSVRC-2012 devkit order (its
``data/integer_encoding.json``: ``n02119789`` kit fox = 0, tench = 448), Keras counts classes in
sorted-wnid order (``kzoo/data/imagenet_class_index.json``). ``kzoo/data/ilsvrc2012_devkit_wnids.txt``
lists the 1000 wnids in devkit order (line i = devkit class i), so Keras class k is checkpoint
column ``devkit.index(keras_wnid[k])``; the classifier's columns are gathered in that order.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

import numpy as np

from kzoo.convert._base import dense, register_family
from kzoo.convert._slim_scopes import layer_rules

_UNIT = re.compile(r"^(Stage\d)_unit(\d+)_(second_branch_)?(\w+)$")
DEVKIT_WNIDS = "ilsvrc2012_devkit_wnids.txt"


def scope_of(layer_name: str) -> str:
    match = _UNIT.match(layer_name)
    if not match:
        return layer_name  # Conv1, Conv5
    stage, unit, second, rest = match.groups()
    return f"{stage}/unit_{unit}/{'second_branch/' if second else ''}{rest}"


def devkit_wnids() -> list[str]:
    text = resources.files("kzoo").joinpath("data", DEVKIT_WNIDS).read_text(encoding="ascii")
    return text.split()


@functools.lru_cache(maxsize=1)
def devkit_to_keras() -> np.ndarray:
    """``perm`` with ``keras_logits = devkit_logits[..., perm]``."""
    from kzoo.preprocessing import class_index

    index = class_index()
    position = {wnid: i for i, wnid in enumerate(devkit_wnids())}
    return np.array([position[index[str(k)][0]] for k in range(len(index))])


def _reorder_classes(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array[..., devkit_to_keras()])


@register_family("shufflenet_v2_050", head="classifier/biases")
def shufflenet_v2_rules(model, ctx):
    yield from layer_rules(model, lambda name: f"ShuffleNetV2/{scope_of(name)}", bn_scope="batch_norm")
    # Only the 1000-class ImageNet head is in devkit order; a fine-tuned head keeps its own order.
    reorder = _reorder_classes if ctx.checkpoint_classes == 1000 else None
    yield from dense("predictions", "classifier", transform=reorder)
