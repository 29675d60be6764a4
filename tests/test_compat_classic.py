"""Weight compatibility with keras.applications for the classic families (tests/compat.py's four proofs).

For every builder, top and notop, at the smallest input it accepts: a tf_keras-written legacy h5 loads into
kzoo by name and by Keras' own order-based loader, kzoo's saved weights load back into keras.applications,
and outputs (logits, with the head; the softmax head is proven on them) agree within 1e-5 relative in
float64; layer names, weight names and shapes match one for one. Every case first asserts that two inputs
move the reference's output by >= 1e-3 relative (compat.assert_outputs_differ), so the comparison can see
a mapping error.
"""

from __future__ import annotations

import functools

import pytest

from compat import check_compat

# (builder, smallest input, extra kwargs for both sides)
CASES = [
    ("ResNet50", (32, 32, 3), {}),
    ("ResNet101", (32, 32, 3), {}),
    ("ResNet152", (32, 32, 3), {}),
    ("ResNet50V2", (32, 32, 3), {}),
    ("ResNet101V2", (32, 32, 3), {}),
    ("ResNet152V2", (32, 32, 3), {}),
    ("VGG16", (32, 32, 3), {}),
    ("VGG19", (32, 32, 3), {}),
    ("Xception", (71, 71, 3), {}),
    ("InceptionV3", (75, 75, 3), {}),
    ("InceptionResNetV2", (75, 75, 3), {}),
    ("DenseNet121", (32, 32, 3), {}),
    ("DenseNet169", (32, 32, 3), {}),
    ("DenseNet201", (32, 32, 3), {}),
    ("MobileNet", (32, 32, 3), {}),
    ("MobileNet", (32, 32, 3), {"alpha": 0.5, "depth_multiplier": 2}),
    ("MobileNetV2", (32, 32, 3), {}),
    ("MobileNetV2", (33, 33, 3), {"alpha": 1.4}),
    ("MobileNetV3Small", (32, 32, 3), {}),
    ("MobileNetV3Small", (32, 32, 3), {"minimalistic": True}),
    ("MobileNetV3Large", (32, 32, 3), {}),
    ("MobileNetV3Large", (32, 32, 3), {"alpha": 0.75}),
]
# The fast set: each family's first builder without its head, plus the heads that are more than
# pooling + Dense (VGG's fc1/fc2, MobileNet's 1x1-conv classifiers). The other configurations of those
# builders are `slow`. Each case builds three models (ResNet50: ~10 s on an idle 2-core machine).
FAST = {("ResNet50", False), ("ResNet50V2", False), ("VGG16", False), ("VGG16", True), ("Xception", False),
        ("InceptionV3", False), ("DenseNet121", False), ("MobileNet", True), ("MobileNetV2", False),
        ("MobileNetV3Small", True), ("MobileNetV3Large", False)}
# Run only with KZOO_FULL_SWEEP=1 (conftest's `sweep` marker; measured: all 44 cases pass), as re-proofs of what
# every run proves:
# - the deeper variants (same blocks, longer stage table; each one's graph is still compared with
#   keras.applications layer by layer in tests/test_builders_api.py): ResNet101/152, ResNet101V2/152V2,
#   DenseNet169/201, VGG19;
# - the pooling + Dense heads after ResNet50's (the same two layers on another trunk): ResNet50V2, Xception,
#   InceptionV3, InceptionResNetV2, DenseNet121, MobileNetV2 and MobileNetV3Large, and the heads of the alpha and
#   minimalistic variants (their trunks run without the head; the plain variant proves the head).
DEEP = {"ResNet101", "ResNet152", "ResNet101V2", "ResNet152V2", "DenseNet169", "DenseNet201", "VGG19"}
PLAIN_HEADS = {"ResNet50V2", "Xception", "InceptionV3", "InceptionResNetV2", "DenseNet121", "MobileNetV2",
               "MobileNetV3Large"}


def _fresh(builder, clear_session):
    """Build from a fresh name counter, so auto-named layers (input_layer, conv2d_7, ...) line up."""

    @functools.wraps(builder)
    def build(*args, **kwargs):
        clear_session()
        return builder(*args, **kwargs)

    return build


@pytest.fixture
def fresh_names(monkeypatch):
    """keras.applications, tf_keras and kzoo name unnamed layers from per-session counters, so a model
    built second gets ``conv2d_94`` where the first got ``conv2d``. Each builder here starts from a
    cleared session, which is the state the compared names and the by-name loads assume."""
    import keras
    import tf_keras

    import kzoo

    names = {case[0] for case in CASES}
    for name in names:
        monkeypatch.setattr(keras.applications, name, _fresh(getattr(keras.applications, name),
                                                             keras.backend.clear_session))
        monkeypatch.setattr(tf_keras.applications, name, _fresh(getattr(tf_keras.applications, name),
                                                                tf_keras.backend.clear_session))
        monkeypatch.setattr(kzoo, name, _fresh(getattr(kzoo, name), keras.backend.clear_session),
                            raising=False)


def _params():
    seen = set()
    for name, shape, kwargs in CASES:
        for include_top in (False, True):
            fast = (name, include_top) in FAST and (name, include_top) not in seen
            seen.add((name, include_top))
            marks = [] if fast else [pytest.mark.slow]
            if name in DEEP or (include_top and (name in PLAIN_HEADS or kwargs)):
                marks.append(pytest.mark.sweep)
            tag = "-".join(f"{k}={v}" for k, v in kwargs.items())
            case_id = f"{name}-{'top' if include_top else 'notop'}" + (f"-{tag}" if tag else "")
            yield pytest.param(name, shape, include_top, kwargs, marks=marks, id=case_id)


@pytest.mark.parametrize("name,shape,include_top,kwargs", list(_params()))
def test_weights_compatible_both_ways(fresh_names, name, shape, include_top, kwargs):
    errors = check_compat(name, include_top, shape, batch=2, **kwargs)
    assert max(errors.values()) <= 1e-5, errors
