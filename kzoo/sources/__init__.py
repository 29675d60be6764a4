"""Getting bytes: turn a registry entry into a verified local file.

Order of sources: the cache, then the mirrors in ``KZOO_MIRRORS`` (local folders, ``http(s)://`` base
URLs, ``hf://org/repo@revision/folder``), then the entry's own URLs. Bytes are hashed while they stream
into a temp file inside the cache folder, and the temp file is renamed into place only when every pinned
hash matches, so no partial or corrupt file is ever served and a good cached file is never replaced.

Modules, each importing only those listed after it:
    fetching    the order of sources, one attempt per source, partial file + rename (resumed after a
                kill), offline mode, errors
    placement   where each release lives: today's at Keras' path, a superseded one that shares its name
                in a hash-named blob; a recognised old file is moved there, never overwritten
    verify      the hashes an entry's file must have; checking and identifying files
    cache       the cache folder (and its blobs), lock files, resumable partial downloads, the
                verified-result memo
    storage     atomic writes, and StorageError (a full disk / read-only folder, with the bytes needed
                and a way out)
    transport   HTTP(S) GET with Range resume, retries and timeouts; the Hugging Face Hub client
    hashing     several digests from one streaming pass

Environment:
    KZOO_CACHE_DIR       cache folder (default ``$KERAS_HOME/models``, else ``~/.keras/models``,
                         so files keras.applications already downloaded are reused once they verify)
    KZOO_MIRRORS         extra sources, separated by commas or ``os.pathsep``
    KZOO_OFFLINE=1       never touch the network (``HF_HUB_OFFLINE=1`` works too)
    KZOO_RETRIES         transient-error retries per source (default 5)
    KZOO_RETRY_BACKOFF   first back-off delay in seconds, doubled each retry (default 1)
    KZOO_TIMEOUT         socket timeout in seconds (default 60)
"""

# The names used outside this package (kzoo.cli, kzoo.convert, the builders, tests, benchmarks).
# Patch a function where it is defined (e.g. kzoo.sources.hashing.hash_file), not here.
# _pinned_sha256 is private but kzoo.cli calls it, so it stays reachable here (not in __all__).
from kzoo.errors import StorageError
from kzoo.sources.cache import (BLOB_DIR, DOWNLOAD_SUFFIX, LOCK_DIR, MEMO_NAME, PART_SUFFIX, cache_dir,
                                cached_files)
from kzoo.sources.fetching import fetch, is_offline, mirrors, sources_for
from kzoo.sources.hashing import CHUNK_SIZE, hash_file
from kzoo.sources.placement import cache_status
from kzoo.sources.verify import _pinned_sha256, expected_hashes, verify_file  # noqa: F401

__all__ = [
    "BLOB_DIR", "CHUNK_SIZE", "DOWNLOAD_SUFFIX", "LOCK_DIR", "MEMO_NAME", "PART_SUFFIX", "StorageError", "cache_dir",
    "cache_status", "cached_files", "expected_hashes", "fetch", "hash_file", "is_offline", "mirrors",
    "sources_for", "verify_file",
]
