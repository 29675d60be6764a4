"""Text models (optional extra ``kzoo[nlp]``: keras-hub, which pulls tensorflow-text).

Google's BERT checkpoints become keras-hub models (:mod:`kzoo.convert.google_bert`); their tokenizer is
keras-hub's ``BertTokenizer`` behind a small pre-normaliser that makes it equal Google's ``FullTokenizer``
(:mod:`kzoo.nlp.bert_tokenizer`). Nothing here imports keras-hub until it is used.
"""

from __future__ import annotations

from kzoo.errors import MissingExtra

INSTALL = 'pip install "kzoo[nlp]"'


def keras_hub(what: str = "kzoo's BERT models"):
    """The keras_hub module, or MissingExtra naming the install line."""
    try:
        import keras_hub as module
    except ImportError as exc:
        raise MissingExtra(f"{what} need keras-hub (and tensorflow-text), an optional extra: {INSTALL}. "
                           f"({type(exc).__name__}: {exc})") from None
    return module
