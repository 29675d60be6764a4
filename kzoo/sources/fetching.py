"""Fetching: turn a registry entry into a verified local file.

Order of sources: the cache, then the mirrors in ``KZOO_MIRRORS`` (local folders, ``http(s)://`` base
URLs, ``hf://org/repo@revision/folder``), then the entry's own URLs. Bytes are hashed while they stream
into a temp file inside the cache folder, and the temp file is renamed into place only when every pinned
hash matches, so no partial or corrupt file is ever served and a good cached file is never replaced.

Environment: ``KZOO_MIRRORS`` (extra sources, separated by commas or ``os.pathsep``), ``KZOO_OFFLINE=1``
(never touch the network; ``HF_HUB_OFFLINE=1`` works too).
"""

from __future__ import annotations

import contextlib
import os
import re
import urllib.parse
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from kzoo._progress import progress_bar
from kzoo.errors import DownloadError, HashMismatch, KzooError, WeightsNotFound
from kzoo.sources.cache import Memo, cache_dir, file_lock, make_lock_dir, part_file, remove_stale_parts
from kzoo.sources.hashing import CHUNK_SIZE, MultiHash
from kzoo.sources.transport import NotFound, SourceFailed, WrongSize, hf_file, http_get
from kzoo.sources.verify import _record_pin, algorithms_for, cached_ok, expected_hashes, hash_text, problems

_TRUE = {"1", "true", "yes", "on"}


# --------------------------------------------------------------------------------------------- settings

def is_offline() -> bool:
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in ("KZOO_OFFLINE", "HF_HUB_OFFLINE"))


def mirrors() -> list[str]:
    """``KZOO_MIRRORS`` split into sources.

    Commas always separate. Without a comma, ``os.pathsep`` separates too; on POSIX a ``:`` only counts
    as a separator when it is not part of ``scheme://`` or ``host:port``.
    """
    value = os.environ.get("KZOO_MIRRORS", "").strip()
    if not value:
        return []
    if "," in value:
        parts = value.split(",")
    elif os.pathsep == ":":
        parts = re.split(r":(?!//)(?!\d)", value)
    else:
        parts = value.split(os.pathsep)
    return [p.strip() for p in parts if p.strip()]


# --------------------------------------------------------------------------------------------- sources

@dataclass(frozen=True)
class Source:
    kind: str  # "folder" | "http" | "hf"
    location: str  # a file path, a URL, or "org/repo@revision/path/in/repo"

    def __str__(self):
        return f"hf://{self.location}" if self.kind == "hf" else self.location


def _hf_spec(spec: str, file_name: str | None) -> str:
    """``org/repo[@revision][/folder]`` (+ ``file_name`` for a mirror) -> ``org/repo@revision/path``."""
    parts = spec.strip("/").split("/")
    if len(parts) < 2:
        raise KzooError(f"Bad hf:// source 'hf://{spec}': expected hf://org/repo@revision/path.")
    org, repo, rest = parts[0], parts[1], parts[2:]
    repo, _, revision = repo.partition("@")
    if file_name is not None:
        rest = rest + [file_name]
    if not rest:
        raise KzooError(f"hf:// source 'hf://{spec}' names no file inside the repository.")
    return f"{org}/{repo}@{revision or 'main'}/{'/'.join(rest)}"


def _source_for(location: str, file_name: str | None) -> Source:
    """A mirror (``file_name`` given: the location is a base) or an entry URL (the location is the file)."""
    if location.startswith("hf://"):
        return Source("hf", _hf_spec(location[len("hf://"):], file_name))
    if location.startswith(("http://", "https://")):
        if file_name is None:
            return Source("http", location)
        return Source("http", location.rstrip("/") + "/" + urllib.parse.quote(file_name))
    if location.startswith("file://"):
        location = urllib.parse.unquote(urllib.parse.urlparse(location).path)
    path = Path(location).expanduser()
    return Source("folder", os.fspath(path / file_name if file_name is not None else path))


def sources_for(entry) -> list[Source]:
    """Every source for ``entry`` after the cache, in the order they are tried."""
    names = [entry.file_name]
    for url in getattr(entry, "urls", None) or ():  # a mirror folder may hold files under their URL name
        base = urllib.parse.unquote(url.rstrip("/").rsplit("/", 1)[-1])
        if base and base not in names:
            names.append(base)
    found = []
    for mirror in mirrors():
        local = not mirror.startswith(("http://", "https://", "hf://"))
        for name in names if local else names[:1]:
            found.append(_source_for(mirror, name))
    found.extend(_source_for(url, None) for url in getattr(entry, "urls", None) or ())
    unique = []
    for source in found:
        if source not in unique:
            unique.append(source)
    return unique


# --------------------------------------------------------------------------------------------- one source

class _HashingSink:
    """Where a source's bytes go: the temp file, with the digests computed as the bytes pass."""

    def __init__(self, out, algorithms):
        self.out = out
        self.hasher = MultiHash(algorithms)

    @property
    def size(self) -> int:
        return self.hasher.size

    def write(self, data) -> None:
        self.out.write(data)
        self.hasher.update(data)

    def restart(self) -> None:
        self.out.seek(0)
        self.out.truncate()
        self.hasher = MultiHash(self.hasher.algorithms)


def _copy_file(src: Path, sink: _HashingSink, progress, desc: str) -> None:
    buffer = bytearray(CHUNK_SIZE)
    view = memoryview(buffer)
    with open(src, "rb", buffering=0) as f, progress_bar(os.fstat(f.fileno()).st_size, desc, progress) as bar:
        while n := f.readinto(buffer):
            sink.write(view[:n])
            bar.update(n)


def _from_folder(source: Source, sink: _HashingSink, entry, progress) -> None:
    path = Path(source.location)
    if not path.is_file():
        raise NotFound(f"{path} does not exist")
    try:
        _copy_file(path, sink, progress, f"copy {entry.file_name}")
    except OSError as e:
        raise SourceFailed(f"cannot read {path}: {e}") from None


def _from_hf(source: Source, sink: _HashingSink, entry, progress, offline: bool) -> None:
    # huggingface_hub keeps its own cache; copying while hashing is the one pass kzoo makes over it.
    _copy_file(hf_file(source.location, offline), sink, progress, f"copy {entry.file_name}")


def _from_http(source: Source, sink: _HashingSink, entry, progress) -> None:
    http_get(source.location, sink, getattr(entry, "size", None), progress, f"download {entry.file_name}")


# --------------------------------------------------------------------------------------------- fetch

@dataclass
class _Attempt:
    source: Source
    outcome: str  # "not found" | "failed" | "wrong bytes"
    detail: str
    digests: dict = field(default_factory=dict)


def fetch(entry, progress: bool | None = None) -> Path:
    """A verified local copy of ``entry``'s file (downloading it if needed).

    Raises ``WeightsNotFound`` when no source has the file (or kzoo is offline and the cache lacks it),
    ``HashMismatch`` when sources only gave wrong bytes, ``DownloadError`` when they could not deliver.
    """
    folder = cache_dir()
    target = folder / entry.file_name
    memo = Memo(folder)
    expected = expected_hashes(entry)
    offline = is_offline()
    ok, cached_digests = cached_ok(target, entry, expected, memo, progress, trust_unpinned=offline)
    if ok:
        return target
    candidates = [s for s in sources_for(entry) if not offline or s.kind in ("folder", "hf")]
    if offline and not candidates:
        raise _offline_error(entry, expected, folder)
    if folder.is_dir() and not os.access(folder, os.W_OK):
        raise _unwritable_error(entry, target, folder, cached_digests, expected, None)
    try:
        make_lock_dir(folder)
    except OSError as e:
        raise _unwritable_error(entry, target, folder, cached_digests, expected, e) from None

    with file_lock(folder, entry.file_name):
        # Another process may have fetched (and, for trust on first use, pinned) it while we waited.
        expected = expected_hashes(entry)
        ok, cached_digests = cached_ok(target, entry, expected, memo, progress)
        if ok:
            return target
        remove_stale_parts(folder, entry.file_name)
        attempts = []
        for source in candidates:
            attempt = _try_source(source, entry, expected, folder, target, memo, progress, offline)
            if attempt is None:
                return target
            attempts.append(attempt)
        if not expected and not any(a.outcome == "wrong bytes" for a in attempts):
            # Nothing to compare with could be fetched: the unpinned cached file is all there is.
            ok, cached_digests = cached_ok(target, entry, expected, memo, progress, trust_unpinned=True)
            if ok:
                warnings.warn(f"Weights '{entry.id}': no source could be reached, so the unpinned cached file "
                              f"{target} is trusted on first use and its sha256 pinned.", stacklevel=2)
                return target
    raise _final_error(entry, expected, attempts, folder, offline, cached_digests)


def _try_source(source, entry, expected, folder, target, memo, progress, offline) -> _Attempt | None:
    """Fetch from one source into a temp file; rename it into place if it verifies (returns None)."""
    fd, tmp = part_file(folder, entry.file_name)
    try:
        with os.fdopen(fd, "wb") as out:
            sink = _HashingSink(out, algorithms_for(expected))
            try:
                if source.kind == "folder":
                    _from_folder(source, sink, entry, progress)
                elif source.kind == "hf":
                    _from_hf(source, sink, entry, progress, offline)
                else:
                    _from_http(source, sink, entry, progress)
            except NotFound as e:
                return _Attempt(source, "not found", str(e))
            except SourceFailed as e:
                return _Attempt(source, "failed", str(e))
            except WrongSize as e:
                return _Attempt(source, "wrong bytes", str(e))
        digests = sink.hasher.hexdigests()
        found = problems(entry, sink.size, digests, expected)
        if found:
            return _Attempt(source, "wrong bytes", "; ".join(found), digests)
        if not expected:  # trust on first use: this download defines the file from now on
            _record_pin(entry, digests["sha256"], size=sink.size, source=str(source))
        os.replace(tmp, target)
        memo.remember(target, digests)
        return None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


# --------------------------------------------------------------------------------------------- error messages

def _size_text(entry) -> str:
    size = getattr(entry, "size", None)
    return f", {size} bytes" if size is not None else ""


def _offline_error(entry, expected, folder) -> WeightsNotFound:
    return WeightsNotFound(
        f"Weights '{entry.id}' are not in the cache and kzoo is offline (KZOO_OFFLINE / HF_HUB_OFFLINE). "
        f"Put the file '{entry.file_name}' ({hash_text(expected)}) into {folder}, or list a folder that "
        f"holds it in KZOO_MIRRORS, or unset the offline variables."
    )


def _unwritable_error(entry, target, folder, cached_digests, expected, error) -> KzooError:
    why = f" ({error})" if error else ""
    if target.is_file():
        return HashMismatch(
            f"Weights '{entry.id}': the cached file {target} does not match ({hash_text(expected)}; it has "
            f"{hash_text(cached_digests)}) and the cache folder {folder} is not writable{why}. Replace the "
            f"file, or set KZOO_CACHE_DIR to a writable folder."
        )
    return DownloadError(
        f"Weights '{entry.id}': '{entry.file_name}' is not cached and the cache folder {folder} is not "
        f"writable{why}. Set KZOO_CACHE_DIR to a writable folder, or put the file there."
    )


def _final_error(entry, expected, attempts, folder, offline, cached_digests) -> KzooError:
    lines = [f"  {a.source}: {a.outcome}: {a.detail}" for a in attempts]
    if not attempts:
        lines = ["  (no sources: the entry has no URLs and KZOO_MIRRORS is empty)"]
    tried = "\n".join(lines)
    mismatches = [a for a in attempts if a.outcome == "wrong bytes"]
    if mismatches:
        error = HashMismatch(
            f"Weights '{entry.id}' ({entry.file_name}): no source gave the pinned bytes. Expected "
            f"{hash_text(expected)}{_size_text(entry)}. Nothing was written to {folder}; the wrong bytes "
            f"were deleted.\nSources tried:\n{tried}"
        )
        error.entry_id, error.expected = entry.id, dict(expected)
        error.actual = {str(a.source): dict(a.digests) for a in mismatches}
        return error
    place = f"Put '{entry.file_name}' ({hash_text(expected)}) into {folder}, or add a mirror to KZOO_MIRRORS."
    if offline:
        return WeightsNotFound(f"Weights '{entry.id}' are not in the cache or any local mirror and kzoo is "
                               f"offline. {place}\nSources tried:\n{tried}")
    if all(a.outcome == "not found" for a in attempts):
        return WeightsNotFound(f"Weights '{entry.id}': no source has '{entry.file_name}'. {place}"
                               f"\nSources tried:\n{tried}")
    return DownloadError(f"Weights '{entry.id}': could not download '{entry.file_name}'. {place}"
                         f"\nSources tried:\n{tried}")
