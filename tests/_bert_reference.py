"""Google's BERT (PyPI ``bert-tensorflow``, google-research/bert's ``modeling.py`` and ``run_pretraining.py``) as
the reference for the BERT conversion tests, run in its own process: ``python tests/_bert_reference.py JOB.json``.

bert-tensorflow 1.0.4 imports ``tensorflow.contrib`` (gone since TF 2.0) for ``layer_norm`` and calls
``tf.layers.dense`` (Keras 3 has no ``dense`` there), so two shims stand in, as in the package's own era:
``tensorflow.contrib.layers`` is tf_slim's layers (the same ``layer_norm``, epsilon 1e-12), and the modules'
``tf`` is ``tensorflow.compat.v1`` with ``layers`` taken from tf_keras' legacy TF layers. Nothing else of
Google's code is replaced. The process builds the model from ``bert_config.json``, draws random weights that
make every layer matter (kernels ~ N(0, 1/fan_in), LayerNorm gammas in U(0.5, 1.5), betas, biases and the MLM
output bias random), saves the checkpoint (and, on request, a second one with Adam slots and ``global_step`` beside the weights), and writes the
sequence / pooled outputs and both heads' logits for each input case in the job to an ``.npz`` (keys
``<case index>/<output>``).
"""

from __future__ import annotations

import json
import os
import sys
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _shimmed_modules():
    import tensorflow as tf
    import tf_slim
    from tf_keras.src.legacy_tf_layers import core as legacy_layers

    contrib = types.ModuleType("tensorflow.contrib")
    contrib.layers = tf_slim.layers
    sys.modules["tensorflow.contrib"] = contrib

    class V1WithLayers(types.ModuleType):
        layers = legacy_layers

        def __getattr__(self, name):
            return getattr(tf.compat.v1, name)

    from bert import modeling, run_pretraining

    shim = V1WithLayers("tf_v1_with_layers")
    modeling.tf = shim
    run_pretraining.tf = shim
    return tf.compat.v1, modeling, run_pretraining


def _random_value(rng, name, shape):
    leaf = name.rsplit("/", 1)[-1]
    if leaf == "gamma":
        return rng.uniform(0.5, 1.5, shape)
    if leaf in ("beta", "bias", "output_bias"):
        return rng.normal(0.0, 0.1, shape)
    if "embeddings" in leaf:
        return rng.normal(0.0, 0.5, shape)
    fan_in = shape[-1] if leaf == "output_weights" else shape[0]
    return rng.normal(0.0, 1.0 / fan_in ** 0.5, shape)


def run(job: dict) -> None:
    import numpy as np

    v1, modeling, run_pretraining = _shimmed_modules()
    config = modeling.BertConfig.from_json_file(job["config"])
    rng = np.random.default_rng(job.get("seed", 0))
    cases = [{key: np.asarray(value, np.int32) for key, value in case.items()} for case in job["inputs"]]
    batch, length = cases[0]["token_ids"].shape
    graph = v1.Graph()
    with graph.as_default():
        ids = v1.placeholder(v1.int32, (batch, length))
        segments = v1.placeholder(v1.int32, (batch, length))
        mask = v1.placeholder(v1.int32, (batch, length))
        positions = v1.placeholder(v1.int32, (batch, None))
        model = modeling.BertModel(config, is_training=False, input_ids=ids, input_mask=mask,
                                   token_type_ids=segments, use_one_hot_embeddings=False)
        run_pretraining.get_masked_lm_output(config, model.get_sequence_output(), model.get_embedding_table(),
                                             positions, v1.zeros_like(positions), v1.ones_like(positions, v1.float32))
        run_pretraining.get_next_sentence_output(config, model.get_pooled_output(), v1.zeros((batch,), v1.int32))
        mlm_logits = graph.get_tensor_by_name("cls/predictions/BiasAdd:0")
        nsp_logits = graph.get_tensor_by_name("cls/seq_relationship/BiasAdd:0")
        variables = v1.global_variables()
        extra = []
        if job.get("checkpoint_with_slots"):
            extra.append(v1.train.get_or_create_global_step())
            for var in list(variables):
                for slot in ("adam_m", "adam_v"):
                    extra.append(v1.get_variable(f"{var.op.name}/{slot}", var.shape, initializer=v1.zeros_initializer(),
                                                 trainable=False))
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            feed = {}
            assignments = []
            for var in variables:
                value = _random_value(rng, var.op.name, tuple(var.shape.as_list()))
                placeholder = v1.placeholder(v1.float32, var.shape)
                assignments.append(var.assign(placeholder))
                feed[placeholder] = value.astype(np.float32)
            session.run(assignments, feed)
            v1.train.Saver(variables).save(session, job["checkpoint"], write_meta_graph=False)
            if extra:  # the same weights, as a training run leaves them: Adam's slots and global_step beside them
                v1.train.Saver(variables + extra).save(session, job["checkpoint_with_slots"], write_meta_graph=False)
            outputs = {}
            for index, case in enumerate(cases):
                fetched = session.run(
                    [model.get_sequence_output(), model.get_pooled_output(), mlm_logits, nsp_logits],
                    {ids: case["token_ids"], segments: case["segment_ids"], mask: case["padding_mask"],
                     positions: case["mask_positions"]})
                for key, value in zip(("sequence_output", "pooled_output", "mlm_logits", "nsp_logits"), fetched):
                    outputs[f"{index}/{key}"] = value
    np.savez(job["output"], **outputs)


if __name__ == "__main__":
    with open(sys.argv[1]) as handle:
        run(json.load(handle))
