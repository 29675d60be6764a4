"""Trust-on-first-use pins: the sha256 of weight files that no source pins, recorded on first use.

The first verified download of a ``trust == "tofu"`` file records its sha256 in the user pin file
(``KZOO_PINS``, default ``$XDG_CONFIG_HOME/kzoo/pins.json``, i.e. ``~/.config/kzoo/pins.json``), and
later loads are checked against it. Pins are keyed by entry id. This module takes entries as given and
never reads the registry; ``kzoo.registry`` wraps ``pinned_sha256`` / ``record_pin`` to accept a
registered id as well.

The pin file is where trust comes from, so it is read strictly: anything but a ``{"schema_version": 1,
"pins": {id: {"sha256", "size", "file_name", "source", "recorded", "check"}}}`` document is a RegistryError
naming the file. Each pin recorded by kzoo carries ``check``, a digest of its id, sha256 and file name: a
damaged file whose JSON still parses (one flipped character in an id would unpin the entry, and the next
download would be trusted afresh) is then an error instead. The check guards against damage, not against
someone who can write the file. A pin written by hand may leave ``check`` out.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

from kzoo.errors import HashMismatch, RegistryError
from kzoo.registry_schema import read_json

ENV_PINS = "KZOO_PINS"
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_PIN_FIELDS = {"sha256", "size", "file_name", "source", "recorded", "check"}
_FIX = ("Restore it from a backup, or delete the damaged pin (or the file): a pin is recorded again on the next "
        "verified download, which is then trusted on first use.")


def pins_path() -> Path:
    """The user pin file: ``$KZOO_PINS``, else ``$XDG_CONFIG_HOME/kzoo/pins.json`` (``~/.config/kzoo``)."""
    explicit = os.environ.get(ENV_PINS)
    if explicit:
        return Path(explicit).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(config) / "kzoo" / "pins.json"


def pin_check(entry_id: str, sha256: str, file_name: str | None) -> str:
    """The ``check`` of a pin: a digest of what the pin asserts (id, sha256, file name)."""
    text = json.dumps([entry_id, sha256.lower(), file_name], separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _pin_problem(entry_id: str, pin) -> str | None:
    if not isinstance(pin, dict):
        return f"is {type(pin).__name__}, not an object"
    unknown = sorted(set(pin) - _PIN_FIELDS)
    if unknown:
        return f"has unknown field(s) {unknown}"
    sha256 = pin.get("sha256")
    if not isinstance(sha256, str) or not SHA256_HEX.match(sha256.lower()):
        return f"sha256 {sha256!r} is not a 64-digit hex string"
    file_name = pin.get("file_name")
    if file_name is not None and not (isinstance(file_name, str) and file_name):
        return f"file_name {file_name!r} is not a file name"
    size = pin.get("size")
    if size is not None and (type(size) is not int or size < 0):
        return f"size {size!r} is not a number of bytes"
    for key in ("source", "recorded"):
        if not isinstance(pin.get(key), (str, type(None))):
            return f"{key} {pin.get(key)!r} is not text"
    if "check" in pin and pin["check"] != pin_check(entry_id, sha256, file_name):
        return ("its check does not match its id, sha256 and file name (the file was damaged, or edited by "
                "hand: a hand-edited pin may leave 'check' out)")
    return None


def _load_pins(path: Path | None = None) -> dict:
    path = path or pins_path()
    try:
        doc = read_json(path, "Pin file", _FIX)
    except FileNotFoundError:
        return {}
    pins = doc.get("pins") if isinstance(doc, dict) else None
    if not isinstance(pins, dict):
        raise RegistryError(f"Pin file {path} has no 'pins' object. {_FIX}")
    unknown = sorted(set(doc) - {"schema_version", "pins"})
    if unknown:
        raise RegistryError(f"Pin file {path} has unknown field(s) {unknown}. {_FIX}")
    version = doc.get("schema_version", 1)
    if type(version) is not int or version != 1:
        raise RegistryError(f"Pin file {path}: schema_version must be 1 (found {version!r}). {_FIX}")
    for entry_id, pin in pins.items():
        problem = _pin_problem(entry_id, pin)
        if problem:
            raise RegistryError(f"Pin file {path}, pin {entry_id!r}: {problem}. {_FIX}")
    return pins


def pinned_sha256(entry) -> str | None:
    """The sha256 to check ``entry`` against: the registry's, else the user pin.

    ``entry`` is a registry entry, or a bare id (a string) for one the registry does not hold;
    ``kzoo.registry.pinned_sha256`` also takes a registered id.
    """
    if isinstance(entry, str):
        pin = _load_pins().get(entry)
        return pin["sha256"].lower() if pin else None
    if entry.sha256:
        return entry.sha256
    pin = _load_pins().get(entry.id)
    if pin and pin.get("file_name") in (None, entry.file_name):
        return pin["sha256"].lower()
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
        raise HashMismatch(f"Weights '{entry.id}' ({entry.file_name}): the registry pins sha256 {entry.sha256}"
                           f"{f' (in {entry.defined_in})' if getattr(entry, 'defined_in', None) else ''}, "
                           f"refusing to record {sha256}.")
    path = pins_path()
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        pins = _load_pins(path)
        old = pins.get(entry_id)
        if old and old.get("file_name") in (None, file_name):
            if old["sha256"].lower() == sha256:
                return path
            raise HashMismatch(
                f"Weights '{entry_id}' ({file_name or old.get('file_name')}): the pin file {path} recorded "
                f"sha256 {old.get('sha256')} on first use, now {sha256}. If the new file is right, delete "
                f"the '{entry_id}' pin from {path} and fetch again.")
        pins[entry_id] = {
            "sha256": sha256, "size": size, "file_name": file_name, "source": source,
            "recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "check": pin_check(entry_id, sha256, file_name),
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
