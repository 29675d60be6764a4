"""The weight cache: where it is, what kzoo keeps in it besides weights (temp parts, lock files, the
verified-result memo), and which of its files are weights.

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

from kzoo.sources.hashing import ALGORITHMS

MEMO_NAME = ".kzoo-verified.json"
LOCK_DIR = ".kzoo-locks"
PART_SUFFIX = ".part"

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
    """Files in the cache folder that kzoo would verify (no temp files, locks or memo)."""
    folder = cache_dir()
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


# --------------------------------------------------------------------------------------------- locks and temp files

def make_lock_dir(folder: Path, parents: bool = True) -> None:
    """Create the lock folder in ``folder`` (raises OSError when the cache is not writable)."""
    (folder / LOCK_DIR).mkdir(parents=parents, exist_ok=True)


def file_lock(folder: Path, name: str, timeout: float = -1):
    """An inter-process lock for ``name`` in ``folder`` (the lock folder must exist)."""
    from filelock import FileLock

    return FileLock(os.fspath(folder / LOCK_DIR / (name + ".lock")), timeout=timeout)


def part_file(folder: Path, file_name: str) -> tuple[int, Path]:
    """A new temp file (descriptor, path) in ``folder`` for bytes that may become ``file_name``."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{file_name}.", suffix=PART_SUFFIX)
    return fd, Path(tmp)


def remove_stale_parts(folder: Path, file_name: str) -> None:
    """Temp files left by a killed process (call with the file's lock held, so nobody is writing them)."""
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

    def lookup(self, path: Path) -> dict[str, str]:
        st = path.stat()
        key = os.fspath(path.resolve())
        for record in (_PROCESS_MEMO.get(key), self._load().get(path.name)):
            if record and record.get("size") == st.st_size and record.get("mtime_ns") == st.st_mtime_ns:
                return {a: record[a] for a in ALGORITHMS if record.get(a)}
        return {}

    def remember(self, path: Path, digests: dict[str, str]) -> None:
        st = path.stat()
        record = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, **digests}
        old = self.lookup(path)
        record.update({a: v for a, v in old.items() if a not in digests})
        _PROCESS_MEMO[os.fspath(path.resolve())] = record
        if path.parent.resolve() != self.folder.resolve() or not os.access(self.folder, os.W_OK):
            return
        from filelock import Timeout

        try:  # lost updates between processes only cost a re-hash later, but a lock keeps it tidy
            make_lock_dir(self.folder, parents=False)
            with file_lock(self.folder, MEMO_NAME, timeout=5):
                data = self._load()
                data[path.name] = record
                fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=MEMO_NAME + ".", suffix=PART_SUFFIX)
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(data, f, indent=0, sort_keys=True)
                os.replace(tmp, self.path)
        except (OSError, Timeout):
            pass  # read-only cache: the process memo above still saves re-hashing in this process
