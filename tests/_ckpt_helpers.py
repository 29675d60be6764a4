"""Helpers shared by the checkpoint tests: write TF checkpoints from arrays, build archives.

Checkpoints are written the way TF-slim users wrote them: a ``tf.compat.v1.train.Saver`` in a
``tf.Graph()``, V1 (single SSTable file) or V2 (prefix.index + prefix.data-00000-of-00001).
"""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import numpy as np


def saver(version: str, var_list=None):
    import tensorflow as tf

    write_version = tf.compat.v1.train.SaverDef.V1 if version == "V1" else tf.compat.v1.train.SaverDef.V2
    return tf.compat.v1.train.Saver(var_list=var_list, write_version=write_version)


def write_checkpoint(path, arrays: dict, version: str = "V2") -> str:
    """Save ``{variable name: array}`` as a checkpoint at ``path`` (V1 file or V2 prefix)."""
    import tensorflow as tf

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    graph = tf.Graph()
    with graph.as_default():
        variables = {name: tf.compat.v1.Variable(np.asarray(value), name=f"v{i}")
                     for i, (name, value) in enumerate(arrays.items())}
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver(version, variables).save(session, str(path), write_meta_graph=False)
    return str(path)


def randomise_graph_variables(session, rng, weight_gain: dict | None = None) -> None:
    """Assign random values to every global variable of ``session``'s graph (a TF-slim net), by the rules of
    ``compat.random_value``: He-normal weights, BatchNorm gamma near sqrt(0.1) and variances near 0.1
    (near 1 where the layer has no gamma -- slim's default ``scale=False``), random betas, moving means
    and biases. The same rules as the keras.applications harness, for the same reason: every layer's
    weights must show in the logits, or a wrong mapping can still "match".

    ``weight_gain`` ({scope substring: factor}) scales chosen weights, e.g. the last conv of every residual
    unit. Values are fed through placeholders (constants in the graph, or Variable.load, are much slower).
    """
    import tensorflow as tf

    from compat import layers_with_gamma, random_value

    variables = tf.compat.v1.global_variables()
    with_gamma = layers_with_gamma(v.op.name for v in variables)
    assignments, feed = [], {}
    for var in variables:
        name, shape = var.op.name, tuple(var.shape.as_list())
        value = random_value(name.split("/")[-1], shape, rng, with_gamma=name.rsplit("/", 1)[0] in with_gamma)
        if value is None:
            continue
        if weight_gain and name.split("/")[-1].endswith("weights"):
            value = value * next((g for key, g in weight_gain.items() if key in name), 1.0)
        placeholder = tf.compat.v1.placeholder(var.dtype.base_dtype, shape)
        assignments.append(var.assign(placeholder))
        feed[placeholder] = np.asarray(value, var.dtype.base_dtype.as_numpy_dtype)
    session.run(assignments, feed)


def read_all(path) -> dict:
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(path))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def v2_files(prefix) -> list[Path]:
    prefix = Path(prefix)
    return sorted(p for p in prefix.parent.iterdir() if p.name.startswith(prefix.name + "."))


def make_tar(path, files: dict, mode: str = "w:gz", compresslevel: int = 1) -> Path:
    """``files``: {archive name: Path to add}."""
    kwargs = {"compresslevel": compresslevel} if mode.endswith("gz") else {}
    with tarfile.open(path, mode, **kwargs) as tar:
        for name, source in files.items():
            tar.add(str(source), arcname=name)
    return Path(path)


def make_zip(path, files: dict) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, source in files.items():
            zf.write(str(source), arcname=name)
    return Path(path)



def random_shufflenet_checkpoint(folder: Path):
    """A random V2 checkpoint with every variable the shufflenet_v2_050 rules read; (prefix, arrays)."""
    import keras

    import kzoo
    from kzoo.convert._base import RuleContext
    from kzoo.convert.slim_shufflenet import shufflenet_v2_rules

    keras.backend.clear_session()
    model = kzoo.create_model("shufflenet_v2_050", weights=None)
    rng = np.random.default_rng(0)
    arrays = {}
    for rule in shufflenet_v2_rules(model, RuleContext("shufflenet_v2_050", 1000, False, True)):
        shape = {w.name: w.shape for w in model.get_layer(rule.layer).weights}[rule.weight]
        arrays[rule.variable] = rng.normal(0, 0.1, shape).astype(np.float32)
    return write_checkpoint(Path(folder) / "model.ckpt", arrays, "V2"), arrays
