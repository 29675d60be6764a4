"""Verification cost: kzoo's streaming sha256 against plain hashlib on the same 64 MiB file, and the
download-plus-verify path over loopback HTTP (hashes computed while the bytes stream: one pass).

    python -m pytest benchmarks/bench_verify.py --benchmark-only

The goal is kzoo >= 0.9x plain hashlib's throughput (compare the "sha256" group's means).
"""

from __future__ import annotations

import hashlib
import os
import shutil

import pytest

import kzoo.registry as registry
import kzoo.sources as sources
import kzoo.sources.cache as sources_cache
import kzoo.sources.hashing as sources_hashing
from loopback import LoopbackServer, weights_entry, write_registry

SIZE = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def blob(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "blob.h5"
    data = os.urandom(SIZE)
    path.write_bytes(data)
    return path, data, hashlib.sha256(data).hexdigest()


def _throughput(benchmark):
    benchmark.extra_info["MB/s"] = round(SIZE / benchmark.stats.stats.mean / 1e6, 1)


@pytest.mark.benchmark(group="sha256")
def test_plain_hashlib_sha256(benchmark, blob):
    path, _, want = blob

    def plain():
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()

    assert benchmark(plain) == want
    _throughput(benchmark)


@pytest.mark.benchmark(group="sha256")
def test_kzoo_streaming_sha256(benchmark, blob):
    path, _, want = blob
    assert benchmark(sources.hash_file, path, ("sha256",))["sha256"] == want
    _throughput(benchmark)


@pytest.mark.benchmark(group="sha256")
def test_kzoo_md5_and_sha256_one_pass(benchmark, blob):
    """What `kzoo verify` does: both digests from one read of the file."""
    path, _, want = blob
    assert benchmark(sources.hash_file, path)["sha256"] == want
    _throughput(benchmark)


@pytest.fixture(scope="module")
def served(blob, tmp_path_factory):
    path, data, _ = blob
    with LoopbackServer() as server:
        yield server, server.serve("/bench/blob.h5", data), tmp_path_factory.mktemp("reg")


@pytest.mark.benchmark(group="download")
def test_loopback_download_plus_verify(benchmark, served, blob, tmp_path, monkeypatch):
    """fetch() of a 64 MiB file from 127.0.0.1: streamed to a temp file, md5+sha256 as it arrives."""
    server, url, reg = served
    _, data, _ = blob
    monkeypatch.setenv("KZOO_REGISTRY", write_registry(reg / "r.json", [weights_entry("bench.blob", data, [url])]))
    monkeypatch.setenv("KZOO_PINS", str(tmp_path / "pins.json"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.delenv("KZOO_MIRRORS", raising=False)
    monkeypatch.delenv("KZOO_OFFLINE", raising=False)
    registry.clear_cache()
    entry = registry.get_entry("bench.blob")
    cache = tmp_path / "cache"
    monkeypatch.setenv("KZOO_CACHE_DIR", str(cache))

    def second_pass(*args, **kwargs):
        raise AssertionError("fetch re-read the downloaded file: the download path must hash in one pass")

    monkeypatch.setattr(sources_hashing, "hash_file", second_pass)  # where defined: kzoo.sources re-exports it

    def empty_cache():
        shutil.rmtree(cache, ignore_errors=True)
        sources_cache._PROCESS_MEMO.clear()

    path = benchmark.pedantic(sources.fetch, args=(entry,), kwargs={"progress": False}, setup=empty_cache,
                              rounds=5, iterations=1)
    assert path.stat().st_size == SIZE
    _throughput(benchmark)


@pytest.mark.benchmark(group="download")
def test_loopback_download_only_baseline(benchmark, served, tmp_path, monkeypatch):
    """The same bytes over the same server with urllib and no hashing: the floor for the row above."""
    import urllib.request

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    _, url, _ = served
    target = tmp_path / "plain.h5"

    def download():
        with urllib.request.urlopen(url) as response, open(target, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)

    benchmark.pedantic(download, rounds=5, iterations=1)
    assert target.stat().st_size == SIZE
    _throughput(benchmark)
