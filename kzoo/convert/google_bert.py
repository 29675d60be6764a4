"""Google's original BERT checkpoints (google-research/bert; TI-ONE's ``chinese_L-12_H-768_A-12.zip`` and
``uncased_L-12_H-768_A-12.zip``) -> keras-hub ``BertBackbone`` / ``BertMaskedLM``.

keras-hub converts Hugging Face checkpoints and had notebooks for TF Model Garden re-exports, but nothing reads
Google's own variable names (https://github.com/keras-team/keras-hub/issues/486). The map, from
google-research/bert ``modeling.py`` and ``run_pretraining.py`` onto keras-hub's ``bert_backbone.py`` and
``transformer_encoder.py``:

==========================================================  =========================================================
``bert/embeddings/word_embeddings``                          ``token_embedding/embeddings``
``bert/embeddings/position_embeddings``                      ``position_embedding/embeddings``
``bert/embeddings/token_type_embeddings``                    ``segment_embedding/embeddings`` (rows = ``type_vocab_size``)
``bert/embeddings/LayerNorm/{gamma,beta}``                   ``embeddings_layer_norm/...``
``bert/encoder/layer_i/attention/self/{query,key,value}``   ``transformer_layer_i/self_attention_layer/{query,key,value}``
                                                             kernel [H, H] -> (H, heads, H/heads), bias -> (heads, H/heads)
``.../attention/output/dense``                               ``.../self_attention_layer/attention_output``
                                                             kernel [H, H] -> (heads, H/heads, H)
``.../attention/output/LayerNorm``                           ``.../self_attention_layer_norm``
``.../intermediate/dense``, ``.../output/dense``             ``.../feedforward_intermediate_dense``, ``feedforward_output_dense``
``.../output/LayerNorm``                                     ``.../feedforward_layer_norm``
``bert/pooler/dense``                                        ``pooled_dense``
``cls/predictions/transform/{dense,LayerNorm}``              ``mlm_head/intermediate_{dense,layer_norm}`` (BertMaskedLM)
``cls/predictions/output_bias``                              ``mlm_head/output_bias`` (the decoder is the tied word embedding)
==========================================================  =========================================================

TensorFlow kernels are already [in, out], so nothing is transposed; the reshapes split the hidden axis into
(heads, head size) in the order ``modeling.py``'s ``transpose_for_scores`` does. ``cls/seq_relationship`` (the
next-sentence head) has no home: keras-hub has no next-sentence task; it is reported as left out. Optimizer
slots (``*/adam_m``, ``*/adam_v``) and ``global_step`` are skipped and reported.

The architecture comes from the archive's ``bert_config.json`` (any L, H, A, vocabulary), so one rule serves
every size Google released.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kzoo.convert._base import WeightRule, register_family, unused_category
from kzoo.errors import ConversionError

CONFIG_FILE = "bert_config.json"
VOCAB_FILE = "vocab.txt"
NEXT_SENTENCE_SCOPE = "cls/seq_relationship/"
MASKED_LM_SCOPE = "cls/predictions/"
# Google's config name -> keras-hub BertBackbone argument.
_CONFIG_KEYS = {"vocab_size": "vocabulary_size", "num_hidden_layers": "num_layers", "num_attention_heads": "num_heads",
                "hidden_size": "hidden_dim", "intermediate_size": "intermediate_dim",
                "max_position_embeddings": "max_sequence_length", "type_vocab_size": "num_segments"}


def backbone_config(path) -> dict:
    """keras-hub ``BertBackbone`` arguments from a ``bert_config.json``; ConversionError names what does not fit."""
    path = Path(path)
    try:
        google = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConversionError(f"{path}: cannot read the BERT config ({exc}). It should be Google's "
                              f"bert_config.json from the same archive as the checkpoint.") from None
    missing = [key for key in _CONFIG_KEYS if not isinstance(google.get(key), int) or google[key] < 1]
    problems = [f"{key} is missing or not a positive integer" for key in missing]
    if google.get("hidden_act", "gelu") != "gelu":
        problems.append(f"hidden_act is {google['hidden_act']!r}; keras-hub's BERT has only Google's (tanh) 'gelu'")
    if not {"hidden_size", "num_attention_heads"} & set(missing) and google["hidden_size"] % google["num_attention_heads"]:
        problems.append(f"hidden_size {google['hidden_size']} is not a multiple of num_attention_heads "
                        f"{google['num_attention_heads']}")
    if problems:
        raise ConversionError(f"{path}: this BERT config cannot become a keras-hub BertBackbone: "
                              + "; ".join(problems) + ".")
    return {ours: google[theirs] for theirs, ours in _CONFIG_KEYS.items()}


def split_heads(heads: int):
    """Query/key/value kernel [H, H] -> (H, heads, H/heads) and bias [H] -> (heads, H/heads)."""

    def transform(array):
        return array.reshape(*array.shape[:-1], heads, array.shape[-1] // heads)

    return transform


def merge_heads(heads: int):
    """Attention output kernel [H, H] -> (heads, H/heads, H): its input axis is the heads' concatenation."""

    def transform(array):
        return array.reshape(heads, array.shape[0] // heads, array.shape[1])

    return transform


def _dense(layer: str, weight: str, scope: str, transform=None):
    return [WeightRule(layer, f"{weight}/kernel", f"{scope}/kernel", transform),
            WeightRule(layer, f"{weight}/bias", f"{scope}/bias", transform)]


def _layer_norm(layer: str, weight: str, scope: str):
    return [WeightRule(layer, f"{weight}/gamma", f"{scope}/gamma"), WeightRule(layer, f"{weight}/beta", f"{scope}/beta")]


@register_family("bert_base_chinese", "bert_base_uncased")
def bert_rules(model, ctx):
    """Rules for a keras-hub BertBackbone (or BertMaskedLM): ``WeightRule.weight`` is the variable's path
    inside the top-level layer (``self_attention_layer/query/kernel``), since a transformer block holds many
    kernels."""
    backbone = getattr(model, "backbone", model)
    heads = backbone.num_heads
    rules = [WeightRule("token_embedding", "embeddings", "bert/embeddings/word_embeddings"),
             WeightRule("position_embedding", "embeddings", "bert/embeddings/position_embeddings"),
             WeightRule("segment_embedding", "embeddings", "bert/embeddings/token_type_embeddings"),
             *_layer_norm("embeddings_layer_norm", "", "bert/embeddings/LayerNorm")]
    for i in range(backbone.num_layers):
        block, scope = f"transformer_layer_{i}", f"bert/encoder/layer_{i}"
        for part in ("query", "key", "value"):
            rules += _dense(block, f"self_attention_layer/{part}", f"{scope}/attention/self/{part}", split_heads(heads))
        rules += [WeightRule(block, "self_attention_layer/attention_output/kernel",
                             f"{scope}/attention/output/dense/kernel", merge_heads(heads)),
                  WeightRule(block, "self_attention_layer/attention_output/bias", f"{scope}/attention/output/dense/bias"),
                  *_layer_norm(block, "self_attention_layer_norm", f"{scope}/attention/output/LayerNorm"),
                  *_dense(block, "feedforward_intermediate_dense", f"{scope}/intermediate/dense"),
                  *_dense(block, "feedforward_output_dense", f"{scope}/output/dense"),
                  *_layer_norm(block, "feedforward_layer_norm", f"{scope}/output/LayerNorm")]
    rules += _dense("pooled_dense", "", "bert/pooler/dense")
    if model is not backbone:  # BertMaskedLM
        rules += [*_dense("mlm_head", "intermediate_dense", "cls/predictions/transform/dense"),
                  *_layer_norm("mlm_head", "intermediate_layer_norm", "cls/predictions/transform/LayerNorm"),
                  WeightRule("mlm_head", "output_bias", "cls/predictions/output_bias")]
    return [WeightRule(r.layer, r.weight.lstrip("/"), r.variable, r.transform) for r in rules]


@dataclass
class BertConversion:
    """What :func:`assign_checkpoint` did: variables mapped and those left out, by reason."""

    checkpoint: str
    mapped: list  # (checkpoint variable, keras-hub variable path, shape)
    unused: dict  # reason -> [checkpoint variables]

    def summary(self) -> str:
        lines = [f"  {len(self.mapped)} weights mapped from {self.checkpoint}"]
        for reason, names in sorted(self.unused.items()):
            shown = ", ".join(names[:4]) + (f", ... ({len(names)} in all)" if len(names) > 4 else "")
            lines.append(f"  left out ({reason}): {shown}")
        return "\n".join(lines)


def _reason(name: str, masked_lm: bool) -> str:
    category = unused_category(name)
    if category in ("optimizer slots", "training state"):
        return category
    if name.startswith(NEXT_SENTENCE_SCOPE):
        return "next-sentence head: keras-hub has no next-sentence task"
    if name.startswith(MASKED_LM_SCOPE) and not masked_lm:
        return "masked-LM head: not asked for (masked_lm=True converts it into BertMaskedLM)"
    return category


def _limited(items, limit=25) -> str:
    text = "\n".join(f"  - {item}" for item in items[:limit])
    return text + (f"\n  ... and {len(items) - limit} more" if len(items) > limit else "")


def assign_checkpoint(model, ckpt, model_name: str) -> BertConversion:
    """Read every variable ``model`` (BertBackbone or BertMaskedLM) needs from the open checkpoint ``ckpt``
    (:class:`kzoo.formats.tf_checkpoint.Checkpoint`) and assign it. Every missing variable and every shape
    mismatch is collected first and raised as one ConversionError naming each; nothing is assigned then."""
    rules = {(r.layer, r.weight): r for r in bert_rules(model, None)}
    shapes = ckpt.shapes()
    targets, seen = [], set()
    for variable in model.weights:
        if id(variable) in seen:  # BertMaskedLM's decoder is the backbone's token embedding
            continue
        seen.add(id(variable))
        layer, _, weight = variable.path.partition("/")
        rule = rules.pop((layer, weight), None)
        if rule is None:
            raise ConversionError(f"kzoo's google_bert rules have no source for keras-hub weight {variable.path} "
                                  f"(a kzoo bug, or a keras-hub release that renamed it; please report it).")
        targets.append((variable, rule))
    missing = [f"{rule.variable} (for {variable.path})" for variable, rule in targets if rule.variable not in shapes]
    if missing:
        raise ConversionError(
            f"{ckpt.path}: {len(missing)} variable(s) the {model_name} model needs are not in the checkpoint:\n"
            f"{_limited(missing)}\nIs this a Google BERT checkpoint (bert/embeddings/..., bert/encoder/layer_N/...) "
            f"whose bert_config.json describes it?")
    values, mismatched = [], []
    for variable, rule in targets:
        source_shape = shapes[rule.variable]
        value = ckpt.read(rule.variable)
        try:
            value = rule.transform(value) if rule.transform else value
        except ValueError:
            value = None
        if value is None or tuple(value.shape) != tuple(variable.shape):
            got = "cannot be reshaped" if value is None else f"got {tuple(value.shape)}"
            mismatched.append(f"{rule.variable} {source_shape} -> {variable.path}: {got}, "
                              f"the model needs {tuple(variable.shape)}")
            continue
        values.append((variable, rule.variable, value))
    if mismatched:
        raise ConversionError(
            f"{ckpt.path}: {len(mismatched)} shape mismatch(es) converting to {model_name}:\n{_limited(mismatched)}\n"
            f"The checkpoint and bert_config.json disagree (another size of BERT?): use the config from the "
            f"checkpoint's own archive.")
    for variable, _, value in values:
        variable.assign(np.asarray(value, dtype=variable.dtype))
    used = {name for _, name, _ in values}
    unused: dict = {}
    masked_lm = model is not getattr(model, "backbone", model)
    for name in sorted(shapes):
        if name not in used:
            unused.setdefault(_reason(name, masked_lm), []).append(name)
    return BertConversion(ckpt._shown(ckpt.path), [(name, v.path, tuple(v.shape)) for v, name, _ in values], unused)


def google_head_semantics(masked_lm):
    """Make a keras-hub BertMaskedLM compute Google's MLM transform: tanh-approximated GELU and LayerNorm
    epsilon 1e-12 (``run_pretraining.py``), where keras-hub's head uses exact GELU and 1e-5. Only the
    in-memory model changes; a preset saved from it loads in keras-hub with keras-hub's head."""
    import keras

    head = masked_lm.masked_lm_head
    head._intermediate_dense.activation = lambda x: keras.activations.gelu(x, approximate=True)
    head._intermediate_layer_norm.epsilon = 1e-12
    return masked_lm
