"""Fuzzing every reader: mutated real files end in identical weights, a kzoo error naming the file, or (only
for a file no hash covers) different numbers; never another exception, a crash or a hang.

Fixtures are made at test time by the libraries users' files come from: a legacy ``.h5`` saved by tf_keras,
V1 and V2 checkpoints saved by a TF-slim net, a ``.tar.gz`` and a ``.zip`` of checkpoints, a registry overlay
(``KZOO_REGISTRY``) and a trust-on-first-use pin file written by ``kzoo.pins.record_pin``. Each mutant is
loaded in a long-lived worker process (TensorFlow takes seconds to import), which is restarted when a C
library kills it; a mutant that takes longer than ``HANG_S`` counts as a hang.

Readers (rows of the table) and how each mutant is loaded in the worker:

    h5              weights=PATH (the builders' path) and kzoo.load_weights(model, PATH)
    h5-registered   weights=<tag> of a sha256-pinned KZOO_REGISTRY entry: the mutant in the mirror folder,
                    then the mutant in the cache with the good file in the mirror (must load identical)
    ckpt-v1         open_checkpoint(V1 file), every variable read
    ckpt-v2-index   open_checkpoint(V2 prefix) with a mutated .index
    ckpt-v2-data    open_checkpoint(V2 prefix) with a mutated .data-00000-of-00001
    tar.gz, zip     open_checkpoint(archive): safe extraction, then every variable read
    paddle-tensor   kzoo.formats.paddle.open_params(folder) of a PaddlePaddle per-variable folder with one mutated
                    tensor file (written by Paddle's own serializer), every variable read
    pdparams        open_params(a mutated .pdparams written by paddle.save), every array read
    registry        a mutated KZOO_REGISTRY overlay: get_weights_entry + fetch_weights + load_weights
    pins            a mutated pin file: the pinned (trust-on-first-use) entry fetched from a mirror holding
                    other bytes (must fail), then from one holding the pinned bytes

Outcomes: identical / kzoo-error / different / other / crash / hang. ``different`` is allowed only for
``h5``, ``ckpt-*`` and the archives (no hash covers a user's file); everything else must be zero. ``crash``
and ``hang`` count the worker's deaths and timeouts: HDF5 does crash and loop on some damaged ``.h5`` files,
and kzoo's h5 reader reads an unverified file in a child process first (kzoo/formats/keras_h5.py), so those
mutants end as kzoo errors here.

    python -m pytest tests/test_fuzz_readers.py -q                       # default: FUZZ_CASES per reader
    KZOO_FUZZ_CASES=5000 python -m pytest tests/test_fuzz_readers.py -q  # the long run
    python benchmarks/fuzz_readers.py --cases 5000                      # the same, printed as a table
"""

from __future__ import annotations

import collections
import contextlib
import gzip
import hashlib
import json
import os
import pickle
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

READERS = ("h5", "h5-registered", "ckpt-v1", "ckpt-v2-index", "ckpt-v2-data", "tar.gz", "zip", "paddle-tensor", "pdparams",
           "registry", "pins")
OUTCOMES = ("identical", "kzoo-error", "different", "other", "crash", "hang")
# A user's own file has no hash to check, so a flipped number in its data loads; a registered or pinned
# file must never load other numbers.
DIFFERENT_ALLOWED = {"h5", "ckpt-v1", "ckpt-v2-index", "ckpt-v2-data", "tar.gz", "zip", "paddle-tensor", "pdparams"}
# Per reader: 100 by default (~35 s for all eleven readers on two shared cores; h5 ~0.25 s each, the probe); the
# long run (KZOO_FUZZ_CASES=5000) is the search, the default run a seeded regression guard.
DEFAULT_CASES = 100
HANG_S = 30.0  # one mutant's budget; a normal one takes 5-60 ms, or ~0.3 s with kzoo's h5 probe
PROBE_TIMEOUT_S = "8"  # kzoo's h5 probe gives up on a looping HDF5 after this (a good file takes ~0.3 s)
START_S = 240.0  # worker start (TensorFlow import) and fixture building
ENTRY_PINNED, ENTRY_TOFU = "fuzznet.fuzz", "fuzznet.tofu"

BINARY_MUTATIONS = ("truncate", "bit-flip", "zero-range", "swap-blocks", "huge-size")
JSON_MUTATIONS = ("truncate", "bit-flip", "zero-range", "swap-blocks", "huge-size", "deep-nesting", "wrong-type")


# ============================================================================================ mutations
# Pure functions of (bytes, rng): the parent makes every mutant, so a finding is reproduced from its file.

def _truncate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    cut = rng.randrange(len(data))
    return data[:cut], f"cut at {cut} of {len(data)}"


def _bit_flip(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    out = bytearray(data)
    count = rng.choice((1, 1, 1, 2, 4, 8))
    where = sorted(rng.randrange(len(out)) for _ in range(count))
    for at in where:
        out[at] ^= 1 << rng.randrange(8)
    return bytes(out), f"{count} bit(s) at {where[:4]}"


def _zero_range(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    length = min(len(data), rng.choice((1, 4, 16, 64, 512, 4096)))
    start = rng.randrange(len(data) - length + 1)
    return data[:start] + bytes(length) + data[start + length:], f"{length} bytes zeroed at {start}"


def _swap_blocks(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    length = max(1, min(len(data) // 2, rng.choice((4, 16, 64, 512))))
    a = rng.randrange(len(data) - 2 * length + 1)
    b = rng.randrange(a + length, len(data) - length + 1)
    out = data[:a] + data[b:b + length] + data[a + length:b] + data[a:a + length] + data[b + length:]
    return out, f"{length}-byte blocks at {a} and {b} swapped"


_HUGE = (2**31 - 1, 2**32 - 1, 2**40, 2**62, 2**63 - 1, 2**64 - 1)


def _huge_le_int(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """A little-endian integer that looks like a size or an offset (1..file size) becomes huge. HDF5 stores
    addresses, lengths and dimensions this way; in a format without sizes it is a random overwrite."""
    width = rng.choice((4, 8))
    starts = list(range(len(data) - width + 1))
    rng.shuffle(starts)
    for at in starts[:4096]:
        value = int.from_bytes(data[at:at + width], "little")
        if 0 < value <= len(data):
            break
    else:
        at = starts[0]
    huge = rng.choice(_HUGE) & (2 ** (8 * width) - 1)
    return data[:at] + huge.to_bytes(width, "little") + data[at + width:], f"u{8 * width} at {at} -> {huge}"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes, at: int) -> tuple[int, int] | None:
    value = shift = 0
    for i in range(at, min(at + 10, len(data))):
        value |= (data[i] & 0x7F) << shift
        shift += 7
        if not data[i] & 0x80:
            return value, i + 1
    return None


def _huge_table_size(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """TF table files (V1 checkpoints, V2 indexes) declare block offsets and sizes, and tensor shapes and
    sizes, as varints: the footer's block handles, or a varint inside the file, become huge."""
    huge = rng.choice(_HUGE)
    if rng.random() < 0.4 and len(data) >= 48:
        footer, fields, at = data[-48:-8], [], 0
        for _ in range(4):
            decoded = _read_varint(footer, at)
            if decoded is None:
                return _huge_le_int(data, rng)
            value, at = decoded
            fields.append(value)
        which = rng.randrange(4)
        fields[which] = huge
        encoded = b"".join(_varint(v) for v in fields)
        return data[:-48] + encoded.ljust(40, b"\0")[:40] + data[-8:], f"footer handle field {which} -> {huge}"
    starts = list(range(len(data)))
    rng.shuffle(starts)
    for at in starts[:4096]:
        decoded = _read_varint(data, at)
        if decoded and 0 < decoded[0] <= len(data):
            end = decoded[1]
            return data[:at] + _varint(huge) + data[end:], f"varint at {at} ({decoded[0]}) -> {huge}"
    return _huge_le_int(data, rng)


def _huge_tar_size(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """A member header of the (gunzipped) tar declares a huge size, with a correct header checksum, so the
    header is believed; re-gzipped so the damage is in the tar layer, not the gzip layer."""
    raw = bytearray(gzip.decompress(data))
    headers, at = [], 0
    while at + 512 <= len(raw) and raw[at:at + 512] != bytes(512):
        headers.append(at)
        size = int(raw[at + 124:at + 136].strip(b"\0 ") or b"0", 8)
        at += 512 + (size + 511) // 512 * 512
    at = rng.choice(headers)
    huge = rng.choice((8**11 - 1, 2**40, 2**62))
    if huge < 8**11:
        raw[at + 124:at + 136] = b"%011o\0" % huge
    else:  # GNU base-256: the high bit of the first byte marks a binary number
        raw[at + 124:at + 136] = b"\x80" + huge.to_bytes(11, "big")
    raw[at + 148:at + 156] = b" " * 8
    raw[at + 148:at + 156] = b"%06o\0 " % sum(raw[at:at + 512])
    return gzip.compress(bytes(raw), compresslevel=1, mtime=0), f"tar header at {at} size -> {huge}"


def _huge_zip_size(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """A size or count field of a local header, the central directory or its end record becomes huge."""
    fields = []
    for signature, offsets in ((b"PK\x03\x04", (18, 22)), (b"PK\x01\x02", (20, 24, 42)),
                               (b"PK\x05\x06", (8, 10, 12, 16))):
        for match in re.finditer(re.escape(signature), data):
            fields += [(match.start() + off, 2 if signature == b"PK\x05\x06" and off < 12 else 4) for off in offsets]
    at, width = rng.choice(fields)
    huge = (2 ** (8 * width) - 1) if rng.random() < 0.5 else (2 ** (8 * width - 1) - 1)
    return data[:at] + huge.to_bytes(width, "little") + data[at + width:], f"zip field at {at} -> {huge}"


def _json_nodes(value, path=()):
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _json_nodes(item, path + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _json_nodes(item, path + (i,))


def _replace_json(data: bytes, rng: random.Random, make_text) -> tuple[bytes, str]:
    """Put ``make_text(old value)`` (raw JSON text) in place of one random value of the document."""
    doc = json.loads(data)
    path = rng.choice([p for p in _json_nodes(doc) if p])
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    text, what = make_text(parent[path[-1]])
    token = "\ue000KZOO-FUZZ\ue000"
    parent[path[-1]] = token
    out = json.dumps(doc, indent=1).replace(json.dumps(token), text)
    return out.encode("utf-8"), f"{'/'.join(map(str, path))} -> {what}"


def _deep_nesting(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    depth = rng.choice((40, 900, 2000, 100_000))  # 900: under the JSON decoder's limit, over recursive code's
    opener, closer = rng.choice((("[", "]"), ('{"a":', "}")))
    return _replace_json(data, rng, lambda old: (opener * depth + "1" + closer * depth, f"nested {depth} deep"))


_WRONG_VALUES = ("0", "-1", "1.5", '""', '"x"', "[]", "{}", "null", "true", '["x", 2]', '{"sha256": 5}',
                 '"' + "0" * 64 + '"', '"../../escape"')


def _json_type(value) -> str:
    if isinstance(value, bool) or value is None:
        return repr(value)
    return "number" if isinstance(value, (int, float)) else type(value).__name__


def _wrong_type(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """A value of another JSON type (an object where a string was, a number where an object was, ...). A value
    of the same type would be an edit, not damage: ``"pins": {}`` is a pin file with every pin deleted."""
    def make(old):
        choices = [v for v in _WRONG_VALUES if _json_type(json.loads(v)) != _json_type(old)]
        value = rng.choice(choices)
        return value, value[:20]
    return _replace_json(data, rng, make)


def _huge_json_number(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    value = rng.choice(("1" + "0" * 5000, "1e999", "-1e999", str(2**64), "18446744073709551616.5", "-9" * 20))
    return _replace_json(data, rng, lambda old: (value, f"number {value[:12]}... ({len(value)} chars)"))


_GENERIC = {"truncate": _truncate, "bit-flip": _bit_flip, "zero-range": _zero_range, "swap-blocks": _swap_blocks}
_HUGE_SIZE = {"h5": _huge_le_int, "h5-registered": _huge_le_int, "ckpt-v1": _huge_table_size,
              "ckpt-v2-index": _huge_table_size, "ckpt-v2-data": _huge_le_int, "tar.gz": _huge_tar_size,
              "zip": _huge_zip_size, "paddle-tensor": _huge_le_int, "pdparams": _huge_le_int,
              "registry": _huge_json_number, "pins": _huge_json_number}


def mutations_for(reader: str) -> tuple[str, ...]:
    return JSON_MUTATIONS if reader in ("registry", "pins") else BINARY_MUTATIONS


def mutate(reader: str, data: bytes, seed: int, index: int) -> tuple[str, bytes, str]:
    """The ``index``-th mutant of ``reader``'s fixture: (mutation, bytes, description). Mutations take
    turns, so every kind is tried about equally often."""
    rng = random.Random(f"{seed}:{reader}:{index}")
    kinds = mutations_for(reader)
    kind = kinds[index % len(kinds)]
    if kind == "huge-size":
        function = _HUGE_SIZE[reader]
    elif kind == "deep-nesting":
        function = _deep_nesting
    elif kind == "wrong-type":
        function = _wrong_type
    else:
        function = _GENERIC[kind]
    mutant, description = function(data, rng)
    return kind, mutant, description


# ============================================================================================ the worker side
# Everything below until "the parent side" runs in the worker process.

SHAPE = (8, 8, 3)
CLASSES = 10


def _import_tensorflow():
    """TF-slim 1.1 needs tf_keras' legacy layers aliased before TensorFlow loads (as tests/conftest.py)."""
    import tf_keras.src.legacy_tf_layers as legacy_layers
    import tf_keras.src.legacy_tf_layers.normalization as legacy_norm

    sys.modules["tf_keras.legacy_tf_layers"] = legacy_layers
    sys.modules["tf_keras.legacy_tf_layers.normalization"] = legacy_norm
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    return tf


def _net(layers_module, tensorflow_keras: bool):
    """The same small functional net in tf_keras (which writes the legacy file) and Keras 3 (which loads it)."""
    L = layers_module
    inputs = L.Input(SHAPE)
    x = L.Conv2D(8, 3, name="conv1")(inputs)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.Activation("relu")(x)
    x = L.DepthwiseConv2D(3, name="dw")(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(48, activation="relu", name="fc1")(x)
    x = L.Dense(CLASSES, name="fc2")(x)
    if tensorflow_keras:
        import tf_keras

        return tf_keras.Model(inputs, x, name="fuzznet")
    import keras

    return keras.Model(inputs, x, name="fuzznet")


def _tf_keras_h5(path: Path, rng, offset: float = 0.0) -> dict:
    """Save random weights with tf_keras' own legacy writer; returns {layer: [arrays]} as tf_keras holds them."""
    import numpy as np
    import tf_keras

    model = _net(tf_keras.layers, True)
    for layer in model.layers:
        values = []
        for w in layer.weights:
            value = rng.normal(size=w.shape).astype("float32") + offset
            if "moving_variance" in w.name:
                value = np.abs(value) + 0.1
            values.append(value)
        if values:
            layer.set_weights(values)
    model.save_weights(str(path))  # a .h5 name: tf_keras writes the legacy HDF5 layout
    return {layer.name: [np.array(w) for w in layer.get_weights()] for layer in model.layers if layer.weights}


def _slim_checkpoints(root: Path, rng) -> dict:
    """A TF-slim net (conv + batch norm + fully connected, global step) saved as V1 and V2 checkpoints."""
    import numpy as np
    import tensorflow as tf
    import tf_slim as slim

    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, (None, *SHAPE))
        slim.get_or_create_global_step()
        with slim.arg_scope([slim.conv2d], normalizer_fn=slim.batch_norm,
                            normalizer_params={"scale": True, "is_training": False}):
            net = slim.conv2d(images, 8, [3, 3], scope="fuzznet/conv1")
            net = slim.conv2d(net, 16, [3, 3], stride=2, scope="fuzznet/conv2")
        net = slim.fully_connected(slim.flatten(net), CLASSES, activation_fn=None, scope="fuzznet/logits")
        variables = tf.compat.v1.global_variables()
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            for var in variables:
                dtype = var.dtype.base_dtype.as_numpy_dtype
                shape = var.shape.as_list()
                value = rng.integers(1, 10**6, size=shape) if dtype == np.int64 else rng.normal(size=shape)
                var.load(np.asarray(value, dtype), session)
            expected = {v.op.name: session.run(v) for v in variables}
            for version, path in (("V1", root / "v1" / "net.ckpt"), ("V2", root / "v2" / "model.ckpt")):
                path.parent.mkdir(parents=True)
                write_version = getattr(tf.compat.v1.train.SaverDef, version)
                tf.compat.v1.train.Saver(write_version=write_version).save(
                    session, str(path), write_meta_graph=False)
    return expected


_PADDLE_WRITER = """
import pickle, sys, numpy as np
from pathlib import Path
root = Path(sys.argv[1])
arrays = pickle.loads(Path(sys.argv[2]).read_bytes())
try:
    import paddle
    from paddle.base import core
except ImportError:  # kzoo's writer is byte-identical to Paddle's (tests/test_paddle.py)
    paddle = None
    from kzoo.formats.paddle import write_tensor
for name, value in arrays.items():
    if paddle is None:
        (root / 'vars' / name).write_bytes(write_tensor(value))
    else:
        tensor = paddle.to_tensor(value)  # held: the dense tensor below is a view of it
        core.save_dense_tensor(tensor.value().get_tensor(), str(root / 'vars' / name))
if paddle is None:
    (root / 'net.pdparams').write_bytes(pickle.dumps(arrays, protocol=4))
else:
    paddle.save({name: paddle.to_tensor(value) for name, value in arrays.items()}, str(root / 'net.pdparams'))
"""


def _paddle_files(root: Path, rng) -> dict:
    """A small Paddle parameter set (conv, BatchNorm, fc in the 2019 names) saved by Paddle, in its own process
    (Paddle and TensorFlow are kept apart), as a per-variable folder and as a ``.pdparams``."""
    import numpy as np

    arrays = {"conv1_weights": rng.normal(size=(8, 3, 3, 3)).astype("float32"),
              "conv1_bn_scale": rng.normal(size=8).astype("float32"),
              "conv1_bn_variance": (np.abs(rng.normal(size=8)) + 0.1).astype("float32"),
              "fc_0.w_0": rng.normal(size=(8, CLASSES)).astype("float32"),
              "fc_0.b_0": rng.normal(size=CLASSES).astype("float64"),
              "step": np.array([7], dtype="int64")}
    (root / "vars").mkdir(parents=True)
    (root / "arrays.pkl").write_bytes(pickle.dumps(arrays))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", _PADDLE_WRITER, str(root), str(root / "arrays.pkl")], check=True,
                   env=env, capture_output=True, timeout=300)
    return arrays


def _overlay(h5: bytes, other_size: int) -> dict:
    """A KZOO_REGISTRY overlay in the schema of kzoo/weights_registry.schema.json: a sha256-pinned entry, a
    trust-on-first-use one and a checkpoint entry with a conversion block (more fields to damage)."""
    common = {"model": "fuzznet", "include_top": True, "variant": {}, "format": "keras-h5",
              "origin": "kzoo fuzz fixture", "license": "Apache-2.0", "preprocessing": "tf", "input_size": 8,
              "num_classes": CLASSES, "superseded_by": None, "conversion": None, "available_in": ["kzoo"],
              "source": "tests/test_fuzz_readers.py", "notes": "fuzz"}
    return {"schema_version": 1, "description": "fuzz overlay", "entries": [
        {**common, "id": ENTRY_PINNED, "tag": "fuzz", "file_name": "fuzz.h5",
         "urls": ["https://weights.invalid/fuzz.h5"], "md5": hashlib.md5(h5).hexdigest(),
         "sha256": hashlib.sha256(h5).hexdigest(), "size": len(h5), "trust": "pinned"},
        {**common, "id": ENTRY_TOFU, "tag": "tofu", "file_name": "fuzz_tofu.h5",
         "urls": ["https://weights.invalid/fuzz_tofu.h5"], "md5": None, "sha256": None, "size": None,
         "trust": "tofu"},
        {**common, "id": "fuzznet.slim", "tag": "slim", "file_name": "fuzz_slim.tar.gz", "format": "tf-checkpoint",
         "urls": ["https://weights.invalid/fuzz_slim.tar.gz", "hf://kzoo/fuzz@main/fuzz_slim.tar.gz"],
         "md5": None, "sha256": "ab" * 32, "size": other_size, "trust": "pinned", "variant": {"alpha": 1.0},
         "conversion": {"converter": "slim", "family": "fuzznet", "scope": "fuzznet", "checkpoint": "model.ckpt",
                        "checkpoint_version": "V2", "archive": "tar.gz", "background_class": False,
                        "drop_scopes": ["global_step"]}},
    ]}


def make_fixtures(root: Path) -> dict:
    """Every fixture file, written by the libraries that write users' files. Returns the manifest."""
    import numpy as np

    from kzoo import pins

    rng = np.random.default_rng(15)
    root.mkdir(parents=True, exist_ok=True)
    h5 = root / "fuzz.h5"
    expected_h5 = _tf_keras_h5(h5, rng)
    other = root / "other.h5"  # the same layout with other numbers: "other bytes" for a pinned entry
    other_values = _tf_keras_h5(other, rng, offset=1.0)
    expected_ckpt = _slim_checkpoints(root / "ckpt", rng)
    expected_paddle = _paddle_files(root / "paddle", rng)
    v2 = sorted((root / "ckpt" / "v2").glob("model.ckpt.*"))
    with tarfile.open(root / "model.tar.gz", "w:gz", compresslevel=1) as tar:
        for f in v2:
            tar.add(str(f), arcname=f"model/{f.name}")
    with zipfile.ZipFile(root / "net.zip", "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.write(str(root / "ckpt" / "v1" / "net.ckpt"), arcname="net/net.ckpt")
    h5_bytes = h5.read_bytes()
    for mirror, source in (("mirror", h5), ("other-mirror", other)):
        (root / mirror).mkdir()
        shutil.copy(source, root / mirror / "fuzz.h5")
        shutil.copy(source, root / mirror / "fuzz_tofu.h5")
    (root / "registry.json").write_text(json.dumps(_overlay(h5_bytes, other.stat().st_size), indent=1))
    os.environ["KZOO_REGISTRY"] = str(root / "registry.json")
    os.environ["KZOO_PINS"] = str(root / "pins.json")
    from kzoo import registry

    pins.record_pin(registry.get_entry(ENTRY_TOFU), hashlib.sha256(h5_bytes).hexdigest(), len(h5_bytes), "fixture")
    pins.record_pin("other.model", hashlib.sha256(b"other").hexdigest(), 5, "fixture")
    pins.record_pin("third.model", hashlib.sha256(b"third").hexdigest(), None, None)
    with open(root / "expected.pkl", "wb") as f:
        pickle.dump({"h5": expected_h5, "other": other_values, "ckpt": expected_ckpt, "paddle": expected_paddle}, f)
    files = {"h5": h5, "h5-registered": h5, "ckpt-v1": root / "ckpt" / "v1" / "net.ckpt",
             "ckpt-v2-index": next(f for f in v2 if f.name.endswith(".index")),
             "ckpt-v2-data": next(f for f in v2 if ".data-" in f.name),
             "tar.gz": root / "model.tar.gz", "zip": root / "net.zip",
             "paddle-tensor": root / "paddle" / "vars" / "conv1_weights", "pdparams": root / "paddle" / "net.pdparams",
             "registry": root / "registry.json", "pins": root / "pins.json"}
    return {"root": str(root), "files": {k: str(v) for k, v in files.items()}}


class _Worker:
    """State of one worker process: the fixtures' expected values and the Keras 3 model the h5 loads into."""

    def __init__(self, root: Path):
        import numpy as np

        self.np = np
        self.root = root
        with open(root / "expected.pkl", "rb") as f:
            self.expected = pickle.load(f)
        import keras

        self.model = _net(keras.layers, False)
        self.environ = dict(os.environ)  # each job starts from it: one job's KZOO_REGISTRY must not reach the next

    # ---- comparing
    def _reset(self):
        for variable in self.model.weights:  # a value no fixture holds: a layer left unloaded shows
            variable.assign(self.np.full(variable.shape, 0.123, variable.dtype))

    def _model_vs(self, want: dict) -> str:
        from kzoo.formats.keras_h5 import legacy_weights

        for layer in self.model.layers:
            values = [self.np.asarray(v) for v in legacy_weights(layer)]
            if values and (layer.name not in want or len(values) != len(want[layer.name]) or not all(
                    a.shape == b.shape and self.np.array_equal(a, b) for a, b in zip(values, want[layer.name]))):
                return f"layer {layer.name} differs"
        return "identical"

    def _ckpt_vs(self, ckpt) -> str:
        want = self.expected["ckpt"]
        if set(ckpt.shapes()) != set(want):
            return "different: variable names differ"
        for name, value in want.items():
            got = ckpt.read(name)
            if got.dtype != value.dtype or got.shape != value.shape or not self.np.array_equal(got, value):
                return f"different: {name}"
        return "identical"

    # ---- loaders: each returns "identical" or "different: ..." and raises what kzoo raised
    def h5(self, job):
        from kzoo.architectures._factory import Weights
        from kzoo.formats import keras_h5

        results = []
        for api in ("weights=PATH", "kzoo.load_weights"):
            self._reset()
            if api == "weights=PATH":  # what every builder does with a path (legacy_names as the families pass)
                Weights(job["path"], "fuzznet", True, CLASSES, CLASSES).load(self.model, legacy_names=lambda n: n)
            else:
                keras_h5.load_weights(self.model, job["path"])
            results.append(self._model_vs(self.expected["h5"]))
        return next((r for r in results if r != "identical"), "identical")

    def _by_tag(self, tag, *, cache, mirror, pins=None):
        from kzoo.architectures._factory import Weights

        # KZOO_H5_PROBE=0: a file that reaches the loader here matched its hash, and the builders are to skip
        # the child-process probe for such files (probe=False); the hash, not the probe, is what is tested.
        os.environ.update(KZOO_CACHE_DIR=str(cache), KZOO_MIRRORS=str(mirror), KZOO_OFFLINE="1",
                          KZOO_REGISTRY=str(self.root / "registry.json"), KZOO_H5_PROBE="0",
                          KZOO_PINS=str(pins or Path(cache).parent / "no-pins.json"))
        self._reset()
        try:
            Weights(tag, "fuzznet", True, CLASSES, CLASSES).load(self.model)
        finally:
            os.environ.pop("KZOO_H5_PROBE")

    def h5_registered(self, job):
        case = Path(job["case"])
        (case / "cache1").mkdir()
        shutil.copy(job["path"], case / "cache1" / "fuzz.h5")  # the mutant already in the cache
        try:
            self._by_tag("fuzz", cache=case / "cache1", mirror=self.root / "mirror")
        except Exception as exc:
            raise _Stage("mutant in the cache, good file in the mirror", exc) from exc
        served = self._model_vs(self.expected["h5"])
        if served != "identical":
            return f"different: {served} (the mutant in the cache was served)"
        mirror = case / "mirror"
        mirror.mkdir()
        shutil.copy(job["path"], mirror / "fuzz.h5")
        self._by_tag("fuzz", cache=case / "cache2", mirror=mirror)  # the mutant offered by a mirror
        return self._model_vs(self.expected["h5"])

    def ckpt(self, job):
        from kzoo.formats.tf_checkpoint import open_checkpoint

        work = Path(job["case"]) / "work"
        with open_checkpoint(job["open"], workdir=work) as ckpt:
            result = self._ckpt_vs(ckpt)
        if work.exists() and any(work.iterdir()):
            raise _Leftover(f"files left in {work}: {sorted(p.name for p in work.iterdir())}")
        return result

    def paddle(self, job):
        from kzoo.formats.paddle import open_params

        work = Path(job["case"]) / "work"
        want = self.expected["paddle"]
        with open_params(job["open"], workdir=work) as params:
            if set(params.shapes()) != set(want):
                return "different: variable names differ"
            for name, value in want.items():
                got = params.read(name)
                if got.dtype != value.dtype or got.shape != value.shape or not self.np.array_equal(got, value):
                    return f"different: {name}"
        return "identical"

    def registry(self, job):
        import kzoo

        case = Path(job["case"])
        os.environ.update(KZOO_REGISTRY=job["path"], KZOO_CACHE_DIR=str(case / "cache"), KZOO_OFFLINE="1",
                          KZOO_MIRRORS=str(self.root / "mirror"), KZOO_PINS=str(case / "pins.json"))
        self._reset()
        kzoo.registry.list_weights(include_superseded=True)
        path = kzoo.fetch_weights(kzoo.get_weights_entry(ENTRY_PINNED))
        kzoo.load_weights(self.model, path, probe=False)  # fetched means hash-verified: no probe needed
        return self._model_vs(self.expected["h5"])

    def pins(self, job):
        case = Path(job["case"])
        shutil.copy(job["path"], case / "pins-1.json")
        try:
            self._by_tag("tofu", cache=case / "cache1", mirror=self.root / "other-mirror", pins=case / "pins-1.json")
        except Exception as exc:
            if not _is_kzoo(exc):
                raise _Stage("other bytes offered", exc) from exc
        else:
            return "different: the pinned entry accepted other bytes"
        shutil.copy(job["path"], case / "pins-2.json")
        self._by_tag("tofu", cache=case / "cache2", mirror=self.root / "mirror", pins=case / "pins-2.json")
        return self._model_vs(self.expected["h5"])


class _Stage(Exception):
    """A non-kzoo exception from one named stage of a loader."""

    def __init__(self, stage, exc):
        super().__init__(f"{stage}: {type(exc).__name__}: {exc}")
        self.original = exc


class _Leftover(Exception):
    """An archive's extraction folder was not removed."""


def _is_kzoo(exc) -> bool:
    from kzoo.errors import KzooError

    return isinstance(exc, KzooError)


def _classify(worker: _Worker, job: dict) -> dict:
    os.environ.clear()
    os.environ.update(worker.environ)
    loader = getattr(worker, job["loader"])
    try:
        result = loader(job)
    except _Stage as exc:
        return {"outcome": "other", "detail": str(exc)[:500]}
    except Exception as exc:  # noqa: BLE001 - classifying every exception is the point
        message = str(exc)
        if _is_kzoo(exc):
            if any(name in message for name in job["names"]):
                return {"outcome": "kzoo-error", "detail": f"{type(exc).__name__}: {message[:300]}"}
            return {"outcome": "other", "detail": f"{type(exc).__name__} not naming the file: {message[:400]}"}
        return {"outcome": "other", "detail": f"{type(exc).__name__}: {message[:400]}"}
    if result == "identical":
        return {"outcome": "identical", "detail": ""}
    return {"outcome": "different", "detail": result}


WORKER_HEADROOM = 4 * 2**30


def _limit_memory():
    """Cap the worker's address space a few GiB above what TensorFlow and the model take, so a mutant that
    declares a huge tensor fails (and is counted) instead of filling a shared machine's memory."""
    import resource

    with open("/proc/self/status") as status:
        size = int(re.search(r"VmSize:\s+(\d+) kB", status.read())[1]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (size + WORKER_HEADROOM, resource.RLIM_INFINITY))


def worker_main():
    """Read one JSON job per line on stdin, answer one JSON line on the original stdout."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # TensorFlow or HDF5 printing to stdout must not corrupt the replies
    sys.stdout = sys.stderr
    _import_tensorflow()
    worker = None
    while line := sys.stdin.readline():
        job = json.loads(line)
        if job["op"] == "fixtures":
            reply = make_fixtures(Path(job["root"]))
            worker = _Worker(Path(job["root"]))
        elif job["op"] == "init":
            worker = _Worker(Path(job["root"]))
            reply = {"ok": True}
        if job["op"] in ("fixtures", "init"):
            _limit_memory()
        else:
            reply = _classify(worker, job)
        replies.write(json.dumps(reply) + "\n")


# ============================================================================================ the parent side

class WorkerProcess:
    """A worker subprocess with a per-job timeout; restarted (and the death counted) when it dies."""

    def __init__(self, root: Path, log: Path):
        self.root, self.log = root, log
        self.proc = None
        self.starts = 0

    def start(self):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow", "CUDA_VISIBLE_DEVICES": "",
               "KZOO_H5_PROBE_TIMEOUT": PROBE_TIMEOUT_S,
               "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO),
                                                                       os.environ.get("PYTHONPATH", "")])}
        code = "import test_fuzz_readers as f; f.worker_main()"
        self.log_handle = open(self.log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log_handle, env=env, cwd=str(self.root))
        self.buffer = b""
        self.starts += 1

    def stop(self):
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()  # this worker only, by its own pid
            self.proc.wait()
            self.proc = None
            self.log_handle.close()

    def ask(self, job: dict, timeout: float) -> dict:
        """The worker's reply, or {"outcome": "crash" | "hang"} (the worker is then stopped)."""
        if self.proc is None:
            self.start()
            if job["op"] not in ("fixtures", "init"):
                reply = self.ask({"op": "init", "root": str(self.root)}, START_S)
                if "outcome" in reply:
                    raise RuntimeError(f"the fuzz worker cannot start: {reply}; see {self.log}")
        try:
            self.proc.stdin.write((json.dumps(job) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                return {"outcome": "hang", "detail": f"no answer in {timeout:.0f} s"}
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    code = self.proc.wait()
                    self.stop()
                    return {"outcome": "crash", "detail": _death(code, self.log)}
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(line)


def _death(code: int, log: Path) -> str:
    what = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
    tail = log.read_bytes()[-600:].decode(errors="replace").strip().splitlines()[-4:]
    return f"{what}; stderr: {' | '.join(tail)}"


def _names(reader: str, case: Path, target: Path) -> list[str]:
    """What a kzoo error's message must contain: the file the user handed over (for a V2 checkpoint its
    prefix, which starts both file names), or for files reached through the registry, the entry asked for."""
    if reader in ("ckpt-v2-index", "ckpt-v2-data"):
        return [str(case / "model.ckpt")]
    if reader == "h5-registered":
        return [ENTRY_PINNED]
    if reader == "registry":
        return [str(target), ENTRY_PINNED]
    if reader == "pins":
        return [str(case / "pins-"), ENTRY_TOFU]  # the worker loads copies named pins-1.json, pins-2.json
    return [str(target)]


def _job(reader: str, mutant: bytes, case: Path, manifest: dict) -> dict:
    """Write the mutant where the reader expects it (next to good companion files) and describe the load."""
    files = {k: Path(v) for k, v in manifest["files"].items()}
    case.mkdir(parents=True)
    job = {"op": "load", "case": str(case), "names": _names(reader, case, case / files[reader].name)}
    if reader in ("ckpt-v2-index", "ckpt-v2-data"):
        for f in (files["ckpt-v2-index"], files["ckpt-v2-data"]):
            shutil.copy(f, case / f.name)
        target = case / files[reader].name
        target.write_bytes(mutant)
        return {**job, "loader": "ckpt", "open": str(case / "model.ckpt")}
    if reader == "paddle-tensor":  # the mutant among the good files of its folder
        shutil.copytree(files[reader].parent, case / "vars")
        target = case / "vars" / files[reader].name
        target.write_bytes(mutant)
        return {**job, "names": [str(target)], "loader": "paddle", "open": str(case / "vars")}
    target = case / files[reader].name
    target.write_bytes(mutant)
    job["path"] = str(target)
    if reader == "pdparams":
        return {**job, "loader": "paddle", "open": str(target)}
    if reader.startswith("ckpt") or reader in ("tar.gz", "zip"):
        return {**job, "loader": "ckpt", "open": str(target)}
    return {**job, "loader": reader.replace("-", "_")}


def run_fuzz(cases: int, seed: int = 15, readers=READERS, root: Path | None = None, progress=None) -> dict:
    """Fuzz ``readers`` with ``cases`` mutants each. Returns {"counts": {reader: {mutation: Counter}},
    "findings": [non-conforming cases], "seconds", "worker_starts", "root"}. Mutants that end in anything but
    identical / kzoo-error are kept under ``root/findings`` to reproduce."""
    import tempfile

    root = Path(root or tempfile.mkdtemp(prefix="kzoo-fuzz-"))
    fixtures = root / "fixtures"
    worker = WorkerProcess(fixtures, root / "worker.log")
    fixtures.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    worker.start()
    manifest = worker.ask({"op": "fixtures", "root": str(fixtures)}, START_S)
    if "files" not in manifest:
        worker.stop()
        raise RuntimeError(f"fixtures could not be made: {manifest}; see {root / 'worker.log'}")
    originals = {reader: Path(manifest["files"][reader]).read_bytes() for reader in readers}
    counts = {reader: collections.defaultdict(collections.Counter) for reader in readers}
    examples = {reader: collections.defaultdict(list) for reader in readers}  # a few messages per outcome
    findings = []
    try:
        for index in range(cases):
            for reader in readers:
                kind, mutant, description = mutate(reader, originals[reader], seed, index)
                case = root / "cases" / f"{reader}-{index}"
                reply = worker.ask(_job(reader, mutant, case, manifest), HANG_S)
                outcome = reply["outcome"]
                counts[reader][kind][outcome] += 1
                if len(examples[reader][outcome]) < 12:
                    examples[reader][outcome].append(f"{kind} ({description}): {reply.get('detail', '')}")
                bad = outcome in ("other", "crash", "hang") or (
                    outcome == "different" and reader not in DIFFERENT_ALLOWED)
                if bad or outcome == "different":
                    kept = root / "findings" / f"{reader}-{index}-{kind}{''.join(Path(_job_file(reader)).suffixes)}"
                    kept.parent.mkdir(exist_ok=True)
                    kept.write_bytes(mutant)
                    findings.append({"reader": reader, "index": index, "mutation": kind, "outcome": outcome,
                                     "description": description, "detail": reply.get("detail", ""),
                                     "file": str(kept), "bad": bad})
                shutil.rmtree(case, ignore_errors=True)
                if progress:
                    progress(reader, index, outcome)
    finally:
        worker.stop()
    shutil.rmtree(root / "cases", ignore_errors=True)
    return {"counts": counts, "findings": findings, "examples": examples, "seconds": time.monotonic() - started,
            "worker_starts": worker.starts, "root": str(root), "cases": cases, "seed": seed}


def _job_file(reader: str) -> str:
    return {"h5": "x.h5", "h5-registered": "x.h5", "ckpt-v1": "x.ckpt", "ckpt-v2-index": "x.index",
            "ckpt-v2-data": "x.data", "tar.gz": "x.tar.gz", "zip": "x.zip", "paddle-tensor": "x",
            "pdparams": "x.pdparams", "registry": "x.json",
            "pins": "x.json"}[reader]


def totals(result: dict) -> dict:
    """{reader: Counter of outcomes} over every mutation kind."""
    out = {}
    for reader, by_kind in result["counts"].items():
        total = collections.Counter()
        for counter in by_kind.values():
            total.update(counter)
        out[reader] = total
    return out


def format_table(result: dict, by_mutation: bool = False) -> str:
    """The outcome table as Markdown."""
    columns = "| cases | identical | kzoo error | different (unregistered) | other | crash | hang |"
    header = ("| file kind | mutation " if by_mutation else "| file kind ") + columns
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for reader, by_kind in result["counts"].items():
        rows = sorted(by_kind.items()) if by_mutation else [("", totals(result)[reader])]
        for kind, counter in rows:
            cells = [str(counter[o]) for o in OUTCOMES]
            if reader not in DIFFERENT_ALLOWED:
                cells[2] = f"{counter['different']} (must be 0)"
            first = f"| {reader} | {kind} |" if by_mutation else f"| {reader} |"
            lines.append(f"{first} {sum(counter.values())} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ============================================================================================ tests

def _cases() -> int:
    return int(os.environ.get("KZOO_FUZZ_CASES", DEFAULT_CASES))


@pytest.fixture(scope="module")
def fuzz_result(tmp_path_factory):
    if sys.platform == "win32":  # the worker protocol uses select() on a pipe and POSIX resource limits
        pytest.skip("the fuzz worker needs a POSIX system")
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf_slim")
    pytest.importorskip("tf_keras")
    return run_fuzz(_cases(), root=tmp_path_factory.mktemp("fuzz"))


@pytest.mark.parametrize("reader", READERS)
def test_every_mutant_ends_in_a_kzoo_error_or_a_faithful_load(fuzz_result, reader):
    by_outcome = totals(fuzz_result)[reader]
    assert sum(by_outcome.values()) == _cases()
    bad = [f for f in fuzz_result["findings"] if f["reader"] == reader and f["bad"]]
    shown = "\n".join(f"  #{f['index']} {f['mutation']} ({f['description']}): {f['outcome']}: {f['detail']}"
                      f"\n    {f['file']}" for f in bad[:10])
    assert not bad, f"{len(bad)} of {_cases()} {reader} mutants ended badly:\n{shown}\n{format_table(fuzz_result)}"


def test_the_fuzzer_reaches_the_readers(fuzz_result):
    """Each reader sees mutants it rejects and mutants it loads unchanged, and data flips in an unhashed h5
    load as different numbers: the fuzzer exercises the readers, not only their first check."""
    by_reader = totals(fuzz_result)
    for reader in READERS:
        assert by_reader[reader]["kzoo-error"] > 0, reader
    for reader in ("h5", "registry", "pins", "ckpt-v2-index"):  # a tensor file has no byte to spare
        assert by_reader[reader]["identical"] > 0, reader
    assert by_reader["h5"]["different"] > 0
    assert by_reader["paddle-tensor"]["different"] > 0 and by_reader["pdparams"]["different"] > 0


def test_mutations_are_seeded_and_vary():
    data = bytes(range(256)) * 8
    assert mutate("h5", data, 1, 3) == mutate("h5", data, 1, 3)
    assert mutate("h5", data, 1, 3) != mutate("h5", data, 2, 3)
    assert {mutate("ckpt-v2-data", data, 1, i)[0] for i in range(10)} == set(BINARY_MUTATIONS)
    assert all(mutate("h5", data, 1, i)[1] != data for i in range(50))


def test_huge_tar_size_keeps_a_valid_header(tmp_path):
    """The tar mutation must pass tarfile's header checksum, or it would only test the checksum."""
    member = tmp_path / "a.bin"
    member.write_bytes(b"x" * 1000)
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz", format=tarfile.USTAR_FORMAT) as tar:  # one header, no pax header first
        tar.add(str(member), arcname="a.bin")
    mutant, _ = _huge_tar_size(archive.read_bytes(), random.Random(0))
    header = tarfile.TarInfo.frombuf(gzip.decompress(mutant)[:512], "utf-8", "surrogateescape")  # checks the checksum
    assert header.name == "a.bin" and header.size >= 8**11 - 1


# ---------------------------------------------------------------------------------------------- what the fuzzer found
# Each was an "other" outcome or a pinned entry accepting other bytes before the fix; kept as plain cases.

@pytest.fixture
def pin_file(tmp_path, monkeypatch):
    path = tmp_path / "pins.json"
    monkeypatch.setenv("KZOO_PINS", str(path))
    return path


class _Entry:  # what kzoo.pins needs of a registry entry
    def __init__(self, entry_id, file_name):
        self.id, self.file_name, self.sha256 = entry_id, file_name, None


def test_a_damaged_pin_id_is_an_error_not_an_unpinned_entry(pin_file):
    """One flipped character in a pin's id left valid JSON and an unpinned entry, whose next download was then
    trusted afresh: the fuzzer saw 8 in 300 pin-file mutants accept other bytes."""
    from kzoo import pins
    from kzoo.errors import RegistryError

    entry = _Entry("net.tofu", "net.h5")
    pins.record_pin(entry, "ab" * 32)
    pin_file.write_text(pin_file.read_text().replace('"net.tofu"', '"net.tofv"'))
    with pytest.raises(RegistryError, match=rf"Pin file {pin_file}, pin 'net.tofv': its check does not match"):
        pins.pinned_sha256(entry)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace('"ab' + "ab" * 31, '"cd' + "ab" * 31), "its check does not match"),  # another valid hash
    (lambda t: t.replace('"net.h5"', '"met.h5"'), "its check does not match"),  # would make the pin not apply
    (lambda t: t.replace('"check"', '"checj"'), r"unknown field\(s\) \['checj'\]"),
    (lambda t: t.replace('"sha256": "', '"sha256": "z'), "is not a 64-digit hex string"),
    (lambda t: t.replace('"pins": {', '"pins": {"x": 1, "x": 2, '), r"key\(s\) \['x'\] appear twice"),
    (lambda t: t.replace('"size": 5', '"size": [5]'), "size .* is not a number of bytes"),
    (lambda t: "[" * 5000 + "]" * 5000, "nests too deeply"),
    (lambda t: t.replace('"size": 5', '"size": 1' + "0" * 5000), "not valid JSON.*4300 digits"),
], ids=["other-hash", "other-file-name", "renamed-field", "non-hex", "duplicate-key", "wrong-type", "5000-deep",
        "5001-digits"])
def test_a_damaged_pin_file_names_the_file(pin_file, edit, message):
    from kzoo import pins
    from kzoo.errors import RegistryError

    pins.record_pin(_Entry("net.tofu", "net.h5"), "ab" * 32, size=5)
    pin_file.write_text(edit(pin_file.read_text()))
    with pytest.raises(RegistryError, match=rf"Pin file {pin_file}.*{message}"):
        pins.pinned_sha256(_Entry("net.tofu", "net.h5"))


def test_a_hand_written_pin_needs_no_check(pin_file):
    """Deleting a pin by hand is the documented fix for a wrong one; writing one by hand stays possible."""
    from kzoo import pins

    pin_file.write_text(json.dumps({"pins": {"net.tofu": {"sha256": "AB" * 32, "file_name": "net.h5"}}}))
    assert pins.pinned_sha256(_Entry("net.tofu", "net.h5")) == "ab" * 32
    pin_file.write_bytes(b"\xff\xfe{}")
    with pytest.raises(Exception, match=rf"Pin file {pin_file} is not UTF-8"):
        pins.pinned_sha256("net.tofu")


@pytest.mark.parametrize("content, message", [
    ('{"schema_version": 1, "entries": ' + "[" * 3000 + "]" * 3000 + "}", "nests too deeply"),
    ('{"schema_version": 1, "entries": [' + "[" * 40 + "]" * 40 + "]}", "nests more than 32 levels"),
    ('{"schema_version": 1, "entries": [], "entries": []}', r"\['entries'\] appear twice"),
    ('{"schema_version": 1, "entries": [{"size": 1e999}]}', "the number 1e999 is too large"),
    ('{"schema_version": 1, "entries": [{"size": NaN}]}', "NaN is not a JSON number"),
    ('{"schema_version": 1, "entries": [{"size": 1' + "0" * 5000 + "}]}", "4300 digits"),
], ids=["3000-deep", "40-deep", "duplicate-key", "1e999", "NaN", "5001-digits"])
def test_a_damaged_registry_overlay_names_the_file(tmp_path, monkeypatch, content, message):
    """The JSON decoder's RecursionError, int()'s ValueError and non-UTF-8 bytes escaped as such before."""
    from kzoo import registry
    from kzoo.errors import RegistryError

    path = tmp_path / "overlay.json"
    path.write_text(content)
    monkeypatch.setenv("KZOO_REGISTRY", str(path))
    with pytest.raises(RegistryError, match=rf"Registry file {path}.*{message}"):
        registry.load_registry()
    path.write_bytes(b'{"schema_version": 1, "entries": ["\xa2"]}')
    with pytest.raises(RegistryError, match=rf"Registry file {path} is not UTF-8 text \(byte 35\)"):
        registry.load_registry()


def test_an_id_missing_from_an_overlay_names_the_overlay(tmp_path, monkeypatch):
    from kzoo import registry
    from kzoo.errors import UnknownWeights

    path = tmp_path / "overlay.json"
    path.write_text('{"schema_version": 1, "entries": []}')
    monkeypatch.setenv("KZOO_REGISTRY", str(path))
    with pytest.raises(UnknownWeights, match=rf"No weights entry 'fuzznet.fuzz'.*KZOO_REGISTRY: {path}"):
        registry.get_entry("fuzznet.fuzz")
