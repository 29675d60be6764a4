"""kzoo builders use Keras 3 ops only: the same weights give the same outputs under the JAX and PyTorch backends.

The TensorFlow side (this process) loads a tf_keras-written legacy h5 into the kzoo model and records its
outputs on random inputs; a subprocess with ``KERAS_BACKEND=jax`` (64-bit JAX) or ``KERAS_BACKEND=torch``
builds the same kzoo model, loads the same file with kzoo's loader, and must reproduce those outputs in
float64. Each backend's case skips when its package is not installed ([dev] installs JAX, not torch).

Tolerance 1e-6, not ~1e-12: Keras' TensorFlow backend turns Python-float constants (``Rescaling(1/255)``,
the fixed statistics of ``Normalization(mean=..., variance=...)``) into float32 tensors before casting
them to float64 (``tf.cast`` of a Python float), which JAX does not; that alone gives ~6e-8 at the input
(measured). keras.applications has the same difference. A wrong op or weight gives O(1).

The weights are the harness' (compat.randomise_weights), and the TensorFlow outputs must move with the
input by far more than the tolerance (compat.assert_outputs_differ; measured 1.5e-2 EfficientNetB0,
0.85 ConvNeXtTiny, 0.20 ResNet50, 0.12 MobileNetV3Small with its softmax).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from compat import assert_outputs_differ, float64, keras2_weights_file, relative_error

SIZE = (32, 32, 3)
# Weighted preprocessing + SE blocks; custom layers (LayerScale) + nested Sequentials + grouped convs;
# a plain classic from the other builders' families; a classifier head with hard-swish and a Rescaling input.
# Keras 3.15.1's torch backend computes ops.matmul of two float64 tensors in float32 (measured: its result
# dtype is float32), so the Dense layers (ConvNeXt's MLPs, the heads) round at float32: 1.1e-6 measured on
# ConvNeXtTiny. A wrong op or weight still gives O(1).
TOLERANCE = {"jax": 1e-6, "torch": 1e-5}
CASES = [("EfficientNetB0", False), ("ConvNeXtTiny", False), ("MobileNetV3Small", True)]
# The plain classic (ResNet50: convs, BatchNorm, ZeroPadding, Add -- ops the cases above already run) joins with
# KZOO_FULL_SWEEP=1, as conftest's sweep cases do.
if os.environ.get("KZOO_FULL_SWEEP") == "1":
    CASES.append(("ResNet50", False))

_CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    job = json.loads(sys.argv[1])
    job_backend = job["backend"]
    import keras
    assert keras.backend.backend() == job_backend, keras.backend.backend()
    keras.config.set_floatx("float64")
    import kzoo
    data = np.load(job["inputs"])
    results = {}
    for name, include_top, weights in job["cases"]:
        keras.backend.clear_session()
        model = getattr(kzoo, name)(weights=weights, include_top=include_top, input_shape=tuple(job["size"]))
        results[name] = keras.ops.convert_to_numpy(model(data["x"], training=False))
    np.savez(job["outputs"], **results)
""")


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_backend_matches_tensorflow(backend, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    import keras
    import tf_keras

    import kzoo

    try:
        kzoo.models.get_model_spec("resnet50")
        cases = CASES
    except Exception:  # the classic families are another module's; run without them if absent
        cases = [case for case in CASES if case[0] != "ResNet50"]

    x = np.random.default_rng(7).uniform(0, 255, (2, *SIZE))
    x2 = np.random.default_rng(8).uniform(0, 255, (2, *SIZE))
    expected, jobs = {}, []
    for name, include_top in cases:
        tf_keras.backend.clear_session()  # the file's auto-named layers get fresh-session names
        path = keras2_weights_file(name, include_top, SIZE)
        with float64():
            keras.backend.clear_session()
            model = getattr(kzoo, name)(weights=path, include_top=include_top, input_shape=SIZE)
            expected[name] = np.asarray(model(x, training=False))
            assert_outputs_differ(expected[name], np.asarray(model(x2, training=False)), TOLERANCE[backend], name)
        jobs.append((name, include_top, path))
    np.savez(tmp_path / "inputs.npz", x=x)

    env = dict(os.environ, KERAS_BACKEND=backend, JAX_ENABLE_X64="1", JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
    job = dict(backend=backend, cases=jobs, size=list(SIZE), inputs=str(tmp_path / "inputs.npz"),
               outputs=str(tmp_path / "out.npz"))
    done = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(job)], env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    actual = np.load(tmp_path / "out.npz")
    for name, _ in cases:
        assert actual[name].dtype == np.float64
        assert relative_error(actual[name], expected[name]) <= TOLERANCE[backend], name
