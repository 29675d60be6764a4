"""Object detection on kzoo backbones: the TF Object Detection API detectors that TI-ONE ships
(``ssd_inception_v2_coco``, ``faster_rcnn_resnet50_coco``, ``rfcn_resnet101_coco``) and the
``faster_rcnn_resnet101_coco_11_06_2017`` archive of the UAI-Train fine-tuning recipe.

- SSD InceptionV2, whole: ``kzoo.create_model("ssd_inception_v2_coco", weights="coco")``
  (``kzoo.architectures.detection_ssd``; anchors, decoding, NMS in :mod:`.ssd`; ``pipeline.config`` read by
  :mod:`.pipeline_config`; fine-tuning targets and loss in :mod:`.training`).
- Backbones with ``weights="coco"``: ``create_model("ssd_inception_v2")`` (the six SSD feature maps) and
  :func:`resnet_v1_stages` (Faster R-CNN / R-FCN's first and second stage).
- Faster R-CNN ResNet-50 and R-FCN ResNet-101, whole: ``kzoo.create_model("faster_rcnn_resnet50_coco",
  weights="coco")``, ``create_model("rfcn_resnet101_coco", weights="coco")``
  (``kzoo.architectures.detection_faster_rcnn``; grid anchors, proposals, second-stage decoding and NMS in
  :mod:`.two_stage`). ``num_classes=`` on all three detectors re-initialises only the class-dependent heads and
  reports it (``model.weights_report``); fine-tuning pieces in :mod:`.training` (RPN and second-stage targets and
  losses, the frozen parts of a detector as models) and :mod:`.sampler` (the API's balanced minibatch sampler).
- Second-stage crops (:mod:`.crops`): ``crop_and_resize`` and R-FCN's position-sensitive crop.
- Faster R-CNN ResNet-101 from ``faster_rcnn_resnet101_coco_11_06_2017`` (seed of the UAI-Train recipe):
  ``create_model("faster_rcnn_resnet101_coco", weights="coco")``; with the recipe's pets config
  (``pipeline_config=``) it is the 37-class detector the recipe fine-tunes.
- :func:`detect`: images of any size resized as the config says (:mod:`.resize`, the API's
  ``keep_aspect_ratio_resizer`` / ``fixed_shape_resizer``), boxes back in the original pixels.
- :func:`coco_labels`: the 91-slot COCO label map.
"""

from kzoo.detection.backbones import coco_labels, resnet_v1_stages
from kzoo.detection.resize import detect, keep_aspect_ratio_size, resize_for

__all__ = ["coco_labels", "detect", "keep_aspect_ratio_size", "resize_for", "resnet_v1_stages"]
