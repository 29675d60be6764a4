"""BERT as keras-hub builds it (``keras_hub.models.BertBackbone``), with Google's checkpoints converted.

The architecture is keras-hub's, not a kzoo copy: a converted model is an ordinary keras-hub model, and the
preset kzoo writes loads in keras-hub alone. This module only picks the weights: ``weights=None`` (random, the
index row's size), a registry tag (``"tione"``: Google's archive as TI-ONE hosts it, fetched, converted once and
cached as a keras-hub preset), or a path (a keras-hub preset directory, or a Google archive / folder /
checkpoint prefix, converted in memory). keras-hub is the optional extra ``kzoo[nlp]``.
"""

from __future__ import annotations

from pathlib import Path


def _registered(default=None) -> str | None:
    from kzoo.architectures._factory import registered_name

    return registered_name(default)


def preset_dir(model_name: str, tag: str = "tione") -> Path:
    """The cached keras-hub preset of a registry entry (fetched and converted on first use)."""
    from kzoo import index, registry, sources
    from kzoo.convert.google_bert_preset import converted_preset

    entry = registry.resolve_weights(index.normalise(model_name), tag, True)
    return converted_preset(entry, sources.fetch(entry))


def bert_backbone(weights=None, *, masked_lm: bool = False, vocabulary_size: int = 30522, num_layers: int = 12,
                  num_heads: int = 12, hidden_dim: int = 768, intermediate_dim: int = 3072,
                  max_sequence_length: int = 512, num_segments: int = 2, dropout: float = 0.1, dtype=None):
    """A keras-hub ``BertBackbone`` (``masked_lm=True``: ``BertMaskedLM``, the converted ``cls/predictions``
    head on top, computing Google's GELU and LayerNorm epsilon).

    The size arguments apply to ``weights=None``; converted weights bring their own ``bert_config.json``.
    Call through ``kzoo.create_model("bert_base_chinese", weights="tione")``, which names the registry entry.
    """
    from kzoo.convert.google_bert import google_head_semantics
    from kzoo.nlp import keras_hub

    hub = keras_hub()
    kwargs = {} if dtype is None else {"dtype": dtype}
    if weights is None:
        model = hub.models.BertBackbone(vocabulary_size=vocabulary_size, num_layers=num_layers, num_heads=num_heads,
                                        hidden_dim=hidden_dim, intermediate_dim=intermediate_dim, dropout=dropout,
                                        max_sequence_length=max_sequence_length, num_segments=num_segments, **kwargs)
        return hub.models.BertMaskedLM(model) if masked_lm else model
    path = Path(str(weights)).expanduser()
    if isinstance(weights, str) and not path.exists():
        model_name = _registered()
        if model_name is None:
            raise ValueError(f"weights={weights!r}: a registry tag needs a model name; use "
                             f"kzoo.create_model('bert_base_uncased', weights={weights!r}).")
        path = preset_dir(model_name, weights)
    if path.is_dir() and (path / "config.json").is_file():
        cls = hub.models.BertMaskedLM if masked_lm else hub.models.BertBackbone
        model = cls.from_preset(str(path), **kwargs)
    else:
        from kzoo.convert.google_bert_preset import load_checkpoint

        model, _ = load_checkpoint(path, _registered("bert"), masked_lm=masked_lm)
    return google_head_semantics(model) if masked_lm else model
