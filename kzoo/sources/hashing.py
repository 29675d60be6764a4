"""Digests of a byte stream: several algorithms fed from one pass, and a whole file hashed that way."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from kzoo._progress import progress_bar

CHUNK_SIZE = 1 << 20  # 1 MiB: large enough that hashing runs at OpenSSL speed, small enough for cache
ALGORITHMS = ("md5", "sha256")


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
