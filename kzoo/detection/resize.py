"""The Object Detection API's image resizers, so a caller feeds a detector what the API fed it.

- ``keep_aspect_ratio_resizer`` (Faster R-CNN, R-FCN; tensorflow/models research/object_detection
  ``core/preprocessor.py`` ``resize_to_range`` with its dynamic size): scale so the shorter side is
  ``min_dimension``; if the longer side then exceeds ``max_dimension``, scale so the longer side is
  ``max_dimension`` instead. The arithmetic is float32 and rounds half to even (``tf.round``), as the exported
  graphs compute it.
- ``fixed_shape_resizer`` (SSD): straight to ``height x width``.

Both resize with TF1's bilinear (``tf.compat.v1.image.resize_bilinear``, ``align_corners=False`` and no half-pixel
centres), which is what the API's ``tf.image.resize_images`` did in 2017-2018; TF2's ``tf.image.resize`` samples
half a pixel apart and gives other pixels. Detections are normalised to the resized image, which spans the whole
original, so they map onto the original by its own height and width (:func:`detect`).
"""

from __future__ import annotations

import numpy as np


def keep_aspect_ratio_size(height: int, width: int, min_dimension: int = 600, max_dimension: int = 1024):
    """``(new_height, new_width)`` of ``resize_to_range``."""
    height, width = np.float32(height), np.float32(width)
    large = np.float32(min_dimension) / min(height, width)
    size = [int(np.round(height * large)), int(np.round(width * large))]
    if max_dimension and max(size) > max_dimension:
        small = np.float32(max_dimension) / max(height, width)
        size = [int(np.round(height * small)), int(np.round(width * small))]
    return tuple(size)


def resize_bilinear(image, size):
    """``(H, W, C)`` -> ``(*size, C)`` float32 with TF1's bilinear sampling."""
    import tensorflow as tf

    image = tf.convert_to_tensor(np.asarray(image, np.float32))[None]
    resized = tf.compat.v1.image.resize_bilinear(image, size, align_corners=False, half_pixel_centers=False)
    return resized[0].numpy()


def resize_for(detector, image):
    """One ``(H, W, 3)`` RGB 0-255 image resized as ``detector``'s config resizes it."""
    settings = detector.detection_settings
    if "image_resizer" in settings:  # Faster R-CNN, R-FCN
        resizer = settings["image_resizer"]
        size = keep_aspect_ratio_size(*np.shape(image)[:2], resizer["min_dimension"], resizer["max_dimension"])
    else:  # SSD's fixed shape
        size = tuple(settings["image_size"])
    return resize_bilinear(image, size)


def detect(detector, images):
    """Run ``detector`` on each image of ``images`` (RGB 0-255, any sizes) resized as its config says; a list with
    one dict per image: ``boxes`` in the original image's pixels (``[ymin, xmin, ymax, xmax]``), ``scores`` and
    ``classes`` (COCO ids for the COCO detectors), best first."""
    results = []
    for image in images:
        out = detector(resize_for(detector, image)[None])
        count = int(np.asarray(out["num_detections"])[0])
        height, width = np.shape(image)[:2]
        boxes = np.asarray(out["detection_boxes"])[0, :count] * np.float32([height, width, height, width])
        results.append({"boxes": boxes, "scores": np.asarray(out["detection_scores"])[0, :count],
                        "classes": np.asarray(out["detection_classes"])[0, :count].astype(int)})
    return results
