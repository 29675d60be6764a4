"""Provenance: what an artifact was built from, written beside it as JSON (``kzoo.json`` / ``<file>.kzoo.json``).

Weights are recorded as they were *loaded*, not as they were asked for: :func:`recording` watches the one
place every builder turns its ``weights`` argument into a file (``kzoo.architectures._factory.Weights``) and
keeps the registry entry and path it used. The sha256 is computed here from that file's bytes (for registry
weights, the verified file from the cache: the one the registry's hash pins). Unknown stays ``null``: a
model passed in already built, or ``weights=None``, has no weight file kzoo could name.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import threading
from dataclasses import dataclass

_LOCK = threading.Lock()
SCHEMA = 1


@dataclass
class LoadedWeights:
    argument: object  # what the builder was given: a tag, a path, or None
    path: str | None = None  # the file the weights were read from
    entry: object = None  # its registry entry (None for a user's path)


@contextlib.contextmanager
def recording():
    """Within it, every weights file a kzoo builder loads is appended to the yielded list."""
    from kzoo.architectures._factory import Weights

    seen: list[LoadedWeights] = []
    original = Weights.local_file

    def local_file(self, **variant):
        path, entry = original(self, **variant)
        seen.append(LoadedWeights(self.value, os.fspath(path), entry))
        return path, entry

    # One wrapper at a time: concurrent exports in threads would otherwise restore each other's original.
    with _LOCK:
        Weights.local_file = local_file
        try:
            yield seen
        finally:
            Weights.local_file = original


def weights_record(argument, loaded: list[LoadedWeights]) -> dict:
    """The ``weights`` block: argument, registry id, file name and sha256 of the file the weights came from."""
    from kzoo.sources import hash_file

    record = {"argument": _argument_text(argument), "registry_id": None, "file_name": None, "sha256": None,
              "loaded_sha256": None}
    if not loaded:
        return record
    last = loaded[-1]
    entry = last.entry
    loaded_sha = hash_file(last.path, ("sha256",))["sha256"]
    record["loaded_sha256"] = loaded_sha
    if entry is None:  # a user's file: it is what was loaded; name the registry entry if its bytes are one
        from kzoo import registry

        record["file_name"] = os.path.basename(last.path)
        record["sha256"] = loaded_sha
        matches = registry.identify(sha256=loaded_sha)
        record["registry_id"] = matches[0].id if len(matches) == 1 else None
        return record
    from kzoo import sources

    record["registry_id"] = entry.id
    record["file_name"] = entry.file_name
    # The registry's file (a checkpoint archive for converted weights), as fetched and verified into the cache.
    record["sha256"] = hash_file(sources.fetch(entry), ("sha256",))["sha256"]
    return record


def _argument_text(argument):
    if argument is None or isinstance(argument, str) and not os.path.sep in argument:
        return argument
    return os.path.basename(os.fspath(argument))  # a path: its name only, no user folders in a shipped file


def versions(runtime_description: str) -> dict:
    from importlib import metadata

    import keras

    import kzoo

    found = {"kzoo": kzoo.__version__, "keras": keras.__version__, "keras_backend": keras.backend.backend(),
             "runtime": runtime_description}
    for dist in ("tensorflow", "tf2onnx", "onnx", "onnxruntime", "openvino", "ai-edge-litert"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return found


def class_index_for(classes: int | None):
    """ImageNet's ``[[wordnet id, label], ...]`` for a 1000-class head, else None (kzoo knows no other)."""
    from kzoo.preprocessing import NUM_CLASSES, class_index

    if classes != NUM_CLASSES:
        return None
    index = class_index()
    return [index[str(i)] for i in range(NUM_CLASSES)]


def write(path, document: dict) -> None:
    """Indented JSON, with the class index one ``[wordnet id, label]`` pair a line (not four)."""
    classes = document.get("class_index")
    text = json.dumps({**document, "class_index": "@CLASSES@" if classes else classes}, indent=1)
    if classes:
        rows = ",\n  ".join(json.dumps(row) for row in classes)
        text = text.replace('"@CLASSES@"', "[\n  " + rows + "\n ]", 1)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text + "\n")


def read(path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
