"""The balanced positive / negative minibatch sampler of the Object Detection API's two-stage detectors.

tensorflow/models research/object_detection ``core/balanced_positive_negative_sampler.py`` (its non-static path)
and ``core/minibatch_sampler.py``: of the candidates (``indicator``), at most ``int(positive_fraction *
batch_size)`` positives are drawn uniformly without replacement, and the rest of the batch is filled with negatives
drawn the same way; with too few positives the batch takes more negatives, with too few of either it is smaller.
``batch_size=None`` keeps every positive and ``(1 - f) / f`` negatives for each.

Faster R-CNN and R-FCN use it twice (``protos/faster_rcnn.proto``, defaults): the RPN's anchors
(``first_stage_minibatch_size`` 256, ``first_stage_positive_balance_fraction`` 0.5) and the proposals sent to
the box classifier (``second_stage_batch_size`` 64, ``second_stage_balance_fraction`` 0.25).
"""

from __future__ import annotations

import numpy as np

RPN_BATCH = {"batch_size": 256, "positive_fraction": 0.5}
BOX_CLASSIFIER_BATCH = {"batch_size": 64, "positive_fraction": 0.25}


def _draw(mask, count, rng) -> np.ndarray:
    """``mask`` with all but ``count`` of its True entries, chosen uniformly, set to False."""
    chosen = np.zeros_like(mask)
    candidates = np.flatnonzero(mask)
    chosen[rng.choice(candidates, size=min(int(count), candidates.size), replace=False)] = True
    return chosen


def balanced_sample(indicator, labels, batch_size: int | None, positive_fraction: float,
                    rng: np.random.Generator) -> np.ndarray:
    """A boolean mask over ``indicator``'s entries: the sampled minibatch (see the module docstring).
    ``indicator``: which entries may be sampled; ``labels``: which are positives."""
    if not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}.")
    indicator, labels = np.asarray(indicator, bool), np.asarray(labels, bool)
    if indicator.ndim != 1 or labels.shape != indicator.shape:
        raise ValueError(f"indicator and labels must be 1-D and of one length, got {indicator.shape} and "
                         f"{labels.shape}.")
    positives = indicator & labels
    if batch_size is None:
        sampled = positives.copy()
        negatives = int((1 - positive_fraction) / positive_fraction * sampled.sum())
    else:
        sampled = _draw(positives, int(positive_fraction * batch_size), rng)
        negatives = batch_size - int(sampled.sum())
    return sampled | _draw(indicator & ~labels, negatives, rng)
