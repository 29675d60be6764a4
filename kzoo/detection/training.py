"""Fine-tuning pieces for the SSD detector (the UAI-Train / pets recipe, in Keras): anchor targets and a loss.

Simplified from the Object Detection API's SSD training (``core/target_assigner.py``, ``matchers/
argmax_matcher.py``, ``core/losses.py``): an anchor whose IoU with a ground-truth box is at least
``matched_threshold`` (0.5 in ssd_inception_v2_coco.config) takes that box's class and its Faster R-CNN
code; every ground-truth box also claims its best anchor (``force_match_for_each_row``); all others are
background. The loss is the sigmoid cross-entropy over every (anchor, class) plus smooth L1 on the matched
anchors' codes, both divided by the number of matches (``normalize_loss_by_num_matches``). Not reproduced:
hard example mining (the API keeps 3 negatives per positive) -- use a smaller learning rate or weight.
"""

from __future__ import annotations

import numpy as np


def iou(boxes_a, boxes_b) -> np.ndarray:
    """``(len(a), len(b))`` IoU of ``[ymin, xmin, ymax, xmax]`` boxes."""
    a, b = np.asarray(boxes_a, np.float64)[:, None], np.asarray(boxes_b, np.float64)[None]
    height = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    width = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = height * width
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-12)


def encode_boxes(boxes, anchors, scales) -> np.ndarray:
    """The Faster R-CNN coder's encoding (the inverse of ``kzoo.detection.ssd.decode_boxes``)."""
    boxes, anchors = np.asarray(boxes, np.float64), np.asarray(anchors, np.float64)
    h, w = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    ha, wa = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ty = ((boxes[:, 0] + h / 2) - (anchors[:, 0] + ha / 2)) / ha
    tx = ((boxes[:, 1] + w / 2) - (anchors[:, 1] + wa / 2)) / wa
    codes = np.stack([ty, tx, np.log(h / ha), np.log(w / wa)], axis=1)
    return (codes * np.asarray(scales)).astype(np.float32)


def anchor_targets(anchors, boxes, classes, num_classes: int, scales, matched_threshold: float = 0.5):
    """``(class_targets (A, num_classes + 1) one-hot, box_targets (A, 4), matched (A,) bool)`` for one image;
    ``classes`` are 1-based class ids (slot 0 is the background)."""
    anchors = np.asarray(anchors)
    overlaps = iou(anchors, boxes)
    best = overlaps.argmax(axis=1)
    matched = overlaps.max(axis=1) >= matched_threshold
    for column, row in enumerate(overlaps.argmax(axis=0)):  # every box claims its best anchor
        best[row], matched[row] = column, True
    labels = np.where(matched, np.asarray(classes)[best], 0)
    class_targets = np.eye(num_classes + 1, dtype=np.float32)[labels]
    box_targets = np.where(matched[:, None], encode_boxes(np.asarray(boxes)[best], anchors, scales), 0.0)
    return class_targets, box_targets.astype(np.float32), matched


def ssd_loss(class_targets, box_targets, matched, class_logits, box_encodings):
    """The loss above on a batch (keras.ops; the targets from :func:`anchor_targets`, stacked)."""
    from keras import ops

    matched = ops.cast(matched, class_logits.dtype)
    matches = ops.maximum(ops.sum(matched), 1.0)
    classification = ops.sum(ops.binary_crossentropy(class_targets, class_logits, from_logits=True))
    error = ops.abs(box_encodings - box_targets)
    smooth_l1 = ops.where(error < 1.0, 0.5 * error ** 2, error - 0.5)
    localisation = ops.sum(ops.sum(smooth_l1, axis=-1) * matched)
    return (classification + localisation) / matches
