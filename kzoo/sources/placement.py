"""Where each release's file lives in the cache, so that no verified file is lost to another release
that shares its name.

keras.applications caches a file at ``<cache>/<file name>`` and, finding other bytes there, overwrites
them online and deletes them offline (``keras.utils.get_file``). Some file names belong to two releases:
today's and a superseded one (ResNet50 and InceptionV3 v0.2, DenseNet and NASNet v0.8 from
fchollet/deep-learning-models), or two superseded ones (ResNet50 th v0.1/v0.2, the first MobileNetV3
notop files). So:

- today's release (an entry no other supersedes) lives at Keras' path, where keras.applications reuses it;
  so does a superseded release whose name no other entry uses;
- a superseded release that shares its name lives by content, as huggingface_hub keeps blobs by hash:
  ``<cache>/blobs/<algorithm>-<hex>/<file name>``, the folder named by the hash the registry checks (sha256
  when pinned, else Keras' md5) and the file keeping its name (Keras picks its loader by the suffix);
- a file at Keras' path that verifies as another release sharing the name is moved to that release's blob
  before anything is written there, never overwritten; one that verifies as the release asked for but
  belongs in a blob is moved there too, out of reach of keras.applications.

Bytes nobody recognises at Keras' path (a damaged or half-written download, a user's own file) are
replaced by a verified download, as keras.applications does.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from kzoo.sources.cache import BLOB_DIR, Memo, cache_dir
from kzoo.sources.verify import checked, digests_for, expected_hashes, problems


def sharing(entry) -> list:
    """The other registry entries (superseded ones too) whose file has ``entry``'s name."""
    import kzoo.registry as registry

    return [e for e in registry.list_weights(include_superseded=True)
            if e.file_name == entry.file_name and e.id != entry.id]


def by_content(entry) -> bool:
    """Does ``entry``'s file live in a blob rather than at Keras' path?"""
    return getattr(entry, "superseded_by", None) is not None and bool(sharing(entry))


def blob_path(folder: Path, file_name: str, digests: dict[str, str]) -> Path | None:
    """The blob for a file with these hashes (sha256 when known, else md5); None without either."""
    for algorithm in ("sha256", "md5"):
        if digests.get(algorithm):
            return folder / BLOB_DIR / f"{algorithm}-{digests[algorithm].lower()}" / file_name
    return None


def home(entry, folder: Path, digests: dict[str, str] | None = None) -> Path | None:
    """Where a verified file for ``entry`` goes: Keras' path, or its blob (from the hash the registry
    checks, else from ``digests`` of the downloaded bytes; None when neither is known yet)."""
    if not by_content(entry):
        return folder / entry.file_name
    return blob_path(folder, entry.file_name, checked(expected_hashes(entry)) or digests or {})


def candidates(entry, folder: Path) -> list[Path]:
    """Where a verified file for ``entry`` may already be: its home first, then the other place."""
    keras_path = folder / entry.file_name
    blob = blob_path(folder, entry.file_name, checked(expected_hashes(entry)))
    places = [blob, keras_path] if by_content(entry) else [keras_path, blob]
    return [p for p in places if p is not None]


def recognise(path: Path, entry, memo: Memo, progress=None) -> list:
    """The other releases sharing ``entry``'s name that the file at ``path`` verifies as (hashed once,
    through the memo). Entries with no hash, pinned or recorded, cannot be recognised."""
    others = [(e, expected_hashes(e)) for e in sharing(entry)]
    others = [(e, want) for e, want in others if want]
    if not others or not path.is_file():
        return []
    size = path.stat().st_size
    others = [(e, want) for e, want in others if getattr(e, "size", None) in (None, size)]
    if not others:
        return []  # the size differs from every pinned size: no need to hash
    algorithms = sorted({a for _, want in others for a in checked(want)})
    digests = digests_for(path, algorithms, memo, progress)
    return [e for e, want in others if not problems(e, size, digests, want)]


def move_to_blob(path: Path, entry, memo: Memo, why: str) -> Path:
    """Move the verified file at ``path`` (it is ``entry``'s) into ``entry``'s blob; returns the blob.
    Call with the file name's lock held."""
    digests = memo.lookup(path)
    blob = blob_path(path.parent, entry.file_name, checked(expected_hashes(entry)) or digests)
    blob.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, blob)  # same folder tree, same filesystem: one rename, the bytes never half-moved
    if digests:
        memo.remember(blob, digests)
    warnings.warn(f"kzoo moved {path} to {blob}: it is the release '{entry.id}' ({why}), and "
                  f"keras.applications would overwrite or delete it under that name.", stacklevel=3)
    return blob


def protect_keras_path(entry, folder: Path, memo: Memo, progress=None) -> Path | None:
    """Before a file for ``entry`` is written at Keras' path: move a file there that verifies as another
    release sharing the name into that release's blob. Returns where it went (None if nothing moved)."""
    keras_path = folder / entry.file_name
    found = recognise(keras_path, entry, memo, progress)
    if not found:
        return None
    owner = found[0]
    newer = f"superseded by {owner.superseded_by}" if owner.superseded_by else "another release of this name"
    return move_to_blob(keras_path, owner, memo, newer)


# --------------------------------------------------------------------------------------------- cache status

@dataclass(frozen=True)
class CacheStatus:
    path: Path
    state: str  # "verified" | "missing" | "mismatch" | "unpinned"
    detail: str = ""


def cache_status(entry) -> CacheStatus:
    """What the cache holds for ``entry``, without downloading, pinning or moving anything."""
    folder = cache_dir()
    expected = expected_hashes(entry)
    places = [p for p in candidates(entry, folder) if p.is_file()]
    if not places:
        return CacheStatus(home(entry, folder) or folder / BLOB_DIR, "missing")
    if not expected:
        return CacheStatus(places[0], "unpinned", "present, no hash recorded yet")
    memo = Memo(folder)
    found = []
    for path in places:
        digests = digests_for(path, tuple(checked(expected)), memo)
        found = problems(entry, path.stat().st_size, digests, expected)
        if not found:
            return CacheStatus(path, "verified")
    return CacheStatus(places[0], "mismatch", "; ".join(found))
