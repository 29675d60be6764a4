"""The detection workload of ``kzoo bench``: a detector whole against the same detector without its final
post-processing, interleaved, so ``x detector-heads`` (whole / heads, in images/s) gives the post-processing's
share of a step as ``1 - ratio``.

- SSD (``ssd_inception_v2_coco``): the heads are the raw box predictor outputs; post-processing = anchors,
  decoding, sigmoid, per-class NMS.
- Faster R-CNN / R-FCN: the heads still include the proposals (the RPN's decoding and NMS feed the second
  stage); post-processing = the second stage's per-class decoding, softmax and NMS.

Random weights (nothing is downloaded): untrained scores pass the thresholds everywhere, so NMS does its most
work and the share is an upper bound for a trained detector. Input: the sweep's uniform noise, at the model's
index size (``--image-size`` to change it; Faster R-CNN's resizer makes the shorter side 600).
"""

from __future__ import annotations

from kzoo.bench.keras_candidates import KerasModelCandidate

DETECTOR_MODULE_PREFIX = "detection_"


def is_detector(name: str) -> bool:
    """Whether the index row of ``name`` is a whole detector (its builder lives in a ``detection_*`` module)."""
    from kzoo import index

    return index.get(name).module.startswith(DETECTOR_MODULE_PREFIX)


class Detector(KerasModelCandidate):
    """kzoo's detector, whole: boxes, scores, classes."""

    name = "detector"
    inference_only = True
    plot_style = "-o"
    postprocess = True

    @classmethod
    def _create(cls, name, builder_kwargs, batch_size):
        from kzoo import index
        from kzoo.models import create_model

        if not is_detector(name):
            raise LookupError(f"{name!r} is not a detector; the detection workload takes "
                              f"{', '.join(n for n in index.MODELS if is_detector(n))}")
        size = index.get(name).input_size
        kwargs = {"input_shape": (size, size, 3), **builder_kwargs}  # a fixed size: the step feeds one batch
        return create_model(name, postprocess=cls.postprocess, **kwargs)


    def prepare(self, model_name, batch_size, result, shared_size=None):
        prepared = super().prepare(model_name, batch_size, result, shared_size)
        if any(layer.name == "proposals" for layer in self.model.layers):
            # Layer shapes count one proposal's second stage, not P of them: no FLOP figure rather than a wrong one.
            result.gflops_per_image = None
        return prepared


class DetectorHeads(Detector):
    """The baseline: the same detector up to its heads (``postprocess=False``)."""

    name = "detector-heads"
    baseline = True
    plot_style = "--^"
    postprocess = False
