"""Read TensorFlow checkpoints: V1 single files, V2 prefixes, folders and TI-ONE archives.

``open_checkpoint(src)`` accepts

- a V1 single-file checkpoint (``resnet_v1_50.ckpt``, an SSTable);
- a V2 prefix (``model.ckpt`` next to ``model.ckpt.index`` + ``model.ckpt.data-00000-of-00001``),
  or either of those two files;
- a folder holding one checkpoint (searched recursively; a ``checkpoint`` state file or the
  ``hint`` breaks ties);
- a ``.tar.gz`` / ``.tgz`` / ``.tar`` / ``.zip`` archive of any of the above (recognised by name or
  by content), extracted safely into a temporary folder that is removed on ``close()``.

Safe extraction: members with absolute paths, ``..`` components, links that leave the folder,
device files and FIFOs are refused with :class:`~kzoo.errors.UnsafeArchive` before anything is
written; so are archives over the size, member-count or compression-ratio limits (zip bombs).
Limits come from :class:`ArchiveLimits` (environment overrides: ``KZOO_ARCHIVE_MAX_BYTES``,
``KZOO_ARCHIVE_MAX_RATIO``).

Damaged input (tests/test_fuzz_readers.py mutates real V1/V2 checkpoints and archives of them): every
failure is a :class:`~kzoo.errors.ConversionError` that names the file, or the archive and its member. The
stdlib readers needed help: tarfile reads a damaged header after the first as the end of the archive, without
an error, and never checks gzip's CRC, so a tar is read through gzip/bz2/lzma (which check) and what follows
its end must be zero padding; zipfile reports damage also as NotImplementedError, RuntimeError,
UnicodeDecodeError, struct.error and zlib.error. TensorFlow's checkpoint reader raised an error (never
crashed or hung) on every mutant tried, so checkpoints are opened in this process with no pre-check.

TensorFlow is imported lazily, here only, when a checkpoint is opened.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import math
import os
import re
import shutil
import stat
import struct
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from kzoo.errors import ConversionError, UnsafeArchive

# Last 8 bytes of every TF table file (V1 checkpoints and V2 ``.index`` files), little-endian.
_TABLE_MAGIC = (0xDB4775248B80FB57).to_bytes(8, "little")
_DATA_SHARD = re.compile(r"^(?P<prefix>.+)\.data-(?P<shard>\d{5})-of-(?P<count>\d{5})$")
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip")
_COPY_CHUNK = 4 * 2**20


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
# Archives
# ---------------------------------------------------------------------------------------------


def _env_number(name, default, kind):
    value = os.environ.get(name)
    return kind(value) if value else default


@dataclass(frozen=True)
class ArchiveLimits:
    """What an archive may expand to. The largest TI-ONE classification archive is ~0.6 GB.

    max_ratio applies once the expanded size passes ``ratio_floor_bytes``: checkpoints compress
    about 1.1x, a zip bomb thousands of times.
    """

    max_total_bytes: int = 16 * 2**30
    max_members: int = 10_000
    max_ratio: float = 100.0
    ratio_floor_bytes: int = 16 * 2**20

    @classmethod
    def from_env(cls) -> "ArchiveLimits":
        return cls(
            max_total_bytes=_env_number("KZOO_ARCHIVE_MAX_BYTES", cls.max_total_bytes, int),
            max_ratio=_env_number("KZOO_ARCHIVE_MAX_RATIO", cls.max_ratio, float),
        )


_UNSAFE_FIX = ("Nothing was extracted. Get the archive again from its origin, or, if you trust it, "
               "extract it yourself and pass the folder.")
_LIMIT_FIX = ("Nothing more was extracted. If you trust this archive, raise the limit "
              "(KZOO_ARCHIVE_MAX_BYTES / KZOO_ARCHIVE_MAX_RATIO) or extract it yourself and pass the folder.")


def archive_kind(path) -> str | None:
    """'zip', 'tar' or None (not an archive), by name first, then by content."""
    path = Path(path)
    if not path.is_file():
        return None
    name = path.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(_ARCHIVE_SUFFIXES):
        return "tar"
    with open(path, "rb") as handle:
        head = handle.read(512)
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00":
        return "tar"
    if head[257:262] == b"ustar":
        return "tar"
    return None


def _member_target(dest: Path, archive: Path, name: str) -> Path:
    """``dest/name`` after refusing absolute names, ``..`` and anything resolving outside ``dest``."""
    if not name or "\x00" in name:
        raise UnsafeArchive(f"{archive}: member {name!r} has an empty or invalid name. {_UNSAFE_FIX}")
    normalized = name.replace("\\", "/")
    if normalized.startswith("/") or re.match(r"^[A-Za-z]:", normalized):
        raise UnsafeArchive(f"{archive}: member {name!r} has an absolute path. {_UNSAFE_FIX}")
    parts = [p for p in PurePosixPath(normalized).parts if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"{archive}: member {name!r} climbs out of the folder with '..'. {_UNSAFE_FIX}")
    target = dest.joinpath(*parts) if parts else dest
    root = dest.resolve()
    if os.path.commonpath([root, target.resolve()]) != str(root):
        raise UnsafeArchive(f"{archive}: member {name!r} would be written outside the folder. {_UNSAFE_FIX}")
    return target


def _link_target(dest: Path, archive: Path, name: str, link: str, hard: bool) -> Path:
    """Where an in-archive link points, refusing any link that leaves ``dest``."""
    kind = "hard link" if hard else "symlink"
    link_norm = link.replace("\\", "/")
    if link_norm.startswith("/") or re.match(r"^[A-Za-z]:", link_norm):
        raise UnsafeArchive(f"{archive}: member {name!r} is a {kind} to the absolute path {link!r}. {_UNSAFE_FIX}")
    base = PurePosixPath() if hard else PurePosixPath(name.replace("\\", "/")).parent
    depth_parts = []
    for part in (base / link_norm).parts:
        if part in ("", "."):
            continue
        if part == "..":
            if not depth_parts:
                raise UnsafeArchive(
                    f"{archive}: member {name!r} is a {kind} to {link!r}, outside the folder. {_UNSAFE_FIX}")
            depth_parts.pop()
        else:
            depth_parts.append(part)
    return dest.joinpath(*depth_parts)


class _Budget:
    """Counts members and bytes against the limits while an archive is expanded."""

    def __init__(self, archive: Path, limits: ArchiveLimits):
        self.archive, self.limits = archive, limits
        self.compressed = max(archive.stat().st_size, 1)
        self.members = 0
        self.total = 0

    def member(self, name):
        self.members += 1
        if self.members > self.limits.max_members:
            raise UnsafeArchive(
                f"{self.archive}: more than {self.limits.max_members} members (at {name!r}). {_LIMIT_FIX}")

    def add(self, name, nbytes):
        self.total += nbytes
        if self.total > self.limits.max_total_bytes:
            raise UnsafeArchive(
                f"{self.archive}: member {name!r} takes the expanded size past the limit of "
                f"{self.limits.max_total_bytes} bytes. {_LIMIT_FIX}")
        ratio = self.total / self.compressed
        if self.total > self.limits.ratio_floor_bytes and ratio > self.limits.max_ratio:
            raise UnsafeArchive(
                f"{self.archive}: member {name!r} expands the archive {ratio:.0f}x (limit "
                f"{self.limits.max_ratio:.0f}x): this looks like a zip bomb. {_LIMIT_FIX}")


def _copy_limited(source, target: Path, budget: _Budget, name: str, declared: int):
    """Stream a member to ``target``, never writing more than its declared size."""
    written = 0
    with open(target, "wb") as out:
        while True:
            chunk = source.read(_COPY_CHUNK)
            if not chunk:
                break
            written += len(chunk)
            if written > declared:
                raise UnsafeArchive(
                    f"{budget.archive}: member {name!r} holds more bytes than its header declares. {_UNSAFE_FIX}")
            out.write(chunk)


def _materialize_links(links, archive: Path):
    """Links inside the folder become copies of their targets (we never create real links)."""
    for name, target, source in links:
        if not source.is_file():
            raise UnsafeArchive(
                f"{archive}: member {name!r} links to {source.name!r}, which is not a file in the archive. "
                f"{_UNSAFE_FIX}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def _decompressed(archive: Path):
    """``archive`` opened through the module for its compression (by magic bytes), or as plain bytes. These
    modules check the stream's own checksum (gzip's CRC-32 and length, bz2's and xz's CRCs) when it is read to
    the end; tarfile's built-in stream reader never does."""
    with open(archive, "rb") as handle:
        head = handle.read(6)
    if head[:2] == b"\x1f\x8b":
        return gzip.open(archive, "rb")
    if head[:3] == b"BZh":
        return bz2.open(archive, "rb")
    if head[:6] == b"\xfd7zXZ\x00":
        return lzma.open(archive, "rb")
    return open(archive, "rb")


def _drain_after_end(tar: tarfile.TarFile, archive: Path):
    """Read what follows the end of the tar: only zero padding may (the compressed stream's checksum is checked
    on the way). tarfile takes a damaged header anywhere but first for the end of the archive, silently, so
    a damaged archive would otherwise lose its later members without an error."""
    while chunk := tar.fileobj.read(_COPY_CHUNK):
        if chunk.count(0) != len(chunk):
            raise ConversionError(
                f"{archive}: the archive is damaged: a tar header cannot be read, and data follows it. "
                f"Download it again.")


def _extract_tar(archive: Path, dest: Path, limits: ArchiveLimits):
    budget = _Budget(archive, limits)
    links = []
    try:
        # Streaming mode: each header is checked before its data is read, so a bomb is stopped at
        # its first oversized member, and the archive is read once.
        with _decompressed(archive) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                name = member.name
                budget.member(name)
                target = _member_target(dest, archive, name)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                elif member.issym() or member.islnk():
                    source = _link_target(dest, archive, name, member.linkname, member.islnk())
                    links.append((name, target, source))
                elif member.isreg():
                    budget.add(name, member.size)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    _copy_limited(tar.extractfile(member), target, budget, name, member.size)
                else:
                    raise UnsafeArchive(
                        f"{archive}: member {name!r} is a device, FIFO or other special file. {_UNSAFE_FIX}")
            _drain_after_end(tar, archive)
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:  # zlib: damaged deflate
        if isinstance(exc, UnsafeArchive):
            raise
        raise ConversionError(
            f"{archive}: the archive is damaged or truncated ({exc}). Download it again.") from exc
    _materialize_links(links, archive)


def _extract_zip(archive: Path, dest: Path, limits: ArchiveLimits):
    budget = _Budget(archive, limits)
    links = []
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            # The central directory declares every size up front: check them all before writing.
            check = _Budget(archive, limits)
            for info in infos:
                check.member(info.filename)
                _member_target(dest, archive, info.filename)
                if not info.is_dir():
                    check.add(info.filename, info.file_size)
            for info in infos:
                name = info.filename
                budget.member(name)
                target = _member_target(dest, archive, name)
                mode = info.external_attr >> 16
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                elif stat.S_ISLNK(mode):
                    if info.file_size > 4096:
                        raise UnsafeArchive(f"{archive}: member {name!r} is an oversized symlink. {_UNSAFE_FIX}")
                    link = zf.read(info).decode("utf-8", "replace")
                    links.append((name, target, _link_target(dest, archive, name, link, hard=False)))
                elif mode and not stat.S_ISREG(mode):
                    raise UnsafeArchive(
                        f"{archive}: member {name!r} is a device, FIFO or other special file. {_UNSAFE_FIX}")
                else:
                    budget.add(name, info.file_size)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as source:
                        _copy_limited(source, target, budget, name, info.file_size)
    # zipfile's own errors for damage: NotImplementedError for a damaged version or compression field,
    # RuntimeError for a damaged "encrypted" flag, UnicodeDecodeError for a name under a damaged UTF-8 flag,
    # struct.error for short records; zlib/lzma for damaged compressed data
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error, lzma.LZMAError, NotImplementedError, RuntimeError,
            UnicodeDecodeError, struct.error) as exc:
        raise ConversionError(
            f"{archive}: the zip archive is damaged or truncated ({exc}). Download it again.") from exc
    _materialize_links(links, archive)


def extract_archive(archive, dest, limits: ArchiveLimits | None = None) -> Path:
    """Safely expand ``archive`` into the (new or empty) folder ``dest``; returns ``dest``."""
    archive, dest = Path(archive), Path(dest)
    limits = limits or ArchiveLimits.from_env()
    kind = archive_kind(archive)
    if kind is None:
        raise ConversionError(f"{archive}: not a .tar.gz, .tgz, .tar or .zip archive.")
    dest.mkdir(parents=True, exist_ok=True)
    (_extract_zip if kind == "zip" else _extract_tar)(archive, dest, limits)
    return dest


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


class Checkpoint:
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

    def _shown(self, path) -> str:
        """How an error names ``path``: as itself, or as a member of the archive it was extracted from (the
        extraction folder is gone by the time the user reads the message)."""
        if self._cleanup is not None:
            try:
                return f"{self.source} (member {Path(path).relative_to(self._cleanup).as_posix()})"
            except ValueError:
                pass
        return str(path)

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
        if self._cleanup is not None:
            shutil.rmtree(self._cleanup, ignore_errors=True)
            self._cleanup = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

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
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="kzoo-ckpt-", dir=workdir))
    try:
        extract_archive(source, folder, limits)
        try:
            return _open_path(folder, source, hint, folder)
        except ConversionError as exc:
            raise _named_by_archive(exc, source, folder) from exc
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _named_by_archive(exc: ConversionError, archive: Path, folder: Path) -> ConversionError:
    """``exc`` as the user should read it: naming the archive and its members, not the extraction folder."""
    text = str(exc).replace(str(folder) + os.sep, "").replace(str(folder), ".")
    if str(archive) not in text:
        text = f"{archive}: in the archive, {text}"
    return type(exc)(text)
