"""Is a file the right one: the hashes a registry entry's file must have, checking a file against them
(through the cache's verified-result memo), and identifying any file against the whole registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kzoo.sources import hashing
from kzoo.sources.cache import Memo, cache_dir, in_cache
from kzoo.sources.hashing import ALGORITHMS

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


# kzoo.registry is imported on use, so importing kzoo.sources does not import the registry.
def _pinned_sha256(entry) -> str | None:
    import kzoo.registry as registry

    return registry.pinned_sha256(entry)


def _record_pin(entry, sha256: str, size: int | None = None, source: str | None = None) -> None:
    import kzoo.registry as registry

    registry.record_pin(entry, sha256, size=size, source=source)


# --------------------------------------------------------------------------------------------- checks

def checked(expected: dict[str, str]) -> dict[str, str]:
    """The hash actually verified: sha256 when pinned (md5 adds nothing then, and costs a second
    digest per byte), else md5 as Keras pins it. Empty for an unpinned trust-on-first-use file."""
    if "sha256" in expected:
        return {"sha256": expected["sha256"]}
    return dict(expected)


def algorithms_for(expected: dict[str, str]) -> tuple[str, ...]:
    """Digests to compute for ``expected``: the checked one (sha256 for trust-on-first-use)."""
    return tuple(checked(expected)) or ("sha256",)


def problems(entry, size: int, digests: dict[str, str], expected: dict[str, str]) -> list[str]:
    """Why a file is not the one ``entry`` pins; empty when it is."""
    found = []
    want_size = getattr(entry, "size", None)
    if want_size is not None and size != want_size:
        found.append(f"size {size} (expected {want_size})")
    for algorithm, want in checked(expected).items():
        got = digests.get(algorithm)
        if got != want:
            found.append(f"{algorithm} {got} (expected {want})")
    return found


def digests_for(path: Path, algorithms, memo: Memo, progress=None) -> dict[str, str]:
    """Digests of ``path`` for ``algorithms``, from the memo when the file is unchanged."""
    known = memo.lookup(path)
    if not set(algorithms) <= set(known):
        known = {**known, **hashing.hash_file(path, tuple(algorithms), progress)}
        memo.remember(path, known)
    return known


def hash_origin(entry) -> str:
    """Where the hash ``entry``'s file is checked against comes from, when that is a user's file (a
    registry overlay in KZOO_REGISTRY, or the trust-on-first-use pin file): a wrong hash there is then
    the first thing to suspect. Empty for the shipped registry."""
    import kzoo.registry as registry

    if getattr(entry, "md5", None) or getattr(entry, "sha256", None):
        defined_in = getattr(entry, "defined_in", None)
        if defined_in and Path(defined_in).resolve() != registry.REGISTRY_PATH.resolve():
            return (f" The expected hash comes from the registry overlay {defined_in} (listed in "
                    f"KZOO_REGISTRY); if that entry is wrong, fix it or remove the file from KZOO_REGISTRY.")
        return ""
    if _pinned_sha256(entry):
        return (f" The expected sha256 was recorded on first use in the pin file {registry.pins_path()}; if "
                f"that first download was wrong, delete the '{entry.id}' pin there.")
    return ""


def hash_text(expected: dict) -> str:
    if not expected:
        return "no pinned hash (trusted on first use)"
    return ", ".join(f"{a} {v}" for a, v in sorted(expected.items(), key=lambda kv: kv[0] != "sha256"))


# --------------------------------------------------------------------------------------------- cache checks

def cached_ok(path: Path, entry, expected: dict, memo: Memo, progress,
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
    digests = digests_for(path, algorithms_for(expected), memo, progress)
    if not expected:
        _record_pin(entry, digests["sha256"], size=size, source=f"cache {path}")
        return True, digests
    return not problems(entry, size, digests, expected), digests


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
            want = "; ".join(f"{e.id}: {hash_text(expected_hashes(e))}" for e in self.named)
            return (f"MISMATCH {self.path}: sha256 {self.sha256}, md5 {self.md5} does not match {want}. "
                    f"Delete it and run `kzoo fetch`.")
        if self.status == "unpinned":
            names = ", ".join(e.id for e in self.named)
            return (f"UNPINNED {self.path}: named like {names}, which has no recorded hash yet "
                    f"(sha256 {self.sha256}); `kzoo fetch {self.named[0].id}` trusts and pins it.")
        return f"UNKNOWN {self.path}: sha256 {self.sha256}, md5 {self.md5} is not in the registry."


def verify_file(path, progress: bool | None = False, use_memo: bool = False) -> VerifyResult:
    """Re-hash ``path`` (md5 and sha256, one pass) and identify it against the whole registry.

    ``use_memo``: for a file in the cache, take the digests from the verified-result memo while the file
    is unchanged (same size and mtime), as a fetch does, instead of re-hashing it.
    """
    import kzoo.registry as registry

    path = Path(path)
    cached = in_cache(path)
    if use_memo and cached:
        digests = digests_for(path, ALGORITHMS, Memo(cache_dir()), progress)
    else:
        digests = hashing.hash_file(path, ALGORITHMS, progress)
        if cached:
            Memo(cache_dir()).remember(path, digests)
    size = path.stat().st_size
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
