"""SSD as the Object Detection API (2018) runs it: convolutional box predictor heads on the feature maps,
grid anchors (``ssd_anchor_generator``), the Faster R-CNN box coder, a sigmoid score converter and per-class
non-max suppression. Sources: tensorflow/models research/object_detection ``meta_architectures/
ssd_meta_arch.py``, ``anchor_generators/multiple_grid_anchor_generator.py`` (``create_ssd_anchors``),
``anchor_generators/grid_anchor_generator.py`` (``tile_anchors``), ``box_coders/faster_rcnn_box_coder.py``,
``core/post_processing.py``, ``core/box_predictor.py`` (``ConvolutionalBoxPredictor``).

The settings come from the archive's ``pipeline.config`` (:func:`ssd_settings`); boxes are normalised
``[ymin, xmin, ymax, xmax]``; classes are COCO ids (slot index, background 0 removed before NMS).
"""

from __future__ import annotations

import numpy as np

from kzoo.errors import ConversionError

BOX_CODE_SIZE = 4


def ssd_settings(config, source: str = "pipeline.config") -> dict:
    """The values an SSD detector needs, from a parsed ``pipeline.config`` (:mod:`.pipeline_config`)."""
    ssd = config.get("model.ssd")
    if ssd is None:
        raise ConversionError(f"{source}: no 'model {{ ssd {{ ... }} }}' block: not an SSD pipeline.config.")
    anchors = ssd.get("anchor_generator.ssd_anchor_generator")
    coder = ssd.get("box_coder.faster_rcnn_box_coder")
    nms = ssd.get("post_processing.batch_non_max_suppression")
    resizer = ssd.get("image_resizer.fixed_shape_resizer")
    missing = [name for name, value in (("anchor_generator.ssd_anchor_generator", anchors),
                                        ("box_coder.faster_rcnn_box_coder", coder),
                                        ("post_processing.batch_non_max_suppression", nms),
                                        ("image_resizer.fixed_shape_resizer", resizer)) if value is None]
    if missing:
        raise ConversionError(f"{source}: model.ssd lacks {missing}; kzoo reads SSD configs with these blocks "
                              f"(as ssd_inception_v2_coco's).")
    converter = ssd.get("post_processing.score_converter", "IDENTITY")
    return {
        "num_classes": int(ssd.get("num_classes")),
        "image_size": [int(resizer.get("height")), int(resizer.get("width"))],
        "anchors": {
            "num_layers": int(anchors.get("num_layers", 6)),
            "min_scale": float(anchors.get("min_scale", 0.2)),
            "max_scale": float(anchors.get("max_scale", 0.95)),
            "aspect_ratios": [float(r) for r in anchors.all("aspect_ratios")] or [1.0, 2.0, 0.5, 3.0, 0.3333],
            "reduce_boxes_in_lowest_layer": bool(anchors.get("reduce_boxes_in_lowest_layer", True)),
            "interpolated_scale_aspect_ratio": float(anchors.get("interpolated_scale_aspect_ratio", 1.0)),
            "base_anchor_size": [float(anchors.get("base_anchor_height", 1.0)),
                                 float(anchors.get("base_anchor_width", 1.0))],
        },
        "box_coder_scales": [float(coder.get(k, d)) for k, d in (("y_scale", 10.0), ("x_scale", 10.0),
                                                                   ("height_scale", 5.0), ("width_scale", 5.0))],
        "score_converter": converter,
        "nms": {"score_threshold": float(nms.get("score_threshold", 0.0)),
                "iou_threshold": float(nms.get("iou_threshold", 0.6)),
                "max_detections_per_class": int(nms.get("max_detections_per_class", 100)),
                "max_total_detections": int(nms.get("max_total_detections", 100))},
    }


def anchor_box_specs(settings: dict) -> list:
    """``[[(scale, aspect ratio), ...] per feature map]``, as ``create_ssd_anchors`` lays them out."""
    a = settings["anchors"]
    n = a["num_layers"]
    scales = [a["min_scale"] + (a["max_scale"] - a["min_scale"]) * i / (n - 1) for i in range(n)] + [1.0]
    specs = []
    for layer in range(n):
        scale, next_scale = scales[layer], scales[layer + 1]
        if layer == 0 and a["reduce_boxes_in_lowest_layer"]:
            specs.append([(0.1, 1.0), (scale, 2.0), (scale, 0.5)])
            continue
        layer_specs = [(scale, ratio) for ratio in a["aspect_ratios"]]
        if a["interpolated_scale_aspect_ratio"] > 0:
            layer_specs.append((np.sqrt(scale * next_scale), a["interpolated_scale_aspect_ratio"]))
        specs.append(layer_specs)
    return specs


def ssd_anchors(feature_map_sizes, settings: dict, image_size=None) -> np.ndarray:
    """``(num_anchors, 4)`` normalised ``[ymin, xmin, ymax, xmax]``, ordered feature map, row, column, box: the
    order of the heads' reshaped outputs. Each map's stride and offset are 1 / size and half that."""
    height, width = image_size or settings["image_size"]
    shorter = min(height, width)
    base_h, base_w = settings["anchors"]["base_anchor_size"]
    base_h, base_w = base_h * shorter / height, base_w * shorter / width
    boxes = []
    for (rows, cols), specs in zip(feature_map_sizes, anchor_box_specs(settings)):
        scales, ratios = np.array(specs, dtype=np.float64).T
        heights = scales / np.sqrt(ratios) * base_h
        widths = scales * np.sqrt(ratios) * base_w
        y = (np.arange(rows) + 0.5) / rows
        x = (np.arange(cols) + 0.5) / cols
        yc, xc, h = np.meshgrid(y, x, heights, indexing="ij")
        _, _, w = np.meshgrid(y, x, widths, indexing="ij")
        boxes.append(np.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], axis=-1).reshape(-1, 4))
    return np.concatenate(boxes).astype(np.float32)


def decode_boxes(codes, anchors, scales):
    """Faster R-CNN box coder: ``codes`` ``(..., A, 4)`` as ``[ty, tx, th, tw]`` scaled by ``scales``."""
    from keras import ops

    anchors = ops.convert_to_tensor(anchors, dtype=codes.dtype)
    ha, wa = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    yca, xca = anchors[:, 0] + ha / 2, anchors[:, 1] + wa / 2
    ty, tx, th, tw = (codes[..., i] / scales[i] for i in range(4))
    h, w = ops.exp(th) * ha, ops.exp(tw) * wa
    yc, xc = ty * ha + yca, tx * wa + xca
    return ops.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], axis=-1)


def convert_scores(logits, converter: str):
    from keras import ops

    if converter == "SIGMOID":
        return ops.sigmoid(logits)
    if converter == "SOFTMAX":
        return ops.softmax(logits, axis=-1)
    if converter == "IDENTITY":
        return logits
    raise ConversionError(f"pipeline.config: score_converter {converter!r} is not one kzoo knows "
                          "(SIGMOID, SOFTMAX, IDENTITY).")


def postprocess(box_encodings, class_logits, anchors, settings: dict) -> dict:
    """Decoded, scored, per-class NMS'd detections of a batch: ``detection_boxes (N, K, 4)``,
    ``detection_scores (N, K)``, ``detection_classes (N, K)`` (COCO ids: slot index, 1-based),
    ``num_detections (N,)``; K = ``max_total_detections``, padded with zeros.

    Non-max suppression is TensorFlow's ``tf.image.combined_non_max_suppression`` (per class, then the best
    ``max_total_detections`` over classes), the op the Object Detection API itself later switched to; Keras
    has no NMS op. It needs TensorFlow (which the conversion needs anyway).
    """
    import tensorflow as tf

    nms = settings["nms"]
    boxes = decode_boxes(box_encodings, anchors, settings["box_coder_scales"])
    scores = convert_scores(class_logits, settings["score_converter"])[..., 1:]  # drop the background slot
    result = tf.image.combined_non_max_suppression(
        boxes[:, :, None, :], scores, max_output_size_per_class=nms["max_detections_per_class"],
        max_total_size=nms["max_total_detections"], iou_threshold=nms["iou_threshold"],
        score_threshold=nms["score_threshold"], pad_per_class=False, clip_boxes=False)
    return {"detection_boxes": result.nmsed_boxes, "detection_scores": result.nmsed_scores,
            "detection_classes": tf.cast(result.nmsed_classes, tf.int32) + 1,
            "num_detections": result.valid_detections}


def box_predictor(feature_maps, num_classes: int, specs):
    """``ConvolutionalBoxPredictor`` (kernel 3, no layers before the predictor): per map a linear 3x3 conv to
    ``boxes x 4`` codes and one to ``boxes x (num_classes + 1)`` logits, reshaped and concatenated to
    ``box_encodings (N, A, 4)`` and ``class_logits (N, A, num_classes + 1)``. Layer names follow the scopes
    ``BoxPredictor_<i>/{BoxEncodingPredictor, ClassPredictor}``."""
    from keras import layers

    codes, logits = [], []
    for i, (feature_map, boxes) in enumerate(zip(feature_maps, (len(s) for s in specs))):
        box = layers.Conv2D(boxes * BOX_CODE_SIZE, 3, padding="same", name=f"BoxPredictor_{i}_BoxEncodingPredictor")
        cls = layers.Conv2D(boxes * (num_classes + 1), 3, padding="same", name=f"BoxPredictor_{i}_ClassPredictor")
        codes.append(layers.Reshape((-1, BOX_CODE_SIZE), name=f"BoxPredictor_{i}_box_encodings")(box(feature_map)))
        logits.append(layers.Reshape((-1, num_classes + 1), name=f"BoxPredictor_{i}_class_logits")(cls(feature_map)))
    box_encodings = layers.Concatenate(axis=1, name="box_encodings")(codes)
    class_logits = layers.Concatenate(axis=1, name="class_logits")(logits)
    return box_encodings, class_logits
