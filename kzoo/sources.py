"""Getting bytes: turn a registry entry into a verified local file.

Order of sources: the cache, then the mirrors in ``KZOO_MIRRORS`` (local folders, ``http(s)://`` base
URLs, ``hf://org/repo@revision/folder``), then the entry's own URLs. Bytes are hashed while they stream
into a temp file inside the cache folder, and the temp file is renamed into place only when every pinned
hash matches, so no partial or corrupt file is ever served and a good cached file is never replaced.

Environment:
    KZOO_CACHE_DIR       cache folder (default ``$KERAS_HOME/models``, else ``~/.keras/models``,
                         so files keras.applications already downloaded are reused once they verify)
    KZOO_MIRRORS         extra sources, separated by commas or ``os.pathsep``
    KZOO_OFFLINE=1       never touch the network (``HF_HUB_OFFLINE=1`` works too)
    KZOO_RETRIES         transient-error retries per source (default 5)
    KZOO_RETRY_BACKOFF   first back-off delay in seconds, doubled each retry (default 1)
    KZOO_TIMEOUT         socket timeout in seconds (default 60)
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from kzoo._progress import progress_bar
from kzoo.errors import DownloadError, HashMismatch, KzooError, WeightsNotFound

CHUNK_SIZE = 1 << 20  # 1 MiB: large enough that hashing runs at OpenSSL speed, small enough for cache
ALGORITHMS = ("md5", "sha256")
MEMO_NAME = ".kzoo-verified.json"
LOCK_DIR = ".kzoo-locks"
PART_SUFFIX = ".part"
USER_AGENT = "kzoo/0.1 (+https://github.com/kzoo)"

_TRUE = {"1", "true", "yes", "on"}
_PROCESS_MEMO: dict[str, dict] = {}  # used when the cache folder is read-only


# --------------------------------------------------------------------------------------------- settings

def cache_dir() -> Path:
    """The weight cache: ``KZOO_CACHE_DIR``, else Keras' own ``$KERAS_HOME/models`` or ``~/.keras/models``."""
    override = os.environ.get("KZOO_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    keras_home = os.environ.get("KERAS_HOME")
    if keras_home:
        return Path(keras_home).expanduser() / "models"
    return Path("~/.keras/models").expanduser()


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


def _env_number(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


# --------------------------------------------------------------------------------------------- hashing

class MultiHash:
    """Several hashlib digests fed from one pass over the bytes."""

    def __init__(self, algorithms=ALGORITHMS):
        self.algorithms = tuple(algorithms)
        self._hashers = [_new_hasher(a) for a in self.algorithms]
        self.size = 0

    def update(self, data) -> None:
        for hasher in self._hashers:
            hasher.update(data)
        self.size += len(data)

    def hexdigests(self) -> dict[str, str]:
        return {a: h.hexdigest() for a, h in zip(self.algorithms, self._hashers)}


def _new_hasher(algorithm: str):
    if algorithm == "md5":  # md5 is an identifier here (Keras pins it), not a security boundary
        return hashlib.md5(usedforsecurity=False)
    return hashlib.new(algorithm)


def hash_file(path, algorithms=ALGORITHMS, progress: bool | None = False) -> dict[str, str]:
    """Hex digests of a file, all algorithms in one streaming pass (1 MiB reads into one reused buffer)."""
    hasher = MultiHash(algorithms)
    buffer = bytearray(CHUNK_SIZE)
    view = memoryview(buffer)
    path = Path(path)
    with open(path, "rb", buffering=0) as f, progress_bar(
            os.fstat(f.fileno()).st_size, f"verify {path.name}", progress) as bar:
        while n := f.readinto(buffer):
            hasher.update(view[:n])
            bar.update(n)
    return hasher.hexdigests()


# --------------------------------------------------------------------------------------------- registry glue

def expected_hashes(entry) -> dict[str, str]:
    """The hashes a file for ``entry`` must have: pinned in the registry, else recorded on first use."""
    expected = {}
    for algorithm in ALGORITHMS:
        value = getattr(entry, algorithm, None)
        if value:
            expected[algorithm] = value.lower()
    if not expected:
        pin = _pinned_sha256(entry)
        if pin:
            expected["sha256"] = pin.lower()
    return expected


def _pinned_sha256(entry) -> str | None:
    import kzoo.registry as registry

    return registry.pinned_sha256(entry)


def _record_pin(entry, sha256: str, size: int | None = None, source: str | None = None) -> None:
    import kzoo.registry as registry

    registry.record_pin(entry, sha256, size=size, source=source)


def _checked(expected: dict[str, str]) -> dict[str, str]:
    """The hash actually verified: sha256 when pinned (md5 adds nothing then, and costs a second
    digest per byte), else md5 as Keras pins it. Empty for an unpinned trust-on-first-use file."""
    if "sha256" in expected:
        return {"sha256": expected["sha256"]}
    return dict(expected)


def _algorithms(expected: dict[str, str]) -> tuple[str, ...]:
    """Digests to compute for ``expected``: the checked one (sha256 for trust-on-first-use)."""
    return tuple(_checked(expected)) or ("sha256",)


def _problems(entry, size: int, digests: dict[str, str], expected: dict[str, str]) -> list[str]:
    """Why a file is not the one ``entry`` pins; empty when it is."""
    problems = []
    want_size = getattr(entry, "size", None)
    if want_size is not None and size != want_size:
        problems.append(f"size {size} (expected {want_size})")
    for algorithm, want in _checked(expected).items():
        got = digests.get(algorithm)
        if got != want:
            problems.append(f"{algorithm} {got} (expected {want})")
    return problems


# --------------------------------------------------------------------------------------------- verified-result memo

class _Memo:
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
        try:  # lost updates between processes only cost a re-hash later, but a lock keeps it tidy
            from filelock import FileLock, Timeout

            (self.folder / LOCK_DIR).mkdir(exist_ok=True)
            with FileLock(os.fspath(self.folder / LOCK_DIR / (MEMO_NAME + ".lock")), timeout=5):
                data = self._load()
                data[path.name] = record
                fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=MEMO_NAME + ".", suffix=PART_SUFFIX)
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(data, f, indent=0, sort_keys=True)
                os.replace(tmp, self.path)
        except (OSError, Timeout):
            pass  # read-only cache: the process memo above still saves re-hashing in this process


def _digests_for(path: Path, algorithms, memo: _Memo, progress=None) -> dict[str, str]:
    """Digests of ``path`` for ``algorithms``, from the memo when the file is unchanged."""
    known = memo.lookup(path)
    if not set(algorithms) <= set(known):
        known = {**known, **hash_file(path, tuple(algorithms), progress)}
        memo.remember(path, known)
    return known


# --------------------------------------------------------------------------------------------- cache checks

@dataclass(frozen=True)
class CacheStatus:
    path: Path
    state: str  # "verified" | "missing" | "mismatch" | "unpinned"
    detail: str = ""


def cache_status(entry) -> CacheStatus:
    """What the cache holds for ``entry``, without downloading or pinning anything."""
    path = cache_dir() / entry.file_name
    if not path.is_file():
        return CacheStatus(path, "missing")
    expected = expected_hashes(entry)
    if not expected:
        return CacheStatus(path, "unpinned", "present, no hash recorded yet")
    digests = _digests_for(path, _algorithms(expected), _Memo(path.parent))
    problems = _problems(entry, path.stat().st_size, digests, expected)
    return CacheStatus(path, "mismatch" if problems else "verified", "; ".join(problems))


def _cached_ok(path: Path, entry, expected: dict, memo: _Memo, progress,
               trust_unpinned: bool = False) -> tuple[bool, dict]:
    """Is the cached file the right one?

    A file with no pin yet (trust on first use) that kzoo did not download itself (e.g. left by
    keras.applications, maybe half-written) is trusted only with ``trust_unpinned``: when offline, or
    when no source could be reached to download a copy. It is pinned then.
    """
    if not path.is_file() or (not expected and not trust_unpinned):
        return False, {}
    want_size = getattr(entry, "size", None)
    size = path.stat().st_size
    if want_size is not None and size != want_size:
        return False, {}
    digests = _digests_for(path, _algorithms(expected), memo, progress)
    if not expected:
        _record_pin(entry, digests["sha256"], size=size, source=f"cache {path}")
        return True, digests
    return not _problems(entry, size, digests, expected), digests


# --------------------------------------------------------------------------------------------- sources

class _NotFound(Exception):
    """The source does not have the file (404, missing folder entry, not in an offline HF cache)."""


class _SourceFailed(Exception):
    """The source could not deliver (network trouble after retries, permission, ...)."""


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


def _copy_file(src: Path, out, hasher: MultiHash, progress, desc: str) -> None:
    buffer = bytearray(CHUNK_SIZE)
    view = memoryview(buffer)
    with open(src, "rb", buffering=0) as f, progress_bar(os.fstat(f.fileno()).st_size, desc, progress) as bar:
        while n := f.readinto(buffer):
            out.write(view[:n])
            hasher.update(view[:n])
            bar.update(n)


def _from_folder(source: Source, out, hasher, entry, progress) -> None:
    path = Path(source.location)
    if not path.is_file():
        raise _NotFound(f"{path} does not exist")
    try:
        _copy_file(path, out, hasher, progress, f"copy {entry.file_name}")
    except OSError as e:
        raise _SourceFailed(f"cannot read {path}: {e}") from None


def _from_hf(source: Source, out, hasher, entry, progress, offline: bool) -> None:
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub import errors as hf_errors
    except ImportError:
        raise _SourceFailed("huggingface_hub is not installed (pip install huggingface-hub)") from None
    repo_rev, _, rest = source.location.partition("@")
    revision, _, filename = rest.partition("/")
    hub_cache = _hf_cache_dir()
    if offline:  # a pure cache lookup: hf_hub_download may still talk to the Hub even with local_files_only
        from huggingface_hub import try_to_load_from_cache

        local = try_to_load_from_cache(repo_rev, filename, cache_dir=hub_cache, revision=revision)
        if not isinstance(local, str):
            raise _NotFound("not in the local Hugging Face cache")
        _copy_file(Path(local), out, hasher, progress, f"copy {entry.file_name}")
        return
    not_found = (hf_errors.EntryNotFoundError, hf_errors.RepositoryNotFoundError,
                 hf_errors.RevisionNotFoundError)
    try:
        # Endpoint and cache are read from the environment now, not when huggingface_hub was imported.
        local = hf_hub_download(repo_rev, filename, revision=revision, cache_dir=hub_cache,
                                endpoint=os.environ.get("HF_ENDPOINT") or None)
    except not_found as e:
        raise _NotFound(_first_line(e)) from None
    except Exception as e:  # noqa: BLE001 - any hub/network failure means: try the next source
        raise _SourceFailed(f"{type(e).__name__}: {_first_line(e)}") from None
    # huggingface_hub keeps its own cache; copying while hashing is the one pass kzoo makes over it.
    _copy_file(Path(local), out, hasher, progress, f"copy {entry.file_name}")


def _hf_cache_dir() -> str | None:
    """huggingface_hub's cache folder as the environment says now (None: its own default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class _WrongSize(Exception):
    """The source announces or sends a different number of bytes than the registry pins."""


class _Restart(Exception):
    """The server ignored or rejected our Range request: start the file over."""


def _from_http(source: Source, out, hasher_box: list, entry, progress) -> None:
    """Stream ``source`` into ``out``, hashing as it goes; resume with Range after a dropped connection.

    ``hasher_box`` holds the running MultiHash so a restart from byte 0 can replace it. Transient errors
    (5xx, 429, resets, timeouts, short bodies) are retried with exponential back-off; a retry that made
    progress does not count against the limit, so a flaky but working server still finishes.
    """
    retries = int(_env_number("KZOO_RETRIES", 5))
    backoff = _env_number("KZOO_RETRY_BACKOFF", 1.0)
    timeout = _env_number("KZOO_TIMEOUT", 60.0)
    want_size = getattr(entry, "size", None)
    buffer = bytearray(CHUNK_SIZE)
    view = memoryview(buffer)
    validator = None  # ETag / Last-Modified of the first response, sent as If-Range when resuming
    failures = 0
    last_error = ""
    with progress_bar(want_size, f"download {entry.file_name}", progress) as bar:
        while True:
            hasher = hasher_box[0]
            received = hasher.size
            headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
            if received:
                headers["Range"] = f"bytes={received}-"
                if validator:
                    headers["If-Range"] = validator
            progressed = False
            try:
                request = urllib.request.Request(source.location, headers=headers)
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    if received and response.status == 200:  # Range ignored: this body is the whole file
                        out.seek(0)
                        out.truncate()
                        hasher = hasher_box[0] = MultiHash(hasher.algorithms)
                        bar.reset(want_size)
                        received = 0
                    total = _expected_length(response, received)
                    if want_size is not None and total is not None and total != want_size:
                        raise _WrongSize(f"server announces {total} bytes, the registry pins {want_size}")
                    validator = validator or response.headers.get("ETag") or response.headers.get("Last-Modified")
                    while n := response.readinto(buffer):
                        out.write(view[:n])
                        hasher.update(view[:n])
                        bar.update(n)
                        progressed = True
                        if want_size is not None and hasher.size > want_size:
                            raise _WrongSize(f"sent more than the {want_size} bytes the registry pins")
                    if total is not None and hasher.size < total:
                        raise ConnectionResetError(f"connection closed after {hasher.size} of {total} bytes")
                    return
            except _Restart as e:
                last_error = str(e)
                out.seek(0)
                out.truncate()
                hasher_box[0] = MultiHash(hasher.algorithms)
                bar.reset(want_size)
            except urllib.error.HTTPError as e:
                e.close()
                if e.code in (404, 410):
                    raise _NotFound(f"HTTP {e.code}") from None
                if e.code == 416 and received:  # our offset is past the end: start over
                    last_error = "HTTP 416"
                    out.seek(0)
                    out.truncate()
                    hasher_box[0] = MultiHash(hasher.algorithms)
                    bar.reset(want_size)
                elif e.code >= 500 or e.code in (408, 429):
                    last_error = f"HTTP {e.code}"
                else:
                    raise _SourceFailed(f"HTTP {e.code} {e.reason}") from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
                reason = getattr(e, "reason", None) or e
                last_error = f"{type(reason).__name__}: {reason}".rstrip(": ")
            failures = 0 if progressed else failures + 1
            if failures > retries:
                raise _SourceFailed(f"gave up after {retries} retries ({last_error})")
            if failures:
                time.sleep(min(backoff * 2 ** (failures - 1), 60.0))


def _expected_length(response, offset: int) -> int | None:
    """Total file length implied by the response; raises _Restart if a resume cannot continue."""
    length = response.headers.get("Content-Length")
    length = int(length) if length and length.isdigit() else None
    if offset:
        match = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != offset:
            raise _Restart("server resumed at the wrong offset")
        return int(match.group(3)) if match.group(3) != "*" else None
    return length


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
    memo = _Memo(folder)
    expected = expected_hashes(entry)
    offline = is_offline()
    ok, cached_digests = _cached_ok(target, entry, expected, memo, progress, trust_unpinned=offline)
    if ok:
        return target
    candidates = [s for s in sources_for(entry) if not offline or s.kind in ("folder", "hf")]
    if offline and not candidates:
        raise _offline_error(entry, expected, folder)
    if folder.is_dir() and not os.access(folder, os.W_OK):
        raise _unwritable_error(entry, target, folder, cached_digests, expected, None)
    try:
        (folder / LOCK_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _unwritable_error(entry, target, folder, cached_digests, expected, e) from None

    from filelock import FileLock

    with FileLock(os.fspath(folder / LOCK_DIR / (entry.file_name + ".lock"))):
        # Another process may have fetched (and, for trust on first use, pinned) it while we waited.
        expected = expected_hashes(entry)
        ok, cached_digests = _cached_ok(target, entry, expected, memo, progress)
        if ok:
            return target
        _remove_stale_parts(folder, entry.file_name)
        attempts = []
        for source in candidates:
            attempt = _try_source(source, entry, expected, folder, target, memo, progress, offline)
            if attempt is None:
                return target
            attempts.append(attempt)
        if not expected and not any(a.outcome == "wrong bytes" for a in attempts):
            # Nothing to compare with could be fetched: the unpinned cached file is all there is.
            ok, cached_digests = _cached_ok(target, entry, expected, memo, progress, trust_unpinned=True)
            if ok:
                warnings.warn(f"Weights '{entry.id}': no source could be reached, so the unpinned cached file "
                              f"{target} is trusted on first use and its sha256 pinned.", stacklevel=2)
                return target
    raise _final_error(entry, expected, attempts, folder, offline, cached_digests)


def _try_source(source, entry, expected, folder, target, memo, progress, offline) -> _Attempt | None:
    """Fetch from one source into a temp file; rename it into place if it verifies (returns None)."""
    hasher_box = [MultiHash(_algorithms(expected))]
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{entry.file_name}.", suffix=PART_SUFFIX)
    tmp = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                if source.kind == "folder":
                    _from_folder(source, out, hasher_box[0], entry, progress)
                elif source.kind == "hf":
                    _from_hf(source, out, hasher_box[0], entry, progress, offline)
                else:
                    _from_http(source, out, hasher_box, entry, progress)
            except _NotFound as e:
                return _Attempt(source, "not found", str(e))
            except _SourceFailed as e:
                return _Attempt(source, "failed", str(e))
            except _WrongSize as e:
                return _Attempt(source, "wrong bytes", str(e))
        digests = hasher_box[0].hexdigests()
        problems = _problems(entry, hasher_box[0].size, digests, expected)
        if problems:
            return _Attempt(source, "wrong bytes", "; ".join(problems), digests)
        if not expected:  # trust on first use: this download defines the file from now on
            _record_pin(entry, digests["sha256"], size=hasher_box[0].size, source=str(source))
        os.replace(tmp, target)
        memo.remember(target, digests)
        return None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _remove_stale_parts(folder: Path, file_name: str) -> None:
    """Temp files left by a killed process (we hold the lock, so nobody else is writing them)."""
    for stale in folder.glob(f".{glob_escape(file_name)}.*{PART_SUFFIX}"):
        with contextlib.suppress(OSError):
            stale.unlink()


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


# --------------------------------------------------------------------------------------------- error messages

def _hash_text(expected: dict) -> str:
    if not expected:
        return "no pinned hash (trusted on first use)"
    return ", ".join(f"{a} {v}" for a, v in sorted(expected.items(), key=lambda kv: kv[0] != "sha256"))


def _size_text(entry) -> str:
    size = getattr(entry, "size", None)
    return f", {size} bytes" if size is not None else ""


def _offline_error(entry, expected, folder) -> WeightsNotFound:
    return WeightsNotFound(
        f"Weights '{entry.id}' are not in the cache and kzoo is offline (KZOO_OFFLINE / HF_HUB_OFFLINE). "
        f"Put the file '{entry.file_name}' ({_hash_text(expected)}) into {folder}, or list a folder that "
        f"holds it in KZOO_MIRRORS, or unset the offline variables."
    )


def _unwritable_error(entry, target, folder, cached_digests, expected, error) -> KzooError:
    why = f" ({error})" if error else ""
    if target.is_file():
        return HashMismatch(
            f"Weights '{entry.id}': the cached file {target} does not match ({_hash_text(expected)}; it has "
            f"{_hash_text(cached_digests)}) and the cache folder {folder} is not writable{why}. Replace the "
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
            f"{_hash_text(expected)}{_size_text(entry)}. Nothing was written to {folder}; the wrong bytes "
            f"were deleted.\nSources tried:\n{tried}"
        )
        error.entry_id, error.expected = entry.id, dict(expected)
        error.actual = {str(a.source): dict(a.digests) for a in mismatches}
        return error
    place = f"Put '{entry.file_name}' ({_hash_text(expected)}) into {folder}, or add a mirror to KZOO_MIRRORS."
    if offline:
        return WeightsNotFound(f"Weights '{entry.id}' are not in the cache or any local mirror and kzoo is "
                               f"offline. {place}\nSources tried:\n{tried}")
    if all(a.outcome == "not found" for a in attempts):
        return WeightsNotFound(f"Weights '{entry.id}': no source has '{entry.file_name}'. {place}"
                               f"\nSources tried:\n{tried}")
    return DownloadError(f"Weights '{entry.id}': could not download '{entry.file_name}'. {place}"
                         f"\nSources tried:\n{tried}")


# --------------------------------------------------------------------------------------------- identify files

@dataclass(frozen=True)
class VerifyResult:
    """What a file is, by its hashes.

    ``status``: "ok" (its hashes match a registry entry, possibly a superseded one), "mismatch" (its name
    is a registry file name but its bytes are not), "unpinned" (its name is a trust-on-first-use file
    with no recorded hash yet), "unknown" (nothing in the registry knows it).
    """

    path: Path
    size: int
    md5: str
    sha256: str
    status: str
    entries: tuple = ()  # entries whose hashes match
    named: tuple = ()  # entries with this file name whose hashes do not match

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def superseded(self) -> bool:
        return bool(self.entries) and all(getattr(e, "superseded_by", None) for e in self.entries)

    def describe(self) -> str:
        if self.status == "ok":
            names = ", ".join(e.id for e in self.entries)
            text = f"OK {self.path}: {names}"
            if self.superseded:
                newer = sorted({e.superseded_by for e in self.entries})
                text += f" (superseded by {', '.join(newer)})"
            return text
        if self.status == "mismatch":
            want = "; ".join(f"{e.id}: {_hash_text(expected_hashes(e))}" for e in self.named)
            return (f"MISMATCH {self.path}: sha256 {self.sha256}, md5 {self.md5} does not match {want}. "
                    f"Delete it and run `kzoo fetch`.")
        if self.status == "unpinned":
            names = ", ".join(e.id for e in self.named)
            return (f"UNPINNED {self.path}: named like {names}, which has no recorded hash yet "
                    f"(sha256 {self.sha256}); `kzoo fetch {self.named[0].id}` trusts and pins it.")
        return f"UNKNOWN {self.path}: sha256 {self.sha256}, md5 {self.md5} is not in the registry."


def verify_file(path, progress: bool | None = False) -> VerifyResult:
    """Re-hash ``path`` (md5 and sha256, one pass) and identify it against the whole registry."""
    import kzoo.registry as registry

    path = Path(path)
    digests = hash_file(path, ALGORITHMS, progress)
    size = path.stat().st_size
    if path.parent.resolve() == cache_dir().resolve():
        _Memo(path.parent).remember(path, digests)
    everything = registry.list_weights(include_superseded=True)
    # identify() also knows trust-on-first-use files by the sha256 recorded in the user pin file
    matches = list(registry.identify(sha256=digests["sha256"], md5=digests["md5"]))
    matches = [e for e in matches if getattr(e, "size", None) in (None, size)]
    if matches:
        return VerifyResult(path, size, digests["md5"], digests["sha256"], "ok", tuple(matches))
    named = tuple(e for e in everything if e.file_name == path.name)
    if named and all(not expected_hashes(e) for e in named):
        return VerifyResult(path, size, digests["md5"], digests["sha256"], "unpinned", (), named)
    named = tuple(e for e in named if expected_hashes(e))
    status = "mismatch" if named else "unknown"
    return VerifyResult(path, size, digests["md5"], digests["sha256"], status, (), named)


def cached_files() -> list[Path]:
    """Files in the cache folder that kzoo would verify (no temp files, locks or memo)."""
    folder = cache_dir()
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
