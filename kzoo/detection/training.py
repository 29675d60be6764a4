"""Fine-tuning pieces for the SSD detector (the UAI-Train / pets recipe, in Keras): anchor targets and a loss.

Simplified from the Object Detection API's SSD training (``core/target_assigner.py``, ``matchers/
argmax_matcher.py``, ``core/losses.py``): an anchor whose IoU with a ground-truth box is at least
``matched_threshold`` (0.5 in ssd_inception_v2_coco.config) takes that box's class and its Faster R-CNN
code; every ground-truth box also claims its best anchor (``force_match_for_each_row``); all others are
background. The loss is the sigmoid cross-entropy over every (anchor, class) plus smooth L1 on the matched
anchors' codes, both divided by the number of matches (``normalize_loss_by_num_matches``). Not reproduced:
hard example mining (the API keeps 3 negatives per positive) -- use a smaller learning rate or weight.

Faster R-CNN's box classifier (the second stage; ``target_assigner.create_target_assigner("FasterRCNN",
"detection")`` and ``faster_rcnn_meta_arch.py``'s second-stage loss): a proposal whose IoU with a ground-truth
box is at least 0.5 takes that box's class and its code against the proposal (scales 10, 10, 5, 5), all others
are background; softmax cross-entropy over the classes plus ``localization_weight`` x smooth L1 on the matched
proposals' codes of their own class, divided by the number of proposals. Not reproduced: the balanced
positive / negative sampling of 64 proposals per image (pass the proposals to train on).
"""

from __future__ import annotations

import numpy as np

from kzoo.detection.two_stage import BOX_CODER_SCALES


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


def proposal_targets(proposals, boxes, classes, num_classes: int, scales=BOX_CODER_SCALES,
                     matched_threshold: float = 0.5):
    """Faster R-CNN second-stage targets for one image's ``proposals (P, 4)``: ``(class_targets (P, num_classes
    + 1) one-hot, box_targets (P, 4), labels (P,))``; ``classes`` 1-based, label 0 is the background."""
    overlaps = iou(proposals, boxes)
    best = overlaps.argmax(axis=1)
    labels = np.where(overlaps.max(axis=1) >= matched_threshold, np.asarray(classes)[best], 0)
    codes = encode_boxes(np.asarray(boxes)[best], proposals, scales)
    box_targets = np.where((labels > 0)[:, None], codes, 0.0).astype(np.float32)
    return np.eye(num_classes + 1, dtype=np.float32)[labels], box_targets, labels


def box_classifier_loss(class_targets, box_targets, labels, class_logits, refined_encodings,
                        localization_weight: float = 2.0):
    """The second-stage loss above (keras.ops): ``class_logits (P, C + 1)``, ``refined_encodings (P, C, 4)``
    and the targets of :func:`proposal_targets` (proposals of several images concatenated)."""
    from keras import ops

    count = ops.cast(ops.shape(class_logits)[0], class_logits.dtype)
    classification = ops.sum(ops.categorical_crossentropy(class_targets, class_logits, from_logits=True))
    # each proposal's codes for its own class (background proposals: none, masked out below)
    own = ops.sum(refined_encodings * class_targets[:, 1:, None], axis=1)
    error = ops.abs(own - box_targets)
    smooth_l1 = ops.sum(ops.where(error < 1.0, 0.5 * error ** 2, error - 0.5), axis=-1)
    localisation = ops.sum(smooth_l1 * ops.cast(labels > 0, smooth_l1.dtype))
    return (classification + localization_weight * localisation) / count


def box_classifier_inputs(detector):
    """A Faster R-CNN detector's frozen parts for training its box classifier: ``(first_stage, pooled)``, Keras
    models ``images -> block3`` and ``[block3, proposals (N, P, 4)] -> (N * P, 2048)`` pooled block4 features,
    sharing the detector's layers; the two ``SecondStageBoxPredictor`` dense layers take these features."""
    import keras

    block3, proposals = detector.get_layer("crop_and_resize").input
    pooled = detector.get_layer("SecondStageBoxPredictor_AvgPool").output
    return keras.Model(detector.input, block3), keras.Model([block3, proposals], pooled)
