"""Safe extraction of weight archives (``.tar.gz`` / ``.tgz`` / ``.tar`` / ``.tar.bz2`` / ``.tar.xz`` / ``.zip``).

Used by every reader that takes an archive: TF checkpoints (TI-ONE, Object Detection API, BERT) and
PaddlePaddle's 2019 folders. Members with absolute paths, ``..`` components, links that leave the folder,
device files and FIFOs are refused with :class:`~kzoo.errors.UnsafeArchive` before anything is written; so
are archives over the size, member-count or compression-ratio limits (zip bombs). Limits come from
:class:`ArchiveLimits` (environment overrides: ``KZOO_ARCHIVE_MAX_BYTES``, ``KZOO_ARCHIVE_MAX_RATIO``).

The stdlib readers needed help (tests/test_fuzz_readers.py mutates real archives): tarfile reads a damaged
header after the first as the end of the archive, without an error, and never checks gzip's CRC, so a tar is
read through gzip/bz2/lzma (which check) and what follows its end must be zero padding; zipfile reports damage
also as NotImplementedError, RuntimeError, UnicodeDecodeError, struct.error and zlib.error.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
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

from kzoo.errors import ConversionError, UnsafeArchive

_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip")
_COPY_CHUNK = 4 * 2**20


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
                elif stat.S_IFMT(mode) and not stat.S_ISREG(mode):  # permission bits alone: a plain file
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



class ExtractedReader:
    """Base of the readers :func:`open_extracted` returns: the reader owns the folder its archive was extracted
    into (``_cleanup``), removes it on ``close()`` (also as a context manager), and names files in errors as the
    archive's members, since the folder is gone by the time the user reads the message."""

    source: Path
    _cleanup: Path | None = None

    def _shown(self, path) -> str:
        if self._cleanup is not None:
            try:
                return f"{self.source} (member {Path(path).relative_to(self._cleanup).as_posix()})"
            except ValueError:
                pass
        return str(path)

    def close(self):
        if self._cleanup is not None:
            shutil.rmtree(self._cleanup, ignore_errors=True)
            self._cleanup = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_extracted(source: Path, open_folder, prefix: str, limits=None, workdir=None):
    """Extract the archive ``source`` into a fresh folder (under ``workdir``) and return
    ``open_folder(folder)``; a ConversionError names the archive's member, and the folder is removed
    on any failure (on success, the returned reader owns it)."""
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=workdir))
    try:
        extract_archive(source, folder, limits)
        try:
            return open_folder(folder)
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
