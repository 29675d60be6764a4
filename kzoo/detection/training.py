"""Fine-tuning pieces for the detectors (the UAI-Train / pets recipes, in Keras): targets, minibatches and losses,
after the Object Detection API's training code (tensorflow/models research/object_detection).

SSD, simplified from the API's SSD training (``core/target_assigner.py``, ``matchers/argmax_matcher.py``,
``core/losses.py``): an anchor whose IoU with a ground-truth box is at least
``matched_threshold`` (0.5 in ssd_inception_v2_coco.config) takes that box's class and its Faster R-CNN
code; every ground-truth box also claims its best anchor (``force_match_for_each_row``); all others are
background. The loss is the sigmoid cross-entropy over every (anchor, class) plus smooth L1 on the matched
anchors' codes, both divided by the number of matches (``normalize_loss_by_num_matches``). Not reproduced:
hard example mining (the API keeps 3 negatives per positive) -- use a smaller learning rate or weight.

Faster R-CNN and R-FCN (the UAI-Train recipe: ``faster_rcnn_resnet101_pets.config`` fine-tuning a COCO checkpoint;
``meta_architectures/faster_rcnn_meta_arch.py``, which ``rfcn_meta_arch.py`` inherits its losses from):

- First stage (:func:`rpn_targets`, :func:`rpn_loss`; ``create_target_assigner("FasterRCNN", "proposal")``): an
  anchor with IoU >= 0.7 to a box is an object, < 0.3 background, in between ignored; every box also claims its
  best anchor (``force_match_for_each_row``); codes with scales 10, 10, 5, 5. Anchors crossing the image are
  pruned as the 2018 code does in training (or clipped: ``clip_anchors_to_image``, the later option). The
  balanced sampler (:mod:`kzoo.detection.sampler`) draws 256 of the candidates, at most half objects; the loss is
  the softmax cross-entropy plus ``first_stage_localization_loss_weight`` (2.0) x smooth L1 on the sampled
  objects, both over the number sampled, averaged over the images. :func:`rpn_inputs` splits a detector for it.
- Second stage (:func:`proposal_targets`, :func:`box_classifier_loss`; ``create_target_assigner("FasterRCNN",
  "detection")``): a proposal whose IoU with a box is at least 0.5 takes that box's class and its code against
  the proposal, all others are background; :func:`sample_box_classifier_batch` draws the 64 an image sends to
  the box classifier, at most a quarter positive; softmax cross-entropy plus ``localization_weight`` (2.0) x
  smooth L1 on the positives' codes of their own class, over the number of proposals.
  :func:`box_classifier_inputs` (Faster R-CNN) and :func:`rfcn_box_classifier_inputs` give the frozen parts.

Not reproduced: the API's joint training of both stages in one graph (here each stage trains on its own, the
box classifier on proposals passed in; the API feeds it the RPN's current proposals, gradient stopped), the
recipe's optimiser and schedule (momentum 0.9, learning rate 3e-4, ``gradient_clipping_by_norm`` 10), its
``random_horizontal_flip`` augmentation, and ``hard_example_miner`` (configs that set it skip the second-stage
sampler).
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
    # each box claims its best anchor; where two share one, the first box wins (the API's argmax over the rows)
    for column, row in reversed(list(enumerate(overlaps.argmax(axis=0)))):
        best[row], matched[row] = column, True
    labels = np.where(matched, np.asarray(classes)[best], 0)
    class_targets = np.eye(num_classes + 1, dtype=np.float32)[labels]
    box_targets = np.where(matched[:, None], encode_boxes(np.asarray(boxes)[best], anchors, scales), 0.0)
    return class_targets, box_targets.astype(np.float32), matched


def _smooth_l1(error):
    """Smooth L1 (Huber, delta 1) summed over the last axis: ``WeightedSmoothL1LocalizationLoss``."""
    from keras import ops

    error = ops.abs(error)
    return ops.sum(ops.where(error < 1.0, 0.5 * error ** 2, error - 0.5), axis=-1)


def ssd_loss(class_targets, box_targets, matched, class_logits, box_encodings):
    """The loss above on a batch (keras.ops; the targets from :func:`anchor_targets`, stacked)."""
    from keras import ops

    matched = ops.cast(matched, class_logits.dtype)
    matches = ops.maximum(ops.sum(matched), 1.0)
    classification = ops.sum(ops.binary_crossentropy(class_targets, class_logits, from_logits=True))
    localisation = ops.sum(_smooth_l1(box_encodings - box_targets) * matched)
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
    smooth_l1 = _smooth_l1(own - box_targets)
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


def rpn_targets(anchors, boxes, image_shape, matched_threshold: float = 0.7, unmatched_threshold: float = 0.3,
                clip_anchors_to_image: bool = False):
    """The RPN's targets for one image (``create_target_assigner("FasterRCNN", "proposal")``): ``anchors (A, 4)``
    in pixels (:func:`kzoo.detection.two_stage.grid_anchors`), ``boxes (M, 4)`` normalised, ``image_shape
    (height, width)`` -> ``(candidates (A,) bool, positives (A,) bool, box_targets (A, 4))``.

    An anchor whose best IoU is at least ``matched_threshold`` is positive and below ``unmatched_threshold``
    negative; in between it is ignored (not a candidate); each box claims its best anchor whatever the IoU (the
    first box where two share one). Anchors crossing the image are pruned (never candidates), as the 2018
    meta-architecture does in training; ``clip_anchors_to_image=True`` clips them instead (the later option of
    that name). Positives' ``box_targets`` are their box's Faster R-CNN code against the anchor, as clipped."""
    anchors = np.asarray(anchors, np.float64)
    height, width = image_shape
    window = np.array([height, width, height, width], np.float64)
    if clip_anchors_to_image:
        anchors = np.clip(anchors, 0, window)
        valid = (anchors[:, 2] > anchors[:, 0]) & (anchors[:, 3] > anchors[:, 1])
    else:
        valid = (anchors[:, :2] >= 0).all(axis=1) & (anchors[:, 2:] <= window[2:]).all(axis=1)
    kept = np.flatnonzero(valid)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4) * window
    match = np.full(len(kept), -1)  # -1 background, -2 ignored, else the box's index
    if len(boxes) and len(kept):
        overlaps = iou(anchors[kept], boxes)
        best = overlaps.max(axis=1)
        match = np.where(best >= matched_threshold, overlaps.argmax(axis=1), np.where(best < unmatched_threshold,
                                                                                      -1, -2))
        for row in reversed(range(len(boxes))):  # force_match_for_each_row; the first box wins a shared anchor
            match[overlaps[:, row].argmax()] = row
    candidates, positives = np.zeros(len(anchors), bool), np.zeros(len(anchors), bool)
    candidates[kept], positives[kept] = match != -2, match >= 0
    box_targets = np.zeros((len(anchors), 4), np.float32)
    if positives.any():
        box_targets[positives] = encode_boxes(boxes[match[match >= 0]], anchors[positives], BOX_CODER_SCALES)
    return candidates, positives, box_targets


def rpn_loss(sampled, positives, box_targets, box_encodings, objectness_logits, localization_weight: float = 2.0,
             objectness_weight: float = 1.0):
    """The first-stage loss (``FasterRCNNMetaArch._loss_rpn``, keras.ops) on a batch: ``sampled``, ``positives``
    ``(N, A)`` (the sampled minibatch of :func:`rpn_targets`' candidates), ``box_targets (N, A, 4)``, the heads'
    ``box_encodings (N, A, 4)`` and ``objectness_logits (N, A, 2)``. Per image, the softmax cross-entropy over
    the sampled anchors plus ``localization_weight`` x smooth L1 over the sampled positives, both divided by the
    number sampled; the images' mean. The pets and COCO configs weigh localisation 2.0, objectness 1.0."""
    from keras import ops

    sampled = ops.cast(sampled, objectness_logits.dtype)
    positives = ops.cast(positives, objectness_logits.dtype)
    count = ops.maximum(ops.sum(sampled, axis=1), 1.0)
    targets = ops.stack([1.0 - positives, positives], axis=-1)
    objectness = ops.categorical_crossentropy(targets, objectness_logits, from_logits=True)
    localisation = _smooth_l1(box_encodings - box_targets) * positives
    return (objectness_weight * ops.mean(ops.sum(objectness * sampled, axis=1) / count)
            + localization_weight * ops.mean(ops.sum(localisation * sampled, axis=1) / count))


def sample_box_classifier_batch(proposals, boxes, rng, batch_size: int = 64, positive_fraction: float = 0.25,
                                matched_threshold: float = 0.5) -> np.ndarray:
    """The indices (ascending) of the proposals one image sends to the box classifier in training
    (``_sample_box_classifier_minibatch``): the balanced sampler over all ``proposals (P, 4)``, positives those
    with IoU >= ``matched_threshold`` to one of ``boxes``; defaults ``second_stage_batch_size`` and
    ``second_stage_balance_fraction``."""
    from kzoo.detection.sampler import balanced_sample

    proposals = np.asarray(proposals)
    positives = iou(proposals, boxes).max(axis=1) >= matched_threshold if len(boxes) else np.zeros(len(proposals),
                                                                                                   bool)
    return np.flatnonzero(balanced_sample(np.ones(len(proposals), bool), positives, batch_size, positive_fraction,
                                          rng))


def rpn_inputs(detector):
    """A Faster R-CNN or R-FCN detector's first stage split for training the RPN: ``(first_stage, heads)``, Keras
    models ``images -> block3`` (the frozen backbone) and ``block3 -> (box_encodings (N, A, 4),
    objectness_logits (N, A, 2))`` (the ``Conv`` and ``FirstStageBoxPredictor_*`` layers), sharing the detector's
    layers; anchors in the order of :func:`kzoo.detection.two_stage.grid_anchors`."""
    import keras

    block3 = detector.get_layer("Conv").input
    heads = [detector.get_layer(name).output for name in ("rpn_box_encodings", "rpn_objectness_logits")]
    return keras.Model(detector.input, block3), keras.Model(block3, heads)


def rfcn_box_classifier_inputs(detector):
    """An R-FCN detector's frozen part for training its box classifier: a Keras model ``images ->`` the
    ``reduce_depth`` map, on which the ``refined_locations`` and ``class_predictions`` convs and then the
    ``position_sensitive_crop`` layer (with the proposals) give the second-stage heads."""
    import keras

    return keras.Model(detector.input, detector.get_layer("SecondStageBoxPredictor_reduce_depth").output)
