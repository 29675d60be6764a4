"""Faster R-CNN's post-processing as the Object Detection API (2018) runs it at inference, in TensorFlow ops
(Keras has no non-max suppression). Sources: tensorflow/models research/object_detection
``meta_architectures/faster_rcnn_meta_arch.py`` (``_postprocess_rpn``, ``_postprocess_box_classifier``),
``anchor_generators/grid_anchor_generator.py``, ``box_coders/faster_rcnn_box_coder.py``,
``core/post_processing.py`` (``multiclass_non_max_suppression``), ``core/box_list_ops.py`` (``clip_to_window``).

- First stage: grid anchors in pixels on the block3 map (row, column, then aspect ratio x scale with the scale
  fastest), clipped to the image; the RPN codes decoded against them (Faster R-CNN box coder, scales 10, 10, 5, 5,
  which the meta-architecture fixes); softmax objectness; boxes clipped to the image, zero-area ones dropped;
  NMS to ``first_stage_max_proposals``; proposals normalised by the image size and padded with zeros.
- Second stage: per-class codes decoded against the proposals, the score converter (softmax), background
  dropped, boxes clipped to the image, per-class NMS and the best ``max_total_detections``, COCO ids 1-based.

Boxes are ``[ymin, xmin, ymax, xmax]``; the outputs are normalised to the input image.
"""

from __future__ import annotations

from kzoo.errors import ConversionError

BOX_CODER_SCALES = (10.0, 10.0, 5.0, 5.0)  # FasterRcnnBoxCoder() as the meta-architecture builds it


def faster_rcnn_settings(config, source: str = "pipeline.config") -> dict:
    """The values a Faster R-CNN or R-FCN detector needs, from a parsed ``pipeline.config``."""
    frcnn = config.get("model.faster_rcnn")
    if frcnn is None:
        raise ConversionError(f"{source}: no 'model {{ faster_rcnn {{ ... }} }}' block: not a Faster R-CNN / R-FCN "
                              "pipeline.config.")
    anchors = frcnn.get("first_stage_anchor_generator.grid_anchor_generator")
    nms = frcnn.get("second_stage_post_processing.batch_non_max_suppression")
    missing = [name for name, value in (("first_stage_anchor_generator.grid_anchor_generator", anchors),
                                        ("second_stage_post_processing.batch_non_max_suppression", nms)) if value is None]
    if missing:
        raise ConversionError(f"{source}: model.faster_rcnn lacks {missing}; kzoo reads Faster R-CNN configs with "
                              "these blocks (as faster_rcnn_resnet50_coco's).")
    rfcn = frcnn.get("second_stage_box_predictor.rfcn_box_predictor")
    resizer = frcnn.get("image_resizer.keep_aspect_ratio_resizer")
    if resizer is None:
        raise ConversionError(f"{source}: model.faster_rcnn.image_resizer is not a keep_aspect_ratio_resizer, the "
                              "one the Faster R-CNN and R-FCN configs use; kzoo reads no other.")
    settings = {
        "num_classes": int(frcnn.get("num_classes")),
        "image_resizer": {"min_dimension": int(resizer.get("min_dimension", 600)),
                          "max_dimension": int(resizer.get("max_dimension", 1024))},
        "first_stage_features_stride": int(frcnn.get("feature_extractor.first_stage_features_stride", 16)),
        "anchors": {
            "scales": [float(s) for s in anchors.all("scales")] or [0.5, 1.0, 2.0],
            "aspect_ratios": [float(r) for r in anchors.all("aspect_ratios")] or [0.5, 1.0, 2.0],
            "base_anchor_size": [float(anchors.get("height", 256)), float(anchors.get("width", 256))],
            "stride": [float(anchors.get("height_stride", 16)), float(anchors.get("width_stride", 16))],
            "offset": [float(anchors.get("height_offset", 0)), float(anchors.get("width_offset", 0))],
        },
        "first_stage_nms": {"score_threshold": float(frcnn.get("first_stage_nms_score_threshold", 0.0)),
                            "iou_threshold": float(frcnn.get("first_stage_nms_iou_threshold", 0.7)),
                            "max_proposals": int(frcnn.get("first_stage_max_proposals", 300))},
        "initial_crop_size": int(frcnn.get("initial_crop_size", 14)),
        "maxpool_kernel_size": int(frcnn.get("maxpool_kernel_size", 2)),
        "maxpool_stride": int(frcnn.get("maxpool_stride", 2)),
        "score_converter": frcnn.get("second_stage_post_processing.score_converter", "IDENTITY"),
        "nms": {"score_threshold": float(nms.get("score_threshold", 0.0)),
                "iou_threshold": float(nms.get("iou_threshold", 0.6)),
                "max_detections_per_class": int(nms.get("max_detections_per_class", 100)),
                "max_total_detections": int(nms.get("max_total_detections", 100))},
    }
    if rfcn is not None:
        settings["rfcn"] = {"crop_size": [int(rfcn.get("crop_height", 12)), int(rfcn.get("crop_width", 12))],
                            "spatial_bins": [int(rfcn.get("num_spatial_bins_height", 3)),
                                             int(rfcn.get("num_spatial_bins_width", 3))],
                            "depth": int(rfcn.get("depth", 1024))}
    return settings


def anchors_per_cell(settings: dict) -> int:
    a = settings["anchors"]
    return len(a["scales"]) * len(a["aspect_ratios"])


def grid_anchors(rows, cols, settings: dict):
    """``(rows * cols * anchors_per_cell, 4)`` anchors in pixels (``GridAnchorGenerator``)."""
    import tensorflow as tf

    a = settings["anchors"]
    scales = tf.constant([s for _ in a["aspect_ratios"] for s in a["scales"]], tf.float32)
    ratio_sqrts = tf.sqrt(tf.constant([r for r in a["aspect_ratios"] for _ in a["scales"]], tf.float32))
    heights = scales / ratio_sqrts * a["base_anchor_size"][0]
    widths = scales * ratio_sqrts * a["base_anchor_size"][1]
    y = tf.cast(tf.range(rows), tf.float32) * a["stride"][0] + a["offset"][0]
    x = tf.cast(tf.range(cols), tf.float32) * a["stride"][1] + a["offset"][1]
    yc, xc = y[:, None, None], x[None, :, None]
    h, w = heights[None, None, :], widths[None, None, :]
    zeros = tf.zeros((rows, cols, heights.shape[0]), tf.float32)
    boxes = tf.stack([yc - h / 2 + zeros, xc - w / 2 + zeros, yc + h / 2 + zeros, xc + w / 2 + zeros], axis=-1)
    return tf.reshape(boxes, (-1, 4))


def decode(codes, anchors):
    """Faster R-CNN box coder; ``codes (..., 4)`` against ``anchors`` broadcastable to them."""
    import tensorflow as tf

    sy, sx, sh, sw = BOX_CODER_SCALES
    ha, wa = anchors[..., 2] - anchors[..., 0], anchors[..., 3] - anchors[..., 1]
    yca, xca = anchors[..., 0] + ha / 2, anchors[..., 1] + wa / 2
    h, w = tf.exp(codes[..., 2] / sh) * ha, tf.exp(codes[..., 3] / sw) * wa
    yc, xc = codes[..., 0] / sy * ha + yca, codes[..., 1] / sx * wa + xca
    return tf.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], axis=-1)


def clip_to_image(boxes, height, width):
    """``clip_to_window`` on ``[0, 0, height, width]``; also whether each clipped box keeps a non-zero area
    (the API drops the others)."""
    import tensorflow as tf

    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    clipped = tf.stack([tf.clip_by_value(ymin, 0.0, height), tf.clip_by_value(xmin, 0.0, width),
                        tf.clip_by_value(ymax, 0.0, height), tf.clip_by_value(xmax, 0.0, width)], axis=-1)
    area = (clipped[..., 2] - clipped[..., 0]) * (clipped[..., 3] - clipped[..., 1])
    return clipped, area > 0


def rpn_proposals(box_encodings, objectness_logits, feature_shape, image_shape, settings: dict):
    """First-stage proposals: ``box_encodings (N, A, 4)``, ``objectness_logits (N, A, 2)`` on a block3 map of
    ``feature_shape (rows, cols)`` for images ``image_shape (height, width)`` -> ``proposals (N, P, 4)``
    normalised, zero-padded, and ``num_proposals (N,)``; P = ``first_stage_max_proposals``."""
    import tensorflow as tf

    nms = settings["first_stage_nms"]
    height, width = tf.cast(image_shape[0], tf.float32), tf.cast(image_shape[1], tf.float32)
    anchors, _ = clip_to_image(grid_anchors(feature_shape[0], feature_shape[1], settings), height, width)
    boxes, valid = clip_to_image(decode(box_encodings, anchors[None]), height, width)
    scores = tf.nn.softmax(objectness_logits, axis=-1)[..., 1]
    # Boxes the API drops (zero area after clipping, score not above the threshold) never reach NMS.
    scores = tf.where(valid & (scores > nms["score_threshold"]), scores, -1.0)
    max_proposals = nms["max_proposals"]

    def one_image(args):
        image_boxes, image_scores = args
        selected = tf.image.non_max_suppression(image_boxes, image_scores, max_proposals,
                                                iou_threshold=nms["iou_threshold"], score_threshold=-0.5)
        count = tf.shape(selected)[0]
        return tf.pad(tf.gather(image_boxes, selected), [[0, max_proposals - count], [0, 0]]), count

    proposals, counts = tf.map_fn(one_image, (boxes, scores), fn_output_signature=(tf.float32, tf.int32))
    return proposals / tf.stack([height, width, height, width]), counts


def second_stage_detections(refined_encodings, class_logits, proposals, num_proposals, image_shape, settings):
    """``refined_encodings (N, P, C, 4)`` and ``class_logits (N, P, C + 1)`` of the normalised ``proposals
    (N, P, 4)`` -> ``detection_boxes (N, K, 4)`` (normalised), ``detection_scores``, ``detection_classes`` (1-based
    ids), ``num_detections``; K = ``max_total_detections``."""
    import tensorflow as tf

    from kzoo.detection.ssd import convert_scores

    nms = settings["nms"]
    height, width = tf.cast(image_shape[0], tf.float32), tf.cast(image_shape[1], tf.float32)
    scale = tf.stack([height, width, height, width])
    boxes = decode(refined_encodings, (proposals * scale)[:, :, None, :])
    boxes, valid = clip_to_image(boxes, height, width)
    scores = convert_scores(class_logits, settings["score_converter"])[..., 1:]
    real = tf.range(tf.shape(proposals)[1])[None, :] < num_proposals[:, None]  # padding never competes
    scores = tf.where(valid & real[:, :, None] & (scores > nms["score_threshold"]), scores, -1.0)
    result = tf.image.combined_non_max_suppression(
        boxes / scale, scores, max_output_size_per_class=nms["max_detections_per_class"],
        max_total_size=nms["max_total_detections"], iou_threshold=nms["iou_threshold"], score_threshold=-0.5,
        pad_per_class=False, clip_boxes=False)
    return {"detection_boxes": result.nmsed_boxes, "detection_scores": result.nmsed_scores,
            "detection_classes": tf.cast(result.nmsed_classes, tf.int32) + 1,
            "num_detections": result.valid_detections}
