"""ShuffleNet v2 checkpoints of TropComplique/shufflenet-v2-tensorflow (TI-ONE ``shufflenet_v2_0.5x``)
-> kzoo ``ShuffleNetV2`` (``kzoo.architectures.shufflenet_v2``).

``ShuffleNetV2/Stage2/unit_1/second_branch/depthwise/{depthwise_weights, batch_norm/*}`` ->
``Stage2_unit1_second_branch_depthwise`` (+ ``_bn``); ``ShuffleNetV2/Conv1``, ``Conv5`` -> ``Conv1``,
``Conv5``; ``classifier/{weights [1024, 1000], biases}`` -> ``predictions``.

Class order: the checkpoint was trained with labels in ILSVRC-2012 devkit order (its
``data/integer_encoding.json``: ``n02119789`` kit fox = 0, tench = 448), Keras counts classes in
sorted-wnid order (``kzoo/data/imagenet_class_index.json``). kzoo does not ship the devkit list (it
comes with the checkpoint's source repository, not with a source we may redistribute): the environment
variable ``KZOO_SHUFFLENET_LABELS`` names it, either the author's ``integer_encoding.json`` (wnid ->
index) or a text file of the 1000 wnids in devkit order. Keras class k is then checkpoint column
``devkit.index(keras_wnid[k])``; the classifier's columns are gathered in that order. A headless
conversion (``include_top=False``) needs no label file.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path

import numpy as np

from kzoo.convert._base import dense, register_family
from kzoo.convert._slim_scopes import layer_rules
from kzoo.errors import ConversionError

_UNIT = re.compile(r"^(Stage\d)_unit(\d+)_(second_branch_)?(\w+)$")
LABELS_ENV = "KZOO_SHUFFLENET_LABELS"


def scope_of(layer_name: str) -> str:
    match = _UNIT.match(layer_name)
    if not match:
        return layer_name  # Conv1, Conv5
    stage, unit, second, rest = match.groups()
    return f"{stage}/unit_{unit}/{'second_branch/' if second else ''}{rest}"


def devkit_wnids(path) -> list[str]:
    """The 1000 wnids in devkit order, from ``integer_encoding.json`` or a plain list."""
    text = Path(path).read_text(encoding="utf-8")
    if str(path).endswith(".json"):
        mapping = json.loads(text)
        return sorted(mapping, key=mapping.get)
    return text.split()


@functools.lru_cache(maxsize=4)
def _permutation(path: str) -> np.ndarray:
    from kzoo.preprocessing import class_index

    index = class_index()
    wnids = devkit_wnids(path)
    keras_wnids = [index[str(k)][0] for k in range(len(index))]
    if len(wnids) != len(keras_wnids) or set(wnids) != set(keras_wnids):
        raise ConversionError(
            f"{path} (from ${LABELS_ENV}) must list the 1000 ImageNet wnids in ILSVRC-2012 devkit order, "
            f"once each; it has {len(wnids)} entries, {len(set(wnids) & set(keras_wnids))} of them ImageNet wnids.")
    position = {wnid: i for i, wnid in enumerate(wnids)}
    return np.array([position[wnid] for wnid in keras_wnids])


def devkit_to_keras() -> np.ndarray:
    """``perm`` with ``keras_logits = devkit_logits[..., perm]``, from the file ``$KZOO_SHUFFLENET_LABELS`` names."""
    path = os.environ.get(LABELS_ENV)
    if not path:
        raise ConversionError(
            "The shufflenet_v2_050 checkpoint's 1000 classes are in ILSVRC-2012 devkit order, and kzoo does not "
            f"ship that list. Set {LABELS_ENV} to the checkpoint author's data/integer_encoding.json "
            "(TropComplique/shufflenet-v2-tensorflow) or to a file of the 1000 wnids in devkit order, "
            "or convert without the head (--notop).")
    return _permutation(os.path.abspath(path))


def _reorder_classes(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array[..., devkit_to_keras()])


@register_family("shufflenet_v2_050", head="classifier/biases")
def shufflenet_v2_rules(model, ctx):
    yield from layer_rules(model, lambda name: f"ShuffleNetV2/{scope_of(name)}", bn_scope="batch_norm")
    # Only the 1000-class ImageNet head is in devkit order; a fine-tuned head keeps its own order.
    reorder = _reorder_classes if ctx.checkpoint_classes == 1000 else None
    yield from dense("predictions", "classifier", transform=reorder)
