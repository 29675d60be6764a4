"""Fetching: turn a registry entry into a verified local file.

Order of sources: the cache, then the mirrors in ``KZOO_MIRRORS`` (local folders, ``http(s)://`` base
URLs, ``hf://org/repo@revision/folder``), then the entry's own URLs. Bytes are hashed while they stream
into a partial file inside the cache folder, and the partial file is renamed into place only when every
pinned hash matches, so no partial or corrupt file is ever served and a good cached file is never replaced.
An HTTP download cut short (a dropped connection, a killed process) keeps its partial file and a record
of its source, and the next fetch resumes it with Range / If-Range; a full disk keeps nothing.

Environment: ``KZOO_MIRRORS`` (extra sources, separated by commas or ``os.pathsep``), ``KZOO_OFFLINE=1``
(never touch the network; ``HF_HUB_OFFLINE=1`` works too).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
import urllib.parse
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from kzoo._progress import progress_bar
from kzoo.errors import DownloadError, HashMismatch, KzooError, StorageError, WeightsNotFound
from kzoo.sources import placement
from kzoo.sources.cache import BLOB_DIR, Memo, Partial, cache_dir, file_lock, make_lock_dir, remove_stale_parts
from kzoo.sources.hashing import CHUNK_SIZE, MultiHash
from kzoo.sources.storage import PART_SUFFIX, error_number, storage_error, writable_alternative
from kzoo.sources.transport import NotFound, SourceFailed, WrongSize, hf_file, http_get
from kzoo.sources.verify import (_record_pin, algorithms_for, cached_ok, expected_hashes, hash_origin, hash_text,
                                 problems)

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

class _WriteFailed(Exception):
    """Writing into the cache failed (a full disk, a file-size limit). Not an OSError on purpose: the
    transport retries OSErrors as network trouble, and this one is local and final."""

    def __init__(self, error: OSError):
        super().__init__(str(error))
        self.error = error
        self.needed = None  # the bytes the file needs, when known


class _Sink:
    """Where a source's bytes go: a file in the cache folder, hashed as the bytes pass.

    Writes are unbuffered, so whatever was received is in the file when a process is killed (only a
    prefix, never a gap), and a full disk shows at the write that hit it.
    """

    def __init__(self, path: Path, algorithms, out=None):
        self.path = path
        self.out = out
        self.hasher = MultiHash(algorithms)
        self.total = None  # the length the source announced

    @property
    def size(self) -> int:
        return self.hasher.size

    def _open(self, mode: str) -> None:
        try:
            self.out = open(self.path, mode, buffering=0)
        except OSError as e:
            raise _WriteFailed(e) from None

    def write(self, data) -> None:
        view = memoryview(data)
        try:
            while view:  # a raw write may be short (e.g. the last blocks of a disk)
                view = view[self.out.write(view):]
        except OSError as e:
            raise _WriteFailed(e) from None
        self.hasher.update(data)

    def restart(self) -> None:
        if self.out is not None:
            try:
                self.out.seek(0)
                self.out.truncate()
            except OSError as e:
                raise _WriteFailed(e) from None
        self.hasher = MultiHash(self.hasher.algorithms)

    def close(self) -> None:
        if self.out is not None:
            self.out.close()


class _DownloadSink(_Sink):
    """An HTTP download into the entry's resumable partial file, whose record names the response each
    byte came from. A fresh download touches the partial file only once a server answers, so a source
    that fails first (a 404 mirror) does not destroy bytes another URL kept for the next fetch."""

    def __init__(self, partial: Partial, algorithms, url: str, expected: dict, kept: dict | None):
        super().__init__(partial.path, algorithms)
        self.partial, self.url, self.expected = partial, url, expected
        self.record = None  # what the partial's record file says now
        if kept:
            try:
                self.out = open(self.path, "r+b", buffering=0)
            except FileNotFoundError:  # gone since it was looked at: start afresh
                return
            self.record = {k: kept.get(k) for k in ("url", "validator", "total", "expected")}
            self._hash_kept()

    def _hash_kept(self) -> None:
        # The hashes must cover the kept bytes too; this leaves the file positioned at their end.
        buffer = bytearray(CHUNK_SIZE)
        view = memoryview(buffer)
        while n := self.out.readinto(buffer):
            self.hasher.update(view[:n])

    def begin(self, validator: str | None, total: int | None) -> None:
        # Called before a response's first body byte: the record must describe those bytes before they land.
        self.total = total
        if self.out is None:
            self.partial.discard()
            self._open("wb")
        record = {"url": self.url, "validator": validator, "total": total, "expected": self.expected}
        if record != self.record:
            try:
                self.partial.write_meta(record)
            except OSError as e:
                raise _WriteFailed(e) from None
            self.record = record


def _copy_file(src: Path, sink: _Sink, progress, desc: str) -> None:
    buffer = bytearray(CHUNK_SIZE)
    view = memoryview(buffer)
    with open(src, "rb", buffering=0) as f, progress_bar(os.fstat(f.fileno()).st_size, desc, progress) as bar:
        while n := f.readinto(buffer):
            sink.write(view[:n])
            bar.update(n)


def _from_folder(source: Source, sink: _Sink, entry, progress) -> None:
    path = Path(source.location)
    if not path.is_file():
        raise NotFound(f"{path} does not exist")
    try:
        _copy_file(path, sink, progress, f"copy {entry.file_name}")
    except OSError as e:
        raise SourceFailed(f"cannot read {path}: {e}") from None


def _from_hf(source: Source, sink: _Sink, entry, progress, offline: bool) -> None:
    # huggingface_hub keeps its own cache; copying while hashing is the one pass kzoo makes over it.
    _copy_file(hf_file(source.location, offline), sink, progress, f"copy {entry.file_name}")


def _from_http(source: Source, sink: _DownloadSink, entry, progress) -> None:
    validator = (sink.record or {}).get("validator") if sink.size else None
    http_get(source.location, sink, getattr(entry, "size", None), progress, f"download {entry.file_name}",
             validator=validator)


# --------------------------------------------------------------------------------------------- fetch

@dataclass
class _Attempt:
    source: Source
    outcome: str  # "not found" | "failed" | "wrong bytes"
    detail: str
    digests: dict = field(default_factory=dict)


def fetch(entry, progress: bool | None = None) -> Path:
    """A verified local copy of ``entry``'s file (downloading it if needed).

    Today's release is kept at Keras' path (``<cache>/<file name>``); a superseded release that shares
    its file name with another is kept by content (``<cache>/blobs/<hash>/<file name>``, see
    ``kzoo.sources.placement``), and a recognised release found at Keras' path is moved there rather
    than overwritten.

    Raises ``WeightsNotFound`` when no source has the file (or kzoo is offline and the cache lacks it),
    ``HashMismatch`` when sources only gave wrong bytes, ``DownloadError`` when they could not deliver.
    """
    folder = cache_dir()
    memo = Memo(folder)
    expected = expected_hashes(entry)
    offline = is_offline()
    found, cached_digests = _cached(entry, folder, expected, memo, progress, trust_unpinned=offline)
    if found is not None and found == placement.home(entry, folder):
        return found
    candidates = [s for s in sources_for(entry) if not offline or s.kind in ("folder", "hf")]
    if offline and not candidates and found is None:
        if (folder / entry.file_name).is_file() and os.access(folder, os.W_OK):
            with contextlib.suppress(OSError), _name_lock(entry, folder):  # StorageError is an OSError
                _protect(entry, folder, memo, progress)  # keras.applications would delete an old release there
        raise _offline_error(entry, expected, folder)
    target = folder / entry.file_name
    if folder.is_dir() and not os.access(folder, os.W_OK):
        if found is not None:
            return found  # in the wrong place, but nothing can be moved in a read-only cache
        if not expected:
            # Nothing can be downloaded into a read-only cache to compare with: as when no source
            # answers, the unpinned cached file is trusted on first use.
            found, cached_digests = _cached(entry, folder, expected, memo, progress, trust_unpinned=True)
            if found is not None:
                warnings.warn(f"Weights '{entry.id}': the cache {folder} is read-only, so its unpinned file "
                              f"{found} is trusted on first use and its sha256 pinned.", stacklevel=2)
                return found
        raise _unwritable_error(entry, target, folder, cached_digests, expected, None)
    try:
        lock = _name_lock(entry, folder)
        lock.acquire()
    except OSError as e:
        if error_number(e) in (errno.ENOSPC, errno.EDQUOT):
            raise _no_room_error(entry, folder, e) from None
        raise _unwritable_error(entry, target, folder, cached_digests, expected, e) from None

    partial = Partial(folder, entry.file_name)
    try:
        # Another process may have fetched (and, for trust on first use, pinned) it while we waited. A file
        # found above (trusted offline, or only in the wrong place) is found again and settled in its home.
        expected = expected_hashes(entry)
        found, cached_digests = _cached(entry, folder, expected, memo, progress, trust_unpinned=found is not None)
        if found is not None:
            return _settle(found, entry, folder, memo)
        if placement.home(entry, folder) == target:
            _protect(entry, folder, memo, progress)  # before a byte is fetched: also when no source answers
        remove_stale_parts(folder, entry.file_name)
        attempts = []
        for source in candidates:
            attempt = _try_source(source, entry, expected, folder, memo, progress, offline, partial)
            if isinstance(attempt, Path):
                return attempt
            attempts.append(attempt)
        if not expected and not any(a.outcome == "wrong bytes" for a in attempts):
            # Nothing to compare with could be fetched: the unpinned cached file is all there is.
            found, cached_digests = _cached(entry, folder, expected, memo, progress, trust_unpinned=True)
            if found is not None:
                warnings.warn(f"Weights '{entry.id}': no source could be reached, so the unpinned cached file "
                              f"{found} is trusted on first use and its sha256 pinned.", stacklevel=2)
                return _settle(found, entry, folder, memo)
        kept_size = partial.size()
        kept = partial.meta() if kept_size else {}
    finally:
        lock.release()
    raise _final_error(entry, expected, attempts, folder, offline, cached_digests, kept, kept_size)


def _name_lock(entry, folder):
    """The inter-process lock of ``entry``'s file name (releases sharing a name take turns). A lock left by
    a killed process does not block: flock dies with its process."""
    make_lock_dir(folder)
    return file_lock(folder, entry.file_name)


def _cached(entry, folder, expected, memo, progress, trust_unpinned=False) -> tuple[Path | None, dict]:
    """The verified cached file for ``entry`` (at its home or at the other place), and the digests of the
    first file looked at (for error messages). An unpinned file is trusted (``trust_unpinned``) only
    where it is not recognisably another release of the same name."""
    first = {}
    for path in placement.candidates(entry, folder):
        if not expected and trust_unpinned and placement.recognise(path, entry, memo, progress):
            continue
        ok, digests = cached_ok(path, entry, expected, memo, progress, trust_unpinned=trust_unpinned)
        if ok:
            return path, digests
        first = first or digests
    return None, first


def _settle(found: Path, entry, folder, memo) -> Path:
    """``found`` verified as ``entry``: move it to its blob if it sits at Keras' path but lives by content
    (keras.applications would overwrite or delete it there). Call with the name's lock held."""
    keras_path = folder / entry.file_name
    if found != keras_path or not placement.by_content(entry):
        return found
    try:
        return placement.move_to_blob(keras_path, entry, memo, f"superseded by {entry.superseded_by}")
    except OSError:
        return found  # it stays where it is, verified; moving it is a precaution, not a need


def _protect(entry, folder, memo, progress) -> None:
    """Move a recognised other release out of Keras' path before ``entry``'s file is written there."""
    try:
        placement.protect_keras_path(entry, folder, memo, progress)
    except OSError as e:  # the old file stays; writing over it would lose it
        raise storage_error(f"Weights '{entry.id}' ('{entry.file_name}')", folder, e,
                            kept=f"{folder / entry.file_name} is another verified release and was left as it "
                                 f"was; kzoo could not move it to {folder / BLOB_DIR}.") from None


def _try_source(source, entry, expected, folder, memo, progress, offline, partial) -> _Attempt | Path:
    """Fetch from one source and rename the bytes into place if they verify (returns the cached path).

    HTTP downloads go to the entry's resumable partial file and may continue bytes an earlier process
    kept for the same URL; if the finished file then does not verify, the kept bytes may be the wrong
    ones, so the source is tried once more from byte 0. A transient failure keeps a resumable partial for
    the next fetch; wrong bytes and a failed write keep nothing. Folder and Hub copies go to a temp file.
    """
    url = source.location if source.kind == "http" else None
    want_size = getattr(entry, "size", None)
    kept = partial.resumable(url, expected, want_size) if url else None
    try:
        result = _fill(source, entry, expected, partial, kept, progress, offline)
        if kept is not None and isinstance(result, _Attempt) and result.outcome == "wrong bytes":
            result = _fill(source, entry, expected, partial, None, progress, offline)
    except _WriteFailed as e:
        partial.discard()
        raise _no_room_error(entry, partial.path.parent, e.error, e.needed) from None
    if isinstance(result, _Attempt):
        # Bytes another URL kept are not this source's to drop (it may be a 404 mirror asked first).
        ours = url is not None and partial.meta().get("url") == url
        if ours and (result.outcome != "failed" or partial.resumable(url, expected, want_size) is None):
            partial.discard()
        return result
    path, digests, size = result
    try:
        if not expected:  # trust on first use: this download defines the file from now on
            _record_pin(entry, digests["sha256"], size=size, source=str(source))
        target = placement.home(entry, folder, digests)
        if target == folder / entry.file_name:
            _protect(entry, folder, memo, progress)  # written there meanwhile (keras.applications)?
        else:
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise _no_room_error(entry, folder, e, size) from None
        os.replace(path, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a temp copy that did not become the target
    partial.discard()  # bytes any URL kept are moot now that the file is cached
    memo.remember(target, digests)
    return target


def _fill(source, entry, expected, partial, kept, progress, offline):
    """Bytes from one source into a file in the cache folder (continuing ``kept``, the record of bytes the
    partial file already holds, when given): ``(path, digests, size)`` when they verify, else an _Attempt
    saying why not."""
    algorithms = algorithms_for(expected)
    if source.kind == "http":
        sink = _DownloadSink(partial, algorithms, source.location, expected, kept)
    else:
        try:
            fd, tmp = tempfile.mkstemp(dir=partial.path.parent, prefix=f".{entry.file_name}.", suffix=PART_SUFFIX)
        except OSError as e:
            raise _WriteFailed(e) from None
        sink = _Sink(Path(tmp), algorithms, os.fdopen(fd, "wb", buffering=0))
    done = False
    try:
        try:
            if kept and kept.get("total") is not None and sink.size >= kept["total"]:
                pass  # complete but not yet renamed when its process died: verify it as it is
            elif source.kind == "folder":
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
        except _WriteFailed as e:
            e.needed = getattr(entry, "size", None) or sink.total
            raise
        digests = sink.hasher.hexdigests()
        found = problems(entry, sink.size, digests, expected)
        if found:
            return _Attempt(source, "wrong bytes", "; ".join(found), digests)
        done = True
        return sink.path, digests, sink.size
    finally:
        sink.close()
        if source.kind != "http" and not done:
            with contextlib.suppress(FileNotFoundError):
                sink.path.unlink()


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


def _elsewhere(folder, needed=None, what="a writable folder") -> str:
    """'set KZOO_CACHE_DIR to ...', with a concrete folder where one can be found."""
    alternative = writable_alternative(folder, needed)
    example = f" (e.g. KZOO_CACHE_DIR={alternative})" if alternative is not None else ""
    return f"set KZOO_CACHE_DIR to {what}{example}"


def _unwritable_error(entry, target, folder, cached_digests, expected, error) -> KzooError:
    why = f" ({error})" if error else ""
    if target.is_file():
        return HashMismatch(
            f"Weights '{entry.id}': the cached file {target} does not match ({hash_text(expected)}; it has "
            f"{hash_text(cached_digests)}) and the cache folder {folder} is not writable{why}. Replace the "
            f"file, or {_elsewhere(folder)}.{hash_origin(entry)}"
        )
    return DownloadError(
        f"Weights '{entry.id}': '{entry.file_name}' is not cached and the cache folder {folder} is not "
        f"writable{why}. Put the file there, or {_elsewhere(folder, getattr(entry, 'size', None))}."
    )


def _no_room_error(entry, folder, error, needed=None) -> StorageError:
    needed = needed if needed is not None else getattr(entry, "size", None)
    return storage_error(f"Weights '{entry.id}' ('{entry.file_name}')", folder, error, needed,
                         kept="Nothing of it was kept, and the files already cached are untouched.",
                         elsewhere=_elsewhere(folder, needed, "a folder with room"))


def _final_error(entry, expected, attempts, folder, offline, cached_digests, kept=None, kept_size=0) -> KzooError:
    lines = [f"  {a.source}: {a.outcome}: {a.detail}" for a in attempts]
    if not attempts:
        lines = ["  (no sources: the entry has no URLs and KZOO_MIRRORS is empty)"]
    if kept and kept_size:
        total = f" of {kept['total']}" if kept.get("total") else ""
        lines.append(f"  A partial download ({kept_size}{total} bytes from {kept.get('url')}) is kept in "
                     f"{folder}; the next fetch resumes it.")
    tried = "\n".join(lines)
    mismatches = [a for a in attempts if a.outcome == "wrong bytes"]
    if mismatches:
        error = HashMismatch(
            f"Weights '{entry.id}' ({entry.file_name}): no source gave the pinned bytes. Expected "
            f"{hash_text(expected)}{_size_text(entry)}. Nothing was written to {folder}; the wrong bytes "
            f"were deleted.{hash_origin(entry)}\nSources tried:\n{tried}"
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
