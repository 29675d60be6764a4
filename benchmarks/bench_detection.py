"""SSD InceptionV2 detector speed, batch 1 at 300x300: the whole detector (heads + anchors, decoding, sigmoid,
per-class NMS) against the same model without post-processing (raw heads), same run; the difference is the
post-processing's share.

    python -m pytest benchmarks/bench_detection.py --benchmark-only

Random weights (nothing is downloaded). With untrained heads every class score is near 0.5, so all
1917 x 90 (anchor, class) pairs pass the 1e-8 score threshold and NMS does its most work: the post-processing
share measured here is an upper bound for the trained detector, whose scores mostly fall under the threshold.
Groups: "ssd_inception_v2_coco b1".
"""

from __future__ import annotations

import numpy as np
import pytest

ROUNDS = 10


@pytest.fixture(scope="module")
def detectors():
    import keras
    import tensorflow as tf

    import kzoo

    keras.utils.set_random_seed(0)
    full = kzoo.create_model("ssd_inception_v2_coco", weights=None)
    heads = keras.Model(full.inputs, [full.get_layer("box_encodings").output, full.get_layer("class_logits").output])
    image = tf.constant(np.random.default_rng(0).uniform(0, 255, (1, 300, 300, 3)).astype("float32"))
    return {"detector": tf.function(full), "raw heads": tf.function(heads)}, image


@pytest.mark.parametrize("kind", ["detector", "raw heads"])
def test_ssd_inception_v2_coco_batch1(benchmark, detectors, kind):
    models, image = detectors
    run = models[kind]
    run(image)  # trace and warm up
    benchmark.group = "ssd_inception_v2_coco b1"
    benchmark.extra_info["images_per_s"] = None
    def once():
        outputs = run(image)
        return [np.asarray(t) for t in (outputs.values() if isinstance(outputs, dict) else outputs)]

    result = benchmark.pedantic(once, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    benchmark.extra_info["images_per_s"] = 1.0 / benchmark.stats.stats.mean
    assert result
