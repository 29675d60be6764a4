"""A real HTTP server on 127.0.0.1, in a thread, that serves test files and injects faults.

    with LoopbackServer() as server:
        url = server.serve("/w/file.h5", data, fault="drop")
        ...
        server.count("/w/file.h5")          # GET requests seen for that path

Faults (``fault=``):
    None        plain file, with Range support, ETag and Content-Length
    "truncate"  a truncated file: only the first half, announced with its own (short) length
    "wrong"     the right length, one byte flipped
    "404"       always 404
    "500"       500 for the first ``times`` requests, then the file
    "drop"      the first ``times`` requests announce the full length, send half and close the connection
    "slow"      wait ``delay`` seconds before the status line (a slow first byte)
``ranges=False`` makes the server ignore Range (answers 200 with the whole file).
``gate`` is a callable run before answering a GET (tests use it to hold a download open).
``chunk_delay`` sleeps between 64 KiB body chunks (a slow body).
``body_gate`` is called with the file offset of each 64 KiB body chunk before it is sent (tests use it to
hold a download at an exact byte; raising BrokenPipeError ends the response).
``If-Range`` is honoured: a validator other than the file's ETag gets the whole file (200), as RFC 9110 says.
``server.sent(path)`` counts the body bytes written to clients for that path (a killed client's included).

``serve_hf(repo, revision, path, data)`` answers the Hugging Face Hub resolve protocol:
``/{repo}/resolve/{revision}/{path}`` with ETag (the sha256), X-Repo-Commit and Content-Length.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import pytest

import kzoo.sources as sources
import kzoo.sources.cache as sources_cache

BODY_CHUNK = 64 * 1024
FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Route:
    data: bytes
    fault: str | None = None
    times: int = 1
    delay: float = 0.0
    ranges: bool = True
    gate: Callable[[], None] | None = None
    chunk_delay: float = 0.0
    headers: dict = field(default_factory=dict)
    body_gate: Callable[[int], None] | None = None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, *args):  # keep test output clean
        pass

    def do_HEAD(self):
        self._answer_quietly(head=True)

    def do_GET(self):
        self._answer_quietly(head=False)

    def _answer_quietly(self, head: bool):
        try:
            self._answer(head)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeouts, restarts)
            self.close_connection = True

    def _answer(self, head: bool):
        path = self.path.split("?", 1)[0]
        owner = self.server.owner
        route = owner.routes.get(path)
        seen = owner._record(self.command, path, self.headers.get("Range"), self.headers.get("If-Range"))
        if route is None or route.fault == "404":
            return self._plain(404, b"not found")
        if head:
            return self._send_headers(200, route, len(route.data))
        if route.gate is not None:
            route.gate()
        if route.fault == "slow":
            time.sleep(route.delay)
        if route.fault == "500" and seen < route.times:
            return self._plain(500, b"try again")
        body = route.data
        if route.fault == "truncate":
            body = body[: len(body) // 2]
        elif route.fault == "wrong":
            body = body[:-1] + bytes([body[-1] ^ 0xFF])
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if_range = self.headers.get("If-Range")
        if if_range is not None and if_range != _etag(route):  # the file changed: send all of it
            match = None
        if match and route.ranges:
            start = int(match.group(1))
            if start >= len(body):
                return self._plain(416, b"range not satisfiable")
        status = 206 if start else 200
        self._send_headers(status, route, len(body) - start, start=start, total=len(body))
        payload = body[start:]
        if route.fault == "drop" and seen < route.times:
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            owner._add_sent(path, len(payload) // 2)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        for i in range(0, len(payload), BODY_CHUNK):
            if route.body_gate is not None:
                route.body_gate(start + i)
            chunk = payload[i:i + BODY_CHUNK]
            self.wfile.write(chunk)
            owner._add_sent(path, len(chunk))
            if route.chunk_delay:
                time.sleep(route.chunk_delay)

    def _send_headers(self, status, route, length, start=0, total=None):
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("ETag", _etag(route))
        if route.ranges:
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
        for name, value in route.headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _plain(self, status, text):
        self.send_response(status)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(text)


def _etag(route: Route) -> str:
    return f'"{hashlib.sha256(route.data).hexdigest()}"'


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: "LoopbackServer"


class LoopbackServer:
    """Start with ``with LoopbackServer() as server`` (or ``start()``/``stop()``)."""

    def __init__(self):
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.if_ranges: list[tuple[str, str | None]] = []  # (path, If-Range header) of each GET
        self._sent: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server = None
        self._thread = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "LoopbackServer":
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def serve(self, path: str, data: bytes, **options) -> str:
        """Serve ``data`` at ``path``; returns its full URL."""
        self.routes[path] = Route(data, **options)
        return self.url + path

    def serve_hf(self, repo: str, revision: str, path: str, data: bytes, **options) -> str:
        """Serve ``data`` as file ``path`` of Hub repo ``repo`` at ``revision`` (the resolve protocol)."""
        headers = {"X-Repo-Commit": FAKE_COMMIT, **options.pop("headers", {})}
        return self.serve(f"/{repo}/resolve/{revision}/{path}", data, headers=headers, **options)

    def _record(self, method: str, path: str, range_header: str | None, if_range: str | None = None) -> int:
        """Log a request; returns how many requests of this method the path had before it."""
        with self._lock:
            seen = sum(1 for m, p, _ in self.requests if m == method and p == path)
            self.requests.append((method, path, range_header))
            if method == "GET":
                self.if_ranges.append((path, if_range))
        return seen

    def _add_sent(self, path: str, n: int) -> None:
        with self._lock:
            self._sent[path] = self._sent.get(path, 0) + n

    def sent(self, path: str) -> int:
        """Body bytes written to clients for ``path`` so far (bytes a killed client never read included)."""
        with self._lock:
            return self._sent.get(path, 0)

    def count(self, path: str, method: str = "GET") -> int:
        with self._lock:
            return sum(1 for m, p, _ in self.requests if m == method and p == path)

    def ranges(self, path: str) -> list[str | None]:
        with self._lock:
            return [r for m, p, r in self.requests if m == "GET" and p == path]


@functools.lru_cache(maxsize=None)
def model_h5_bytes(seed: int = 0) -> bytes:
    """A random-weight tf_keras MobileNet (alpha 0.25, 32x32) saved in the legacy Keras 2 h5 layout.

    Cached per process, so every test in a session shares one generated file per seed.
    """
    import tempfile

    import numpy as np
    import tf_keras

    tf_keras.utils.set_random_seed(seed)
    model = tf_keras.applications.MobileNet(alpha=0.25, weights=None, input_shape=(32, 32, 3), classes=10)
    rng = np.random.default_rng(seed)
    # Randomise every weight (BN statistics included) so each seed gives distinct bytes.
    model.set_weights([rng.normal(0, 0.1, w.shape).astype(w.dtype) for w in model.get_weights()])
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.h5")
        model.save_weights(path)
        with open(path, "rb") as f:
            return f.read()


def weights_entry(entry_id: str, data: bytes | None, urls=(), *, pin_md5=True, pin_sha256=True,
                  file_name: str | None = None, **fields) -> dict:
    """A user-registry entry (the ``KZOO_REGISTRY`` JSON schema) for test bytes ``data``.

    ``data=None`` or both pins off gives a trust-on-first-use entry.
    """
    model, _, tag = entry_id.partition(".")
    tag = tag.split(".")[0] or "test"
    entry = {
        "id": entry_id,
        "model": model,
        "tag": tag,
        "include_top": not entry_id.endswith(".notop"),
        "variant": {},
        "file_name": file_name or entry_id.replace(".", "_") + ".h5",
        "urls": list(urls),
        "md5": hashlib.md5(data).hexdigest() if data is not None and pin_md5 else None,
        "sha256": hashlib.sha256(data).hexdigest() if data is not None and pin_sha256 else None,
        "size": len(data) if data is not None else None,
        "format": "keras-h5",
        "origin": "kzoo test fixture",
        "license": "Apache-2.0",
        "preprocessing": "tf",
        "input_size": 32,
        "num_classes": 10,
        "superseded_by": None,
        "conversion": None,
        "trust": "pinned",
    }
    if entry["md5"] is None and entry["sha256"] is None:
        entry["trust"] = "tofu"
    entry.update(fields)
    return entry


def write_registry(path, entries) -> str:
    """Write a user registry file; point ``KZOO_REGISTRY`` at the returned path."""
    import json

    with open(path, "w", encoding="utf-8") as f:
        json.dump({"schema_version": 1, "entries": list(entries)}, f, indent=1)
    return str(path)


# --------------------------------------------------------------------------------------------- pytest fixtures
# Test modules import these by name (``from loopback import env, server, register``).

@pytest.fixture
def env(tmp_path, monkeypatch):
    """An isolated cache, fast retries, no proxies, nothing offline."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("KZOO_CACHE_DIR", str(cache))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("KZOO_PINS", str(tmp_path / "pins.json"))
    monkeypatch.setenv("KZOO_RETRY_BACKOFF", "0.01")
    monkeypatch.setenv("KZOO_RETRIES", "3")
    monkeypatch.setenv("KZOO_TIMEOUT", "10")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    for name in ("KZOO_MIRRORS", "KZOO_OFFLINE", "HF_HUB_OFFLINE", "HF_ENDPOINT", "KZOO_REGISTRY"):
        monkeypatch.delenv(name, raising=False)
    sources_cache._PROCESS_MEMO.clear()
    return cache


@pytest.fixture
def server():
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture
def register(tmp_path, monkeypatch, env):
    """register(entry_dict, ...) -> the WeightsEntry objects, through a KZOO_REGISTRY file."""

    def _register(*entries):
        path = write_registry(tmp_path / "user_registry.json", entries)
        monkeypatch.setenv("KZOO_REGISTRY", path)
        return [refresh_registry().get_entry(e["id"]) for e in entries]

    yield _register
    monkeypatch.delenv("KZOO_REGISTRY", raising=False)
    refresh_registry()


def refresh_registry():
    """Forget the registry parsed before KZOO_REGISTRY changed (files rewritten within one second)."""
    import kzoo.registry as registry

    registry.clear_cache()
    return registry


def cache_listing(cache: Path) -> list[str]:
    """Files in the cache, ignoring kzoo's own bookkeeping (memo, lock folder)."""
    if not cache.exists():
        return []
    return sorted(p.name for p in cache.iterdir()
                  if p.name not in (sources.MEMO_NAME, sources.LOCK_DIR))


@pytest.fixture
def no_sockets(monkeypatch):
    """Any attempt to open a network connection is recorded and refused."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError("offline mode opened a socket")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts
