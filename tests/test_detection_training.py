"""Training Faster R-CNN and R-FCN (issue 12, step 4: seed 003's fine-tuning recipe in miniature): the Object
Detection API's balanced minibatch sampler, the RPN's targets and loss, an RPN trained to propose a square, and
R-FCN's box classifier fine-tuned to two classes.

Sources (tensorflow/models research/object_detection, 2018): ``core/balanced_positive_negative_sampler.py``,
``core/target_assigner.py`` (``create_target_assigner("FasterRCNN", "proposal")``), ``matchers/argmax_matcher.py``,
``meta_architectures/faster_rcnn_meta_arch.py`` (``_loss_rpn``, ``_sample_box_classifier_minibatch``, anchors
pruned in training), ``protos/faster_rcnn.proto`` (the batch sizes and fractions). The detectors load the
replicas of tests/test_detection_two_stage.py (random weights saved under the archives' names, converted).
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tf_slim")

import keras  # noqa: E402
import test_detection_two_stage as two  # noqa: E402  (module import: its tests are not collected twice)

import kzoo  # noqa: E402
from kzoo.detection import sampler, two_stage  # noqa: E402
from kzoo.detection.sampler import BOX_CLASSIFIER_BATCH, RPN_BATCH, balanced_sample  # noqa: E402
from kzoo.detection.training import (  # noqa: E402
    box_classifier_loss,
    iou,
    proposal_targets,
    rfcn_box_classifier_inputs,
    rpn_inputs,
    rpn_loss,
    rpn_targets,
    sample_box_classifier_batch,
)

# The replicas and their conversions (frcnn, frcnn_h5, rfcn, rfcn_h5) are conftest.py's session fixtures, shared
# with test_detection_two_stage.
fresh_keras = two.fresh_keras

# ------------------------------------------------------------------------------------------------
# The balanced positive / negative sampler
# ------------------------------------------------------------------------------------------------


def _counts(indicator, labels, batch_size, positive_fraction, seed=0):
    indicator, labels = np.asarray(indicator, bool), np.asarray(labels, bool)
    sampled = balanced_sample(indicator, labels, batch_size, positive_fraction, np.random.default_rng(seed))
    assert not (sampled & ~indicator).any()  # never a non-candidate
    return int((sampled & labels).sum()), int((sampled & ~labels).sum())


def test_sampler_counts():
    """The configs' batches (proto defaults: RPN 256 at 0.5, box classifier 64 at 0.25) on constructed inputs:
    few positives -> more negatives; many -> capped at the fraction; too few candidates -> a smaller batch;
    non-candidates never drawn; ``batch_size=None`` keeps every positive."""
    assert RPN_BATCH == {"batch_size": 256, "positive_fraction": 0.5}
    assert BOX_CLASSIFIER_BATCH == {"batch_size": 64, "positive_fraction": 0.25}
    everything = np.ones(1000, bool)
    few, many = np.arange(1000) < 3, np.arange(1000) % 5 < 2  # 3 and 400 positives
    assert _counts(everything, few, **RPN_BATCH) == (3, 253)
    assert _counts(everything, many, **RPN_BATCH) == (128, 128)
    assert _counts(everything, few, **BOX_CLASSIFIER_BATCH) == (3, 61)
    assert _counts(everything, many, **BOX_CLASSIFIER_BATCH) == (16, 48)
    assert _counts(everything, many, 10, 0.25) == (2, 8)  # int(2.5) positives at most
    # 10 positive and 20 negative candidates among 1000 (500 positives and 470 negatives not candidates): the batch
    # is what there is, no more
    candidates, labels = np.arange(1000) < 30, (np.arange(1000) < 10) | (np.arange(1000) >= 500)
    assert _counts(candidates, labels, **BOX_CLASSIFIER_BATCH) == (10, 20)
    assert _counts(candidates, labels, **RPN_BATCH) == (10, 20)
    assert _counts(everything, np.arange(1000) < 4, None, 0.25) == (4, 12)
    # seeded: the same generator state draws the same batch, another draws another
    a, b, c = (balanced_sample(everything, many, 64, 0.25, np.random.default_rng(seed)) for seed in (5, 5, 6))
    assert (a == b).all() and (a != c).any()
    with pytest.raises(ValueError, match="positive_fraction"):
        balanced_sample(everything, few, 64, 1.5, np.random.default_rng(0))


def _frequencies(draws=4000):
    """How often each of 10 positive and 30 negative candidates is drawn into batches of 8 at 0.25 (2 positives,
    6 negatives a batch): each should be drawn with probability 0.2."""
    labels = np.arange(40) < 10
    rng = np.random.default_rng(7)
    return sum(balanced_sample(np.ones(40, bool), labels, 8, 0.25, rng).astype(int) for _ in range(draws)), draws


def _uniform(counts, draws, p=0.2):
    """Every count within 6 binomial standard deviations of ``draws * p`` (a false alarm is ~1e-9 per entry)."""
    return bool(np.all(np.abs(counts - draws * p) < 6 * np.sqrt(draws * p * (1 - p))))


def test_each_candidate_is_equally_likely(monkeypatch):
    """Every positive (and every negative) is drawn equally often, within 6 sigma over 4000 batches; the same check
    fails a sampler that takes the first k of each kind, and one that favours later entries."""
    counts, draws = _frequencies()
    print("per-entry draws (expected 800):", counts.min(), "-", counts.max())
    assert _uniform(counts[:10], draws) and _uniform(counts[10:], draws)

    def first_k(mask, count, rng):
        chosen = np.zeros_like(mask)
        chosen[np.flatnonzero(mask)[:int(count)]] = True
        return chosen

    def favour_later(mask, count, rng):
        candidates = np.flatnonzero(mask)
        weights = np.arange(1, candidates.size + 1, dtype=float)
        chosen = np.zeros_like(mask)
        chosen[rng.choice(candidates, size=min(int(count), candidates.size), replace=False,
                          p=weights / weights.sum())] = True
        return chosen

    for biased in (first_k, favour_later):
        monkeypatch.setattr(sampler, "_draw", biased)
        counts, draws = _frequencies()
        assert not _uniform(counts[:10], draws), biased.__name__


def test_box_classifier_batch_is_balanced():
    """``sample_box_classifier_batch``: 30 proposals with IoU >= 0.5 to the box, 70 below -> 16 and 48."""
    rng = np.random.default_rng(0)
    box = np.array([0.2, 0.2, 0.6, 0.6])
    near = box + rng.uniform(-0.02, 0.02, (30, 4))
    far = np.array([0.7, 0.7, 0.9, 0.9]) + rng.uniform(-0.05, 0.05, (70, 4))
    proposals = np.concatenate([far[:35], near, far[35:]])
    chosen = sample_box_classifier_batch(proposals, box[None], rng)
    overlap = iou(proposals[chosen], box[None])[:, 0]
    assert (np.diff(chosen) > 0).all() and (overlap >= 0.5).sum() == 16 and (overlap < 0.5).sum() == 48


# ------------------------------------------------------------------------------------------------
# RPN targets and loss
# ------------------------------------------------------------------------------------------------

# A 100 x 100 image; box A = [20, 20, 60, 60] px, box B = [70, 0, 95, 30] px. Each anchor's IoU, by hand:
RPN_ANCHORS = np.array([
    [20, 20, 60, 60],    # A: 1.0                 positive
    [22, 20, 62, 60],    # A: 1520 / 1680 = 0.905 positive
    [30, 20, 70, 60],    # A: 1200 / 2000 = 0.6   ignored (0.3 <= IoU < 0.7)
    [40, 20, 80, 60],    # A: 800 / 2400 = 0.333  ignored
    [45, 20, 85, 60],    # A: 600 / 2600 = 0.231  negative
    [70, 70, 90, 90],    # 0                      negative
    [-10, 20, 30, 60],   # crosses the image: pruned (clipped to [0, 20, 30, 60]: A 400 / 2400 = 0.167, negative)
    [60, 0, 100, 40],    # B: 750 / 1600 = 0.469  ignored by the thresholds, B's best anchor: forced positive
], np.float32)
RPN_BOXES = np.array([[0.2, 0.2, 0.6, 0.6], [0.7, 0.0, 0.95, 0.3]])


def test_rpn_targets_by_hand():
    """create_target_assigner("FasterRCNN", "proposal"): IoU >= 0.7 positive, < 0.3 negative, in between ignored;
    each box forces its best anchor; anchors crossing the image pruned (or clipped); Faster R-CNN codes with
    scales 10, 10, 5, 5 against the anchor."""
    candidates, positives, targets = rpn_targets(RPN_ANCHORS, RPN_BOXES, (100, 100))
    assert candidates.tolist() == [True, True, False, False, True, True, False, True]
    assert positives.tolist() == [True, True, False, False, False, False, False, True]
    np.testing.assert_allclose(targets[0], 0, atol=1e-7)
    np.testing.assert_allclose(targets[1], [10 * (40 - 42) / 40, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(targets[7], [10 * (82.5 - 80) / 40, 10 * (15 - 20) / 40, 5 * np.log(25 / 40),
                                            5 * np.log(30 / 40)], rtol=1e-6)
    assert not targets[~positives].any()
    clipped, clipped_positives, _ = rpn_targets(RPN_ANCHORS, RPN_BOXES, (100, 100), clip_anchors_to_image=True)
    assert clipped[6] and not clipped_positives[6] and (clipped[:6] == candidates[:6]).all()
    # Two boxes whose best anchor is the same: the first box takes it (the API's argmax over the rows).
    _, shared, codes = rpn_targets(RPN_ANCHORS[[0, 5]], np.array([[0.2, 0.2, 0.6, 0.6], [0.21, 0.2, 0.61, 0.6]]),
                                   (100, 100))
    assert shared.tolist() == [True, False]
    np.testing.assert_allclose(codes[0], 0, atol=1e-7)
    # No box: every anchor inside the image is a negative candidate.
    empty_candidates, empty_positives, _ = rpn_targets(RPN_ANCHORS, np.zeros((0, 4)), (100, 100))
    assert empty_candidates.sum() == 7 and not empty_positives.any()


def _rpn_loss_by_hand(sampled, positives, targets, codes, logits):
    total = 0.0
    for s, p, t, c, z in zip(sampled, positives, targets, codes, logits):
        cross_entropy = np.log(np.exp(z).sum(-1)) - z[np.arange(len(z)), p.astype(int)]
        error = np.abs(c - t)
        smooth_l1 = np.where(error < 1, 0.5 * error ** 2, error - 0.5).sum(-1)
        total += (cross_entropy[s].sum() + 2.0 * smooth_l1[s & p].sum()) / s.sum()
    return total / len(sampled)


def test_rpn_loss_by_hand():
    """``_loss_rpn``: per image, softmax cross-entropy over the sampled anchors + 2 x smooth L1 over the sampled
    positives, divided by the number sampled; the mean over images. Anchors not sampled do not count."""
    rng = np.random.default_rng(0)
    sampled = np.array([[1, 1, 1, 0, 1, 0], [0, 1, 1, 1, 0, 0]], bool)
    positives = np.array([[1, 0, 0, 1, 1, 1], [0, 1, 0, 0, 0, 0]], bool)
    targets = rng.normal(0, 1, (2, 6, 4)).astype(np.float32)
    codes = (targets + rng.normal(0, 1.5, (2, 6, 4))).astype(np.float32)  # errors both sides of 1
    logits = rng.normal(0, 2, (2, 6, 2)).astype(np.float32)
    expected = _rpn_loss_by_hand(sampled, positives, targets, codes, logits)
    loss = float(rpn_loss(sampled, positives, targets, codes, logits))
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    codes[~sampled] += 100.0
    logits[~sampled] *= -3.0
    np.testing.assert_allclose(float(rpn_loss(sampled, positives, targets, codes, logits)), loss, rtol=1e-6)
    assert abs(float(rpn_loss(sampled, positives, targets, codes, logits, localization_weight=1.0)) - loss) > 0.1


# ------------------------------------------------------------------------------------------------
# Training runs
# ------------------------------------------------------------------------------------------------

# The sample config's anchors (scales 0.25-2, ratios 0.5-2: 12 a cell, so the checkpoint's RPN heads load) on a
# base of 64 px instead of 256: our 128 px images are a fifth of the 600 x 1024 the config resizes to.
RPN_CONFIG = two.PIPELINE_CONFIG.replace("height_stride: 16",
                                         "height: 64\n        width: 64\n        height_stride: 16", 1)


def _top_proposal_iou(detector, images, boxes):
    out = detector(images)
    assert int(np.asarray(out["num_proposals"]).min()) >= 1
    top = np.asarray(out["proposals"][:, 0])  # NMS keeps the proposals in score order
    return np.array([iou(top[i:i + 1], boxes[i:i + 1])[0, 0] for i in range(len(boxes))])


def _train_rpn(h5, clip_anchors_to_image):
    """The RPN's ``Conv`` and ``FirstStageBoxPredictor`` layers trained (backbone frozen) for 60 steps on 12 noise
    images with a coloured square, with the API's targets, sampler (256 anchors, at most half positive) and loss:
    ``(losses, before, after)``, the top proposal's IoU with the square before and after training on the
    training images and on 4 held-out ones."""
    keras.utils.set_random_seed(0)
    size = 128
    detector = kzoo.create_model("faster_rcnn_resnet50_coco", weights=str(h5), input_shape=(size, size, 3),
                                 pipeline_config=RPN_CONFIG, postprocess=False)
    assert detector.detection_settings["anchors"]["base_anchor_size"] == [64.0, 64.0]
    images, boxes = two.squares(np.random.default_rng(1), 16, (size, size), (0.3, 0.5),
                             [(230, 30, 30), (30, 30, 230), (30, 200, 30)])
    (train, train_boxes), (held_out, held_out_boxes) = (images[:12], boxes[:12]), (images[12:], boxes[12:])
    first_stage, heads = rpn_inputs(detector)
    block3 = first_stage(train)  # frozen: computed once
    anchors = two_stage.grid_anchors(block3.shape[1], block3.shape[2], detector.detection_settings).numpy()
    candidates, positives, box_targets = (np.stack(t) for t in zip(*(
        rpn_targets(anchors, box[None], (size, size), clip_anchors_to_image=clip_anchors_to_image)
        for box in train_boxes)))
    assert positives.sum(axis=1).min() >= 1 and candidates.sum(axis=1).min() > 256

    before = _top_proposal_iou(detector, train, train_boxes), _top_proposal_iou(detector, held_out, held_out_boxes)
    conv = detector.get_layer("Conv").trainable_weights
    predictors = [w for name in ("BoxEncodingPredictor", "ClassPredictor")
                  for w in detector.get_layer(f"FirstStageBoxPredictor_{name}").trainable_weights]
    # The random replica's block3 values are ~100 (a trained net's ~1): the Conv's steps are scaled to them.
    scale = float(np.abs(np.asarray(block3)).mean())
    optimizers = ((keras.optimizers.Adam(1e-3 / scale), conv), (keras.optimizers.Adam(1e-3), predictors))

    @tf.function
    def step(sampled):
        with tf.GradientTape() as tape:
            codes, logits = heads(block3)
            loss = rpn_loss(sampled, positives, box_targets, codes, logits)
        grads = tape.gradient(loss, conv + predictors)
        optimizers[0][0].apply_gradients(zip(grads[:len(conv)], conv))
        optimizers[1][0].apply_gradients(zip(grads[len(conv):], predictors))
        return loss

    rng = np.random.default_rng(2)
    losses = []
    for _ in range(60):  # a fresh minibatch of anchors each step, as the API samples
        sampled = np.stack([balanced_sample(c, p, rng=rng, **RPN_BATCH) for c, p in zip(candidates, positives)])
        losses.append(float(step(tf.constant(sampled))))
    after = _top_proposal_iou(detector, train, train_boxes), _top_proposal_iou(detector, held_out, held_out_boxes)
    print(f"block3 ~{scale:.0f}; {candidates.sum(axis=1).mean():.0f} candidate anchors of {len(anchors)}; loss "
          f"{losses[0]:.3f} -> {losses[-1]:.4f}; top-proposal IoU train {before[0].mean():.2f} -> "
          f"{after[0].mean():.2f} {after[0].round(2)}, held out {before[1].mean():.2f} -> {after[1].mean():.2f} "
          f"{after[1].round(2)}")
    return losses, before, after


def test_rpn_learns_to_propose_the_square(frcnn, frcnn_h5):
    """The RPN trained as :func:`_train_rpn` says: the loss must fall to under a tenth, and the detector's top
    proposal -- all but random before (mean IoU < 0.25) -- must land on the square: mean IoU >= 0.8 on the 12
    training images and >= 0.45 on the 4 held-out ones.

    Anchors crossing the image are clipped (the API's later ``clip_anchors_to_image``), not pruned as the 2018
    meta-architecture does in training: see :func:`test_pruned_anchors_stay_untrained_on_small_images`."""
    losses, before, after = _train_rpn(frcnn_h5, clip_anchors_to_image=True)
    assert losses[-1] < losses[0] / 10
    assert before[0].mean() < 0.25 and before[1].mean() < 0.25
    assert after[0].mean() >= 0.8 and after[1].mean() >= 0.45


@pytest.mark.sweep
def test_pruned_anchors_stay_untrained_on_small_images(frcnn, frcnn_h5):
    """The same run with the 2018 default (anchors crossing the image pruned): on 128 px images that leaves most
    anchors (every border cell, the larger shapes) out of training; at inference they are clipped and kept, and
    their untrained scores win, so the top proposal misses the square although the loss falls."""
    losses, _, after = _train_rpn(frcnn_h5, clip_anchors_to_image=False)
    assert losses[-1] < losses[0] / 10
    assert after[0].mean() < 0.5


def test_fine_tune_rfcn_box_classifier_to_two_classes(rfcn, rfcn_h5):
    """test_fine_tune_box_classifier_to_two_classes for R-FCN ResNet-101: num_classes=2, the backbone, RPN, block4
    and ``reduce_depth`` frozen, the position-sensitive ``class_predictions`` and ``refined_locations`` convs
    trained with the second-stage targets and loss on a balanced batch of 64 proposals an image (at most 16
    positive) drawn from the RPN's proposals and jittered copies of the square. The loss must fall to under a
    tenth; the detector's top detection on each image must be its square's class, with IoU >= 0.5 and better than
    the best proposal by 0.05 (the trained box maps refined it)."""
    keras.utils.set_random_seed(0)
    size = 96
    config = two.RFCN_CONFIG.replace(f"first_stage_max_proposals: {two.MAX_PROPOSALS}",
                                     "first_stage_max_proposals: 100")
    detector = kzoo.create_model("rfcn_resnet101_coco", weights=str(rfcn_h5), input_shape=(size, size, 3),
                                 pipeline_config=config, postprocess=False, num_classes=2)
    rng = np.random.default_rng(3)
    images, boxes = two.squares(rng, 2, (size, size), (0.45, 0.55), [(230, 30, 30), (30, 30, 230)])
    raw = detector(images)
    features = rfcn_box_classifier_inputs(detector)(images)  # frozen: computed once
    sampling = np.random.default_rng(4)
    proposals, targets = [], []
    for i, box in enumerate(boxes):
        rpn = np.asarray(raw["proposals"][i, :int(raw["num_proposals"][i])])
        candidates = np.concatenate([rpn, box + rng.normal(0, 0.05, (40, 4))]).astype("float32")
        chosen = sample_box_classifier_batch(candidates, box[None], sampling, **BOX_CLASSIFIER_BATCH)
        assert len(chosen) == 64
        proposals.append(candidates[chosen])
        targets.append(proposal_targets(proposals[-1], box[None], [i + 1], 2))
    class_t, box_t, labels = (np.concatenate(t) for t in zip(*targets))
    assert (labels == 1).sum() == (labels == 2).sum() == 16
    proposals = tf.constant(np.stack(proposals))
    crop = detector.get_layer("position_sensitive_crop")
    class_layer, box_layer = (detector.get_layer(f"SecondStageBoxPredictor_{head}")
                              for head in ("class_predictions", "refined_locations"))
    box_layer.set_weights([np.zeros_like(w) for w in box_layer.get_weights()])  # as the Faster R-CNN test
    scale = float(np.abs(np.asarray(features)).mean())
    optimizers = ((keras.optimizers.Adam(3e-2 / scale), class_layer.trainable_weights),
                  (keras.optimizers.Adam(3e-3 / scale), box_layer.trainable_weights))
    weights = class_layer.trainable_weights + box_layer.trainable_weights

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            refined = tf.reshape(crop(box_layer(features), proposals), (-1, 2, 4))
            loss = box_classifier_loss(class_t, box_t, labels, crop(class_layer(features), proposals), refined)
        grads = tape.gradient(loss, weights)
        optimizers[0][0].apply_gradients(zip(grads[:2], class_layer.trainable_weights))
        optimizers[1][0].apply_gradients(zip(grads[2:], box_layer.trainable_weights))
        return loss

    losses = [float(step()) for _ in range(120)]
    print(f"reduce_depth ~{scale:.0f}; loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    assert losses[-1] < losses[0] / 10

    out = detector(images)  # the trained heads, through the detector
    detections = two_stage.second_stage_detections(out["refined_box_encodings"], out["class_logits"],
                                                   out["proposals"], out["num_proposals"], (size, size),
                                                   detector.detection_settings)
    for i, box in enumerate(boxes):
        top_class, top_box = int(detections["detection_classes"][i, 0]), np.asarray(detections["detection_boxes"][i, 0])
        best_proposal = iou(np.asarray(out["proposals"][i, :int(out["num_proposals"][i])]), box[None]).max()
        overlap = iou(top_box[None], box[None])[0, 0]
        print(f"image {i}: top class {top_class} score {float(detections['detection_scores'][i, 0]):.3f} IoU "
              f"{overlap:.2f} (best proposal {best_proposal:.2f})")
        assert top_class == i + 1 and overlap >= max(0.5, best_proposal + 0.05)
