"""Getting bytes over the network: HTTP(S) GET with Range resume, retries with back-off and timeouts,
and the Hugging Face Hub client for ``hf://`` sources.

Nothing here knows about kzoo's cache or hashes: bytes go to a *sink* that the caller supplies, with
``size`` (bytes kept so far), ``write(chunk)``, ``restart()`` (drop everything, start from byte 0) and,
optionally, ``begin(validator, total)``, called before a response's first body byte is written (the
caller records the validator there so a later process can resume the same bytes).

Environment: ``KZOO_RETRIES`` (transient-error retries per source, default 5), ``KZOO_RETRY_BACKOFF``
(first back-off delay in seconds, doubled each retry, default 1), ``KZOO_TIMEOUT`` (socket timeout in
seconds, default 60), ``HF_ENDPOINT``, ``HF_HUB_CACHE`` / ``HF_HOME``.
"""

from __future__ import annotations

import http.client
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from kzoo._progress import progress_bar
from kzoo.sources.hashing import CHUNK_SIZE

USER_AGENT = "kzoo/0.1 (+https://github.com/kzoo)"


class NotFound(Exception):
    """The source does not have the file (404, missing folder entry, not in an offline HF cache)."""


class SourceFailed(Exception):
    """The source could not deliver (network trouble after retries, permission, ...)."""


class WrongSize(Exception):
    """The source announces or sends a different number of bytes than the registry pins."""


class _Restart(Exception):
    """The server ignored or rejected our Range request: start the file over."""


def _env_number(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


# --------------------------------------------------------------------------------------------- HTTP(S)

def http_get(url: str, sink, want_size: int | None, progress, desc: str, validator: str | None = None) -> None:
    """Stream ``url`` into ``sink``; resume with Range after a dropped connection.

    A sink that already holds bytes (a partial download kept by an earlier process) is resumed from its
    end with ``Range``, and ``If-Range: validator`` so a server whose file changed answers with the whole
    new file instead. Transient errors (5xx, 408, 429, resets, timeouts, short bodies) are retried with
    exponential back-off; a retry that made progress does not count against the limit, so a flaky but
    working server still finishes. ``want_size`` (the pinned size, if any) stops a wrong file early.
    Raises NotFound, SourceFailed or WrongSize; the sink's own exceptions pass through unless they are
    OSErrors (a sink must wrap its write errors, or they would be retried as network trouble).
    """
    retries = int(_env_number("KZOO_RETRIES", 5))
    backoff = _env_number("KZOO_RETRY_BACKOFF", 1.0)
    timeout = _env_number("KZOO_TIMEOUT", 60.0)
    buffer = bytearray(CHUNK_SIZE)
    view = memoryview(buffer)
    begin = getattr(sink, "begin", None)
    failures = 0
    last_error = ""
    with progress_bar(want_size, desc, progress) as bar:
        bar.update(sink.size)  # resuming a kept partial download
        while True:
            received = sink.size
            headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
            if received:
                headers["Range"] = f"bytes={received}-"
                if validator:
                    headers["If-Range"] = validator
            progressed = False
            try:
                request = urllib.request.Request(url, headers=headers)
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    if received and response.status == 200:  # Range ignored: this body is the whole file
                        sink.restart()
                        bar.reset(want_size)
                        received = 0
                    total = _expected_length(response, received)
                    if want_size is not None and total is not None and total != want_size:
                        raise WrongSize(f"server announces {total} bytes, the registry pins {want_size}")
                    if response.status == 200 or not validator:  # a whole body: its validator from now on
                        validator = _validator(response)
                    if begin is not None:
                        begin(validator, total)
                    while n := response.readinto(buffer):
                        sink.write(view[:n])
                        bar.update(n)
                        progressed = True
                        if want_size is not None and sink.size > want_size:
                            raise WrongSize(f"sent more than the {want_size} bytes the registry pins")
                    if total is not None and sink.size < total:
                        raise ConnectionResetError(f"connection closed after {sink.size} of {total} bytes")
                    return
            except _Restart as e:
                last_error = str(e)
                sink.restart()
                bar.reset(want_size)
            except urllib.error.HTTPError as e:
                e.close()
                if e.code in (404, 410):
                    raise NotFound(f"HTTP {e.code}") from None
                if e.code == 416 and received:  # our offset is past the end: start over
                    last_error = "HTTP 416"
                    sink.restart()
                    bar.reset(want_size)
                elif e.code >= 500 or e.code in (408, 429):
                    last_error = f"HTTP {e.code}"
                else:
                    raise SourceFailed(f"HTTP {e.code} {e.reason}") from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
                reason = getattr(e, "reason", None) or e
                last_error = f"{type(reason).__name__}: {reason}".rstrip(": ")
            failures = 0 if progressed else failures + 1
            if failures > retries:
                raise SourceFailed(f"gave up after {retries} retries ({last_error})")
            if failures:
                time.sleep(min(backoff * 2 ** (failures - 1), 60.0))


def _validator(response) -> str | None:
    """What to send as If-Range: a strong ETag, else Last-Modified (a weak ETag never matches If-Range)."""
    etag = response.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return response.headers.get("Last-Modified")


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


# --------------------------------------------------------------------------------------------- Hugging Face Hub

def hf_file(location: str, offline: bool) -> Path:
    """The local path of ``org/repo@revision/path`` in huggingface_hub's own cache, downloading it unless
    ``offline``. Raises NotFound or SourceFailed."""
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub import errors as hf_errors
    except ImportError:
        raise SourceFailed("huggingface_hub is not installed (pip install huggingface-hub)") from None
    repo_rev, _, rest = location.partition("@")
    revision, _, filename = rest.partition("/")
    hub_cache = _hf_cache_dir()
    if offline:  # a pure cache lookup: hf_hub_download may still talk to the Hub even with local_files_only
        from huggingface_hub import try_to_load_from_cache

        local = try_to_load_from_cache(repo_rev, filename, cache_dir=hub_cache, revision=revision)
        if not isinstance(local, str):
            raise NotFound("not in the local Hugging Face cache")
        return Path(local)
    not_found = (hf_errors.EntryNotFoundError, hf_errors.RepositoryNotFoundError,
                 hf_errors.RevisionNotFoundError)
    try:
        # Endpoint and cache are read from the environment now, not when huggingface_hub was imported.
        local = hf_hub_download(repo_rev, filename, revision=revision, cache_dir=hub_cache,
                                endpoint=os.environ.get("HF_ENDPOINT") or None)
    except not_found as e:
        raise NotFound(_first_line(e)) from None
    except Exception as e:  # noqa: BLE001 - any hub/network failure means: try the next source
        raise SourceFailed(f"{type(e).__name__}: {_first_line(e)}") from None
    return Path(local)


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
