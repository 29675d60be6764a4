"""A self-check of this machine's kzoo set-up: ``python -m kzoo.selfcheck`` or ``kzoo doctor``.

It reports
    config    each registry overlay in ``KZOO_REGISTRY`` and the pin file: readable, or damaged (named, with
              the fix); a damaged one is reported here and the checks that need it say so, instead of failing;
    cache     where the weight cache is, whether kzoo can write there (a real write, not permission bits,
              which root ignores), the free space, and partial downloads waiting to resume;
    files     which cached files verify against the registry (at Keras' paths and, for superseded releases
              that share a file name, in ``blobs/``), which do not, which are unpinned (trust on first
              use) or unknown;
    pins      the registry entries trusted on first use, and which of them have a recorded sha256;
    mirrors   whether each ``KZOO_MIRRORS`` source answers (a folder exists; a server answers a HEAD, or a
              one-byte GET, within ``--timeout``). Offline (``KZOO_OFFLINE`` / ``HF_HUB_OFFLINE``) nothing
              is sent, and the report says so;
    engines   the Keras backend and the optional engines and packages installed, with their versions
              (read from package metadata: nothing heavy is imported).

Exit status 0 when nothing failed, 1 otherwise. Warnings (an unknown file in the cache, an optional
engine missing) do not fail the check.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

OK, INFO, WARN, FAIL = "ok", "info", "warn", "fail"

# (what the report calls it, the module to look for, distributions that may provide it)
ENGINES = (
    ("tensorflow", "tensorflow", ("tensorflow", "tensorflow-cpu", "tensorflow-macos", "tf-nightly")),
    ("jax", "jax", ("jax",)),
    ("torch", "torch", ("torch",)),
    ("onnxruntime", "onnxruntime", ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino")),
    ("openvino", "openvino", ("openvino",)),
    ("ai_edge_litert", "ai_edge_litert", ("ai-edge-litert", "ai-edge-litert-nightly")),
    ("tflite_runtime", "tflite_runtime", ("tflite-runtime",)),
    ("tf2onnx", "tf2onnx", ("tf2onnx",)),
    ("huggingface_hub", "huggingface_hub", ("huggingface-hub",)),
    ("keras_hub", "keras_hub", ("keras-hub", "keras-hub-nightly")),
)
REQUIRED = (("keras", "keras", ("keras", "keras-nightly")), ("numpy", "numpy", ("numpy",)),
            ("h5py", "h5py", ("h5py",)), ("filelock", "filelock", ("filelock",)))
BACKEND_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch", "numpy": "numpy",
                   "openvino": "openvino"}


@dataclass(frozen=True)
class Finding:
    section: str  # "config" | "cache" | "files" | "pins" | "mirrors" | "engines"
    status: str  # OK | INFO | WARN | FAIL
    subject: str
    detail: str = ""


# --------------------------------------------------------------------------------------------- config

def check_config() -> list[Finding]:
    """Each registry overlay (``KZOO_REGISTRY``) and the pin file, read as kzoo reads them, one by one:
    a damaged file is named here, with the reader's own message (what is wrong and the fix)."""
    import kzoo.registry as registry
    from kzoo.errors import KzooError
    from kzoo.pins import _load_pins, pins_path

    found = []
    for path in registry._user_files():
        if not path.is_file():
            found.append(Finding("config", FAIL, str(path), f"listed in ${registry.ENV_REGISTRY} but does not exist; "
                                                            f"create it or remove it from ${registry.ENV_REGISTRY}"))
            continue
        try:
            entries = registry._parse_file(path, validate=True)
        except (KzooError, OSError) as e:
            found.append(Finding("config", FAIL, str(path), f"registry overlay is damaged: {e}"))
            continue
        found.append(Finding("config", OK, str(path), f"registry overlay, {len(entries)} entries"))
    if not found:
        found.append(Finding("config", INFO, registry.ENV_REGISTRY, "not set: only the shipped registry"))
    path = pins_path()
    try:
        pins = _load_pins(path)
    except (KzooError, OSError) as e:
        found.append(Finding("config", FAIL, str(path), f"pin file is damaged: {e}"))
    else:
        state = f"pin file, {len(pins)} pins" if path.exists() else "pin file, not written yet"
        found.append(Finding("config", OK, str(path), state))
    return found


# --------------------------------------------------------------------------------------------- cache

def check_cache() -> list[Finding]:
    from kzoo.sources.cache import DOWNLOAD_SUFFIX, PART_SUFFIX, Partial, cache_dir
    from kzoo.sources.storage import free_bytes

    folder = cache_dir()
    found = []
    if not folder.exists():
        base = folder.parent
        while not base.exists() and base.parent != base:
            base = base.parent
        if os.access(base, os.W_OK | os.X_OK):
            found.append(Finding("cache", OK, str(folder), f"does not exist yet; it is created on the first "
                                                            f"fetch ({base} is writable)"))
        else:
            found.append(Finding("cache", FAIL, str(folder), f"does not exist and cannot be created ({base} is "
                                                              f"not writable); set KZOO_CACHE_DIR"))
        return found
    if not folder.is_dir():
        return [Finding("cache", FAIL, str(folder), "is not a folder; set KZOO_CACHE_DIR to a folder")]
    problem = _write_probe(folder)
    free = free_bytes(folder)
    space = f"; {free / 2**30:.1f} GiB free" if free is not None else ""
    if problem:
        found.append(Finding("cache", FAIL, str(folder),
                             f"not writable ({problem}): cached files still load, nothing new can be fetched; "
                             f"set KZOO_CACHE_DIR to a writable folder{space}"))
    else:
        found.append(Finding("cache", OK, str(folder), f"writable{space}"))
    for part in sorted(folder.glob(f".*{DOWNLOAD_SUFFIX}")):
        partial = Partial(folder, part.name[1:-len(DOWNLOAD_SUFFIX)])
        meta = partial.meta()
        total = f" of {meta['total']}" if meta.get("total") else ""
        found.append(Finding("cache", INFO, part.name, f"partial download, {partial.size()}{total} bytes from "
                                                       f"{meta.get('url', 'an unknown source')}; the next fetch "
                                                       f"resumes or replaces it"))
    for stale in sorted(folder.glob(f".*{PART_SUFFIX}")):
        found.append(Finding("cache", INFO, stale.name, "temp file left by an interrupted write (safe to delete)"))
    return found


def _write_probe(folder: Path) -> str:
    """Why a file cannot be created in ``folder`` ("" when it can). A real write: root passes every
    permission check, yet a read-only mount or a full disk still refuses."""
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".kzoo-selfcheck-")
    except OSError as e:
        return e.strerror or str(e)
    os.close(fd)
    try:
        os.unlink(name)
    except OSError:
        pass
    return ""


# --------------------------------------------------------------------------------------------- files and pins

def check_files(rehash: bool = False) -> list[Finding]:
    import kzoo.sources as sources
    from kzoo.sources.cache import cache_key

    files = sources.cached_files()
    if not files:
        return [Finding("files", INFO, str(sources.cache_dir()), "holds no weight files")]
    found = []
    for path in files:
        name = cache_key(path)  # a name at Keras' path, blobs/<hash>/<name> for a release kept by content
        try:
            result = sources.verify_file(path, use_memo=not rehash)
        except OSError as e:
            found.append(Finding("files", FAIL, name, f"cannot be read: {e}"))
            continue
        if result.status == "ok":
            detail = "verifies: " + ", ".join(e.id for e in result.entries)
            if result.superseded:
                detail += " (superseded by " + ", ".join(sorted({e.superseded_by for e in result.entries})) + ")"
            found.append(Finding("files", OK, name, detail))
        elif result.status == "mismatch":
            found.append(Finding("files", FAIL, name, result.describe()))
        elif result.status == "unpinned":
            found.append(Finding("files", INFO, name, "unpinned (trusted on first use, no sha256 recorded "
                                                      f"yet): `kzoo fetch {result.named[0].id}` pins it"))
        else:
            found.append(Finding("files", WARN, name, f"not in the registry (sha256 {result.sha256})"))
    return found


def check_pins() -> list[Finding]:
    import kzoo.registry as registry
    from kzoo.pins import pins_path

    tofu = [e for e in registry.list_weights(include_superseded=True) if not e.pinned]
    if not tofu:
        return [Finding("pins", OK, "registry", "every entry pins a hash")]
    recorded = {e.id: registry.pinned_sha256(e) for e in tofu}
    with_pin = [i for i, sha in recorded.items() if sha]
    found = [Finding("pins", INFO, "trust on first use",
                     f"{len(tofu)} registry entries pin no hash; {len(with_pin)} have a sha256 recorded in "
                     f"{pins_path()}, {len(tofu) - len(with_pin)} none yet (the first verified download records it)")]
    found += [Finding("pins", INFO, entry_id, f"unpinned, recorded sha256 {recorded[entry_id]}")
              for entry_id in sorted(with_pin)]
    return found


# --------------------------------------------------------------------------------------------- mirrors

def check_mirrors(timeout: float = 5.0) -> list[Finding]:
    from kzoo.sources.fetching import is_offline, mirrors

    configured = mirrors()
    if not configured:
        return [Finding("mirrors", INFO, "KZOO_MIRRORS", "not set: only the cache and each entry's own URLs")]
    offline = is_offline()
    found = []
    for mirror in configured:
        if mirror.startswith(("http://", "https://", "hf://")):
            if offline:
                found.append(Finding("mirrors", INFO, mirror, "not contacted: offline (KZOO_OFFLINE / "
                                                              "HF_HUB_OFFLINE), so kzoo sends nothing"))
            else:
                found.append(_probe(mirror, timeout))
            continue
        path = Path(mirror[len("file://"):] if mirror.startswith("file://") else mirror).expanduser()
        if path.is_dir() and os.access(path, os.R_OK | os.X_OK):
            found.append(Finding("mirrors", OK, mirror, "a readable folder"))
        else:
            found.append(Finding("mirrors", FAIL, mirror, "no such readable folder"))
    return found


def _probe_url(mirror: str) -> str:
    if not mirror.startswith("hf://"):
        return mirror.rstrip("/") + "/"
    endpoint = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    repo = "/".join(mirror[len("hf://"):].split("/")[:2]).split("@")[0]
    return f"{endpoint}/api/models/{repo}"


def _probe(mirror: str, timeout: float) -> Finding:
    """Any HTTP answer means the server is there (a mirror's base URL may well be a 404: files are asked for
    by name); no answer within ``timeout`` fails."""
    from kzoo.sources.transport import USER_AGENT

    url = _probe_url(mirror)
    started = time.monotonic()
    status = None
    for method, extra in (("HEAD", {}), ("GET", {"Range": "bytes=0-0"})):
        request = urllib.request.Request(url, method=method, headers={"User-Agent": USER_AGENT, **extra})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status = response.status
        except urllib.error.HTTPError as e:
            e.close()
            status = e.code
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", None) or e
            return Finding("mirrors", FAIL, mirror, f"no answer from {url} within {timeout:g} s "
                                                    f"({type(reason).__name__}: {reason})")
        if status not in (405, 501):  # a server that refuses HEAD: ask for one byte instead
            break
    seconds = time.monotonic() - started
    if status >= 500:
        return Finding("mirrors", WARN, mirror, f"answers with HTTP {status} ({url}, {seconds:.2f} s)")
    return Finding("mirrors", OK, mirror, f"answers (HTTP {status} for {url}, {seconds:.2f} s)")


# --------------------------------------------------------------------------------------------- engines

def _version(module: str, distributions) -> str | None:
    """The installed version of ``module`` ("?" when present without metadata), None when absent."""
    try:
        if importlib.util.find_spec(module) is None:
            return None
    except (ImportError, ValueError):
        return None
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "?"


def _keras_backend() -> tuple[str, str]:
    """The backend Keras will use, and where that comes from (without importing Keras)."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"], "KERAS_BACKEND"
    home = Path(os.environ.get("KERAS_HOME") or Path("~/.keras").expanduser())
    config = home / "keras.json"
    try:
        backend = json.loads(config.read_text()).get("backend")
        if backend:
            return backend, str(config)
    except (OSError, ValueError, AttributeError):
        pass
    return "tensorflow", "Keras' default"


def check_engines() -> list[Finding]:
    found = []
    for label, module, distributions in REQUIRED:
        version = _version(module, distributions)
        found.append(Finding("engines", OK if version else FAIL, label,
                             version if version else "not installed (kzoo needs it)"))
    backend, origin = _keras_backend()
    module = BACKEND_MODULES.get(backend)
    if module is None:
        found.append(Finding("engines", FAIL, "keras backend", f"{backend!r} (from {origin}) is not a Keras backend"))
    else:
        version = _version(module, next((d for _, m, d in ENGINES + REQUIRED if m == module), (module,)))
        found.append(Finding("engines", OK if version else FAIL, "keras backend",
                             f"{backend} (from {origin})" + ("" if version else f", but {module} is not installed")))
    for label, module, distributions in ENGINES:
        version = _version(module, distributions)
        found.append(Finding("engines", OK if version else INFO, label, version or "not installed (optional)"))
    return found


# --------------------------------------------------------------------------------------------- the report

def run_checks(timeout: float = 5.0, rehash: bool = False) -> list[Finding]:
    """Every check, in report order. A check that raises a kzoo error (a broken user registry or pin
    file) becomes a finding, so one problem does not hide the rest: a failure already named under
    "config" is not counted twice, the section says it could not be checked and why."""
    from kzoo.errors import KzooError

    findings = check_config()
    damaged = [f for f in findings if f.status == FAIL]
    for section, check in (("cache", check_cache), ("files", lambda: check_files(rehash)), ("pins", check_pins),
                           ("mirrors", lambda: check_mirrors(timeout)), ("engines", check_engines)):
        try:
            findings += check()
        except (KzooError, OSError) as e:
            cause = next((f for f in damaged if f.subject in str(e)), None)
            if cause is not None:
                findings.append(Finding(section, WARN, section, f"not checked: {cause.subject} is damaged (see "
                                                                 f"config above)"))
            else:
                findings.append(Finding(section, FAIL, section, f"{type(e).__name__}: {e}"))
    return findings


def render(findings: list[Finding]) -> str:
    lines, section = [], None
    for f in findings:
        if f.section != section:
            section = f.section
            lines += [""] if lines else []
            lines.append(f"{section}:")
        lines.append(f"  {f.status.upper():<5} {f.subject}" + (f": {f.detail}" if f.detail else ""))
    failed = sum(f.status == FAIL for f in findings)
    warned = sum(f.status == WARN for f in findings)
    lines.append("")
    lines.append(f"{failed} failed, {warned} warnings" if failed or warned else "all well")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each mirror (default 5)")
    parser.add_argument("--rehash", action="store_true",
                        help="re-hash every cached file (default: trust the verified-result memo for unchanged files)")


def report(args) -> int:
    findings = run_checks(timeout=args.timeout, rehash=args.rehash)
    if args.json:
        print(json.dumps([asdict(f) for f in findings], indent=1))
    else:
        print(render(findings))
    return 1 if any(f.status == FAIL for f in findings) else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kzoo.selfcheck", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return report(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
