"""The weight cache: where it is, what kzoo keeps in it besides weights (resumable partial downloads and
their records, temp files, lock files, the verified-result memo), and which of its files are weights: those
at Keras' own paths and the releases kept by content under ``blobs/`` (see ``kzoo.sources.placement``).

Environment: ``KZOO_CACHE_DIR`` (default ``$KERAS_HOME/models``, else ``~/.keras/models``, so files
keras.applications already downloaded are reused once they verify).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path

from kzoo.errors import StorageError  # noqa: F401 (it lived here: kept importable from here)
from kzoo.sources.hashing import ALGORITHMS
# These lived here too (kzoo.convert imports them from here).
from kzoo.sources.storage import (PART_SUFFIX, error_number, free_bytes, storage_error,  # noqa: F401
                                  writable_alternative)

MEMO_NAME = ".kzoo-verified.json"
LOCK_DIR = ".kzoo-locks"
BLOB_DIR = "blobs"  # releases that share a file name with another, each in a folder named by its hash
DOWNLOAD_SUFFIX = ".download"  # the resumable partial download; not PART_SUFFIX, which the stale-temp sweep removes

_PROCESS_MEMO: dict[str, dict] = {}  # used when the cache folder is read-only


def cache_dir() -> Path:
    """The weight cache: ``KZOO_CACHE_DIR``, else Keras' own ``$KERAS_HOME/models`` or ``~/.keras/models``."""
    override = os.environ.get("KZOO_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    keras_home = os.environ.get("KERAS_HOME")
    if keras_home:
        return Path(keras_home).expanduser() / "models"
    return Path("~/.keras/models").expanduser()


def cached_files() -> list[Path]:
    """Weight files in the cache that kzoo would verify: those at Keras' paths, then the releases kept by
    content (``blobs/<hash>/<file name>``). No temp files, locks, memo or conversions."""
    folder = cache_dir()
    if not folder.is_dir():
        return []
    found = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    blobs = folder / BLOB_DIR
    if blobs.is_dir():
        found += sorted(p for p in blobs.glob("*/*") if p.is_file() and not p.name.startswith("."))
    return found


def in_cache(path: Path) -> bool:
    """Is ``path`` one of the cache's weight files (at Keras' path or a blob)?"""
    folder = cache_dir().resolve()
    parent = Path(path).parent.resolve()
    return parent == folder or parent.parent == folder / BLOB_DIR


def cache_key(path: Path) -> str:
    """How reports and the memo name a cache file: its name, or ``blobs/<hash>/<name>``."""
    path = Path(path)
    return path.name if path.parent.resolve() == cache_dir().resolve() else "/".join(path.parts[-3:])


# --------------------------------------------------------------------------------------------- locks and temp files

def make_lock_dir(folder: Path, parents: bool = True) -> None:
    """Create the lock folder in ``folder`` (raises OSError when the cache is not writable)."""
    (folder / LOCK_DIR).mkdir(parents=parents, exist_ok=True)


def file_lock(folder: Path, name: str, timeout: float = -1):
    """An inter-process lock for ``name`` in ``folder`` (the lock folder must exist)."""
    from filelock import FileLock

    return FileLock(os.fspath(folder / LOCK_DIR / (name + ".lock")), timeout=timeout)


class Partial:
    """The one partial download of a cache file, kept across processes so a killed download resumes.

    ``.NAME.download`` holds a prefix of one source's bytes; ``.NAME.download.json`` says whose (the URL, the
    server's validator, the total length and the hashes expected when it began). Only the holder of
    NAME's lock touches either, and the bytes reach NAME only by a rename once they verify, so a reader
    never sees them at the cache path.
    """

    def __init__(self, folder: Path, file_name: str):
        self.path = folder / f".{file_name}{DOWNLOAD_SUFFIX}"
        self.meta_path = folder / f".{file_name}{DOWNLOAD_SUFFIX}.json"

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def meta(self) -> dict:
        try:
            with open(self.meta_path, encoding="utf-8") as f:
                data = json.load(f)
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def write_meta(self, record: dict) -> None:
        """Replace the record atomically (a kill leaves the old record or the new one, never half)."""
        _atomic_json(self.meta_path, record)

    def resumable(self, url: str, expected: dict, want_size: int | None) -> dict | None:
        """The record of kept bytes that a download from ``url`` may continue, else None.

        Kept bytes are reused only when they came from the same URL for the same pinned hashes, are
        fewer than the total that URL announced (and the pinned size), and can be checked: by the
        server (If-Range with the recorded validator) or by a pinned hash once the file is complete.
        """
        meta = self.meta()
        size = self.size()
        total = meta.get("total")
        if not size or meta.get("url") != url or meta.get("expected") != expected:
            return None
        if want_size is not None and total not in (None, want_size):
            return None
        if total is not None and size > total:
            return None
        if not expected and (not meta.get("validator") or (total is not None and size >= total)):
            return None  # nothing could tell stale bytes from good ones (a complete one is not asked about)
        return {**meta, "size": size}

    def discard(self) -> None:
        # The record goes first: bytes without a record are never resumed.
        for path in (self.meta_path, self.path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def remove_stale_parts(folder: Path, file_name: str) -> None:
    """Temp files (``.NAME.<random>.part``) left by a killed process; the resumable ``.NAME.download`` is
    not one of them. Call with the file's lock held, so nobody is writing them."""
    for stale in folder.glob(f".{glob_escape(file_name)}.*{PART_SUFFIX}"):
        with contextlib.suppress(OSError):
            stale.unlink()


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


# --------------------------------------------------------------------------------------------- verified-result memo

class Memo:
    """Digests of cached files keyed by (name, size, mtime_ns), so a process start need not re-hash.

    Any change to the file (size or modification time) invalidates its record. When the cache folder is
    read-only the records live only in this process.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self.path = folder / MEMO_NAME

    def _load(self) -> dict:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _key(self, path: Path) -> str | None:
        """The record's name in the memo file: the path below the cache folder (a name, or
        ``blobs/<hash>/<name>``); None for a file elsewhere."""
        try:
            return Path(path).resolve().relative_to(self.folder.resolve()).as_posix()
        except ValueError:
            return None

    def lookup(self, path: Path) -> dict[str, str]:
        st = path.stat()
        key = os.fspath(path.resolve())
        for record in (_PROCESS_MEMO.get(key), self._load().get(self._key(path))):
            if record and record.get("size") == st.st_size and record.get("mtime_ns") == st.st_mtime_ns:
                return {a: record[a] for a in ALGORITHMS if record.get(a)}
        return {}

    def remember(self, path: Path, digests: dict[str, str]) -> None:
        st = path.stat()
        record = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, **digests}
        old = self.lookup(path)
        record.update({a: v for a, v in old.items() if a not in digests})
        _PROCESS_MEMO[os.fspath(path.resolve())] = record
        name = self._key(path)
        if name is None or not os.access(self.folder, os.W_OK):
            return
        from filelock import Timeout

        try:  # lost updates between processes only cost a re-hash later, but a lock keeps it tidy
            make_lock_dir(self.folder, parents=False)
            with file_lock(self.folder, MEMO_NAME, timeout=5):
                data = self._load()
                data[name] = record
                _atomic_json(self.path, data)
        except (OSError, Timeout):
            pass  # read-only or full cache: the process memo above still saves re-hashing in this process


def _atomic_json(path: Path, data) -> None:
    """Write JSON beside ``path`` and rename it over ``path``; on failure (a full disk) nothing is left."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=PART_SUFFIX)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=0, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
