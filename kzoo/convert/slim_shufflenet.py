"""ShuffleNet v2 checkpoints of TropComplique/shufflenet-v2-tensorflow (TI-ONE ``shufflenet_v2_0.5x``)
-> kzoo ``ShuffleNetV2`` (``kzoo.architectures.shufflenet_v2``).

``ShuffleNetV2/Stage2/unit_1/second_branch/depthwise/{depthwise_weights, batch_norm/*}`` ->
``Stage2_unit1_second_branch_depthwise`` (+ ``_bn``); ``ShuffleNetV2/Conv1``, ``Conv5`` -> ``Conv1``,
``Conv5``; ``classifier/{weights [1024, 1000], biases}`` -> ``predictions``.

Class order: the checkpoint's is a fact of its registry entry, ``conversion.label_order``, which reaches
the rule as ``ctx.conversion`` (``kzoo.convert.converted_weights_path``); converting a file without an
entry (``kzoo convert``) reads the block of the model's registered checkpoint. ``alphabetical`` is
Keras' order (sorted wnids, ``kzoo/data/imagenet_class_index.json``): the head is copied as is.
``ilsvrc_devkit`` is the TI-ONE checkpoint's: it was trained with labels in ILSVRC-2012 devkit order
(its ``data/integer_encoding.json``: ``n02119789`` kit fox = 0, tench = 448), and kzoo does not ship that
list (it comes with the checkpoint's source repository, not with a source we may redistribute), so the
environment variable ``KZOO_SHUFFLENET_LABELS`` must name it: the author's ``integer_encoding.json``
(wnid -> index) or a text file of the 1000 wnids in checkpoint order. Keras class k is then checkpoint
column ``wnids.index(keras_wnid[k])`` (``wnids``: the file's list); the classifier's columns are gathered
in that order.

``KZOO_SHUFFLENET_LABELS`` is also an override: when set, its file is taken as the checkpoint's order
whatever ``label_order`` says (a checkpoint trained with yet another order). The converted-file cache
is not keyed by it: after changing it, clear ``<cache>/converted``. A headless conversion
(``include_top=False``) needs no label order.
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
            f"{path} (from ${LABELS_ENV}) must list the 1000 ImageNet wnids in the checkpoint's class order, "
            f"once each; it has {len(wnids)} entries, {len(set(wnids) & set(keras_wnids))} of them ImageNet wnids.")
    position = {wnid: i for i, wnid in enumerate(wnids)}
    return np.array([position[wnid] for wnid in keras_wnids])


def label_order(ctx) -> str | None:
    """The checkpoint's class order: ``conversion.label_order`` of its registry entry, or, for a file
    converted without one, of the entry that ``weights=<default tag>`` converts."""
    if "label_order" in ctx.conversion:
        return ctx.conversion["label_order"]
    from kzoo import index, registry

    entry = registry.resolve_weights(ctx.model_name, index.get(ctx.model_name).weights_default, True)
    return (entry.conversion or {}).get("label_order")


def to_keras_order(order: str | None) -> np.ndarray | None:
    """``perm`` with ``keras_logits = checkpoint_logits[..., perm]``, or None when the checkpoint's
    ``order`` is Keras' own. ``$KZOO_SHUFFLENET_LABELS``, when set, overrides ``order``."""
    path = os.environ.get(LABELS_ENV)
    if path:
        return _permutation(os.path.abspath(path))
    if order == "alphabetical":
        return None
    raise ConversionError(
        f"The shufflenet_v2_050 checkpoint's 1000 classes are in {order or 'an unknown'} order (its registry "
        f"entry's conversion.label_order), not Keras' alphabetical one, and kzoo does not ship that list. Set "
        f"{LABELS_ENV} to a file of the 1000 wnids in that order (for ilsvrc_devkit: the checkpoint author's "
        "data/integer_encoding.json, TropComplique/shufflenet-v2-tensorflow), or convert without the head (--notop).")


def devkit_to_keras() -> np.ndarray:
    """``perm`` for a checkpoint in ILSVRC-2012 devkit order, from the file ``$KZOO_SHUFFLENET_LABELS`` names."""
    return to_keras_order("ilsvrc_devkit")


def _reorder_classes(ctx):
    def reorder(array: np.ndarray) -> np.ndarray:
        # Resolved when the head is read, so a notop conversion never needs a label order.
        perm = to_keras_order(label_order(ctx))
        return array if perm is None else np.ascontiguousarray(array[..., perm])

    return reorder


@register_family("shufflenet_v2_050", head="classifier/biases")
def shufflenet_v2_rules(model, ctx):
    yield from layer_rules(model, lambda name: f"ShuffleNetV2/{scope_of(name)}", bn_scope="batch_norm")
    # Only the 1000-class ImageNet head has an ImageNet label order; a fine-tuned head keeps its own.
    reorder = _reorder_classes(ctx) if ctx.checkpoint_classes == 1000 else None
    yield from dense("predictions", "classifier", transform=reorder)
