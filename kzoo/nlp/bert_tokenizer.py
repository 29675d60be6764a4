"""keras-hub's ``BertTokenizer``, made equal to Google's ``tokenization.FullTokenizer(do_lower_case=True)``.

Google's BasicTokenizer (google-research/bert ``tokenization.py``) first deletes NUL, U+FFFD and control /
format characters (Unicode Cc, Cf; not tab, newline, return), turns every space separator (Zs: no-break space,
ideographic space, ...) into a space, splits on whitespace (Python's ``str.split``, which also splits at the line
and paragraph separators U+2028/U+2029), then lowercases with ``str.lower``, drops accents (NFD, then no Mn),
splits punctuation and CJK characters, and runs WordPiece. keras-hub's tokenizer (``word_piece_tokenizer.py``)
differs in three places: it *splits* at Cc/Cf characters where Google deletes them (``"a\\u200bb"``), it does not
split at a no-break space (RE2's ``\\s`` is ASCII-only), and its ``lowercase=True`` is NFKC case folding
(full-width ``Ａ`` -> ``a``, ``ß`` -> ``ss``, ``ﬁ`` -> ``fi``), where Google's ``str.lower`` keeps the
character. So kzoo cleans the text the way Google does and lowercases it with ``str.lower`` before keras-hub sees
it, then lets keras-hub strip accents and split (``lowercase=False, strip_accents=True``).

What still differs (tests/test_bert_tokenizer.py checks each on its corpus): a word whose UTF-8 form is over 100
bytes but that has at most 200 characters is one ``[UNK]`` in keras-hub (``MAX_BYTES_PER_WORD = 100``) and WordPiece
pieces in Google's (``max_input_chars_per_word=200``); and in a TensorFlow graph (``tf.data``), where the lowercasing is
``tf.strings.lower``, the few letters added in Unicode 14 that TensorFlow's tables lack keep their case.
"""

from __future__ import annotations

import functools
import unicodedata
from pathlib import Path

from kzoo import index

# Google's _clean_text: drop NUL, U+FFFD and Cc/Cf except tab, newline, return; every Zs is a space. Python's
# str.split (Google's whitespace_tokenize) also splits at U+2028 / U+2029, which _clean_text keeps: mapped too.
_SPACES = frozenset({"\t", "\n", "\r", "\u2028", "\u2029"})
_TF_DROP = r"[\x{0}\x{FFFD}\p{Cf}]|[^\P{Cc}\t\n\r]"
_TF_SPACE = r"[\t\n\r\p{Zs}\x{2028}\x{2029}]"


@functools.lru_cache(maxsize=None)
def _cleaned(char: str) -> str:
    if char in _SPACES:
        return " "
    category = unicodedata.category(char)
    if char in "\x00\ufffd" or category in ("Cc", "Cf"):
        return ""
    return " " if category == "Zs" else char


def clean_text(text: str, lowercase: bool = True) -> str:
    """Google's text cleaning (and ``str.lower``) on one Python string."""
    text = "".join(_cleaned(char) for char in text)
    return text.lower() if lowercase else text


def clean_tensor(text, lowercase: bool = True):
    """The same on a string tensor, in TensorFlow ops (for ``tf.data`` and traced functions)."""
    import tensorflow as tf

    text = tf.strings.regex_replace(text, _TF_DROP, "")
    text = tf.strings.regex_replace(text, _TF_SPACE, " ")
    return tf.strings.lower(text, encoding="utf-8") if lowercase else text


def _clean_any(inputs, lowercase: bool):
    if isinstance(inputs, bytes):
        inputs = inputs.decode("utf-8", "ignore")  # as Google's convert_to_unicode
    if isinstance(inputs, str):
        return clean_text(inputs, lowercase)
    if isinstance(inputs, (list, tuple)):
        return [_clean_any(item, lowercase) for item in inputs]
    if type(inputs).__module__.startswith("numpy"):
        return [_clean_any(item, lowercase) for item in inputs.tolist()]
    return clean_tensor(inputs, lowercase)


def keras_hub_tokenizer(vocabulary, do_lower_case: bool = True):
    """keras-hub's own BertTokenizer, as close to Google's as keras-hub alone gets (what a preset stores)."""
    from kzoo.nlp import keras_hub

    return keras_hub().models.BertTokenizer(vocabulary=vocabulary, lowercase=do_lower_case,
                                            strip_accents=do_lower_case)


@functools.lru_cache(maxsize=None)
def _tokenizer_class():
    from kzoo.nlp import keras_hub

    class GoogleBertTokenizer(keras_hub().models.BertTokenizer):
        """keras-hub's BertTokenizer behind Google's text cleaning and ``str.lower`` (see the module docstring)."""

        def __init__(self, vocabulary=None, do_lower_case: bool = True, **kwargs):
            kwargs.pop("lowercase", None)
            kwargs.pop("strip_accents", None)
            self.do_lower_case = do_lower_case
            super().__init__(vocabulary=vocabulary, lowercase=False, strip_accents=do_lower_case, **kwargs)

        def tokenize(self, inputs):
            return super().tokenize(_clean_any(inputs, self.do_lower_case))

        def get_config(self):
            return {**super().get_config(), "do_lower_case": self.do_lower_case}

    return GoogleBertTokenizer


def bert_tokenizer(vocabulary, do_lower_case: bool = True, **kwargs):
    """A keras-hub BertTokenizer (a subclass) whose token ids equal Google's ``FullTokenizer``'s.

    ``vocabulary``: a ``vocab.txt`` path, a list of tokens, or a kzoo model name / keras-hub preset directory
    (its converted vocabulary). Other keyword arguments go to keras-hub's tokenizer (``sequence_length``, ...).
    """
    if isinstance(vocabulary, str) and not Path(vocabulary).exists() and index.normalise(vocabulary) in index.MODELS:
        from kzoo.architectures.bert import preset_dir

        vocabulary = preset_dir(vocabulary)
    if not isinstance(vocabulary, (list, tuple)):
        path = Path(vocabulary)
        if path.is_dir():
            path = path / "assets" / "tokenizer" / "vocabulary.txt"
        lines = path.read_text(encoding="utf-8").split("\n")
        vocabulary = [line.strip() for line in (lines[:-1] if lines[-1] == "" else lines)]  # as Google's load_vocab
    return _tokenizer_class()(vocabulary=list(vocabulary), do_lower_case=do_lower_case, **kwargs)
