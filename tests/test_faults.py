"""Faults a user's machine produces, with real processes and real files: a download killed with SIGKILL, a
full disk (a small tmpfs, or RLIMIT_FSIZE), a read-only cache (a read-only tmpfs), and the self-check.

Every network byte goes through the loopback server (tests/loopback.py), which counts what it sends.
Mount-based cases need root (CAP_SYS_ADMIN) and skip with the reason otherwise; each unmounts in
``finally``. Nothing here asserts on speed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from filelock import Timeout

import kzoo.sources as sources
import kzoo.sources.cache as sources_cache
import kzoo.sources.hashing as sources_hashing
from kzoo.errors import DownloadError, KzooError, WeightsNotFound
from kzoo.sources.storage import existing_ancestor
from loopback import cache_listing, env, register, server, weights_entry  # noqa: F401 (fixtures)

pytestmark = pytest.mark.network

MiB = 1 << 20
DEADLINE = 60  # seconds any single wait may take before the test fails (not a speed assertion)


def blob(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_state(path: Path) -> tuple:
    st = path.stat()
    return path.read_bytes(), st.st_mtime_ns, st.st_size


def everything_in(folder: Path) -> list[str]:
    """Every entry of the cache folder, hidden ones too, except kzoo's lock folder (its files stay by design)."""
    return sorted(p.name for p in folder.iterdir() if p.name != sources.LOCK_DIR)


def wait_for(condition, what: str, timeout: float = DEADLINE):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.002)
    raise AssertionError(f"timed out waiting for {what}")


# --------------------------------------------------------------------------------------------- child processes

# A fetch in its own process. KZOO_TEST_FSIZE sets RLIMIT_FSIZE first, with SIGXFSZ ignored so that an
# oversized write fails with EFBIG instead of killing the process.
_CHILD = textwrap.dedent("""
    import json, os, sys
    limit = os.environ.get("KZOO_TEST_FSIZE")
    if limit:
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    from kzoo.errors import KzooError
    try:
        if sys.argv[1] == "fetch":
            import kzoo.registry as registry, kzoo.sources as sources
            result = str(sources.fetch(registry.get_entry(sys.argv[2]), progress=False))
        elif sys.argv[1] == "export":
            import kzoo
            from faults_models import tiny_image_model
            result = str(kzoo.export(tiny_image_model(seed=1), sys.argv[2], force=True).path)
        elif sys.argv[1] == "h5_writes":  # each h5 writer in turn: {"outcomes": [None or its error, ...]}
            from faults_models import h5_writers
            result = {"outcomes": []}
            for write, path in zip(h5_writers(seed=1), sys.argv[2:]):
                try:
                    write(path)
                    result["outcomes"].append(None)
                except KzooError as e:
                    result["outcomes"].append({"error": type(e).__name__, "message": str(e)})
        else:
            from kzoo.convert import convert_checkpoint
            result = str(convert_checkpoint(sys.argv[2], "shufflenet_v2_050", sys.argv[3], include_top=False).output)
    except KzooError as e:
        print(json.dumps({"error": type(e).__name__, "message": str(e), "errno": getattr(e, "errno", None),
                          "oserror": isinstance(e, OSError)}))
        sys.exit(1)
    print(json.dumps(result if isinstance(result, dict) else {"path": result}))
""")


def child(*args, fsize: int | None = None) -> subprocess.Popen:
    environment = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                              environment.get("PYTHONPATH")]))
    if fsize is not None:
        environment["KZOO_TEST_FSIZE"] = str(fsize)
    return subprocess.Popen([sys.executable, "-c", _CHILD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=environment)


def child_result(proc: subprocess.Popen) -> tuple[int, dict, str]:
    out, err = proc.communicate(timeout=DEADLINE * 2)
    lines = out.strip().splitlines()
    assert lines, f"no output (exit {proc.returncode}):\n{err}"
    return proc.returncode, json.loads(lines[-1]), err


# --------------------------------------------------------------------------------------------- mounts (root only)

def _mount(*args) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A tmpfs of ``size`` at ``path`` for the duration; skips the test where mounting is not permitted."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8); the RLIMIT_FSIZE variant still runs")
    path.mkdir(parents=True, exist_ok=True)
    done = _mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)  # busy: detach it anyway


def remount(path: Path, mode: str) -> None:
    done = _mount("-o", f"remount,{mode}", str(path))
    assert done.returncode == 0, done.stderr


def fill(folder: Path, leave: int) -> Path:
    """Fill ``folder``'s filesystem until ``leave`` bytes are free."""
    filler = folder / "filler.bin"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, shutil.disk_usage(folder).free - leave))
    return filler


# --------------------------------------------------------------------------------------------- kill -9

class BodyGate:
    """Holds the server's body at the first 64 KiB chunk at or past ``stop_at`` until released; the
    response then ends (its client was killed meanwhile)."""

    def __init__(self):
        self.stop_at = None
        self.paused_at = None
        self.paused = threading.Event()
        self.release = threading.Event()

    def arm(self, offset: int) -> None:
        self.stop_at, self.paused_at = offset, None
        self.paused.clear()
        self.release.clear()

    def disarm(self) -> None:
        self.stop_at = None
        self.release.set()

    def __call__(self, offset: int) -> None:
        if self.stop_at is None or offset < self.stop_at:
            return
        self.paused_at = offset
        self.paused.set()
        self.release.wait(DEADLINE)
        raise BrokenPipeError("the client was killed")


class Watcher(threading.Thread):
    """Looks at the cache path every few milliseconds for the whole test, as another program would: each
    time a file is there, it must be the whole file with the right hash."""

    def __init__(self, path: Path, data: bytes):
        super().__init__(daemon=True)
        self.path, self.size, self.sha = path, len(data), sha256(data)
        self.stop = threading.Event()
        self.looks = 0
        self.seen: dict = {}
        self.bad: list = []

    def run(self):
        while not self.stop.is_set():
            self.looks += 1
            try:
                st = self.path.stat()
            except FileNotFoundError:
                time.sleep(0.002)
                continue
            key = (st.st_ino, st.st_size, st.st_mtime_ns)
            if key not in self.seen:
                self.seen[key] = st.st_size == self.size and sha256(self.path.read_bytes()) == self.sha
                if not self.seen[key]:
                    self.bad.append(key)
            time.sleep(0.002)


def test_kill_9_mid_download_never_serves_a_partial_and_resumes_with_range(server, register, env, monkeypatch):
    """A 32 MiB download killed four times (before the first body byte, while bytes flow, and held at 50%
    and 85%), then finished by a fifth process: the cache path only ever holds the verified file, the
    dead processes' flock never blocks, every restart resumes with Range + If-Range, and the server sends
    the file less than 1.5 times in all."""
    data = blob(32 * MiB, seed=1)
    gate = BodyGate()
    path = "/big/weights.bin"
    url = server.serve(path, data, body_gate=gate, chunk_delay=0.002)
    (entry,) = register(weights_entry("bignet.imagenet", data, [url], file_name="big.bin"))
    target = env / entry.file_name
    partial = sources_cache.Partial(env, entry.file_name)
    lock = env / sources.LOCK_DIR / f"{entry.file_name}.lock"
    watcher = Watcher(target, data)
    watcher.start()
    kept, offline_refusals = [], 0
    try:
        # (how the kill is placed, the byte the server is held at or the partial must reach)
        for how, at in [("held", 0), ("flowing", 5 * MiB), ("held", 16 * MiB), ("held", 27 * MiB)]:
            if how == "held":
                gate.arm(at)
            requests_before = server.count(path)
            proc = child("fetch", entry.id)
            if how == "held":
                assert gate.paused.wait(DEADLINE), "the download never reached the held byte"
                # every byte sent has reached the partial file (writes are unbuffered) and its record exists
                wait_for(lambda: partial.size() == gate.paused_at and partial.meta_path.exists(), "the partial file")
            else:
                wait_for(lambda: server.count(path) > requests_before and partial.size() >= at, "bytes to flow")
            assert proc.poll() is None, "the child finished before it could be killed"
            # The child holds the entry's lock while it downloads ...
            with pytest.raises(Timeout):
                sources_cache.file_lock(env, entry.file_name, timeout=0).acquire()
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=DEADLINE)
            gate.disarm()
            assert proc.returncode == -signal.SIGKILL
            # ... and once it is dead its flock is gone, although the lock file stays: nobody waits.
            assert lock.exists()
            probe = sources_cache.file_lock(env, entry.file_name, timeout=0)
            probe.acquire()
            probe.release()
            # A reader in between: nothing at the cache path, and kzoo does not serve the partial bytes.
            assert not target.exists()
            assert sources.cached_files() == []
            monkeypatch.setenv("KZOO_OFFLINE", "1")
            with pytest.raises(WeightsNotFound):
                sources.fetch(entry)
            offline_refusals += 1
            monkeypatch.delenv("KZOO_OFFLINE")
            kept.append(partial.size())
        proc = child("fetch", entry.id)
        code, result, err = child_result(proc)
        assert code == 0, err
        assert result["path"] == str(target)
    finally:
        gate.disarm()
        watcher.stop.set()
        watcher.join(5)

    assert target.read_bytes() == data
    assert kept[0] == 0 and kept[2] >= 16 * MiB and kept[3] >= 27 * MiB and kept[1] >= 5 * MiB
    assert kept[2] == gate_offset(16 * MiB, kept[1]) and kept[3] == gate_offset(27 * MiB, kept[2])
    # Each process asked for the bytes after those kept by the one before, with the first response's ETag.
    etag = f'"{sha256(data)}"'
    expected_ranges = [None] + [f"bytes={k}-" if k else None for k in kept]
    assert server.ranges(path) == expected_ranges
    assert [v for p, v in server.if_ranges if p == path] == [None] + [etag if k else None for k in kept]
    sent = server.sent(path)
    print(f"\nkill -9 x4 of a {len(data)}-byte download: kept {kept}; server sent {sent} bytes "
          f"= {sent / len(data):.3f}x the file; the watcher looked {watcher.looks} times")
    assert sent < 1.5 * len(data)
    assert watcher.bad == [] and list(watcher.seen.values()) == [True]  # only the finished file, once
    assert everything_in(env) == [sources.MEMO_NAME, entry.file_name]  # no partial, no record, no temp
    assert offline_refusals == 4


def gate_offset(stop_at: int, start: int) -> int:
    """The first 64 KiB body-chunk boundary at or after ``stop_at`` for a response that starts at ``start``."""
    chunk = 64 * 1024
    return start + -(-(stop_at - start) // chunk) * chunk


def _kill_at_half(server, path, entry, env) -> int:
    """Run a child fetch, hold the server at half the file, kill the child; returns the bytes it kept."""
    gate = server.routes[path].body_gate
    size = len(server.routes[path].data)
    gate.arm(size // 2)
    proc = child("fetch", entry.id)
    try:
        assert gate.paused.wait(DEADLINE)
        partial = sources_cache.Partial(env, entry.file_name)
        wait_for(lambda: partial.size() == gate.paused_at and partial.meta_path.exists(), "the partial file")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=DEADLINE)
    finally:
        gate.disarm()
    return sources_cache.Partial(env, entry.file_name).size()


def test_resume_after_the_server_file_changed_gets_the_new_file_whole(server, register, env):
    """If-Range: bytes kept from the old file are never spliced to the new one. An unpinned entry is the
    case where nothing else would notice: the splice would be trusted and pinned on first use."""
    old, new = blob(4 * MiB, seed=2), blob(4 * MiB, seed=3)
    path = "/w/tofu.bin"
    server.serve(path, old, body_gate=BodyGate(), chunk_delay=0.001)
    (entry,) = register(weights_entry("tofunet.imagenet", None, [server.url + path], file_name="tofu.bin"))
    kept = _kill_at_half(server, path, entry, env)
    assert kept == 2 * MiB
    server.serve(path, new)  # the server's file changes: a new ETag
    sent_before = server.sent(path)
    assert sources.fetch(entry).read_bytes() == new
    assert sources._pinned_sha256(entry) == sha256(new)
    assert server.ranges(path)[-1] == f"bytes={kept}-"
    assert server.if_ranges[-1] == (path, f'"{sha256(old)}"')
    assert server.sent(path) - sent_before == len(new)  # answered 200: the whole new file
    assert cache_listing(env) == [entry.file_name]


def test_kept_bytes_that_do_not_verify_are_downloaded_again_from_byte_0(server, register, env):
    """A partial whose bytes went bad on disk (its record still matches): the resumed file fails the pinned
    hash, so kzoo drops the kept bytes and downloads the whole file once more."""
    data = blob(3 * MiB, seed=4)
    url = server.serve("/w/m.bin", data)
    (entry,) = register(weights_entry("testnet.imagenet", data, [url], file_name="m.bin"))
    env.mkdir(parents=True)
    partial = sources_cache.Partial(env, entry.file_name)
    partial.path.write_bytes(b"\0" * MiB)  # zeroes where the first MiB should be
    partial.write_meta({"url": url, "validator": f'"{sha256(data)}"', "total": len(data),
                        "expected": sources.expected_hashes(entry)})
    assert sources.fetch(entry).read_bytes() == data
    assert server.ranges("/w/m.bin") == [f"bytes={MiB}-", None]
    assert cache_listing(env) == [entry.file_name]


@pytest.mark.parametrize("record", ["none", "other url", "other hashes"])
def test_a_partial_is_resumed_only_with_its_own_record(record, server, register, env):
    data = blob(2 * MiB, seed=5)
    url = server.serve("/w/m.bin", data)
    (entry,) = register(weights_entry("testnet.imagenet", data, [url], file_name="m.bin"))
    env.mkdir(parents=True)
    partial = sources_cache.Partial(env, entry.file_name)
    partial.path.write_bytes(data[:MiB])
    meta = {"url": url, "validator": f'"{sha256(data)}"', "total": len(data), "expected": {"sha256": sha256(data)}}
    if record == "other url":
        partial.write_meta({**meta, "url": server.url + "/elsewhere/m.bin"})
    elif record == "other hashes":
        partial.write_meta({**meta, "expected": {"sha256": "0" * 64}})
    assert sources.fetch(entry).read_bytes() == data
    assert server.ranges("/w/m.bin") == [None]
    assert cache_listing(env) == [entry.file_name]


def test_a_complete_partial_left_before_its_rename_verifies_without_a_request(server, register, env):
    data = blob(2 * MiB, seed=6)
    url = server.serve("/w/m.bin", data)
    (entry,) = register(weights_entry("testnet.imagenet", data, [url], file_name="m.bin"))
    env.mkdir(parents=True)
    partial = sources_cache.Partial(env, entry.file_name)
    partial.path.write_bytes(data)
    partial.write_meta({"url": url, "validator": f'"{sha256(data)}"', "total": len(data),
                        "expected": sources.expected_hashes(entry)})
    assert sources.fetch(entry).read_bytes() == data
    assert server.count("/w/m.bin") == 0
    assert cache_listing(env) == [entry.file_name]


def test_a_failed_source_keeps_its_bytes_and_a_404_mirror_leaves_them(server, register, env, monkeypatch):
    """A server that breaks off at half the file every time: the fetch fails, says the partial download is
    kept, and the next fetch resumes it, even with a 404 mirror asked first."""
    data = blob(2 * MiB, seed=7)

    def break_off(offset):
        if offset >= MiB:
            raise BrokenPipeError("the server breaks off")

    url = server.serve("/w/m.bin", data, body_gate=break_off)
    (entry,) = register(weights_entry("testnet.imagenet", data, [url], file_name="m.bin"))
    monkeypatch.setenv("KZOO_RETRIES", "0")
    with pytest.raises(DownloadError, match=f"partial download \\({MiB} of {len(data)} bytes from {url}\\) is kept"):
        sources.fetch(entry)
    assert sources_cache.Partial(env, entry.file_name).size() == MiB
    monkeypatch.setenv("KZOO_MIRRORS", server.url + "/mirror")  # not there: a 404 before the URL
    server.serve("/w/m.bin", data)
    assert sources.fetch(entry).read_bytes() == data
    assert server.count(f"/mirror/{entry.file_name}") == 1
    assert server.ranges("/w/m.bin")[-1] == f"bytes={MiB}-"
    assert cache_listing(env) == [entry.file_name]


# --------------------------------------------------------------------------------------------- disk full

@pytest.mark.parametrize("how", ["tmpfs", "rlimit"])
def test_disk_full_fetch_is_a_kzoo_error_and_keeps_nothing(how, server, register, env, tmp_path, monkeypatch):
    """8 MiB of disk (or an 4 MiB file-size limit) and a 6 MiB file to fetch next to a verified 3 MiB one."""
    small, big = blob(3 * MiB, seed=8), blob(6 * MiB, seed=9)
    small_url = server.serve("/w/small.bin", small)
    big_url = server.serve("/w/big.bin", big)
    with contextlib.ExitStack() as stack:
        if how == "tmpfs":
            cache = stack.enter_context(tmpfs(tmp_path / "disk", "8m")) / "cache"
            monkeypatch.setenv("KZOO_CACHE_DIR", str(cache))
        else:
            cache = env
        # the rlimit case: no pinned size, so the bytes needed come from the server's Content-Length
        size_pin = {} if how == "tmpfs" else {"size": None}
        entries = register(weights_entry("smallnet.imagenet", small, [small_url], file_name="small.bin"),
                           weights_entry("bignet.imagenet", big, [big_url], file_name="big.bin", **size_pin))
        kept = sources.fetch(entries[0])
        before = file_state(kept)
        listing = everything_in(cache)
        code, result, err = child_result(child("fetch", entries[1].id, fsize=4 * MiB if how == "rlimit" else None))
        assert code == 1, err
        assert result["error"] == "StorageError" and result["oserror"]
        message = result["message"]
        assert "Traceback" not in err
        assert str(cache) in message and f"needs {len(big)} bytes" in message
        if how == "tmpfs":
            assert "No space left on device" in message and "are free there" in message
            assert "KZOO_CACHE_DIR" in message  # a folder with room elsewhere
        else:
            assert "File too large" in message and f"files over {4 * MiB} bytes" in message
            assert "ulimit -f unlimited" in message  # another folder would not help
        assert everything_in(cache) == listing  # no partial, no record, no temp file
        assert file_state(kept) == before  # same bytes, same mtime
        assert issubclass(sources.StorageError, KzooError)
        from kzoo.errors import StorageError
        assert sources.StorageError is StorageError is sources_cache.StorageError  # moved, still importable
        print(f"\n{how}: {message}")
        if how == "tmpfs":  # the command says the same, in one line, without a traceback
            done = subprocess.run([sys.executable, "-m", "kzoo.cli", "fetch", entries[1].id], capture_output=True,
                                  text=True, timeout=DEADLINE * 2)
            assert done.returncode == 1 and done.stderr.startswith("kzoo: error: Weights 'bignet.imagenet'")
            assert "Traceback" not in done.stderr
            assert everything_in(cache) == listing and file_state(kept) == before


def test_disk_full_while_a_partial_is_resumed_drops_it(server, register, tmp_path, monkeypatch, env):
    """The disk fills up between a kill and the resume: the error names the folder, the kept bytes go."""
    data = blob(6 * MiB, seed=10)
    path = "/w/m.bin"
    server.serve(path, data, body_gate=BodyGate(), chunk_delay=0.001)
    with tmpfs(tmp_path / "disk", "16m") as disk:
        cache = disk / "cache"
        monkeypatch.setenv("KZOO_CACHE_DIR", str(cache))
        (entry,) = register(weights_entry("testnet.imagenet", data, [server.url + path], file_name="m.bin"))
        assert _kill_at_half(server, path, entry, cache) == 3 * MiB
        filler = fill(disk, leave=MiB)
        expected = f"could not write to {re.escape(str(cache))}.*needs {len(data)} bytes"
        with pytest.raises(sources.StorageError, match=expected):
            sources.fetch(entry)
        assert everything_in(cache) == []
        filler.unlink()
        assert sources.fetch(entry).read_bytes() == data


@pytest.fixture(scope="module")
def shufflenet_checkpoint(tmp_path_factory):
    """A random TF checkpoint with every variable the shufflenet_v2_050 rules read (written with TF)."""
    pytest.importorskip("tensorflow")
    from _ckpt_helpers import random_shufflenet_checkpoint

    return random_shufflenet_checkpoint(tmp_path_factory.mktemp("shufflenet"))[0]


@pytest.mark.parametrize("how", ["tmpfs", "rlimit"])
def test_disk_full_conversion_output(how, shufflenet_checkpoint, tmp_path):
    """convert_checkpoint(..., output=) on a full disk: a StorageError naming the folder and the bytes, no
    temp file, and the older output at that name untouched."""
    from kzoo.convert import convert_checkpoint

    with contextlib.ExitStack() as stack:
        folder = stack.enter_context(tmpfs(tmp_path / "disk", "8m")) if how == "tmpfs" else tmp_path / "out"
        folder.mkdir(exist_ok=True)
        output = folder / "shufflenet.h5"
        convert_checkpoint(shufflenet_checkpoint, "shufflenet_v2_050", output, include_top=False)
        before = file_state(output)
        if how == "tmpfs":
            fill(folder, leave=256 * 1024)
        listing = everything_in(folder)
        # In a child: HDF5 has crashed (SIGSEGV) on a full disk, and a crash must fail this test, not end the
        # session with the tmpfs still mounted.
        proc = child("convert", shufflenet_checkpoint, str(output), fsize=256 * 1024 if how == "rlimit" else None)
        code, result, err = child_result(proc)
        assert code == 1 and result["error"] == "StorageError", err
        message = result["message"]
        if how == "tmpfs":
            assert "No space left on device" in message and "are free there" in message
        else:
            assert "File too large" in message and "ulimit -f" in message
        assert str(folder) in message and "It needs " in message and "older file there is unchanged" in message
        assert everything_in(folder) == listing
        assert file_state(output) == before
        print(f"\nconvert, {how}: {message}")


@pytest.fixture(scope="module")
def existing_artifact(tmp_path_factory):
    """A LiteRT artifact and its provenance, exported once; each test copies them onto its small disk."""
    pytest.importorskip("ai_edge_litert")
    import kzoo
    from faults_models import tiny_image_model

    folder = tmp_path_factory.mktemp("export")
    kzoo.export(tiny_image_model(seed=0), folder / "tiny.tflite")
    return folder


@pytest.mark.parametrize("how", ["tmpfs", "rlimit"])
def test_disk_full_export(how, existing_artifact, tmp_path):
    """kzoo.export(..., force=True) over an existing artifact on a full disk: a StorageError naming the folder
    and the bytes (the weights' size), no temp folder left, the artifact and its provenance untouched."""
    with contextlib.ExitStack() as stack:
        folder = stack.enter_context(tmpfs(tmp_path / "disk", "4m")) if how == "tmpfs" else tmp_path / "out"
        folder.mkdir(exist_ok=True)
        for item in existing_artifact.iterdir():
            shutil.copy2(item, folder / item.name)
        artifact = folder / "tiny.tflite"
        before = [file_state(p) for p in sorted(folder.iterdir())]
        filler = fill(folder, leave=64 * 1024) if how == "tmpfs" else None
        listing = everything_in(folder)
        code, result, err = child_result(child("export", str(artifact), fsize=64 * 1024 if how == "rlimit" else None))
        assert code == 1 and result["error"] == "StorageError" and result["oserror"], err
        message = result["message"]
        from faults_models import tiny_image_model
        needed = sum(w.nbytes for w in tiny_image_model().get_weights())
        assert str(folder) in message and f"It needs about {needed} bytes" in message
        assert "the artifact already there is unchanged" in message
        assert ("No space left on device" in message) if how == "tmpfs" else ("ulimit -f" in message)
        assert everything_in(folder) == listing  # no staging folder left
        if filler is not None:
            filler.unlink()
        assert [file_state(p) for p in sorted(folder.iterdir())] == before
        print(f"\nexport, {how}: {message}")


# The tmpfs case goes the same way as the rlimit one once HDF5 writes to memory (one Python write that fails
# with ENOSPC instead of EFBIG), so it runs with the sweep only.
@pytest.mark.parametrize("how", [pytest.param("tmpfs", marks=pytest.mark.sweep), "rlimit"])
def test_disk_full_h5_writes(how, tmp_path):
    """keras_h5.save_weights and the fine-tuning feature cache build their h5 in memory: a full disk is a
    StorageError naming the folder and the file's bytes, not an HDF5 crash, and the older file is untouched."""
    from faults_models import h5_writers

    with contextlib.ExitStack() as stack:
        folder = stack.enter_context(tmpfs(tmp_path / "disk", "4m")) if how == "tmpfs" else tmp_path / "out"
        folder.mkdir(exist_ok=True)
        paths = [folder / "tiny.h5", folder / "features.h5"]
        for write, path in zip(h5_writers(seed=0), paths):
            write(path)
        before = [file_state(p) for p in paths]
        if how == "tmpfs":
            fill(folder, leave=64 * 1024)
        listing = everything_in(folder)
        proc = child("h5_writes", *map(str, paths), fsize=64 * 1024 if how == "rlimit" else None)
        code, result, err = child_result(proc)
        assert code == 0 and len(result["outcomes"]) == 2, err
        for outcome, (_, _, size), what in zip(result["outcomes"], before, ("Weights of tiny", "Feature cache")):
            assert outcome is not None and outcome["error"] == "StorageError", err
            message = outcome["message"]
            assert message.startswith(what) and str(folder) in message
            needed = int(re.search(r"It needs (\d+) bytes", message).group(1))
            assert abs(needed - size) < 1024 and needed > 64 * 1024  # the file's size (same layout), over the room
            assert "older file there is unchanged" in message
            print(f"\n{how}: {message}")
        assert everything_in(folder) == listing
        assert [file_state(p) for p in paths] == before


# --------------------------------------------------------------------------------------------- read-only cache

def test_read_only_cache(server, register, tmp_path, monkeypatch, env, capsys):
    """A cache on a read-only mount: files there load verified with nothing written (the memo is read, or
    kept in memory); a file that is not there is a clear error naming a writable KZOO_CACHE_DIR."""
    data, other, tofu = blob(MiB, seed=11), blob(MiB, seed=12), blob(MiB, seed=13)
    urls = [server.serve(f"/w/{n}", d) for n, d in (("a.bin", data), ("b.bin", other), ("c.bin", tofu))]
    with tmpfs(tmp_path / "ro", "8m") as disk:
        cache = disk / "cache"
        monkeypatch.setenv("KZOO_CACHE_DIR", str(cache))
        a, b, c, missing = register(
            weights_entry("anet.imagenet", data, [urls[0]], file_name="a.bin"),
            weights_entry("bnet.imagenet", other, [urls[1]], file_name="b.bin"),
            weights_entry("cnet.imagenet", None, [urls[2]], file_name="c.bin"),
            weights_entry("dnet.imagenet", other, [urls[1]], file_name="d.bin"))
        sources.fetch(a)  # verified and in the memo file
        cache.joinpath("b.bin").write_bytes(other)  # put there by hand: no memo record
        cache.joinpath("c.bin").write_bytes(tofu)  # unpinned, no pin recorded
        remount(disk, "ro")
        try:
            with pytest.raises(OSError):
                cache.joinpath("probe").write_bytes(b"")  # root too: the mount refuses writes
            listing = everything_in(cache)
            server_requests = len(server.requests)
            sources_cache._PROCESS_MEMO.clear()  # as a new process
            hashed = []
            real = sources_hashing.hash_file
            monkeypatch.setattr(sources_hashing, "hash_file",
                                lambda p, *x, **k: hashed.append(Path(p).name) or real(p, *x, **k))
            assert sources.fetch(a) == cache / "a.bin"  # from the memo file: no re-hash
            assert sources.fetch(b) == cache / "b.bin"  # hashed once, remembered in memory only
            assert sources.fetch(b) == cache / "b.bin"
            assert hashed == ["b.bin"]
            with pytest.warns(UserWarning, match="read-only"):
                assert sources.fetch(c) == cache / "c.bin"  # nothing else can be had: trusted, pinned
            assert sources._pinned_sha256(c) == sha256(tofu)
            with pytest.raises(DownloadError) as info:
                sources.fetch(missing)
            message = str(info.value)
            assert str(cache) in message and "not writable" in message and "KZOO_CACHE_DIR=" in message
            alternative = message.split("KZOO_CACHE_DIR=")[1].split(")")[0]
            print(f"\nread-only: {message}")
            assert everything_in(cache) == listing and len(server.requests) == server_requests
            # the suggested folder works
            monkeypatch.setenv("KZOO_CACHE_DIR", str(tmp_path / "elsewhere"))
            assert os.access(existing_ancestor(Path(alternative)), os.W_OK)
            assert sources.fetch(missing).read_bytes() == other
            # a fresh process, no memo in memory: the same answers
            monkeypatch.setenv("KZOO_CACHE_DIR", str(cache))
            code, result, err = child_result(child("fetch", a.id))
            assert code == 0 and result["path"] == str(cache / "a.bin"), err
            code, result, err = child_result(child("fetch", missing.id))
            assert code == 1 and result["error"] == "DownloadError" and "KZOO_CACHE_DIR=" in result["message"]
            # and the self-check says the cache is not writable
            from kzoo.cli import main
            capsys.readouterr()
            assert main(["doctor", "--json"]) == 1
            findings = json.loads(capsys.readouterr().out)
            (cache_finding,) = [f for f in findings if f["section"] == "cache"]
            assert cache_finding["status"] == "fail" and "Read-only file system" in cache_finding["detail"]
        finally:
            remount(disk, "rw")


# --------------------------------------------------------------------------------------------- self-check

def _refusing_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def selfcheck(*args, env_extra=None) -> tuple[int, list[dict]]:
    environment = dict(os.environ, **(env_extra or {}))
    done = subprocess.run([sys.executable, "-m", "kzoo.selfcheck", "--json", *args], capture_output=True,
                          text=True, env=environment, timeout=DEADLINE * 2)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


def by_subject(findings, section) -> dict:
    return {f["subject"]: f for f in findings if f["section"] == section}


def test_selfcheck_reports_cache_files_pins_mirrors_and_engines(server, register, env, tmp_path, monkeypatch):
    good, bad, tofu = blob(MiB, seed=14), blob(MiB, seed=15), blob(MiB, seed=16)
    good_url = server.serve("/w/good.bin", good)
    server.serve("/mirror/", b"")
    silent = socket.socket()  # accepts connections (the kernel's backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    try:
        register(weights_entry("goodnet.imagenet", good, [good_url], file_name="good.bin"),
                 weights_entry("badnet.imagenet", bad, [], file_name="bad.bin"),
                 weights_entry("tofunet.imagenet", None, [], file_name="tofu.bin"),
                 weights_entry("pinnednet.imagenet", None, [], file_name="pinned.bin"))
        sources.fetch(registry_entry("goodnet.imagenet"))
        (env / "bad.bin").write_bytes(bad[:-1] + b"\0")
        (env / "tofu.bin").write_bytes(tofu)
        (env / "stray.bin").write_bytes(b"not weights")
        import kzoo.registry as registry
        registry.record_pin(registry_entry("pinnednet.imagenet"), sha256(b"x"))
        partial = sources_cache.Partial(env, "big.bin")
        partial.path.write_bytes(b"\0" * 1000)
        partial.write_meta({"url": "http://127.0.0.1:1/big.bin", "validator": '"v"', "total": 4000, "expected": {}})
        answering, refused = f"{server.url}/mirror/", f"http://127.0.0.1:{_refusing_port()}/m"
        hung = f"http://127.0.0.1:{silent.getsockname()[1]}/m"
        missing_folder = str(tmp_path / "no-such-mirror")
        mirrors = ",".join([answering, refused, hung, missing_folder])

        code, findings = selfcheck("--timeout", "1", env_extra={"KZOO_MIRRORS": mirrors})
        assert code == 1
        cache = by_subject(findings, "cache")
        assert cache[str(env)]["status"] == "ok" and "writable" in cache[str(env)]["detail"]
        assert "1000 of 4000 bytes" in cache[".big.bin.download"]["detail"]
        files = by_subject(findings, "files")
        assert files["good.bin"]["status"] == "ok" and "goodnet.imagenet" in files["good.bin"]["detail"]
        assert files["bad.bin"]["status"] == "fail" and "MISMATCH" in files["bad.bin"]["detail"]
        assert files["tofu.bin"]["status"] == "info" and "unpinned" in files["tofu.bin"]["detail"]
        assert files["stray.bin"]["status"] == "warn"
        pins = by_subject(findings, "pins")
        assert "pinnednet.imagenet" in pins and sha256(b"x") in pins["pinnednet.imagenet"]["detail"]
        assert "tofunet.imagenet" not in pins  # no pin recorded: counted in the summary line
        mirror = by_subject(findings, "mirrors")
        assert mirror[answering]["status"] == "ok" and "answers (HTTP 200" in mirror[answering]["detail"]
        assert mirror[refused]["status"] == "fail" and "no answer" in mirror[refused]["detail"]
        assert mirror[hung]["status"] == "fail" and "within 1 s" in mirror[hung]["detail"]
        assert mirror[missing_folder]["status"] == "fail"
        assert server.count("/mirror/", "HEAD") == 1
        engines = by_subject(findings, "engines")
        import importlib.metadata
        assert engines["keras"]["detail"] == importlib.metadata.version("keras")
        assert engines["huggingface_hub"]["detail"] == importlib.metadata.version("huggingface-hub")
        for name in ("tensorflow", "jax", "torch", "onnxruntime", "openvino", "ai_edge_litert", "tflite_runtime",
                     "tf2onnx", "keras_hub"):
            assert name in engines

        # Offline: the mirrors are named, nothing is sent.
        requests = len(server.requests)
        code, findings = selfcheck(env_extra={"KZOO_MIRRORS": answering, "KZOO_OFFLINE": "1"})
        assert "offline" in by_subject(findings, "mirrors")[answering]["detail"]
        assert len(server.requests) == requests

        # All well: exit 0, in words.
        for name in ("bad.bin", "stray.bin"):
            (env / name).unlink()
        partial.discard()
        done = subprocess.run([sys.executable, "-m", "kzoo.cli", "doctor"], capture_output=True, text=True,
                              env=dict(os.environ, KZOO_MIRRORS=answering), timeout=DEADLINE * 2)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.rstrip().endswith("all well") and f"OK    {answering}: answers" in done.stdout
        print("\n" + done.stdout)
    finally:
        silent.close()


def test_selfcheck_reports_a_damaged_overlay_and_pin_file_instead_of_failing(register, env, tmp_path):
    """A damaged registry overlay and a damaged pin file are each named under "config", with the reader's
    message; the sections that need them say they were not checked, and the rest of the report still runs."""
    good = blob(MiB, seed=17)
    register(weights_entry("goodnet.imagenet", good, [], file_name="good.bin"))
    env.mkdir(exist_ok=True)
    (env / "good.bin").write_bytes(good)
    overlay, pins = Path(os.environ["KZOO_REGISTRY"]), Path(os.environ["KZOO_PINS"])
    code, findings = selfcheck()
    config = by_subject(findings, "config")
    assert code == 0 and config[str(overlay)]["status"] == "ok" and "1 entries" in config[str(overlay)]["detail"]
    assert by_subject(findings, "files")["good.bin"]["status"] == "ok"

    damaged_overlay = tmp_path / "damaged.json"
    damaged_overlay.write_text(overlay.read_text()[:-40])  # cut short
    pins.write_text('{"schema_version": 1, "pins": {"goodnet.imagenet": {"sha256": "00"}}}')
    code, findings = selfcheck(env_extra={"KZOO_REGISTRY": os.pathsep.join([str(overlay), str(damaged_overlay)])})
    assert code == 1
    config = by_subject(findings, "config")
    assert config[str(overlay)]["status"] == "ok"
    broken = config[str(damaged_overlay)]
    assert broken["status"] == "fail" and "not valid JSON" in broken["detail"]
    assert config[str(pins)]["status"] == "fail" and "goodnet.imagenet" in config[str(pins)]["detail"]
    for section in ("files", "pins"):
        (finding,) = by_subject(findings, section).values()
        assert finding["status"] == "warn" and f"{damaged_overlay} is damaged" in finding["detail"]
    assert by_subject(findings, "cache")[str(env)]["status"] == "ok"
    assert "keras" in by_subject(findings, "engines")

    # the pin file alone (identifying a file reads it too)
    code, findings = selfcheck()
    assert code == 1 and by_subject(findings, "config")[str(pins)]["status"] == "fail"
    for section in ("files", "pins"):
        assert f"{pins} is damaged" in by_subject(findings, section)[section]["detail"]


def registry_entry(entry_id):
    import kzoo.registry as registry

    return registry.get_entry(entry_id)
