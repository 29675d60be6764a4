"""Shared test set-up. TF-slim 1.1 imports modules that moved in tf_keras; alias them before TF loads."""

import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# Hermetic: no test reads or writes the user's weight cache, pin file or Keras home.
_TEST_HOME = tempfile.mkdtemp(prefix="kzoo-tests-")
os.environ["KZOO_CACHE_DIR"] = os.path.join(_TEST_HOME, "cache")
os.environ["KZOO_PINS"] = os.path.join(_TEST_HOME, "pins.json")
os.environ["KERAS_HOME"] = os.path.join(_TEST_HOME, "keras")
os.environ.pop("KZOO_MIRRORS", None)
os.environ.pop("KZOO_REGISTRY", None)

try:  # tf-slim 1.1 needs this before TensorFlow is imported (see the developers' brief)
    import tf_keras.src.legacy_tf_layers as _legacy_layers
    import tf_keras.src.legacy_tf_layers.normalization as _legacy_norm

    sys.modules["tf_keras.legacy_tf_layers"] = _legacy_layers
    sys.modules["tf_keras.legacy_tf_layers.normalization"] = _legacy_norm
except ImportError:  # pragma: no cover - tf_keras is a dev dependency
    pass


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def keras_defaults():
    """Every test starts from Keras' default float32 and dtype policy, whatever a test before it set."""
    if "keras" in sys.modules:
        import keras

        from keras.src.backend.common import global_state

        keras.config.set_floatx("float32")
        # Keras' pristine state has *no* global policy, so layers follow floatx. Setting an explicit
        # "float32" policy here would silently pin every later float64 test (floatx) to float32.
        global_state.set_global_attribute("dtype_policy", None)
    yield


def pytest_collection_modifyitems(config, items):
    """``sweep`` cases re-prove, on deeper variants, what a shallower case of the same rules proves in every
    run; they keep the default suite inside its time budget and run with ``KZOO_FULL_SWEEP=1``."""
    if os.environ.get("KZOO_FULL_SWEEP") == "1":
        return
    skip = pytest.mark.skip(reason="deeper variant of a proven case: set KZOO_FULL_SWEEP=1")
    for item in items:
        if item.get_closest_marker("sweep"):
            item.add_marker(skip)


# The Object Detection API replicas of tests/test_detection_two_stage.py (Faster R-CNN ResNet-50, R-FCN ResNet-101)
# and their conversions: built once per run, shared by the detection and detection-training modules.
@pytest.fixture(scope="session")
def frcnn(tmp_path_factory):
    from test_detection_two_stage import FasterRCNNCase

    return FasterRCNNCase(tmp_path_factory.mktemp("frcnn_detector"))


@pytest.fixture(scope="session")
def frcnn_h5(frcnn):
    from test_detection_two_stage import convert_frcnn

    return convert_frcnn(frcnn)


@pytest.fixture(scope="session")
def rfcn(tmp_path_factory):
    from test_detection_two_stage import FasterRCNNCase

    return FasterRCNNCase(tmp_path_factory.mktemp("rfcn_detector"), depth=101, rfcn=True)


@pytest.fixture(scope="session")
def rfcn_h5(rfcn):
    from test_detection_two_stage import _convert_rfcn

    return _convert_rfcn(rfcn, rfcn.root)
