"""A tolerant reader for the Object Detection API's ``pipeline.config`` (protobuf text format).

Why our own reader and not ``google.protobuf.text_format``: text_format parses only into a message class, and
the classes come from the API's ``object_detection/protos/*.proto`` (about 40 files: pipeline, model, ssd,
faster_rcnn, anchor generators, box coders, hyperparams, ...). They are not on PyPI for TF 2.21 (the API
cannot be installed beside it), compiling them would mean shipping a copy of them, and the 2018 archives' files
hold fields that later protos renamed or require (``batch_norm { train: true }``; the missing
``override_base_feature_extractor_hyperparams``, tensorflow/models#7411) on which a strict parser stops. This
reader knows only the grammar (``name: value``, ``name { ... }``, ``name: [a, b]``, ``#`` comments, quoted
strings), keeps every field, and leaves the meaning to the caller.

``parse(text)`` -> :class:`Message`; ``msg.get("model.ssd.num_classes")`` follows a dotted path through the
first of each repeated field; ``msg.all("aspect_ratios")`` gives every value of a repeated field.
"""

from __future__ import annotations

import re

from kzoo.errors import ConversionError

_TOKEN = re.compile(r"""\s*(?:(\#[^\n]*)|("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|([{}\[\]<>:,;])|([^\s{}\[\]<>:,;"'#]+))""")
_CLOSE = {"{": "}", "<": ">"}


class Message(dict):
    """Field name -> list of values (a value is a scalar or a Message), in file order."""

    def all(self, name: str) -> list:
        return list(super().get(name, []))

    def get(self, path: str, default=None):
        node = self
        for part in path.split("."):
            values = node.all(part) if isinstance(node, Message) else []
            if not values:
                return default
            node = values[0]
        return node

    def has(self, path: str) -> bool:
        return self.get(path) is not None


def _scalar(token: str):
    if token[0] in "\"'":
        return bytes(token[1:-1], "utf-8").decode("unicode_escape")
    if token in ("true", "True"):
        return True
    if token in ("false", "False"):
        return False
    try:
        return int(token)
    except ValueError:
        pass
    try:
        return float(token.rstrip("fF")) if re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?[fF]?|[-+]?inf|nan",
                                                            token) else token
    except ValueError:
        return token  # an enum name (RELU_6, SIGMOID)


def _tokens(text: str, source: str):
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            if text[position:].strip() == "":
                return
            raise ConversionError(f"{source}: cannot read the text proto at character {position}: "
                                  f"{text[position:position + 40]!r}")
        position = match.end()
        comment, string, punct, word = match.groups()
        if comment is None and (string or punct or word):
            yield string or punct or word


def parse(text: str, source: str = "pipeline.config") -> Message:
    """Parse protobuf text format into a :class:`Message`; errors name ``source`` and the place."""
    tokens = list(_tokens(text, source))
    position = 0

    def fail(what):
        near = " ".join(tokens[max(0, position - 4):position + 2])
        raise ConversionError(f"{source}: {what} near {near!r}. The file is not a valid pipeline.config.")

    def message(close):
        nonlocal position
        result = Message()
        while position < len(tokens):
            token = tokens[position]
            if token == close:
                position += 1
                return result
            if token in ",;":
                position += 1
                continue
            name = token
            position += 1
            if position < len(tokens) and tokens[position] == ":":
                position += 1
            if position >= len(tokens):
                fail(f"field {name!r} has no value")
            token = tokens[position]
            if token in _CLOSE:
                position += 1
                values = [message(_CLOSE[token])]
            elif token == "[":
                position += 1
                values = []
                while position < len(tokens) and tokens[position] != "]":
                    if tokens[position] != ",":
                        values.append(_scalar(tokens[position]))
                    position += 1
                position += 1
            else:
                position += 1
                values = [_scalar(token)]
            dict.setdefault(result, name, []).extend(values)
        if close is not None:
            fail(f"missing {close!r}")
        return result

    return message(None)


def read(path) -> Message:
    from pathlib import Path

    path = Path(path)
    return parse(path.read_text(encoding="utf-8"), str(path))
