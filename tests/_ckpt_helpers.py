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

