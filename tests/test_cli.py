"""The ``kzoo`` command: list / info / fetch / verify, delegation, help, and errors without tracebacks."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import types
from pathlib import Path

import pytest

import kzoo.registry as registry
from kzoo.cli import main
from loopback import env, model_h5_bytes, register, server, weights_entry  # noqa: F401 (fixtures)


@pytest.fixture(scope="module")
def weights() -> bytes:
    return model_h5_bytes(0)


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


# --------------------------------------------------------------------------------------------- help and usage

@pytest.mark.parametrize("command", [[], ["list"], ["info"], ["fetch"], ["verify"]])
def test_help_on_every_command(command, capsys):
    code, out, _ = run(capsys, *command, "--help")
    assert code == 0 and out.startswith("usage: kzoo")


def test_console_script_help():
    script = Path(sys.executable).with_name("kzoo")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "kzoo.cli"]
    done = subprocess.run(command + ["--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for word in ("list", "info", "fetch", "verify", "convert", "bench"):
        assert word in done.stdout


def test_usage_errors_exit_2(capsys):
    assert run(capsys, "frobnicate")[0] == 2
    assert run(capsys)[0] == 2
    assert run(capsys, "fetch")[0] == 2
    assert run(capsys, "fetch", "x", "--all")[0] == 2
    assert run(capsys, "verify")[0] == 2


def test_a_broken_user_registry_is_a_message(tmp_path, monkeypatch, env, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    monkeypatch.setenv("KZOO_REGISTRY", str(bad))
    registry.clear_cache()
    try:
        code, _, err = run(capsys, "info", "anything")
    finally:
        monkeypatch.delenv("KZOO_REGISTRY")
        registry.clear_cache()
    assert code == 1 and str(bad) in err and err.startswith("kzoo: error:")


# --------------------------------------------------------------------------------------------- list

def test_list_weights_with_pattern_and_superseded(register, weights, capsys):
    register(weights_entry("testnet.imagenet", weights, []),
             weights_entry("testnet.old", weights[:100], [], file_name="old.h5", superseded_by="testnet.imagenet"),
             weights_entry("testnet.tofu", None, [], file_name="tofu.h5"))
    code, out, _ = run(capsys, "list", "--weights", "testnet.*")
    ids = [line.split()[0] for line in out.splitlines()]
    assert code == 0 and ids == ["testnet.imagenet", "testnet.tofu"]
    assert f"{len(weights):,d}" in out and "tofu" in out.splitlines()[1]
    code, out, _ = run(capsys, "list", "--weights", "--superseded", "testnet.*")
    assert "testnet.old" in out and "superseded by testnet.imagenet" in out


def test_list_models_passes_pattern_and_pretrained(monkeypatch, capsys):
    import kzoo.models

    calls = []
    monkeypatch.setattr(kzoo.models, "list_models", lambda p=None, pretrained=False: calls.append((p, pretrained))
                        or ["resnet50", "resnet50v2"])
    code, out, _ = run(capsys, "list", "resnet50*", "--pretrained")
    assert code == 0 and out.split() == ["resnet50", "resnet50v2"] and calls == [("resnet50*", True)]


def test_list_models_for_real(capsys):
    code, out, _ = run(capsys, "list", "mobilenet*")
    assert code == 0 and "mobilenet" in out.split()


# --------------------------------------------------------------------------------------------- info

def test_info_pinned_entry_and_cache_status(server, register, weights, env, capsys):
    url = server.serve("/w/m.h5", weights)
    (entry,) = register(weights_entry("testnet.imagenet", weights, [url]))
    code, out, _ = run(capsys, "info", "testnet.imagenet")
    assert code == 0
    for fact in (entry.file_name, f"{len(weights):,d} bytes", entry.md5, entry.sha256, "Apache-2.0",
                 "preprocessing: tf", url, "missing"):
        assert fact in out
    assert run(capsys, "fetch", "testnet.imagenet")[0] == 0
    code, out, _ = run(capsys, "info", "testnet.imagenet")
    assert f"verified: {env / entry.file_name}" in out


def test_info_tofu_entry_says_unpinned(server, register, weights, capsys):
    url = server.serve("/w/m.h5", weights)
    register(weights_entry("testnet.tofu", None, [url]))
    code, out, _ = run(capsys, "info", "testnet.tofu")
    assert code == 0 and "unpinned, trusted on first use (nothing recorded yet)" in out
    assert run(capsys, "fetch", "testnet.tofu")[0] == 0
    code, out, _ = run(capsys, "info", "testnet.tofu")
    assert f"recorded sha256:{hashlib.sha256(weights).hexdigest()} in " in out  # and names the pin file


def test_info_by_model_name_lists_its_weights(register, weights, capsys):
    register(weights_entry("testnet.imagenet", weights, []), weights_entry("testnet.tofu", None, []))
    code, out, _ = run(capsys, "info", "testnet")
    assert code == 0 and "testnet.imagenet" in out and "testnet.tofu" in out


def test_info_unknown_is_a_message_with_suggestions(register, weights, capsys):
    register(weights_entry("testnet.imagenet", weights, []))
    code, _, err = run(capsys, "info", "testnet.imagenett")
    assert code == 1 and "testnet.imagenet" in err and err.startswith("kzoo: error:")


# --------------------------------------------------------------------------------------------- fetch

def test_fetch_prints_paths_and_reports_failures(server, register, weights, env, capsys):
    good = server.serve("/good/m.h5", weights)
    bad = server.serve("/bad/m.h5", weights, fault="wrong")
    register(weights_entry("testnet.good", weights, [good]),
             weights_entry("testnet.bad", weights, [bad], file_name="bad.h5"))
    code, out, _ = run(capsys, "fetch", "testnet.good")
    assert code == 0 and out.strip() == f"testnet.good\t{env / 'testnet_good.h5'}"
    code, out, err = run(capsys, "fetch", "testnet.bad", "testnet.good")
    assert code == 1
    assert "testnet.good" in out and "no source gave the pinned bytes" in err and bad in err
    assert not (env / "bad.h5").exists()
    assert run(capsys, "fetch", "testnet.nope")[0] == 1


def test_fetch_all_takes_current_entries(server, register, weights, env, capsys, monkeypatch):
    url = server.serve("/w/m.h5", weights)
    entries = register(weights_entry("testnet.a", weights, [url]),
                       weights_entry("testnet.b", weights, [url], file_name="b.h5"))
    monkeypatch.setattr(registry, "list_weights", lambda model=None, include_superseded=False: entries)
    code, out, _ = run(capsys, "fetch", "--all")
    assert code == 0 and len(out.splitlines()) == 2
    assert (env / "b.h5").read_bytes() == weights


# --------------------------------------------------------------------------------------------- verify

def test_verify_identifies_and_fails_on_unknown_or_mismatch(register, weights, tmp_path, capsys):
    register(weights_entry("testnet.imagenet", weights, []),
             weights_entry("testnet.old", weights[:100], [], file_name="old.h5", superseded_by="testnet.imagenet"))
    good, old = tmp_path / "any_name.h5", tmp_path / "old_copy.h5"
    good.write_bytes(weights)
    old.write_bytes(weights[:100])
    code, out, _ = run(capsys, "verify", str(good), str(old))
    assert code == 0 and "OK" in out and "testnet.imagenet" in out and "superseded by testnet.imagenet" in out
    unknown = tmp_path / "unknown.bin"
    unknown.write_bytes(b"hello")
    code, out, err = run(capsys, "verify", str(good), str(unknown))
    assert code == 1 and "UNKNOWN" in out and hashlib.sha256(b"hello").hexdigest() in out
    bad = tmp_path / "testnet_imagenet.h5"
    bad.write_bytes(weights[:-1] + bytes([weights[-1] ^ 0xFF]))
    code, out, _ = run(capsys, "verify", str(bad))
    assert code == 1 and "MISMATCH" in out
    code, out, _ = run(capsys, "verify", str(tmp_path / "missing.h5"))
    assert code == 1 and "MISSING" in out


def test_verify_cache(server, register, weights, env, capsys):
    url = server.serve("/w/m.h5", weights)
    register(weights_entry("testnet.imagenet", weights, [url]))
    assert run(capsys, "verify", "--cache")[0] == 0  # empty cache
    assert run(capsys, "fetch", "testnet.imagenet")[0] == 0
    code, out, _ = run(capsys, "verify", "--cache")
    assert code == 0 and out.count("OK") == 1
    (env / "stray.h5").write_bytes(b"stray")
    code, out, _ = run(capsys, "verify", "--cache")
    assert code == 1 and "UNKNOWN" in out and "stray.h5" in out


# --------------------------------------------------------------------------------------------- delegation

@pytest.mark.parametrize("command", ["convert", "bench"])
def test_convert_and_bench_delegate(command, monkeypatch, capsys):
    seen = []
    fake = types.ModuleType(f"kzoo.{command}")
    fake.cli_main = lambda argv: seen.append(argv) or 3
    monkeypatch.setitem(sys.modules, f"kzoo.{command}", fake)
    assert main([command, "--help", "x"]) == 3
    assert seen == [["--help", "x"]]
