"""Trust-on-first-use pins: the sha256 of weight files that no source pins, recorded on first use.

The first verified download of a ``trust == "tofu"`` file records its sha256 in the user pin file
(``KZOO_PINS``, default ``$XDG_CONFIG_HOME/kzoo/pins.json``, i.e. ``~/.config/kzoo/pins.json``), and
later loads are checked against it. Pins are keyed by entry id. This module takes entries as given and
never reads the registry; ``kzoo.registry`` wraps ``pinned_sha256`` / ``record_pin`` to accept a
registered id as well.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import tempfile
from pathlib import Path

from kzoo.errors import HashMismatch, RegistryError

ENV_PINS = "KZOO_PINS"
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def pins_path() -> Path:
    """The user pin file: ``$KZOO_PINS``, else ``$XDG_CONFIG_HOME/kzoo/pins.json`` (``~/.config/kzoo``)."""
    explicit = os.environ.get(ENV_PINS)
    if explicit:
        return Path(explicit).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(config) / "kzoo" / "pins.json"


def _load_pins(path: Path | None = None) -> dict:
    path = path or pins_path()
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as exc:
        raise RegistryError(f"Pin file {path} is unreadable ({exc}). Fix or delete it; pins are re-recorded "
                            f"on the next verified download.") from exc
    pins = doc.get("pins") if isinstance(doc, dict) else None
    if not isinstance(pins, dict):
        raise RegistryError(f"Pin file {path} has no 'pins' object. Fix or delete it.")
    return pins


def pinned_sha256(entry) -> str | None:
    """The sha256 to check ``entry`` against: the registry's, else the user pin.

    ``entry`` is a registry entry, or a bare id (a string) for one the registry does not hold;
    ``kzoo.registry.pinned_sha256`` also takes a registered id.
    """
    if isinstance(entry, str):
        return (_load_pins().get(entry) or {}).get("sha256")
    if entry.sha256:
        return entry.sha256
    pin = _load_pins().get(entry.id)
    if pin and pin.get("file_name") in (None, entry.file_name):
        return pin.get("sha256")
    return None


def record_pin(entry, sha256: str, size: int | None = None, source: str | None = None) -> Path:
    """Remember the sha256 of the first verified download of ``entry`` (as in ``pinned_sha256``).

    Re-recording the same hash is a no-op. A different hash for an already-pinned entry raises
    HashMismatch: trust on first use means the first answer is the one kept.
    """
    entry_id, file_name = (entry, None) if isinstance(entry, str) else (entry.id, entry.file_name)
    sha256 = sha256.lower()
    if not SHA256_HEX.match(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    if not isinstance(entry, str) and entry.sha256 and entry.sha256 != sha256:
        raise HashMismatch(f"Weights '{entry.id}' ({entry.file_name}): the registry pins sha256 {entry.sha256}, "
                           f"refusing to record {sha256}.")
    path = pins_path()
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        pins = _load_pins(path)
        old = pins.get(entry_id)
        if old and old.get("file_name") in (None, file_name):
            if old.get("sha256") == sha256:
                return path
            raise HashMismatch(
                f"Weights '{entry_id}' ({file_name or old.get('file_name')}): the pin file {path} recorded "
                f"sha256 {old.get('sha256')} on first use, now {sha256}. If the new file is right, delete "
                f"the '{entry_id}' pin from {path} and fetch again.")
        pins[entry_id] = {
            "sha256": sha256, "size": size, "file_name": file_name, "source": source,
            "recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".pins.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump({"schema_version": 1, "pins": pins}, out, indent=1, sort_keys=True)
                out.write("\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return path


def user_pins() -> dict:
    """``{entry id: {"sha256", "size", "file_name", "source", "recorded"}}`` from the user pin file."""
    return dict(_load_pins())
