"""Shared test set-up. TF-slim 1.1 imports modules that moved in tf_keras; alias them before TF loads."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

try:  # tf-slim 1.1 needs this before TensorFlow is imported (see the developers' brief)
    import tf_keras.src.legacy_tf_layers as _legacy_layers
    import tf_keras.src.legacy_tf_layers.normalization as _legacy_norm

    sys.modules["tf_keras.legacy_tf_layers"] = _legacy_layers
    sys.modules["tf_keras.legacy_tf_layers.normalization"] = _legacy_norm
except ImportError:  # pragma: no cover - tf_keras is a dev dependency
    pass
