"""``hf://`` sources go through huggingface_hub, against a loopback endpoint speaking the Hub's resolve
protocol (``/{repo}/resolve/{revision}/{path}`` with ETag, X-Repo-Commit and Content-Length)."""

from __future__ import annotations

import pytest

import kzoo.sources as sources
from kzoo.errors import HashMismatch
from loopback import (cache_listing, env, model_h5_bytes, no_sockets, register, server,  # noqa: F401 (fixtures)
                      weights_entry)

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def weights() -> bytes:
    return model_h5_bytes(0)


@pytest.fixture
def hub(server, env, monkeypatch):
    """The loopback server as the Hub (HF_ENDPOINT, read by kzoo at call time)."""
    import huggingface_hub.utils._detect_agent as detect_agent

    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    # huggingface_hub fetches an "agent harness" list from its import-time endpoint; keep tests off the net.
    monkeypatch.setattr(detect_agent, "_fetch_registry", lambda: None, raising=False)
    return server


def test_hf_mirror_resolves_through_huggingface_hub(hub, register, weights, env, monkeypatch):
    (entry,) = register(weights_entry("testnet.imagenet", weights, ["https://example.invalid/x.h5"]))
    resolve = f"/org/repo/resolve/v1.0/weights/{entry.file_name}"
    hub.serve_hf("org/repo", "v1.0", f"weights/{entry.file_name}", weights)
    monkeypatch.setenv("KZOO_MIRRORS", "hf://org/repo@v1.0/weights")
    path = sources.fetch(entry)
    assert path == env / entry.file_name and path.read_bytes() == weights
    assert hub.count(resolve, "HEAD") >= 1 and hub.count(resolve) == 1
    assert cache_listing(env) == [entry.file_name]


def test_hf_entry_url_names_the_file_and_revision_defaults_to_main(hub, register, weights):
    hub.serve_hf("org/repo", "main", "sub/model.h5", weights)
    (entry,) = register(weights_entry("testnet.imagenet", weights, ["hf://org/repo/sub/model.h5"]))
    assert [str(s) for s in sources.sources_for(entry)] == ["hf://org/repo@main/sub/model.h5"]
    assert sources.fetch(entry).read_bytes() == weights


def test_hf_missing_file_moves_on_to_the_next_source(hub, register, weights, monkeypatch):
    origin = hub.serve("/origin/model.h5", weights)
    (entry,) = register(weights_entry("testnet.imagenet", weights, [origin]))
    monkeypatch.setenv("KZOO_MIRRORS", "hf://org/empty@main")
    assert sources.fetch(entry).read_bytes() == weights
    assert hub.count("/origin/model.h5") == 1


def test_hf_wrong_bytes_are_rejected(hub, register, weights, env, monkeypatch):
    (entry,) = register(weights_entry("testnet.imagenet", weights, []))
    hub.serve_hf("org/repo", "main", entry.file_name, weights[:-1] + bytes([weights[-1] ^ 0xFF]))
    monkeypatch.setenv("KZOO_MIRRORS", "hf://org/repo")
    with pytest.raises(HashMismatch, match=f"hf://org/repo@main/{entry.file_name}"):
        sources.fetch(entry)
    assert cache_listing(env) == []


def test_offline_reads_the_huggingface_cache_without_a_socket(hub, register, weights, env, monkeypatch,
                                                               request):
    (entry,) = register(weights_entry("testnet.imagenet", weights, []))
    hub.serve_hf("org/repo", "main", entry.file_name, weights)
    monkeypatch.setenv("KZOO_MIRRORS", "hf://org/repo@main")
    sources.fetch(entry).unlink()  # now only huggingface_hub's cache holds the file
    before = len(hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    attempts = request.getfixturevalue("no_sockets")
    assert sources.fetch(entry).read_bytes() == weights
    assert attempts == [] and len(hub.requests) == before
