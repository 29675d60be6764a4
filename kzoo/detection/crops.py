"""Region crops for the second stage of Faster R-CNN and R-FCN, in keras.ops (any backend).

- :func:`crop_and_resize`: TensorFlow's ``tf.image.crop_and_resize`` (bilinear; sample points outside the map
  take ``extrapolation_value``), which Faster R-CNN uses to cut 14x14 crops from block3 before its 2x2 max-pool.
- :func:`position_sensitive_crop`: R-FCN's position-sensitive crop (tensorflow/models research/object_detection
  ``utils/ops.py`` ``position_sensitive_crop_regions``): the box is split into ``bins`` cells, cell k is cropped
  from the k-th group of channels, and with ``global_pool`` the cells' crops are averaged over cells and space.
"""

from __future__ import annotations


def crop_and_resize(features, boxes, box_indices, crop_size, extrapolation_value=0.0):
    """``features (B, H, W, C)``, normalised ``boxes (N, 4)`` ``[y1, x1, y2, x2]``, ``box_indices (N,)`` ->
    ``(N, crop_h, crop_w, C)``. Sample ``i`` of ``n`` lies at ``y1 (H - 1) + i (y2 - y1) (H - 1) / (n - 1)``
    (the box centre when ``n == 1``), as in TensorFlow."""
    from keras import ops

    crop_h, crop_w = crop_size
    shape = ops.shape(features)
    height, width, channels = shape[1], shape[2], shape[3]
    boxes = ops.cast(boxes, features.dtype)
    y1, x1, y2, x2 = (boxes[:, i : i + 1] for i in range(4))

    def sample_points(start, end, size, count):
        extent = ops.cast(size - 1, features.dtype)
        if count == 1:
            return 0.5 * (start + end) * extent
        steps = ops.cast(ops.arange(count), features.dtype)[None, :]
        # TensorFlow's order of operations (scale first), so a sample on the map's edge falls on the same side
        scale = (end - start) * extent / (count - 1)
        return start * extent + steps * scale

    ys = sample_points(y1, y2, height, crop_h)  # (N, crop_h)
    xs = sample_points(x1, x2, width, crop_w)  # (N, crop_w)
    inside = ((ys >= 0) & (ys <= ops.cast(height - 1, ys.dtype)))[:, :, None] & (
        (xs >= 0) & (xs <= ops.cast(width - 1, xs.dtype)))[:, None, :]
    top, left = ops.floor(ys), ops.floor(xs)
    y_lerp, x_lerp = (ys - top)[:, :, None, None], (xs - left)[:, None, :, None]

    def index(positions, size):
        return ops.clip(ops.cast(positions, "int32"), 0, size - 1)

    top_i, bottom_i = index(top, height), index(ops.ceil(ys), height)
    left_i, right_i = index(left, width), index(ops.ceil(xs), width)
    flat = ops.reshape(features, (-1, channels))
    base = ops.cast(box_indices, "int32")[:, None, None] * (height * width)

    def gather(rows, cols):
        return ops.take(flat, base + rows[:, :, None] * width + cols[:, None, :], axis=0)

    top_values = gather(top_i, left_i) + (gather(top_i, right_i) - gather(top_i, left_i)) * x_lerp
    bottom_values = gather(bottom_i, left_i) + (gather(bottom_i, right_i) - gather(bottom_i, left_i)) * x_lerp
    crops = top_values + (bottom_values - top_values) * y_lerp
    return ops.where(inside[..., None], crops, ops.cast(extrapolation_value, crops.dtype))


def position_sensitive_crop(features, boxes, box_indices, crop_size, bins, global_pool=True):
    """R-FCN's crop: ``features (B, H, W, bins_y * bins_x * D)`` -> ``(N, 1, 1, D)`` with ``global_pool``, else
    ``(N, crop_h, crop_w, D)`` (each bin's crop placed in its cell). ``crop_size`` must be divisible by ``bins``."""
    from keras import ops

    bins_y, bins_x = bins
    if crop_size[0] % bins_y or crop_size[1] % bins_x:
        raise ValueError(f"crop_size {tuple(crop_size)} must be divisible by the spatial bins {tuple(bins)}")
    bin_size = (crop_size[0] // bins_y, crop_size[1] // bins_x)
    boxes = ops.cast(boxes, features.dtype)
    ymin, xmin, ymax, xmax = (boxes[:, i] for i in range(4))
    step_y, step_x = (ymax - ymin) / bins_y, (xmax - xmin) / bins_x
    splits = ops.split(features, bins_y * bins_x, axis=-1)
    crops = []
    for by in range(bins_y):
        for bx in range(bins_x):
            cell = ops.stack([ymin + by * step_y, xmin + bx * step_x, ymin + (by + 1) * step_y,
                              xmin + (bx + 1) * step_x], axis=1)
            crops.append(crop_and_resize(splits[by * bins_x + bx], cell, box_indices, bin_size))
    if global_pool:
        return ops.mean(ops.mean(ops.stack(crops), axis=0), axis=(1, 2), keepdims=True)
    rows = [ops.concatenate(crops[r * bins_x:(r + 1) * bins_x], axis=2) for r in range(bins_y)]
    return ops.concatenate(rows, axis=1)
