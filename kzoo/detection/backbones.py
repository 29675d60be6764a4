"""The two stages of a Faster R-CNN / R-FCN ResNet v1 backbone, as the Object Detection API runs them
(tensorflow/models research/object_detection ``models/faster_rcnn_resnet_v1_feature_extractor.py``):

- first stage: slim ``resnet_v1`` from ``conv1`` to ``block3`` at ``output_stride`` 16 (the last unit of
  block3 keeps stride 1) or 8 (block2's last unit too; block3 dilated x2) -- the RPN's feature map;
- second stage: ``block4`` (three stride-1 units, no dilation) on the box classifier's crops
  (Faster R-CNN: 14x14 crops max-pooled to 7x7) or on the whole block3 map (R-FCN).

Both are cut from one ``kzoo.create_model("resnet_v1_<depth>", include_top=False, ...)`` so they load the
same weights: ``weights="coco"`` converts the registered archive (``kzoo.convert.od_resnet_v1``).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

BLOCK3_CHANNELS = 1024


def resnet_v1_stages(depth: int = 50, weights="coco", output_stride: int = 16, input_shape=(None, None, 3)):
    """``(first_stage, second_stage)`` Keras models of the slim ResNet v1 ``depth`` backbone.

    ``first_stage``: image (RGB minus the means, ``kzoo.resnet_v1.preprocess_input``) -> block3 features at
    ``output_stride``. ``second_stage``: block3 features or crops of them ``(n, h, w, 1024)`` -> block4
    ``(n, h, w, 2048)``. ``weights``: ``"coco"`` (the registry's archive for this depth), a tag, a path
    to a converted h5, or None.
    """
    import keras

    from kzoo import index
    from kzoo.architectures import resnet_v1
    from kzoo.models import create_model

    name = f"resnet_v1_{depth}"
    stages = index.get(name).stages
    backbone = create_model(name, weights=weights, include_top=False, input_shape=input_shape,
                            output_stride=output_stride)
    first = keras.Model(backbone.inputs, backbone.get_layer(f"block3_unit{stages[2]}_out").output,
                        name=f"{name}_first_stage")
    crops = keras.Input((None, None, BLOCK3_CHANNELS), name="block3_crops")
    block4 = resnet_v1.resnet_v1_blocks(crops, resnet_v1.unit_plan(stages[3:], first_block=4))
    second = keras.Model(crops, block4, name=f"{name}_second_stage")
    for layer in second.layers:
        if layer.weights:
            layer.set_weights(backbone.get_layer(layer.name).get_weights())
    return first, second


@lru_cache(maxsize=None)
def coco_labels() -> dict:
    """``{class slot: name}`` of the COCO detectors' 91-slot heads (slot 0 is the background; 80 of the 90 ids
    are used). Source: tensorflow/models research/object_detection/data/mscoco_label_map.pbtxt."""
    path = Path(__file__).resolve().parent.parent / "data" / "coco_label_map.json"
    return {int(k): v for k, v in json.loads(path.read_text(encoding="utf-8"))["labels"].items()}
