"""Read TensorFlow checkpoints: V1 single files, V2 prefixes, folders and TI-ONE archives.

``open_checkpoint(src)`` accepts

- a V1 single-file checkpoint (``resnet_v1_50.ckpt``, an SSTable);
- a V2 prefix (``model.ckpt`` next to ``model.ckpt.index`` + ``model.ckpt.data-00000-of-00001``),
  or either of those two files;
- a folder holding one checkpoint (searched recursively; a ``checkpoint`` state file or the
  ``hint`` breaks ties);
- a ``.tar.gz`` / ``.tgz`` / ``.tar`` / ``.zip`` archive of any of the above (recognised by name or
  by content), extracted safely into a temporary folder that is removed on ``close()``.

Archives are extracted by :mod:`kzoo.formats.archives` (safe extraction, limits, damage checks).

Damaged input (tests/test_fuzz_readers.py mutates real V1/V2 checkpoints and archives of them): every
failure is a :class:`~kzoo.errors.ConversionError` that names the file, or the archive and its member.
TensorFlow's checkpoint reader raised an error (never
crashed or hung) on every mutant tried, so checkpoints are opened in this process with no pre-check.

TensorFlow is imported lazily, here only, when a checkpoint is opened.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np

from kzoo.errors import ConversionError
# Archives live in their own module; their names stay importable from here.
from kzoo.formats.archives import ArchiveLimits, archive_kind, extract_archive, open_extracted  # noqa: F401
from kzoo.formats.archives import ExtractedReader

# Last 8 bytes of every TF table file (V1 checkpoints and V2 ``.index`` files), little-endian.
_TABLE_MAGIC = (0xDB4775248B80FB57).to_bytes(8, "little")
_DATA_SHARD = re.compile(r"^(?P<prefix>.+)\.data-(?P<shard>\d{5})-of-(?P<count>\d{5})$")


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConversionError(
            "Reading a TensorFlow checkpoint needs TensorFlow. Install it with `pip install kzoo[tf]` "
            "(or `pip install tensorflow`)."
        ) from exc
    return tf


# ---------------------------------------------------------------------------------------------
# Locating the checkpoint
# ---------------------------------------------------------------------------------------------


def _is_table_file(path: Path) -> bool:
    try:
        size = path.stat().st_size
        if size < 48:  # smaller than a table footer
            return False
        with open(path, "rb") as handle:
            handle.seek(size - 8)
            return handle.read(8) == _TABLE_MAGIC
    except OSError:
        return False


def _data_shards(prefix: str) -> list[Path]:
    directory = Path(prefix).parent
    base = Path(prefix).name
    shards = []
    if directory.is_dir():
        for entry in directory.iterdir():
            match = _DATA_SHARD.match(entry.name)
            if match and match["prefix"] == base:
                shards.append(entry)
    return sorted(shards)


def _strip_v2_suffix(path: str) -> str:
    if path.endswith(".index"):
        return path[: -len(".index")]
    match = _DATA_SHARD.match(path)
    return match["prefix"] if match else path


def _candidates(folder: Path) -> list[tuple[str, str]]:
    """Every checkpoint under ``folder``: (path to open, "V1"|"V2"), plus orphan data files."""
    found = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        name = path.name
        if name.endswith(".index"):
            found.append((str(path)[: -len(".index")], "V2"))
        elif _DATA_SHARD.match(name):
            prefix = _strip_v2_suffix(str(path))
            if not Path(prefix + ".index").exists():
                found.append((prefix, "V2"))  # reported as "missing index" when opened
        elif name.endswith((".meta", ".pb", ".pbtxt", ".txt", ".json", ".tflite", ".config")):
            continue
        elif name.endswith(".ckpt") or _is_table_file(path):
            found.append((str(path), "V1"))
    unique = []
    for item in found:
        if item not in unique:
            unique.append(item)
    return unique


def _state_file_choice(folder: Path, candidates):
    """The checkpoint a ``checkpoint`` state file names (``model_checkpoint_path: "..."``), if any."""
    for state in folder.rglob("checkpoint"):
        if not state.is_file():
            continue
        match = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', state.read_text(errors="replace"), re.M)
        if match:
            wanted = Path(match[1])
            wanted = wanted if wanted.is_absolute() else state.parent / wanted
            for path, kind in candidates:
                if Path(path) == wanted or Path(path).name == wanted.name:
                    return path, kind
    return None


def find_checkpoint(folder, hint: str | None = None) -> tuple[str, str]:
    """The one checkpoint in ``folder`` as (path for TensorFlow, "V1"|"V2")."""
    folder = Path(folder)
    candidates = _candidates(folder)
    if not candidates:
        raise ConversionError(
            f"{folder}: no TensorFlow checkpoint found (looked for a V1 '*.ckpt' file, or a V2 "
            f"'*.index' with its '*.data-*' files). Pass the checkpoint file or prefix itself.")
    if len(candidates) == 1:
        return candidates[0]
    chosen = _state_file_choice(folder, candidates)
    if chosen:
        return chosen
    if hint:
        matching = [c for c in candidates if Path(c[0]).name.startswith(hint)]
        if len(matching) == 1:
            return matching[0]
    listing = ", ".join(str(Path(c[0]).relative_to(folder)) for c in candidates)
    raise ConversionError(
        f"{folder}: several checkpoints found ({listing}). Pass the one to convert as SRC.")


# ---------------------------------------------------------------------------------------------
# The checkpoint
# ---------------------------------------------------------------------------------------------


class Checkpoint(ExtractedReader):
    """An open checkpoint: variable shapes and dtypes, and ``read(name) -> ndarray``.

    Use as a context manager; ``close()`` removes the folder an archive was extracted into.
    """

    def __init__(self, path: str, fmt: str, source: Path, files: list[Path], cleanup: Path | None = None):
        self.path, self.format, self.source, self.files = path, fmt, source, files
        self._cleanup = cleanup
        self._reader = None
        try:
            self._reader = _tf().train.load_checkpoint(path)
            self._shapes = {k: tuple(int(d) for d in v)
                            for k, v in self._reader.get_variable_to_shape_map().items()}
            self._dtypes = {k: v.name for k, v in self._reader.get_variable_to_dtype_map().items()}
        except Exception as exc:  # TF raises its own error classes; name the file and the fix
            shown = self._shown(files[0] if files else path)
            self.close()
            if isinstance(exc, ConversionError):
                raise
            raise ConversionError(
                f"{shown}: TensorFlow cannot open this {fmt} checkpoint "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). The file is truncated, "
                f"corrupt or not a checkpoint; download it again.") from exc
        if fmt == "V2":
            self._check_data_size()

    @property
    def nbytes(self) -> int:
        """Bytes of the files a conversion reads (V1 file, or V2 index + data shards)."""
        return sum(f.stat().st_size for f in self.files)

    def shapes(self) -> dict[str, tuple]:
        return dict(self._shapes)

    def dtypes(self) -> dict[str, str]:
        return dict(self._dtypes)

    def __contains__(self, name) -> bool:
        return name in self._shapes

    def read(self, name: str) -> np.ndarray:
        try:
            return np.asarray(self._reader.get_tensor(name))
        except Exception as exc:
            if name not in self._shapes:
                raise ConversionError(f"{self._shown(self.path)}: no variable {name!r} in the checkpoint.") from exc
            data = ", ".join(self._shown(f) for f in self.files if ".data-" in f.name) or self._shown(self.path)
            raise ConversionError(
                f"{data}: reading variable {name!r} failed ({type(exc).__name__}: {exc}); the data file "
                f"is truncated or corrupt. Download the checkpoint again.") from exc

    def _check_data_size(self):
        """A truncated V2 data file opens fine and fails only on read; catch it up front."""
        expected = 0
        for name, shape in self._shapes.items():
            try:
                itemsize = np.dtype(self._dtypes[name]).itemsize
            except TypeError:  # strings, resources: size unknown, skip the check
                return
            expected += math.prod(shape) * itemsize  # Python ints: a damaged huge shape cannot wrap around
        data_files = [f for f in self.files if ".data-" in f.name]
        actual = sum(f.stat().st_size for f in data_files)
        if actual < expected:
            names = ", ".join(self._shown(f) for f in data_files)
            self.close()
            raise ConversionError(
                f"{names}: the data file is truncated ({actual} bytes, the index describes {expected}). "
                f"Download the checkpoint again.")

    def close(self):
        self._reader = None
        super().close()

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass


def _resolve_files(path: str, fmt: str) -> list[Path]:
    if fmt == "V1":
        return [Path(path)]
    index = Path(path + ".index")
    shards = _data_shards(path)
    if not index.exists():
        shown = shards[0] if shards else Path(path)
        raise ConversionError(
            f"{shown}: the V2 checkpoint's index file '{index.name}' is missing (a V2 checkpoint is "
            f"'<prefix>.index' plus '<prefix>.data-*-of-*'). Copy the index next to the data file.")
    if not shards:
        raise ConversionError(
            f"{index}: the V2 checkpoint has no data file '{Path(path).name}.data-00000-of-00001'. "
            f"Copy the data file(s) next to the index.")
    count = int(_DATA_SHARD.match(shards[0].name)["count"])
    present = {int(_DATA_SHARD.match(s.name)["shard"]) for s in shards}
    missing = [f"{Path(path).name}.data-{i:05d}-of-{count:05d}" for i in range(count) if i not in present]
    if missing:
        raise ConversionError(f"{path}: data shard(s) missing: {', '.join(missing)}. Copy them next to the index.")
    return [index] + shards


def _open_path(path: Path, source: Path, hint, cleanup) -> Checkpoint:
    text = str(path)
    if path.is_dir():
        text, fmt = find_checkpoint(path, hint)
    elif path.name.endswith(".index") or _DATA_SHARD.match(path.name):
        text, fmt = _strip_v2_suffix(text), "V2"
    elif path.is_file():
        fmt = "V1"
    elif Path(text + ".index").exists() or _data_shards(text):
        fmt = "V2"
    else:
        raise ConversionError(
            f"{path}: no such checkpoint (not a file, a folder, nor a V2 prefix with '{path.name}.index').")
    return Checkpoint(text, fmt, source, _resolve_files(text, fmt), cleanup)


def open_checkpoint(src, *, hint: str | None = None, limits: ArchiveLimits | None = None,
                    workdir=None) -> Checkpoint:
    """Open ``src`` (V1 file, V2 prefix, folder or archive). ``hint``: a name prefix that picks the
    checkpoint when a folder holds several (e.g. the model name). Archives are extracted under
    ``workdir`` (default: the system temp folder) and removed on ``close()``."""
    source = Path(os.fspath(src)).expanduser()
    if archive_kind(source) is None:
        return _open_path(source, source, hint, None)
    return open_extracted(source, lambda folder: _open_path(folder, source, hint, folder), "kzoo-ckpt-",
                          limits, workdir)
