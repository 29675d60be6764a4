"""Faster R-CNN ResNet-50 as a whole Keras detector (issue 12, step 3), proven against a replica of the detector's
weight-owning graph and against TensorFlow's ops composed as the Object Detection API composes them.

The replica (tf_slim, tensorflow/models research/object_detection ``meta_architectures/faster_rcnn_meta_arch.py``
and ``models/faster_rcnn_resnet_v1_feature_extractor.py``, early 2018) is built under the archive's exact
variable names -- ``FirstStageFeatureExtractor/resnet_v1_50/...``, the scope-less RPN ``Conv``,
``FirstStageBoxPredictor/{BoxEncodingPredictor, ClassPredictor}``, ``SecondStageFeatureExtractor/resnet_v1_50/
block4``, ``SecondStageBoxPredictor/{BoxEncodingPredictor, ClassPredictor}`` -- with random He-scaled weights and
randomised BatchNorm statistics, saved in a zoo-style archive with a ``pipeline.config``. The test-size config is
the sample ``faster_rcnn_resnet50_coco.config`` with fewer proposals and detections (64x80 images, 240 anchors).
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
slim = pytest.importorskip("tf_slim")

import keras  # noqa: E402
import test_detection as base  # noqa: E402  (module import: its tests are not collected twice)
from _ckpt_helpers import randomise_graph_variables  # noqa: E402

import kzoo  # noqa: E402
from kzoo.convert import convert_checkpoint  # noqa: E402
from kzoo.detection import coco_labels  # noqa: E402

v1 = tf.compat.v1
RTOL = base.RTOL
MEAN_RGB = np.array([123.68, 116.779, 103.939], np.float32)  # the config's mean subtraction (feature extractor)
# Conv3 gains as the backbone tests; RPN and box-classifier gains keep ReLU6 and the softmaxes out of saturation,
# so every head value shows in the comparison.
GAINS = {**base.RESNET_GAIN, "Conv/weights": 0.05, "FirstStageBoxPredictor": 0.3, "SecondStageBoxPredictor": 0.2}
MAX_PROPOSALS = 12

PIPELINE_CONFIG = """# Faster R-CNN with Resnet-50 (v1), configuration for MSCOCO Dataset (test size: fewer proposals).
model {
  faster_rcnn {
    num_classes: 90
    image_resizer {
      keep_aspect_ratio_resizer {
        min_dimension: 600
        max_dimension: 1024
      }
    }
    feature_extractor {
      type: 'faster_rcnn_resnet50'
      first_stage_features_stride: 16
    }
    first_stage_anchor_generator {
      grid_anchor_generator {
        scales: [0.25, 0.5, 1.0, 2.0]
        aspect_ratios: [0.5, 1.0, 2.0]
        height_stride: 16
        width_stride: 16
      }
    }
    first_stage_box_predictor_conv_hyperparams {
      op: CONV
      regularizer { l2_regularizer { weight: 0.0 } }
      initializer { truncated_normal_initializer { stddev: 0.01 } }
    }
    first_stage_nms_score_threshold: 0.0
    first_stage_nms_iou_threshold: 0.7
    first_stage_max_proposals: %d
    first_stage_localization_loss_weight: 2.0
    first_stage_objectness_loss_weight: 1.0
    initial_crop_size: 14
    maxpool_kernel_size: 2
    maxpool_stride: 2
    second_stage_box_predictor {
      mask_rcnn_box_predictor {
        use_dropout: false
        dropout_keep_probability: 1.0
      }
    }
    second_stage_post_processing {
      batch_non_max_suppression {
        score_threshold: 0.0
        iou_threshold: 0.6
        max_detections_per_class: 100
        max_total_detections: 40
      }
      score_converter: SOFTMAX
    }
  }
}
""" % MAX_PROPOSALS


RFCN_CONFIG = PIPELINE_CONFIG.replace("faster_rcnn_resnet50", "faster_rcnn_resnet101").replace(
    """    initial_crop_size: 14
    maxpool_kernel_size: 2
    maxpool_stride: 2
    second_stage_box_predictor {
      mask_rcnn_box_predictor {
        use_dropout: false
        dropout_keep_probability: 1.0
      }
    }""", """    second_stage_box_predictor {
      rfcn_box_predictor {
        conv_hyperparams {
          op: CONV
          regularizer { l2_regularizer { weight: 0.0 } }
          initializer { truncated_normal_initializer { stddev: 0.01 } }
        }
        crop_height: 18
        crop_width: 18
        num_spatial_bins_height: 3
        num_spatial_bins_width: 3
      }
    }""")


@pytest.fixture(autouse=True)
def fresh_keras():
    keras.backend.clear_session()
    yield
    keras.backend.clear_session()


# ------------------------------------------------------------------------------------------------
# The Object Detection API's inference path, composed from TensorFlow ops as the API composes it
# ------------------------------------------------------------------------------------------------


def od_meshgrid(x, y):
    """``object_detection.utils.ops.meshgrid``: grids of shape ``y.shape + x.shape``."""
    x, y = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
    x_grid = tf.tile(tf.reshape(x, [1] * y.shape.rank + x.shape.as_list()), y.shape.as_list() + [1] * x.shape.rank)
    y_grid = tf.tile(tf.reshape(y, y.shape.as_list() + [1] * x.shape.rank), [1] * y.shape.rank + x.shape.as_list())
    return x_grid, y_grid


def od_grid_anchors(rows, cols, scales, aspect_ratios, base_size=(256.0, 256.0), stride=(16.0, 16.0)):
    """``GridAnchorGenerator._generate`` and ``tile_anchors`` (offset 0)."""
    scales_grid, ratios_grid = od_meshgrid(tf.constant(scales, tf.float32), tf.constant(aspect_ratios, tf.float32))
    scales_grid, ratios_grid = tf.reshape(scales_grid, [-1]), tf.reshape(ratios_grid, [-1])
    ratio_sqrts = tf.sqrt(ratios_grid)
    heights, widths = scales_grid / ratio_sqrts * base_size[0], scales_grid * ratio_sqrts * base_size[1]
    y_centers = tf.cast(tf.range(rows), tf.float32) * stride[0]
    x_centers = tf.cast(tf.range(cols), tf.float32) * stride[1]
    x_centers, y_centers = od_meshgrid(x_centers, y_centers)
    widths_grid, x_centers_grid = od_meshgrid(widths, x_centers)
    heights_grid, y_centers_grid = od_meshgrid(heights, y_centers)
    centers = tf.reshape(tf.stack([y_centers_grid, x_centers_grid], axis=3), [-1, 2])
    sizes = tf.reshape(tf.stack([heights_grid, widths_grid], axis=3), [-1, 2])
    return tf.concat([centers - 0.5 * sizes, centers + 0.5 * sizes], 1)


def od_clip_to_window(boxes, window):
    """``box_list_ops.clip_to_window`` (filter_nonoverlapping=True): clipped boxes and the kept indices."""
    y_min, x_min, y_max, x_max = tf.split(boxes, 4, axis=1)
    win_y_min, win_x_min, win_y_max, win_x_max = tf.unstack(window)
    clipped = tf.concat([tf.maximum(tf.minimum(y_min, win_y_max), win_y_min),
                         tf.maximum(tf.minimum(x_min, win_x_max), win_x_min),
                         tf.maximum(tf.minimum(y_max, win_y_max), win_y_min),
                         tf.maximum(tf.minimum(x_max, win_x_max), win_x_min)], 1)
    areas = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    return clipped, tf.reshape(tf.where(areas > 0.0), [-1])


def od_decode(codes, anchors):
    """``FasterRcnnBoxCoder._decode`` with scales 10, 10, 5, 5."""
    ymin, xmin, ymax, xmax = tf.unstack(anchors, axis=1)
    ha, wa = ymax - ymin, xmax - xmin
    yca, xca = ymin + ha / 2, xmin + wa / 2
    ty, tx, th, tw = tf.unstack(codes, axis=1)
    h, w = tf.exp(th / 5.0) * ha, tf.exp(tw / 5.0) * wa
    yc, xc = ty / 10.0 * ha + yca, tx / 10.0 * wa + xca
    return tf.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], axis=1)


def od_multiclass_nms(boxes, scores, score_threshold, iou_threshold, per_class, total, window):
    """``post_processing.multiclass_non_max_suppression``: per class, score filter, clip to the window (dropping
    zero-area boxes), ``tf.image.non_max_suppression``; then all classes sorted and cut to ``total``."""
    kept_boxes, kept_scores, kept_classes = [], [], []
    for c in range(scores.shape[1]):
        class_boxes = boxes[:, c if boxes.shape[1] > 1 else 0]
        index = tf.reshape(tf.where(scores[:, c] > score_threshold), [-1])
        class_boxes, class_scores = tf.gather(class_boxes, index), tf.gather(scores[:, c], index)
        class_boxes, inside = od_clip_to_window(class_boxes, window)
        class_boxes, class_scores = tf.gather(class_boxes, inside), tf.gather(class_scores, inside)
        selected = tf.image.non_max_suppression(class_boxes, class_scores, min(per_class, int(class_boxes.shape[0])),
                                                iou_threshold=iou_threshold)
        kept_boxes.append(tf.gather(class_boxes, selected))
        kept_scores.append(tf.gather(class_scores, selected))
        kept_classes.append(tf.fill(tf.shape(selected), c))
    all_scores = tf.concat(kept_scores, 0)
    order = tf.argsort(all_scores, direction="DESCENDING", stable=True)[:total]
    return (tf.gather(tf.concat(kept_boxes, 0), order).numpy(), tf.gather(all_scores, order).numpy(),
            tf.gather(tf.concat(kept_classes, 0), order).numpy())


def od_proposals(rpn_codes, rpn_logits, feature_shape, image_shape, settings):
    """``_postprocess_rpn`` at inference (anchors clipped to the image as ``predict`` does)."""
    a, nms = settings["anchors"], settings["first_stage_nms"]
    height, width = image_shape
    window = tf.constant([0, 0, height, width], tf.float32)
    anchors = od_grid_anchors(*feature_shape, a["scales"], a["aspect_ratios"])
    anchors, _ = od_clip_to_window(anchors, window)
    proposals, counts = [], []
    for codes, logits in zip(rpn_codes, rpn_logits):
        boxes = od_decode(tf.constant(codes), anchors)
        scores = tf.unstack(tf.nn.softmax(tf.constant(logits)), axis=1)[1]
        kept, _, _ = od_multiclass_nms(boxes[:, None], scores[:, None], nms["score_threshold"], nms["iou_threshold"],
                                       nms["max_proposals"], nms["max_proposals"], window)
        normalised = kept / np.array([height, width, height, width], np.float32)
        proposals.append(np.pad(normalised, [(0, nms["max_proposals"] - len(kept)), (0, 0)]))
        counts.append(len(kept))
    return np.stack(proposals).astype(np.float32), np.array(counts)


def od_detections(refined, class_logits, proposals, counts, image_shape, settings):
    """``_postprocess_box_classifier``: decode against the absolute proposals, softmax, background dropped,
    per-class NMS with the image as clip window, then ``change_coordinate_frame`` to normalised."""
    nms = settings["nms"]
    height, width = image_shape
    scale = np.array([height, width, height, width], np.float32)
    window = tf.constant([0, 0, height, width], tf.float32)
    results = []
    for codes, logits, boxes, count in zip(refined, class_logits, proposals, counts):
        classes = codes.shape[1]
        absolute = np.repeat((boxes * scale)[:count, None], classes, axis=1).reshape(-1, 4)
        decoded = tf.reshape(od_decode(tf.constant(codes[:count].reshape(-1, 4)), tf.constant(absolute)),
                             [count, classes, 4])
        scores = tf.nn.softmax(tf.constant(logits[:count]))[:, 1:]
        kept, kept_scores, kept_classes = od_multiclass_nms(
            decoded, scores, nms["score_threshold"], nms["iou_threshold"], nms["max_detections_per_class"],
            nms["max_total_detections"], window)
        results.append((kept / scale, kept_scores, kept_classes + 1))
    return results


# ------------------------------------------------------------------------------------------------
# The replica
# ------------------------------------------------------------------------------------------------


def faster_rcnn_heads_replica(images, proposals, depth=50, rfcn=False):
    """The whole weight-owning graph: first stage, RPN, crops of ``proposals`` (normalised, (N, P, 4)) with
    ``tf.image.crop_and_resize`` + slim's 2x2 max-pool, second-stage block4 and ``MaskRCNNBoxPredictor``.
    ``rfcn``: block4 on the whole block3 map and ``RfcnBoxPredictor``'s convs; the last two outputs are then its
    position-sensitive score maps (cropped by :func:`test_detection.od_position_sensitive_crop`)."""
    from tf_slim.nets import resnet_utils
    from tf_slim.nets import resnet_v1 as slim_resnet_v1

    arch = f"resnet_v1_{depth}"
    arg_scope = slim_resnet_v1.resnet_arg_scope(batch_norm_epsilon=1e-5, batch_norm_scale=True)
    with slim.arg_scope(arg_scope), v1.variable_scope("FirstStageFeatureExtractor"):
        _, end_points = getattr(slim_resnet_v1, arch)(images, num_classes=None, is_training=False, global_pool=False,
                                                      output_stride=16, scope=arch)
    block3 = next(v for k, v in end_points.items() if k.endswith(f"{arch}/block3"))
    rpn = slim.conv2d(block3, 512, [3, 3], activation_fn=tf.nn.relu6)  # scope-less: "Conv"
    with v1.variable_scope("FirstStageBoxPredictor"):
        codes = slim.conv2d(rpn, 48, [1, 1], activation_fn=None, scope="BoxEncodingPredictor")
        logits = slim.conv2d(rpn, 24, [1, 1], activation_fn=None, scope="ClassPredictor")
    batch = tf.shape(images)[0]
    rpn_codes, rpn_logits = tf.reshape(codes, [batch, -1, 4]), tf.reshape(logits, [batch, -1, 2])
    if rfcn:
        return (block3, rpn_codes, rpn_logits) + rfcn_replica(block3, arch, arg_scope)
    count = tf.shape(proposals)[1]
    box_indices = tf.reshape(tf.ones([batch, count], tf.int32) * tf.range(batch)[:, None], [-1])
    crops = tf.image.crop_and_resize(block3, tf.reshape(proposals, [-1, 4]), box_indices, (14, 14))
    crops = slim.max_pool2d(crops, [2, 2], stride=2)
    with slim.arg_scope(arg_scope), slim.arg_scope([slim.batch_norm], is_training=False):
        with v1.variable_scope("SecondStageFeatureExtractor"), v1.variable_scope(arch):
            unit = {"depth": 2048, "depth_bottleneck": 512, "stride": 1}
            block4 = resnet_utils.stack_blocks_dense(
                crops, [resnet_utils.Block("block4", slim_resnet_v1.bottleneck, [unit] * 3)])
    with v1.variable_scope("SecondStageBoxPredictor"):
        pooled = slim.flatten(tf.reduce_mean(block4, [1, 2], keepdims=True, name="AvgPool"))
        refined = slim.fully_connected(pooled, 360, activation_fn=None, scope="BoxEncodingPredictor")
        class_logits = slim.fully_connected(pooled, 91, activation_fn=None, scope="ClassPredictor")
    return (block3, rpn_codes, rpn_logits, tf.reshape(refined, [batch, count, 90, 4]),
            tf.reshape(class_logits, [batch, count, 91]))


def rfcn_replica(block3, arch, arg_scope):
    """``rfcn_meta_arch``'s second stage: block4 (stride 1, rate 1) on block3; ``RfcnBoxPredictor``'s
    ``reduce_depth`` (1x1, 1024, ReLU: the conv hyperparams' default activation) and the two linear 1x1 convs."""
    from tf_slim.nets import resnet_utils
    from tf_slim.nets import resnet_v1 as slim_resnet_v1

    with slim.arg_scope(arg_scope), slim.arg_scope([slim.batch_norm], is_training=False):
        with v1.variable_scope("SecondStageFeatureExtractor"), v1.variable_scope(arch):
            unit = {"depth": 2048, "depth_bottleneck": 512, "stride": 1}
            block4 = resnet_utils.stack_blocks_dense(
                block3, [resnet_utils.Block("block4", slim_resnet_v1.bottleneck, [unit] * 3)])
    with v1.variable_scope("SecondStageBoxPredictor"):
        net = slim.conv2d(block4, 1024, [1, 1], activation_fn=tf.nn.relu, scope="reduce_depth")
        locations = slim.conv2d(net, 9 * 90 * 4, [1, 1], activation_fn=None, scope="refined_locations")
        scores = slim.conv2d(net, 9 * 91, [1, 1], activation_fn=None, scope="class_predictions")
    return locations, scores


class FasterRCNNCase:
    """The replica's outputs: RPN heads on two images, the API's proposals from them, the box classifier's heads on
    those proposals and the API's detections."""

    def __init__(self, root, size=(64, 80), seed=0, depth=50, rfcn=False, config=None, name=None, pack_config=True,
                 gains=GAINS):
        from kzoo.detection import pipeline_config
        from kzoo.detection.two_stage import faster_rcnn_settings

        rng = np.random.default_rng(seed)
        self.root, self.size, self.depth, self.rfcn = root, size, depth, rfcn
        self.config = config or (RFCN_CONFIG if rfcn else PIPELINE_CONFIG)
        self.settings = faster_rcnn_settings(pipeline_config.parse(self.config))
        name = name or (f"rfcn_resnet{depth}_coco_2018_01_28" if rfcn else f"faster_rcnn_resnet{depth}_coco_2018_01_28")
        self.pixels = rng.uniform(0, 255, (2, *size, 3)).astype(np.float32)
        graph = tf.Graph()
        with graph.as_default():
            images = v1.placeholder(tf.float32, (None, *size, 3))
            proposals = v1.placeholder(tf.float32, (None, None, 4))
            block3, rpn_codes, rpn_logits, refined, class_logits = faster_rcnn_heads_replica(images, proposals, depth,
                                                                                             rfcn)
            session = v1.Session(graph=graph)  # left open: heads_on runs the second stage again
            session.run(v1.global_variables_initializer())
            randomise_graph_variables(session, rng, gains)
            self.variables = {v.op.name for v in v1.global_variables()}
            self.archive = base._save_archive(session, root, name, self.config if pack_config else None)
        centred = self.pixels - MEAN_RGB
        features, self.rpn_codes, self.rpn_logits = session.run([block3, rpn_codes, rpn_logits], {images: centred})
        self.feature_shape = features.shape[1:3]
        self.proposals, self.counts = od_proposals(self.rpn_codes, self.rpn_logits, self.feature_shape, size,
                                                   self.settings)
        self._run = lambda boxes: session.run([refined, class_logits], {images: centred, proposals: boxes})
        self.refined, self.class_logits = self.heads_on(self.proposals)
        self.detections = od_detections(self.refined, self.class_logits, self.proposals, self.counts, size,
                                        self.settings)

    def heads_on(self, proposals):
        """The replica's second-stage heads on ``proposals`` (N, P, 4); R-FCN's score maps cropped as the API
        crops them."""
        refined, class_logits = self._run(proposals)
        if not self.rfcn:
            return refined, class_logits
        count = proposals.shape[1]
        flat, indices = proposals.reshape(-1, 4), np.repeat(np.arange(2), count).astype(np.int32)
        self.class_maps = class_logits
        locations, scores = (base.od_position_sensitive_crop(maps, flat, indices, (18, 18), (3, 3), True)
                             for maps in (refined, class_logits))
        return locations.reshape(2, count, 90, 4), scores.reshape(2, count, 91)


# The frcnn, frcnn_h5, rfcn and rfcn_h5 fixtures live in conftest.py (session scope: tests/test_detection_training.py
# uses the same replicas): they call FasterRCNNCase, convert_frcnn and _convert_rfcn.


def convert_frcnn(frcnn):
    report = convert_checkpoint(frcnn.archive, "faster_rcnn_resnet50_coco", frcnn.root / "detector.h5",
                                include_top=False)
    unused = set(report.unused.get("other", ()))
    read = {key for key, *_ in report.mapped}
    # Everything but the first stage's block4 (built, never trained) is read; that block4 never is.
    assert unused == {k for k in frcnn.variables if k.startswith("FirstStageFeatureExtractor/resnet_v1_50/block4/")}
    assert read | unused == frcnn.variables and len(frcnn.variables) == 325 and len(read) == 275
    return report.output


def _assert_same_end_to_end(out, reference, logits, replica_logits, codes, replica_codes):
    """The whole detector against the API's detections from the replica's heads. The heads agree within 1e-5 of
    their largest value; a softmax score moves by at most twice the largest logit difference (relative), and a
    clipped normalised box corner by at most 0.2 x the largest code difference (d corner / d code <= extent / 10
    for a box inside the image). Both differences are measured here and set the bounds; classes exactly."""
    bound = 2 * float(np.abs(np.asarray(logits) - replica_logits).max()) + 1e-6
    box_bound = 1e-5 + float(np.abs(np.asarray(codes) - replica_codes).max())
    for i, (boxes, scores, classes) in enumerate(reference):
        n = int(np.asarray(out["num_detections"])[i])
        assert n == len(scores) > 0
        actual = base._canonical(np.asarray(out["detection_boxes"])[i, :n], np.asarray(out["detection_scores"])[i, :n],
                                 np.asarray(out["detection_classes"])[i, :n])
        boxes, scores, classes = base._canonical(boxes, scores, classes)
        np.testing.assert_array_equal(actual[2], classes)
        np.testing.assert_allclose(actual[1], scores, rtol=bound, atol=1e-6)
        np.testing.assert_allclose(actual[0], boxes, rtol=0, atol=box_bound)
    print(f"end to end: scores within {bound:.1e} relative, boxes within {box_bound:.1e}")


def _detector(frcnn, h5, **kwargs):
    return kzoo.create_model("faster_rcnn_resnet50_coco", weights=str(h5), input_shape=(*frcnn.size, 3),
                             pipeline_config=frcnn.config, **kwargs)


def test_faster_rcnn_heads_proposals_and_detections_match_the_api(frcnn, frcnn_h5):
    """RPN heads within 1e-5 of the replica's; the proposals equal the API's from the replica's heads; the box
    classifier's heads on them within 1e-5; and the detector's detections equal the API's."""
    raw = _detector(frcnn, frcnn_h5, postprocess=False)
    out = raw(frcnn.pixels)
    base._assert_close(out["rpn_box_encodings"], frcnn.rpn_codes, "RPN box encodings")
    base._assert_close(out["rpn_objectness_logits"], frcnn.rpn_logits, "RPN objectness logits")
    np.testing.assert_array_equal(np.asarray(out["num_proposals"]), frcnn.counts)
    assert frcnn.counts.min() >= 4  # NMS kept several and dropped some (240 anchors)
    np.testing.assert_allclose(np.asarray(out["proposals"]), frcnn.proposals, rtol=1e-5, atol=1e-5)
    base._assert_close(out["refined_box_encodings"], frcnn.refined, "second-stage box encodings")
    base._assert_close(out["class_logits"], frcnn.class_logits, "second-stage class logits")

    keras.backend.clear_session()
    detector = _detector(frcnn, frcnn_h5)
    _assert_same_end_to_end(detector(frcnn.pixels), frcnn.detections, out["class_logits"], frcnn.class_logits,
                            out["refined_box_encodings"], frcnn.refined)


def test_coco_weights_read_the_archive_whole_and_its_config(frcnn, tmp_path, monkeypatch):
    """weights="coco": the registry entry's archive (here the replica's, from a mirror folder), trusted on first
    use, converted once with the heads; the archive's own pipeline.config (12 proposals, 40 detections, not the
    registry's 300 / 300) sets the post-processing."""
    from kzoo import registry

    entry = registry.resolve_weights("faster_rcnn_resnet50_coco", "coco", False)
    assert entry.urls == registry.get_entry("resnet_v1_50.coco_notop").urls and entry.trust == "tofu"
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / entry.file_name).write_bytes(frcnn.archive.read_bytes())
    for variable, value in (("KZOO_CACHE_DIR", tmp_path / "cache"), ("KZOO_PINS", tmp_path / "pins.json"),
                            ("KZOO_MIRRORS", mirror), ("KZOO_OFFLINE", "1")):
        monkeypatch.setenv(variable, str(value))
    detector = kzoo.create_model("faster_rcnn_resnet50_coco", weights="coco", input_shape=(*frcnn.size, 3))
    assert detector.detection_settings == frcnn.settings
    assert len(list((tmp_path / "cache" / "converted").glob("faster_rcnn_resnet50_coco-notop-*.h5"))) == 1
    out = detector(frcnn.pixels)
    assert tuple(out["detection_boxes"].shape) == (2, 40, 4)
    assert np.asarray(out["num_detections"]).tolist() == [len(d[1]) for d in frcnn.detections]


def test_proposal_and_detection_steps_are_each_needed(frcnn):
    """kzoo's post-processing on the replica's heads equals the API's; without the anchor clipping, or with the
    softmax replaced by a sigmoid, it does not."""
    from kzoo.detection import two_stage

    kzoo_proposals, counts = two_stage.rpn_proposals(
        tf.constant(frcnn.rpn_codes), tf.constant(frcnn.rpn_logits), frcnn.feature_shape, frcnn.size, frcnn.settings)
    np.testing.assert_allclose(kzoo_proposals.numpy(), frcnn.proposals, rtol=1e-5, atol=1e-5)
    unclipped = dict(frcnn.settings, anchors=dict(frcnn.settings["anchors"]))
    original = two_stage.clip_to_image
    try:  # anchors left unclipped: a different proposal set
        two_stage.clip_to_image = lambda boxes, h, w: (original(boxes, h, w) if boxes.shape.rank == 3 else
                                                       (boxes, None))
        moved, _ = two_stage.rpn_proposals(tf.constant(frcnn.rpn_codes), tf.constant(frcnn.rpn_logits),
                                           frcnn.feature_shape, frcnn.size, unclipped)
    finally:
        two_stage.clip_to_image = original
    assert np.abs(moved.numpy() - frcnn.proposals).max() > 1e-2

    detections = two_stage.second_stage_detections(
        tf.constant(frcnn.refined), tf.constant(frcnn.class_logits), tf.constant(frcnn.proposals),
        tf.constant(frcnn.counts, tf.int32), frcnn.size, frcnn.settings)
    base._assert_same_detections(detections, frcnn.detections)
    sigmoid = two_stage.second_stage_detections(
        tf.constant(frcnn.refined), tf.constant(frcnn.class_logits), tf.constant(frcnn.proposals),
        tf.constant(frcnn.counts, tf.int32), frcnn.size, dict(frcnn.settings, score_converter="SIGMOID"))
    assert abs(float(sigmoid["detection_scores"][0, 0]) - float(frcnn.detections[0][1][0])) > 1e-2


def test_grid_anchors_are_the_apis():
    from kzoo.detection.two_stage import grid_anchors

    settings = kzoo.registry.get_entry("faster_rcnn_resnet50_coco.coco_notop").conversion["detection"]["settings"]
    for rows, cols in ((4, 5), (38, 63)):  # the test maps; a 600x1000 image at stride 16
        expected = od_grid_anchors(rows, cols, [0.25, 0.5, 1.0, 2.0], [0.5, 1.0, 2.0]).numpy()
        np.testing.assert_allclose(grid_anchors(rows, cols, settings).numpy(), expected, atol=1e-4)
    # anchor 1 of a cell is scale 0.5, ratio 0.5 (scale fastest): 181 x 91 px
    np.testing.assert_allclose(expected[1], [-90.51, -45.25, 90.51, 45.25], atol=1e-2)


def _make_a_dog(detector, target):
    """Zero kernels; biases that make every proposal the whole image and refine it to ``target`` as class 18."""
    biases = {"FirstStageBoxPredictor_BoxEncodingPredictor": np.tile([0.0, 0.0, 50.0, 50.0], 12),
              "FirstStageBoxPredictor_ClassPredictor": np.zeros(24)}
    (yc, xc), (h, w) = (target[:2] + target[2:]) / 2, target[2:] - target[:2]
    refine = np.zeros(360)
    refine[17 * 4:18 * 4] = [10 * (yc - 0.5), 10 * (xc - 0.5), 5 * np.log(h), 5 * np.log(w)]  # class 18: slot 17
    biases["SecondStageBoxPredictor_BoxEncodingPredictor"] = refine
    biases["SecondStageBoxPredictor_ClassPredictor"] = np.where(np.arange(91) == 18, 10.0, -10.0)
    for name, bias in biases.items():
        layer = detector.get_layer(name)
        layer.set_weights([np.zeros_like(layer.get_weights()[0]), bias])


def test_one_proposal_and_its_box_land_where_they_belong():
    """Zero kernels. The RPN's biases blow every anchor up past the image, so after clipping all proposals are
    the whole image and NMS keeps exactly one; the box classifier's biases give it class 18 ("dog") and refine
    it to a chosen box. The codes are the Faster R-CNN coder's inverse, by hand."""
    settings = kzoo.registry.get_entry("faster_rcnn_resnet50_coco.coco_notop").conversion["detection"]["settings"]
    detector = kzoo.create_model("faster_rcnn_resnet50_coco", weights=None, input_shape=(64, 96, 3),
                                 pipeline_config=settings)
    target = np.array([0.25, 0.2, 0.5, 0.75])  # ymin, xmin, ymax, xmax, normalised; the proposal is [0, 0, 1, 1]
    _make_a_dog(detector, target)
    out = detector(np.random.default_rng(0).uniform(0, 255, (1, 64, 96, 3)).astype("float32"))
    # one proposal: one detection per class (softmax scores are all above the 0.0 threshold)
    assert int(out["num_detections"][0]) == 90
    assert int(out["detection_classes"][0, 0]) == 18 and coco_labels()[18] == "dog"
    np.testing.assert_allclose(float(out["detection_scores"][0, 0]), np.exp(10) / (np.exp(10) + 90 * np.exp(-10)),
                               rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out["detection_boxes"][0, 0]), target, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out["detection_boxes"][0, 1]), [0, 0, 1, 1], atol=1e-6)


# tensorflow/models research/object_detection samples/configs/faster_rcnn_resnet101_coco.config (commit
# 6ddfb3f98105f32d4154efddc01f930ab1017491): the ResNet-50 sample's model block with the feature extractor
# 'faster_rcnn_resnet101' -- PIPELINE_CONFIG above, back at the sample's 300 proposals and 300 detections.
# samples/configs/faster_rcnn_resnet101_pets.config, the UAI-Train recipe's, has the same block with 37 classes.
R101_SAMPLE_CONFIG = PIPELINE_CONFIG.replace("faster_rcnn_resnet50", "faster_rcnn_resnet101").replace(
    f"first_stage_max_proposals: {MAX_PROPOSALS}", "first_stage_max_proposals: 300").replace(
    "max_total_detections: 40", "max_total_detections: 300")
PETS_CONFIG = R101_SAMPLE_CONFIG.replace("num_classes: 90", "num_classes: 37")


def _offline_empty_cache(monkeypatch, tmp_path, mirror=None):
    for variable, value in (("KZOO_CACHE_DIR", tmp_path / "cache"), ("KZOO_PINS", tmp_path / "pins.json"),
                            ("KZOO_MIRRORS", mirror or tmp_path / "no-mirror"), ("KZOO_OFFLINE", "1")):
        monkeypatch.setenv(variable, str(value))


def test_resnet101_detector_is_the_sample_configs_and_the_recipes(monkeypatch, tmp_path):
    """Seed 003's detector: faster_rcnn_resnet101_coco_11_06_2017 has no pipeline.config, so weights="coco" takes
    the sample faster_rcnn_resnet101_coco.config's settings from the registry without opening the archive (here:
    offline, nothing cached, no mirror -- the ResNet-50 detector, whose archive holds its config, fails closed
    there). The recipe's pets config builds a 37-class detector on the ResNet-101 stages."""
    from kzoo.architectures.detection_faster_rcnn import detector_settings
    from kzoo.detection import pipeline_config
    from kzoo.detection.two_stage import faster_rcnn_settings
    from kzoo.errors import KzooError

    _offline_empty_cache(monkeypatch, tmp_path)
    entry = kzoo.registry.resolve_weights("faster_rcnn_resnet101_coco", "coco", False)
    assert entry.file_name == "faster_rcnn_resnet101_coco_11_06_2017.tar.gz"
    assert entry.urls == kzoo.registry.get_entry("resnet_v1_101.coco_11_06_2017_notop").urls
    sample = faster_rcnn_settings(pipeline_config.parse(R101_SAMPLE_CONFIG))
    assert detector_settings("faster_rcnn_resnet101_coco", None, "coco") == sample
    with pytest.raises(KzooError, match="faster_rcnn_resnet50_coco"):
        detector_settings("faster_rcnn_resnet50_coco", None, "coco")

    pets = detector_settings("faster_rcnn_resnet101_coco", PETS_CONFIG)
    assert pets == {**sample, "num_classes": 37}
    model = kzoo.create_model("faster_rcnn_resnet101_coco", weights=None, pipeline_config=PETS_CONFIG,
                              input_shape=(64, 80, 3), postprocess=False)
    units = {layer.name.split("_")[1] for layer in model.layers if layer.name.startswith("block3_unit")}
    assert len(units) == 23  # ResNet-101's block3
    out = model(np.zeros((1, 64, 80, 3), np.float32))
    assert out["class_logits"].shape[-1] == 38 and out["refined_box_encodings"].shape[-2:] == (37, 4)


@pytest.mark.sweep
def test_resnet101_detector_from_the_2017_archive(tmp_path, monkeypatch):
    """The whole ResNet-101 detector with weights="coco": a replica packed as faster_rcnn_resnet101_coco_11_06_2017
    (no pipeline.config), served from a mirror; the sample config's settings (300 proposals: all 240 anchors
    survive NMS here) make the reference. Heads, proposals and detections as for ResNet-50; then the pets recipe:
    37 classes, only the two class-dependent layers re-initialised."""
    # ResNet-101's larger block4 features saturate the softmax at the ResNet-50 gain (the background takes every
    # score, so no detection is left to compare); a smaller box-classifier gain keeps the classes' scores alive.
    case = FasterRCNNCase(tmp_path, depth=101, config=R101_SAMPLE_CONFIG, name="faster_rcnn_resnet101_coco_11_06_2017",
                          pack_config=False, gains={**GAINS, "SecondStageBoxPredictor": 0.02})
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / case.archive.name).write_bytes(case.archive.read_bytes())
    _offline_empty_cache(monkeypatch, tmp_path, mirror)
    raw = kzoo.create_model("faster_rcnn_resnet101_coco", weights="coco", input_shape=(*case.size, 3),
                            postprocess=False)
    assert raw.detection_settings == case.settings
    out = raw(case.pixels)
    base._assert_close(out["rpn_box_encodings"], case.rpn_codes, "R-101 RPN box encodings")
    _check_on_own_proposals(case, out, "R-101, all 240 anchors kept", lambda: kzoo.create_model(
        "faster_rcnn_resnet101_coco", weights="coco", input_shape=(*case.size, 3)))
    keras.backend.clear_session()
    pets = kzoo.create_model("faster_rcnn_resnet101_coco", weights="coco", input_shape=(*case.size, 3),
                             pipeline_config=PETS_CONFIG, postprocess=False)
    assert set(pets.weights_report["reinitialised"]) == {
        _keras_name(f"SecondStageBoxPredictor/{head}/{leaf}", "resnet_v1_101")
        for head in ("ClassPredictor", "BoxEncodingPredictor") for leaf in ("weights", "biases")}
    base._assert_close(pets(case.pixels)["rpn_box_encodings"], case.rpn_codes, "pets detector's RPN")


@pytest.mark.parametrize("shape, limits, expected", [
    ((480, 640), (600, 1024), (600, 800)),      # the shorter side to 600
    ((300, 1000), (600, 1024), (307, 1024)),    # 600 x 2000 is too long: the longer side to 1024 instead
    ((601, 1203), (600, 1024), (512, 1024)),    # 1024 / 1203 * 601 = 511.57
    ((2, 5), (5, 100), (5, 12)),                # 12.5 rounds half to even (tf.round), not up to 13
])
def test_keep_aspect_ratio_size_is_resize_to_range(shape, limits, expected):
    """Sizes worked out by hand from core/preprocessor.py's resize_to_range."""
    from kzoo.detection import keep_aspect_ratio_size

    assert keep_aspect_ratio_size(*shape, *limits) == expected


def _tf1_bilinear(image, size):
    """TF1's ResizeBilinear (align_corners=False, no half-pixel centres) in numpy: output pixel i samples the input
    at i * in / out, clamped at the last row/column."""
    def taps(n_in, n_out):
        position = np.arange(n_out) * (n_in / n_out)
        low = np.floor(position).astype(int)
        return low, np.minimum(low + 1, n_in - 1), position - low

    (y0, y1, fy), (x0, x1, fx) = taps(image.shape[0], size[0]), taps(image.shape[1], size[1])
    top = image[y0][:, x0] * (1 - fx)[None, :, None] + image[y0][:, x1] * fx[None, :, None]
    bottom = image[y1][:, x0] * (1 - fx)[None, :, None] + image[y1][:, x1] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bottom * fy[:, None, None]


def test_resize_for_samples_as_tf1_did():
    """resize_for gives the API's pixels: TF1's bilinear, checked against numpy; TF2's tf.image.resize (half-pixel
    centres) is far off, so the choice of op matters."""
    from kzoo.detection import resize_for

    image = np.random.default_rng(2).uniform(0, 255, (30, 45, 3)).astype(np.float32)
    detector = type("Detector", (), {"detection_settings": {"image_resizer": {"min_dimension": 40,
                                                                             "max_dimension": 100}}})()
    resized = resize_for(detector, image)
    assert resized.shape == (40, 60, 3)
    np.testing.assert_allclose(resized, _tf1_bilinear(image.astype(np.float64), (40, 60)), atol=1e-3)
    assert np.abs(tf.image.resize(image, (40, 60)).numpy() - resized).max() > 10
    ssd = type("Detector", (), {"detection_settings": {"image_size": [30, 30]}})()
    np.testing.assert_allclose(resize_for(ssd, image), _tf1_bilinear(image.astype(np.float64), (30, 30)), atol=1e-3)


def test_detect_returns_boxes_in_the_original_images_pixels():
    """kzoo.detection.detect resizes each image as the config says (here 60/100) and maps the normalised boxes
    onto the original: the constructed detector of the test above puts its dog at [0.25, 0.2, 0.5, 0.75], which is
    [12, 14.4, 24, 54] in a 48x72 image and [25, 10, 50, 37.5] in a 100x50 one."""
    from kzoo.detection import detect

    settings = kzoo.registry.get_entry("faster_rcnn_resnet50_coco.coco_notop").conversion["detection"]["settings"]
    settings = {**settings, "image_resizer": {"min_dimension": 60, "max_dimension": 100}}
    detector = kzoo.create_model("faster_rcnn_resnet50_coco", weights=None, pipeline_config=settings)
    _make_a_dog(detector, np.array([0.25, 0.2, 0.5, 0.75]))
    rng = np.random.default_rng(1)
    small, tall = rng.uniform(0, 255, (48, 72, 3)), rng.uniform(0, 255, (100, 50, 3))
    results = detect(detector, [small, tall])
    for result, expected in zip(results, ([12, 14.4, 24, 54], [25, 10, 50, 37.5])):
        assert result["classes"][0] == 18
        np.testing.assert_allclose(result["boxes"][0], expected, atol=1e-3)


# ------------------------------------------------------------------------------------------------
# R-FCN ResNet-101
# ------------------------------------------------------------------------------------------------


def test_rfcn_heads_proposals_and_detections_match_the_api(rfcn, rfcn_h5):
    """R-FCN ResNet-101 (the archive's depth, 580 + 6 head variables): RPN heads, proposals, the position-sensitive
    heads and the detections, as for Faster R-CNN."""
    _check_rfcn(rfcn, rfcn_h5)


@pytest.mark.sweep
@pytest.mark.parametrize("is_rfcn", [False, True], ids=["faster_rcnn", "rfcn"])
def test_at_the_configs_proposal_count(tmp_path, is_rfcn):
    """The sample configs' own counts (300 proposals, 300 detections) on 160x224 images (10x14 map, 1680
    anchors)."""
    config = (RFCN_CONFIG if is_rfcn else PIPELINE_CONFIG).replace(
        f"first_stage_max_proposals: {MAX_PROPOSALS}", "first_stage_max_proposals: 300").replace(
        "max_total_detections: 40", "max_total_detections: 300")
    case = FasterRCNNCase(tmp_path, size=(160, 224), depth=101 if is_rfcn else 50, rfcn=is_rfcn, config=config)
    assert case.settings["first_stage_nms"]["max_proposals"] == 300 and case.counts.min() > 50
    if is_rfcn:
        _check_rfcn(case, _convert_rfcn(case, tmp_path))
        return
    h5 = convert_checkpoint(case.archive, "faster_rcnn_resnet50_coco", tmp_path / "d.h5", include_top=False).output
    out = _detector(case, h5, postprocess=False)(case.pixels)
    _check_on_own_proposals(case, out, "300 proposals", lambda: _detector(case, h5))


def _check_on_own_proposals(case, out, what, whole_detector):
    """The raw detector's ``out``: proposals equal to the API's; then the second stage and the whole detector's
    detections against the replica's on the same (kzoo's) proposals: tf.image.crop_and_resize is discontinuous
    at the map's edge (a proposal reaching the image border samples its last row at exactly H - 1, and one ulp
    more extrapolates to 0), so proposals equal within 1e-7 can crop differently; the API has the same edge."""
    np.testing.assert_array_equal(np.asarray(out["num_proposals"]), case.counts)
    np.testing.assert_allclose(np.asarray(out["proposals"]), case.proposals, rtol=1e-5, atol=1e-5)
    proposals = np.asarray(out["proposals"])
    refined, class_logits = case.heads_on(proposals)
    base._assert_close(out["refined_box_encodings"], refined, f"second-stage box encodings ({what})")
    base._assert_close(out["class_logits"], class_logits, f"second-stage class logits ({what})")
    detections = od_detections(refined, class_logits, proposals, case.counts, case.size, case.settings)
    keras.backend.clear_session()
    _assert_same_end_to_end(whole_detector()(case.pixels), detections, out["class_logits"], class_logits,
                            out["refined_box_encodings"], refined)


def _convert_rfcn(rfcn, folder):
    assert "rfcn" in rfcn.settings and "SecondStageBoxPredictor/reduce_depth/biases" in rfcn.variables
    report = convert_checkpoint(rfcn.archive, "rfcn_resnet101_coco", folder / "rfcn.h5", include_top=False)
    unused = set(report.unused.get("other", ()))
    assert unused == {k for k in rfcn.variables if k.startswith("FirstStageFeatureExtractor/resnet_v1_101/block4/")}
    assert {key for key, *_ in report.mapped} | unused == rfcn.variables
    return report.output


def _check_rfcn(rfcn, h5):
    raw = kzoo.create_model("rfcn_resnet101_coco", weights=str(h5), input_shape=(*rfcn.size, 3),
                            pipeline_config=rfcn.config, postprocess=False)
    out = raw(rfcn.pixels)
    base._assert_close(out["rpn_box_encodings"], rfcn.rpn_codes, "R-FCN RPN box encodings")
    np.testing.assert_array_equal(np.asarray(out["num_proposals"]), rfcn.counts)
    np.testing.assert_allclose(np.asarray(out["proposals"]), rfcn.proposals, rtol=1e-5, atol=1e-5)
    # The second stage on the same proposals (see test_at_the_configs_proposal_count on crops at the map's edge).
    proposals = np.asarray(out["proposals"])
    refined, class_logits = rfcn.heads_on(proposals)
    base._assert_close(out["refined_box_encodings"], refined, "R-FCN box encodings")
    base._assert_close(out["class_logits"], class_logits, "R-FCN class logits")
    detections = od_detections(refined, class_logits, proposals, rfcn.counts, rfcn.size, rfcn.settings)
    keras.backend.clear_session()
    detector = kzoo.create_model("rfcn_resnet101_coco", weights=str(h5), input_shape=(*rfcn.size, 3),
                                 pipeline_config=rfcn.config)
    _assert_same_end_to_end(detector(rfcn.pixels), detections, out["class_logits"], class_logits,
                            out["refined_box_encodings"], refined)
    # The bins matter: a plain (not position-sensitive) average of the same maps gives other heads.
    from kzoo.detection.crops import crop_and_resize

    plain = np.asarray(crop_and_resize(rfcn.class_maps[..., :91], proposals.reshape(-1, 4),
                                       np.repeat(np.arange(2), proposals.shape[1]), (18, 18))).mean(axis=(1, 2))
    assert np.abs(plain.reshape(class_logits.shape) - class_logits).max() > 100 * RTOL * np.abs(class_logits).max()


# ------------------------------------------------------------------------------------------------
# kzoo bench: the detection workload
# ------------------------------------------------------------------------------------------------


def test_bench_detection_workload(capsys):
    """A detector is timed whole and without its post-processing, interleaved; the table has the ratio and the
    post-processing share; a detector mixed with a classifier is refused."""
    from kzoo.bench import cli_main

    code = cli_main(["ssd_inception_v2_coco", "-b", "1", "--image-size", "96", "--repeats", "2", "--min-time",
                     "0.05", "--warmup", "1", "-q"])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = [line.split() for line in out.splitlines() if line.startswith("ssd_inception_v2_coco  ")]
    assert [row[1] for row in rows] == ["detector", "detector-heads"] and "error:" not in out
    assert "x detector-heads" in out and "x detector-heads" not in out.split("\n")[0]
    share = next(line for line in out.splitlines() if "post-processing" in line)
    assert share.startswith("ssd_inception_v2_coco batch 1: post-processing ")
    assert cli_main(["ssd_inception_v2_coco", "resnet50", "-q"]) == 2
    assert "measured on their own" in capsys.readouterr().err


@pytest.mark.parametrize("height, y1", [(4, 0.030227018520236015), (5, 0.08167774230241776), (38, 0.005767994560301304)])
def test_crop_at_the_maps_edge_is_tensorflows(height, y1):
    """Boxes reaching the image's edge (every clipped proposal does): the last sample row lies at H - 1 up to
    rounding, and one ulp beyond extrapolates to 0. These y1 round differently in the two orders of
    y1 (H - 1) + i ((y2 - y1)(H - 1) / (n - 1)) [TensorFlow's] and y1 (H - 1) + i (y2 - y1)(H - 1) / (n - 1)."""
    from kzoo.detection.crops import crop_and_resize

    features = np.random.default_rng(0).uniform(1, 2, (1, height, 6, 3)).astype(np.float32)
    boxes = np.array([[y1, 0.0, 1.0, 1.0]], np.float32)
    expected = tf.image.crop_and_resize(features, boxes, [0], (14, 14)).numpy()
    actual = np.asarray(crop_and_resize(features, boxes, np.array([0]), (14, 14)))
    np.testing.assert_allclose(actual, expected, rtol=1e-6)
    ext = np.float32(height - 1)
    other_order = np.float32(y1) * ext + np.float32(13) * (np.float32(1) - np.float32(y1)) * ext / np.float32(13)
    tf_order = np.float32(y1) * ext + np.float32(13) * ((np.float32(1) - np.float32(y1)) * ext / np.float32(13))
    assert (other_order > ext) != (tf_order > ext)  # the other order would put the last row on the other side


# ------------------------------------------------------------------------------------------------
# Fine-tuning (step 4, seed 003's recipe): num_classes, and a training run of the box classifier
# ------------------------------------------------------------------------------------------------


def _keras_name(variable, arch):
    """The test's own naming: a checkpoint variable -> the detector's ``layer/weight``
    (``FirstStageFeatureExtractor/resnet_v1_50/block1/unit_1/bottleneck_v1/conv1/BatchNorm/gamma`` ->
    ``block1_unit1_bottleneck_v1_conv1_bn/gamma``, ``SecondStageBoxPredictor/ClassPredictor/weights`` ->
    ``SecondStageBoxPredictor_ClassPredictor/kernel``)."""
    import re

    scope, leaf = variable.rsplit("/", 1)
    for stage in ("FirstStageFeatureExtractor", "SecondStageFeatureExtractor"):
        scope = scope.replace(f"{stage}/{arch}/", "")
    scope = re.sub(r"/BatchNorm$", "_bn", re.sub(r"unit_(\d+)", r"unit\1", scope))
    return scope.replace("/", "_") + "/" + {"weights": "kernel", "biases": "bias"}.get(leaf, leaf)


@pytest.mark.parametrize("kind", ["frcnn", "rfcn"])
def test_new_class_count_keeps_all_but_the_class_dependent_heads(kind, request):
    """num_classes=2: exactly the checkpoint's class-dependent tensors (those whose last dimension counts the 90
    classes: 91 logits, 90 x 4 codes, R-FCN's 9 bins of each) are re-initialised; every other tensor the detector
    reads (all but the unused first-stage block4) is kept, equal to the checkpoint's value."""
    case, h5 = (request.getfixturevalue(f"{kind}{suffix}") for suffix in ("", "_h5"))
    arch = f"resnet_v1_{case.depth}"
    reader = tf.train.load_checkpoint(str(case.root / "ckpt" / "model.ckpt"))
    shapes = reader.get_variable_to_shape_map()
    bins = 9 if case.rfcn else 1
    class_dependent = {v for v, shape in shapes.items() if shape and shape[-1] in (91 * bins, 90 * 4 * bins)}
    heads = ("class_predictions", "refined_locations") if case.rfcn else ("ClassPredictor", "BoxEncodingPredictor")
    assert class_dependent == {f"SecondStageBoxPredictor/{head}/{leaf}" for head in heads
                               for leaf in ("weights", "biases")}
    unread = {v for v in shapes if v.startswith(f"FirstStageFeatureExtractor/{arch}/block4/")}
    assert set(shapes) == case.variables

    detector = kzoo.create_model("rfcn_resnet101_coco" if case.rfcn else "faster_rcnn_resnet50_coco",
                                 weights=str(h5), input_shape=(*case.size, 3), pipeline_config=case.config,
                                 postprocess=False, num_classes=2)
    report = detector.weights_report
    assert len(report["kept"]) == len(set(report["kept"])) and len(report["kept"]) + len(
        report["reinitialised"]) == len(detector.weights)
    assert set(report["reinitialised"]) == {_keras_name(v, arch) for v in class_dependent}
    assert set(report["kept"]) == {_keras_name(v, arch) for v in case.variables - class_dependent - unread}
    values = {f"{layer.name}/{w.name}": w for layer in detector.layers for w in layer.weights}
    for variable in case.variables - class_dependent - unread:
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(values[_keras_name(variable, arch)]),
                                      reader.get_tensor(variable), err_msg=variable)
    for variable in class_dependent:  # new shapes: 2 classes (+ background), 2 x 4 codes
        assert values[_keras_name(variable, arch)].shape[-1] in (3 * bins, 2 * 4 * bins)
    if not case.rfcn:
        out = detector(case.pixels)
        base._assert_close(out["rpn_box_encodings"], case.rpn_codes, "RPN box encodings (2 classes)")
        assert tuple(out["class_logits"].shape[2:]) == (3,) and tuple(out["refined_box_encodings"].shape[2:]) == (2, 4)


def squares(rng, count, shape, sides, colours):
    """``count`` noise images of ``shape`` (height, width), each with one square-ish box of a side in ``sides``
    (a fraction of each dimension) filled with a colour from ``colours`` taken in turn; and the boxes, normalised."""
    height, width = shape
    images, boxes = [], []
    for i in range(count):
        image = rng.uniform(90, 160, (height, width, 3))
        side = rng.uniform(*sides)
        y, x = rng.uniform(0, 1 - side, 2)
        box = np.array([y, x, y + side, x + side])
        y0, x0, y1, x1 = (box * [height, width, height, width]).round().astype(int)
        image[y0:y1, x0:x1] = colours[i % len(colours)]
        images.append(image.astype("float32"))
        boxes.append(box)
    return np.stack(images), np.stack(boxes)


def test_fine_tune_box_classifier_to_two_classes(frcnn, frcnn_h5):
    """Seed 003's recipe in miniature: the detector rebuilt for 2 classes (a red square, a blue square), the
    backbone, RPN and block4 frozen, the new box classifier trained on two images whose squares differ in colour
    (and place). Its proposals: the RPN's own plus the square and jittered copies of it (the API's second-stage
    targets: IoU >= 0.5 takes the square's class and code). The loss must fall to under a tenth, and the whole
    detector's top detection on each training image must be its square's class -- a head blind to the colour
    would give both images the same class -- with IoU >= 0.5 to the square (the RPN proposal refined by the
    trained per-class box layer)."""
    from kzoo.detection import two_stage
    from kzoo.detection.training import box_classifier_inputs, box_classifier_loss, iou, proposal_targets

    keras.utils.set_random_seed(0)
    height, width = frcnn.size
    detector = _detector(frcnn, frcnn_h5, postprocess=False, num_classes=2)
    rng = np.random.default_rng(3)
    images, boxes = squares(rng, 2, (height, width), (0.45, 0.55), [(230, 30, 30), (30, 30, 230)])  # classes 1, 2
    raw = detector(images)
    first_stage, pooled = box_classifier_inputs(detector)
    block3 = first_stage(images)
    training_proposals, targets = [], []
    for i, box in enumerate(boxes):
        jitter = box + rng.normal(0, 0.04, (5, 4))
        rpn = np.asarray(raw["proposals"][i, :int(raw["num_proposals"][i])])
        training_proposals.append(np.concatenate([rpn, box[None], jitter])[:16].astype("float32"))
        targets.append(proposal_targets(training_proposals[-1], box[None], [i + 1], 2))
    class_t, box_t, labels = (np.concatenate(t) for t in zip(*targets))
    assert (labels == 1).sum() >= 3 and (labels == 2).sum() >= 3 and (labels == 0).sum() >= 6
    features = pooled([block3, tf.constant(np.stack(training_proposals))])  # frozen: computed once
    class_layer, box_layer = (detector.get_layer(f"SecondStageBoxPredictor_{head}")
                              for head in ("ClassPredictor", "BoxEncodingPredictor"))
    # The box layer starts at zero codes (Detectron initialises its box regressor with std 0.001): untrained, the
    # boxes are the proposals; Keras' default would start it at codes of ~100 on these features.
    box_layer.set_weights([np.zeros_like(w) for w in box_layer.get_weights()])
    # The random replica's pooled features are far larger than a trained net's (~1): the steps are scaled to them,
    # the box layer's (whose smooth L1 gradient does not shrink near its target as fast) ten times smaller.
    scale = float(np.abs(np.asarray(features)).mean())
    optimizers = ((keras.optimizers.Adam(3e-2 / scale), class_layer.trainable_weights),
                  (keras.optimizers.Adam(3e-3 / scale), box_layer.trainable_weights))

    def step():
        with tf.GradientTape() as tape:
            refined = tf.reshape(box_layer(features), (-1, 2, 4))
            loss = box_classifier_loss(class_t, box_t, labels, class_layer(features), refined)
        grads = tape.gradient(loss, [w for _, weights in optimizers for w in weights])
        for optimizer, weights in optimizers:
            optimizer.apply_gradients(zip(grads[:len(weights)], weights))
            grads = grads[len(weights):]
        return float(loss)

    losses = [step() for _ in range(150)]
    print(f"features ~{scale:.1f}; loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    assert losses[-1] < losses[0] / 10

    out = detector(images)  # the trained head, through the detector
    detections = two_stage.second_stage_detections(
        out["refined_box_encodings"], out["class_logits"], out["proposals"], out["num_proposals"],
        frcnn.size, detector.detection_settings)
    for i, box in enumerate(boxes):
        top_class = int(detections["detection_classes"][i, 0])
        top_box = np.asarray(detections["detection_boxes"][i, 0])
        print(f"image {i}: top class {top_class} score {float(detections['detection_scores'][i, 0]):.3f} "
              f"IoU {iou(top_box[None], box[None])[0, 0]:.2f} (best proposal: "
              f"{iou(np.asarray(out['proposals'][i, :int(out['num_proposals'][i])]), box[None]).max():.2f})")
        # better than any proposal: the trained per-class box layer refined it
        best_proposal = iou(np.asarray(out["proposals"][i, :int(out["num_proposals"][i])]), box[None]).max()
        assert top_class == i + 1 and iou(top_box[None], box[None])[0, 0] >= max(0.5, best_proposal + 0.05)
