"""kzoo.sources against a real loopback HTTP server that injects faults.

Every test serves a generated weight file (a random-weight tf_keras MobileNet saved in the legacy h5
layout), registers it through a KZOO_REGISTRY file, and checks that either the right bytes arrive or a
clear error is raised, and that nothing partial or corrupt is left in the cache.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import kzoo.sources as sources
import kzoo.sources.cache as sources_cache
import kzoo.sources.hashing as sources_hashing
from kzoo.errors import DownloadError, HashMismatch, WeightsNotFound
from loopback import (cache_listing, env, model_h5_bytes, no_sockets, register, server,  # noqa: F401 (fixtures)
                      weights_entry)

pytestmark = pytest.mark.network


# --------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def weights() -> bytes:
    return model_h5_bytes(0)


@pytest.fixture(scope="session")
def other_weights() -> bytes:
    return model_h5_bytes(1)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------- happy path

def test_download_verifies_caches_and_is_reused(server, register, weights, env):
    url = server.serve("/w/m.h5", weights)
    (entry,) = register(weights_entry("testnet.imagenet", weights, [url]))
    path = sources.fetch(entry, progress=False)
    assert path == env / entry.file_name
    assert path.read_bytes() == weights
    assert cache_listing(env) == [entry.file_name]
    assert server.count("/w/m.h5") == 1
    assert sources.fetch(entry) == path  # a cache hit: no request
    assert server.count("/w/m.h5") == 1


def test_verified_memo_skips_rehash_until_file_changes(server, register, weights, env, monkeypatch):
    url = server.serve("/w/m.h5", weights)
    (entry,) = register(weights_entry("testnet.imagenet", weights, [url]))
    path = sources.fetch(entry)
    calls = []
    real_hash = sources_hashing.hash_file
    # patched where it is defined: kzoo.sources only re-exports it
    monkeypatch.setattr(sources_hashing, "hash_file", lambda *a, **k: calls.append(a) or real_hash(*a, **k))
    sources_cache._PROCESS_MEMO.clear()  # a new process: only the memo file in the cache remains
    assert sources.fetch(entry) == path
    assert calls == []
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # "changed": must be re-hashed
    assert sources.fetch(entry) == path
    assert len(calls) == 1


def test_md5_only_entry_as_keras_pins_it(server, register, weights):
    url = server.serve("/w/m.h5", weights)
    (entry,) = register(weights_entry("testnet.imagenet", weights, [url], pin_sha256=False))
    assert sources.fetch(entry).read_bytes() == weights


# --------------------------------------------------------------------------------------------- faults

@pytest.mark.parametrize("fault", ["truncate", "wrong"])
def test_bad_bytes_raise_hash_mismatch_and_leave_nothing(fault, server, register, weights, env):
    url = server.serve("/w/m.h5", weights, fault=fault)
    (entry,) = register(weights_entry("testnet.imagenet", weights, [url], size=None))
    with pytest.raises(HashMismatch) as info:
        sources.fetch(entry)
    message = str(info.value)
    assert entry.id in message and url in message
    assert entry.sha256 in message  # expected
    bad = weights[: len(weights) // 2] if fault == "truncate" else weights[:-1] + bytes([weights[-1] ^ 0xFF])
    assert sha256(bad) in message  # actual
    assert info.value.actual[url]["sha256"] == sha256(bad)
    assert cache_listing(env) == []  # no partial or corrupt file, no temp file


def test_truncated_body_with_size_pin_fails_before_reading(server, register, weights, env):
    url = server.serve("/w/m.h5", weights, fault="truncate")
    (entry,) = register(weights_entry("testnet.imagenet", weights, [url]))
    with pytest.raises(HashMismatch, match=f"announces {len(weights) // 2} bytes, the registry pins"):
        sources.fetch(entry)
    assert cache_listing(env) == []
    assert server.count("/w/m.h5") == 1


def test_404_moves_on_to_the_next_source(server, register, weights):
    missing = server.serve("/a/m.h5", weights, fault="404")
    good = server.serve("/b/m.h5", weights)
    (entry,) = register(weights_entry("testnet.imagenet", weights, [missing, good]))
    assert sources.fetch(entry).read_bytes() == weights
    assert server.count("/a/m.h5") == 1  # a 404 is not retried


def test_every_source_404_is_weights_not_found(server, register, weights, env):
    url = server.serve("/a/m.h5", weights, fault="404")
    (entry,) = register(weights_entry("testnet.imagenet", weights, [url]))
    with pytest.raises(WeightsNotFound) as info:
        sources.fetch(entry)
    assert entry.file_name in str(info.value) and str(env) in str(info.value)
    assert cache_listing(env) == []


def test_500_then_success_is_retried(server, register, weights):
    url = server.serve("/w/m.h5", weights, fault="500", times=2)
    (entry,) = register(weights_entry("testnet.imagenet", weights, [url]))
    assert sources.fetch(entry).read_bytes() == weights
    assert server.count("/w/m.h5") == 3


def test_persistent_500_gives_up_after_bounded_retries(server, register, weights, env):
    url = server.serve("/w/m.h5", weights, fault="500", times=100)
    (entry,) = register(weights_entry("testnet.imagenet", weights, [url]))
    with pytest.raises(DownloadError, match="HTTP 500"):
        sources.fetch(entry)
    assert server.count("/w/m.h5") == 1 + 3  # KZOO_RETRIES=3
    assert cache_listing(env) == []


def test_dropped_connection_resumes_with_range(server, register, weights):
    url = server.serve("/w/m.h5", weights, fault="drop")
    (entry,) = register(weights_entry("testnet.imagenet", weights, [url]))
    assert sources.fetch(entry).read_bytes() == weights
    half = len(weights) // 2
    assert server.ranges("/w/m.h5") == [None, f"bytes={half}-"]


def test_dropped_connection_restarts_when_server_ignores_range(server, register, weights):
    url = server.serve("/w/m.h5", weights, fault="drop", ranges=False)
    (entry,) = register(weights_entry("testnet.imagenet", weights, [url]))
    assert sources.fetch(entry).read_bytes() == weights
    assert server.count("/w/m.h5") == 2


def test_slow_first_byte_within_timeout(server, register, weights, monkeypatch):
    monkeypatch.setenv("KZOO_TIMEOUT", "5")
    url = server.serve("/w/m.h5", weights, fault="slow", delay=0.5)
    (entry,) = register(weights_entry("testnet.imagenet", weights, [url]))
    assert sources.fetch(entry).read_bytes() == weights


def test_first_byte_slower_than_timeout_tries_next_source(server, register, weights, env, monkeypatch):
    monkeypatch.setenv("KZOO_TIMEOUT", "1")
    monkeypatch.setenv("KZOO_RETRIES", "1")
    slow = server.serve("/slow/m.h5", weights, fault="slow", delay=3.0)
    good = server.serve("/good/m.h5", weights)
    (entry,) = register(weights_entry("testnet.imagenet", weights, [slow, good]))
    assert sources.fetch(entry).read_bytes() == weights
    assert server.count("/slow/m.h5") == 2  # one try + one retry, then on to the next source
    assert cache_listing(env) == [entry.file_name]


# --------------------------------------------------------------------------------------------- cache and mirrors

def test_good_cached_file_survives_a_bad_mirror(server, register, weights, env, monkeypatch):
    good = server.serve("/good/m.h5", weights)
    bad_base = server.url + "/bad"
    (entry,) = register(weights_entry("testnet.imagenet", weights, [good]))
    path = sources.fetch(entry)
    before = path.stat().st_mtime_ns
    server.serve(f"/bad/{entry.file_name}", weights, fault="wrong")
    monkeypatch.setenv("KZOO_MIRRORS", bad_base)
    sources_cache._PROCESS_MEMO.clear()
    assert sources.fetch(entry) == path
    assert path.read_bytes() == weights and path.stat().st_mtime_ns == before
    assert server.count(f"/bad/{entry.file_name}") == 0


def test_corrupt_cached_file_is_replaced_only_by_verified_bytes(server, register, weights, env, monkeypatch):
    good = server.serve("/good/m.h5", weights)
    (entry,) = register(weights_entry("testnet.imagenet", weights, [good]))
    env.mkdir(parents=True)
    corrupt = weights[:-1] + bytes([weights[-1] ^ 0xFF])
    (env / entry.file_name).write_bytes(corrupt)
    server.serve(f"/bad/{entry.file_name}", weights, fault="wrong")
    monkeypatch.setenv("KZOO_MIRRORS", server.url + "/bad")
    path = sources.fetch(entry)
    assert path.read_bytes() == weights
    assert server.count(f"/bad/{entry.file_name}") == 1 and server.count("/good/m.h5") == 1


def test_mirror_order_local_folder_then_http_then_urls(server, register, weights, tmp_path, monkeypatch):
    origin = server.serve("/origin/m.h5", weights)
    (entry,) = register(weights_entry("testnet.imagenet", weights, [origin]))
    empty, folder = tmp_path / "empty_mirror", tmp_path / "mirror"
    empty.mkdir()
    folder.mkdir()
    (folder / entry.file_name).write_bytes(weights)
    server.serve(f"/http_mirror/{entry.file_name}", weights)
    monkeypatch.setenv("KZOO_MIRRORS", f"{empty},{folder},{server.url}/http_mirror")
    # each folder is asked for the cache name and for the URL basename ("m.h5")
    assert [s.kind for s in sources.sources_for(entry)] == ["folder"] * 4 + ["http", "http"]
    assert sources.fetch(entry).read_bytes() == weights
    assert server.count(f"/http_mirror/{entry.file_name}") == 0 and server.count("/origin/m.h5") == 0


def test_http_mirror_is_a_base_url(server, register, weights, monkeypatch):
    (entry,) = register(weights_entry("testnet.imagenet", weights, []))
    server.serve(f"/mirror/sub/{entry.file_name}", weights)
    monkeypatch.setenv("KZOO_MIRRORS", server.url + "/mirror/sub/")
    assert sources.fetch(entry).read_bytes() == weights


def test_local_mirror_may_hold_the_url_basename(register, weights, tmp_path, monkeypatch):
    # NASNet's cache name differs from its URL basename; a mirror filled by wget has the latter.
    (entry,) = register(weights_entry("testnet.imagenet", weights, ["https://example.invalid/x/NASNet-x.h5"],
                                      file_name="nasnet_x.h5"))
    (tmp_path / "NASNet-x.h5").write_bytes(weights)
    monkeypatch.setenv("KZOO_MIRRORS", str(tmp_path))
    assert sources.fetch(entry).name == "nasnet_x.h5"


def test_stale_partial_file_from_a_killed_process_is_removed(server, register, weights, env):
    url = server.serve("/w/m.h5", weights)
    (entry,) = register(weights_entry("testnet.imagenet", weights, [url]))
    env.mkdir(parents=True)
    (env / f".{entry.file_name}.abc123{sources.PART_SUFFIX}").write_bytes(weights[:100])
    sources.fetch(entry)
    assert cache_listing(env) == [entry.file_name]


def test_read_only_cache_with_a_verified_file_works(server, register, weights, env, monkeypatch):
    url = server.serve("/w/m.h5", weights)
    (entry,) = register(weights_entry("testnet.imagenet", weights, [url]))
    env.mkdir(parents=True)
    (env / entry.file_name).write_bytes(weights)
    env.chmod(0o555)
    # Root ignores permission bits: make os.access tell the truth a normal user would see.
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if (
        mode & os.W_OK and Path(p).resolve() == env.resolve()) else real_access(p, mode, **k))
    try:
        before = sorted(p.name for p in env.iterdir())
        assert sources.fetch(entry) == env / entry.file_name
        assert sorted(p.name for p in env.iterdir()) == before
        assert server.count("/w/m.h5") == 0
        (other,) = register(weights_entry("othernet.imagenet", weights, [url]))
        with pytest.raises(DownloadError, match="not writable.*KZOO_CACHE_DIR"):
            sources.fetch(other)
    finally:
        env.chmod(0o755)


def test_mirrors_parsing(monkeypatch):
    monkeypatch.setenv("KZOO_MIRRORS", "/a/b:http://h:8080/x:hf://org/repo@v1/w:./rel")
    assert sources.mirrors() == ["/a/b", "http://h:8080/x", "hf://org/repo@v1/w", "./rel"]
    monkeypatch.setenv("KZOO_MIRRORS", "http://[::1]:80/x, /a:b")
    assert sources.mirrors() == ["http://[::1]:80/x", "/a:b"]


def test_cache_dir_defaults_to_keras_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("KZOO_CACHE_DIR", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    assert sources.cache_dir() == tmp_path / "kh" / "models"
    monkeypatch.delenv("KERAS_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert sources.cache_dir() == tmp_path / ".keras" / "models"
    monkeypatch.setenv("KZOO_CACHE_DIR", str(tmp_path / "c"))
    assert sources.cache_dir() == tmp_path / "c"


# --------------------------------------------------------------------------------------------- trust on first use

def test_unpinned_entry_is_trusted_on_first_use_then_checked(server, register, weights, other_weights, env):
    url = server.serve("/w/m.h5", weights)
    (entry,) = register(weights_entry("tofunet.imagenet", None, [url]))
    assert entry.md5 is None and entry.sha256 is None
    path = sources.fetch(entry)
    assert sources._pinned_sha256(entry) == sha256(weights)
    assert sources.expected_hashes(entry) == {"sha256": sha256(weights)}
    path.unlink()
    server.serve("/w/m.h5", other_weights)  # the source now serves different bytes
    with pytest.raises(HashMismatch, match=sha256(weights)):
        sources.fetch(entry)
    assert cache_listing(env) == []


def test_unpinned_file_left_in_the_cache_is_not_trusted_while_a_source_answers(server, register, weights,
                                                                               other_weights, env):
    # e.g. a half-written file from keras.applications' own download of an unhashed MobileNet
    url = server.serve("/w/m.h5", weights)
    (entry,) = register(weights_entry("tofunet.imagenet", None, [url]))
    env.mkdir(parents=True)
    (env / entry.file_name).write_bytes(other_weights[:1000])
    assert sources.fetch(entry).read_bytes() == weights
    assert sources._pinned_sha256(entry) == sha256(weights)


@pytest.mark.parametrize("how", ["offline", "unreachable"])
def test_unpinned_cached_file_is_trusted_when_nothing_else_can_be_had(how, server, register, weights, env,
                                                                      monkeypatch):
    url = server.serve("/w/m.h5", weights, fault="404")
    (entry,) = register(weights_entry("tofunet.imagenet", None, [url]))
    env.mkdir(parents=True)
    (env / entry.file_name).write_bytes(weights)
    if how == "offline":
        monkeypatch.setenv("KZOO_OFFLINE", "1")
        assert sources.fetch(entry).read_bytes() == weights
    else:
        with pytest.warns(UserWarning, match="trusted on first use"):
            assert sources.fetch(entry).read_bytes() == weights
    assert sources._pinned_sha256(entry) == sha256(weights)


# --------------------------------------------------------------------------------------------- concurrency

_FETCH_SCRIPT = textwrap.dedent("""
    import pathlib, sys
    pathlib.Path(sys.argv[1]).touch()
    import kzoo.registry as registry
    import kzoo.sources as sources
    print(sources.fetch(registry.get_entry(sys.argv[2]), progress=False))
""")


def test_two_processes_download_once(server, register, weights, env, tmp_path, monkeypatch):
    monkeypatch.setenv("KZOO_TIMEOUT", "120")  # the held-open first download must not time out and retry
    markers = [tmp_path / "started-0", tmp_path / "started-1"]

    def hold_until_both_started():
        deadline = time.monotonic() + 120
        while not all(m.exists() for m in markers) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # let the second process reach the lock

    url = server.serve("/w/m.h5", weights, gate=hold_until_both_started, chunk_delay=0.01)
    (entry,) = register(weights_entry("testnet.imagenet", weights, [url]))
    procs = [subprocess.Popen([sys.executable, "-c", _FETCH_SCRIPT, str(m), entry.id],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
             for m in markers]
    outputs = [p.communicate(timeout=240) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
        assert out.strip() == str(env / entry.file_name)
    assert all(m.exists() for m in markers)
    assert server.count("/w/m.h5") == 1
    assert (env / entry.file_name).read_bytes() == weights
    assert cache_listing(env) == [entry.file_name]


# --------------------------------------------------------------------------------------------- offline

@pytest.mark.parametrize("variable", ["KZOO_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_never_opens_a_socket(variable, server, register, weights, env, monkeypatch, no_sockets):
    url = server.serve("/w/m.h5", weights)
    (entry,) = register(weights_entry("testnet.imagenet", weights, [url]))
    monkeypatch.setenv("KZOO_MIRRORS", f"{server.url}/mirror,hf://org/repo@main/w")
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv(variable, "1")
    with pytest.raises(WeightsNotFound) as info:
        sources.fetch(entry)
    message = str(info.value)
    assert entry.file_name in message and entry.sha256 in message and str(env) in message
    assert "KZOO_MIRRORS" in message
    assert no_sockets == [] and server.requests == []
    assert cache_listing(env) == []


def test_offline_uses_cache_and_local_mirrors(server, register, weights, tmp_path, monkeypatch, no_sockets):
    url = server.serve("/w/m.h5", weights)
    (entry,) = register(weights_entry("testnet.imagenet", weights, [url]))
    (tmp_path / entry.file_name).write_bytes(weights)
    monkeypatch.setenv("KZOO_MIRRORS", str(tmp_path))
    monkeypatch.setenv("KZOO_OFFLINE", "1")
    assert sources.fetch(entry).read_bytes() == weights
    assert sources.fetch(entry).read_bytes() == weights
    assert no_sockets == []


# --------------------------------------------------------------------------------------------- identify

def test_verify_file_identifies_current_superseded_unknown_and_mismatch(register, weights, other_weights,
                                                                       tmp_path):
    register(weights_entry("testnet.imagenet", weights, []),
             weights_entry("testnet.v01", other_weights, [], file_name="old.h5",
                           superseded_by="testnet.imagenet"))
    current, old = tmp_path / "a.h5", tmp_path / "b.h5"
    current.write_bytes(weights)
    old.write_bytes(other_weights)
    result = sources.verify_file(current)
    assert result.ok and [e.id for e in result.entries] == ["testnet.imagenet"]
    assert result.sha256 == sha256(weights) and result.md5 == hashlib.md5(weights).hexdigest()
    result = sources.verify_file(old)
    assert result.ok and result.superseded and "superseded by testnet.imagenet" in result.describe()
    unknown = tmp_path / "c.h5"
    unknown.write_bytes(b"not weights")
    assert sources.verify_file(unknown).status == "unknown"
    wrong = tmp_path / "testnet_imagenet.h5"  # a registry file name with other bytes
    wrong.write_bytes(weights[:-1] + bytes([weights[-1] ^ 0xFF]))
    result = sources.verify_file(wrong)
    assert result.status == "mismatch" and not result.ok and "testnet.imagenet" in result.describe()


def test_hash_file_matches_hashlib(tmp_path):
    data = os.urandom(3 * sources.CHUNK_SIZE + 123)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sources.hash_file(path) == {"md5": hashlib.md5(data).hexdigest(), "sha256": sha256(data)}


def test_progress_bar_only_when_asked_or_on_a_terminal(server, register, weights, env, capsys):
    url = server.serve("/w/m.h5", weights)
    (entry,) = register(weights_entry("testnet.imagenet", weights, [url]))
    sources.fetch(entry)  # stderr is not a terminal under pytest: quiet
    assert capsys.readouterr().err == ""
    (env / entry.file_name).unlink()
    sources.fetch(entry, progress=True)
    assert f"download {entry.file_name}" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- shared file names

def shared_name_entries(register, current: bytes, old: bytes, urls=((), ())):
    """Today's release and a superseded one under one file name, both pinned by md5 only (as Keras pins
    the fchollet releases): ``resnet50_weights_tf_dim_ordering_tf_kernels.h5`` today and at v0.2."""
    name = "testnet_weights_tf_dim_ordering_tf_kernels.h5"
    return register(
        weights_entry("testnet.imagenet", current, list(urls[0]), file_name=name, pin_sha256=False),
        weights_entry("testnet.imagenet@v0.2", old, list(urls[1]), file_name=name, pin_sha256=False,
                      tag="imagenet", superseded_by="testnet.imagenet"))


def verified_cache(capsys) -> dict[str, str]:
    """``kzoo verify --cache``: {path below the cache: its line}; the command must exit 0 (all verify)."""
    from kzoo.cli import main

    capsys.readouterr()
    code = main(["verify", "--cache"])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = [line for line in out.splitlines() if line]
    cache = sources.cache_dir()
    return {str(Path(line.split()[1].rstrip(":")).relative_to(cache)): line for line in lines}


@pytest.mark.parametrize("offline", [False, True])
def test_an_old_release_under_todays_name_survives_a_fetch_of_todays_file(
        offline, server, register, weights, other_weights, env, tmp_path, monkeypatch, capsys):
    """v0.2 bytes at Keras' path, then a fetch of today's file: today's lands at Keras' path (where
    keras.applications reuses it), v0.2 is moved into its hash-named blob, and both verify."""
    url = server.serve("/w/today.h5", weights)
    current, old = shared_name_entries(register, weights, other_weights, urls=([url], []))
    keras_path = env / current.file_name
    env.mkdir()
    keras_path.write_bytes(other_weights)  # a user's ~/.keras/models from the blog-post URL
    if offline:  # today's file from a local mirror, and not a socket opened
        mirror = tmp_path / "mirror"
        mirror.mkdir()
        (mirror / current.file_name).write_bytes(weights)
        monkeypatch.setenv("KZOO_MIRRORS", str(mirror))
        monkeypatch.setenv("KZOO_OFFLINE", "1")
    with pytest.warns(UserWarning, match=r"testnet\.imagenet@v0\.2.*superseded by testnet\.imagenet"):
        assert sources.fetch(current) == keras_path
    blob = env / sources.BLOB_DIR / f"md5-{old.md5}" / current.file_name
    assert keras_path.read_bytes() == weights and blob.read_bytes() == other_weights
    assert server.count("/w/today.h5") == (0 if offline else 1)
    requests = len(server.requests)
    assert sources.fetch(old) == blob and sources.fetch(current) == keras_path  # both from the cache
    assert len(server.requests) == requests
    listed = verified_cache(capsys)
    kept = f"blobs/md5-{old.md5}/{current.file_name}"
    assert set(listed) == {current.file_name, kept}
    assert listed[current.file_name].startswith("OK ") and "testnet.imagenet" in listed[current.file_name]
    assert "testnet.imagenet@v0.2 (superseded by testnet.imagenet)" in listed[kept]
    assert sources.cache_status(old).path == blob and sources.cache_status(old).state == "verified"


def test_an_old_release_is_kept_by_content_when_fetched_and_today_s_file_does_not_displace_it(
        server, register, weights, other_weights, env, capsys):
    old_url = server.serve("/w/v0.2.h5", other_weights)
    url = server.serve("/w/today.h5", weights)
    current, old = shared_name_entries(register, weights, other_weights, urls=([url], [old_url]))
    assert sources.cache_status(old).state == "missing"
    blob = sources.fetch(old)  # never written at Keras' path
    assert blob == env / sources.BLOB_DIR / f"md5-{old.md5}" / old.file_name
    assert not (env / old.file_name).exists()
    assert sources.fetch(current).read_bytes() == weights
    assert blob.read_bytes() == other_weights
    assert len(verified_cache(capsys)) == 2
    # found at Keras' path, the old release is moved into its blob when asked for, out of Keras' reach
    blob.unlink()
    (env / "elsewhere").mkdir()
    (env / old.file_name).rename(env / "elsewhere" / old.file_name)  # today's file, kept aside
    (env / old.file_name).write_bytes(other_weights)
    requests = len(server.requests)
    with pytest.warns(UserWarning, match="moved"):
        assert sources.fetch(old) == blob
    assert blob.read_bytes() == other_weights and not (env / old.file_name).exists()
    assert len(server.requests) == requests


def test_offline_with_no_source_the_old_file_is_moved_out_of_keras_reach(register, weights, other_weights, env,
                                                                        tmp_path, monkeypatch):
    """Offline, today's file cannot be had: kzoo fails, but first moves the recognised v0.2 file out of
    Keras' path, where keras.utils.get_file (asked for today's file offline) deletes it."""
    import keras

    current, old = shared_name_entries(register, weights, other_weights)
    monkeypatch.setenv("KZOO_OFFLINE", "1")

    def keras_get_file(folder: Path) -> None:
        # as keras.applications asks for today's file: its md5, an origin that cannot answer (a closed port)
        with pytest.raises(Exception, match="127.0.0.1:9/closed"):  # Keras re-raises a plain Exception
            keras.utils.get_file(current.file_name, "http://127.0.0.1:9/closed", file_hash=current.md5,
                                 cache_subdir=folder.name, cache_dir=str(folder.parent))

    # The trap, shown without kzoo: Keras deletes the old file it finds under today's name.
    control = tmp_path / "control" / "models"
    control.mkdir(parents=True)
    (control / current.file_name).write_bytes(other_weights)
    keras_get_file(control)
    assert not (control / current.file_name).exists()

    env.mkdir()
    (env / current.file_name).write_bytes(other_weights)
    with pytest.warns(UserWarning, match="moved"), pytest.raises(WeightsNotFound):
        sources.fetch(current)
    keras_get_file(env)
    assert sources.fetch(old).read_bytes() == other_weights


def test_a_fetch_never_overwrites_another_verified_release_written_meanwhile(server, register, weights,
                                                                           other_weights, env, monkeypatch):
    """The old file appears at Keras' path while today's is downloading (keras.applications in another
    process): it is recognised and moved before the rename, not overwritten."""
    url = server.serve("/w/today.h5", weights)
    current, old = shared_name_entries(register, weights, other_weights, urls=([url], []))
    import kzoo.sources.fetching as fetching

    real_fill = fetching._fill

    def fill_then_old_file_appears(*args, **kwargs):
        result = real_fill(*args, **kwargs)
        (env / current.file_name).write_bytes(other_weights)
        return result

    monkeypatch.setattr(fetching, "_fill", fill_then_old_file_appears)
    with pytest.warns(UserWarning, match="moved"):
        assert sources.fetch(current).read_bytes() == weights
    assert sources.fetch(old).read_bytes() == other_weights


# --------------------------------------------------------------------------------------------- where a hash comes from

def test_hash_mismatch_names_the_overlay_or_pin_file_the_hash_came_from(server, register, weights, other_weights,
                                                                         env, tmp_path):
    url = server.serve("/w/m.h5", other_weights)  # not the bytes the overlay pins
    (entry,) = register(weights_entry("testnet.imagenet", weights, [url]))
    with pytest.raises(HashMismatch) as info:
        sources.fetch(entry)
    overlay = os.environ["KZOO_REGISTRY"]
    assert f"registry overlay {overlay}" in str(info.value) and "KZOO_REGISTRY" in str(info.value)
    # trust on first use: the first download's hash, recorded in the pin file, is what later bytes must match
    tofu_url = server.serve("/w/t.h5", weights)
    (tofu,) = register(weights_entry("tofunet.imagenet", None, [tofu_url]))
    sources.fetch(tofu)
    (env / tofu.file_name).unlink()
    server.serve("/w/t.h5", other_weights)
    with pytest.raises(HashMismatch) as info:
        sources.fetch(tofu)
    assert f"pin file {os.environ['KZOO_PINS']}" in str(info.value) and "registry overlay" not in str(info.value)
    # the shipped registry's own hashes name no file
    import kzoo.registry as registry
    from kzoo.sources.verify import hash_origin
    assert hash_origin(registry.get_entry("resnet50.imagenet")) == ""
