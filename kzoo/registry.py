"""The weight registry: every known weight file, where it comes from, and the hashes that prove it.

The shipped registry is ``kzoo/weights_registry.json`` (schema: ``weights_registry.schema.json``).
Users add or override entries with JSON files of the same schema listed in ``KZOO_REGISTRY``
(``os.pathsep``-separated); an entry with an existing id replaces it. Everything is parsed once per
process and re-read only when ``KZOO_REGISTRY`` or one of its files changes.

Files that no source pins (MobileNet v1/v2, the TI-ONE checkpoints) are trust-on-first-use
(``trust == "tofu"``): the first verified download records its sha256 in the user pin file
(``KZOO_PINS``, default ``$XDG_CONFIG_HOME/kzoo/pins.json``, i.e. ``~/.config/kzoo/pins.json``),
and later loads are checked against it (``record_pin`` / ``pinned_sha256``).

Schema validation lives in ``kzoo.registry_schema`` and the pin file in ``kzoo.pins``; the names from
them that callers use are re-exported here.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from kzoo import index, pins
from kzoo.errors import RegistryError, UnknownWeights
# Also part of this module's API, as before they moved: ENV_PINS, pins_path, user_pins, SCHEMA_PATH, schema_errors.
from kzoo.pins import ENV_PINS, SHA256_HEX, pins_path, user_pins  # noqa: F401
from kzoo.registry_schema import SCHEMA_PATH, load_schema, read_json, schema_errors

SCHEMA_VERSION = 1
REGISTRY_PATH = Path(__file__).with_name("weights_registry.json")
ENV_REGISTRY = "KZOO_REGISTRY"

_REQUIRED = ("id", "model", "tag", "include_top", "file_name", "urls", "format")
_HEX = {"md5": re.compile(r"^[0-9a-f]{32}$"), "sha256": SHA256_HEX}


# ------------------------------------------------------------------------------------------ the entry

@dataclass(frozen=True)
class WeightsEntry:
    """One weight file. Unknown facts are None; ``variant`` holds the builder arguments that pick it."""

    id: str
    model: str
    tag: str
    include_top: bool
    variant: dict
    file_name: str
    urls: tuple
    md5: str | None
    sha256: str | None
    size: int | None
    format: str
    origin: str | None
    license: str | None
    preprocessing: str | None
    input_size: int | None
    num_classes: int | None
    superseded_by: str | None
    conversion: dict | None
    trust: str
    available_in: tuple = ()
    source: str | None = None
    notes: str | None = None
    legacy: dict | None = None  # how a superseded Keras layout loads (kzoo.formats.keras_legacy)
    defined_in: str | None = None  # the registry file this entry came from (not part of the JSON)

    def __hash__(self):  # dict fields make the generated hash impossible; the id + hashes identify a file
        return hash((self.id, self.file_name, self.md5, self.sha256))

    @property
    def pinned(self) -> bool:
        """True when the registry itself pins a hash (md5 or sha256)."""
        return bool(self.md5 or self.sha256)

    @property
    def superseded(self) -> bool:
        return self.superseded_by is not None

    @property
    def hashes(self) -> dict:
        """The hashes the registry pins, by algorithm (sha256 first)."""
        return {a: h for a, h in (("sha256", self.sha256), ("md5", self.md5)) if h}

    @property
    def hash_for_display(self) -> str:
        """``sha256:…`` when known, else ``md5:…``, else the trust-on-first-use note."""
        if self.sha256:
            return f"sha256:{self.sha256}"
        if self.md5:
            return f"md5:{self.md5}"
        return "unpinned, trusted on first use"

    @property
    def trust_for_display(self) -> str:
        if self.pinned:
            return "pinned (" + ", ".join(self.hashes) + ")"
        pin = pinned_sha256(self)
        if pin:
            return f"unpinned, trusted on first use (recorded sha256:{pin} in {pins_path()})"
        return "unpinned, trusted on first use (nothing recorded yet)"

    @property
    def variant_text(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.variant.items())

    def to_dict(self) -> dict:
        """The JSON form (what a user registry file holds)."""
        data = dataclasses.asdict(self)
        data.pop("defined_in")
        data["urls"] = list(self.urls)
        data["available_in"] = list(self.available_in)
        if data["notes"] is None:
            data.pop("notes")
        if data["legacy"] is None:
            data.pop("legacy")
        return data

    def matches_variant(self, variant: Mapping) -> bool:
        """Every requested key this entry is split on has the requested value (1 == 1.0)."""
        for key, want in variant.items():
            if key in self.variant and not _same_value(self.variant[key], want):
                return False
        return True


def _same_value(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b and type(a) is type(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) < 1e-9
    return a == b


# ------------------------------------------------------------------------------------------ parsing

def _entry_label(raw: Any, index: int) -> str:
    if isinstance(raw, dict) and isinstance(raw.get("id"), str):
        return f"entry {index} ({raw['id']!r})"
    return f"entry {index}"


def _parse_file(path: Path, validate: bool) -> list[WeightsEntry]:
    """Read one registry file into entries; every problem is a RegistryError naming file and entry."""
    try:
        if validate:  # a user's file: read strictly (duplicate keys, deep nesting, bad bytes are errors)
            doc = read_json(path, "Registry file", f"Fix the file or remove it from ${ENV_REGISTRY}.")
        else:  # the shipped registry, validated by the test suite: the plain parser is 3x faster
            doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RegistryError(f"Registry file {path} cannot be read ({exc}). Fix or remove it from "
                            f"${ENV_REGISTRY}.") from exc
    if not isinstance(doc, dict) or doc.get("schema_version") != SCHEMA_VERSION:
        found = doc.get("schema_version") if isinstance(doc, dict) else type(doc).__name__
        raise RegistryError(f"Registry file {path}: schema_version must be {SCHEMA_VERSION} (found {found!r}); "
                            f"see {SCHEMA_PATH.name} for the format.")
    raw_entries = doc.get("entries")
    if not isinstance(raw_entries, list):
        raise RegistryError(f"Registry file {path}: 'entries' must be a list of entries (see {SCHEMA_PATH.name}).")
    if validate:
        schema = load_schema()
        top_errors = schema_errors({k: v for k, v in doc.items() if k != "entries"} | {"entries": []}, schema)
        if top_errors:
            raise RegistryError(f"Registry file {path}: {'; '.join(top_errors)}")
        entry_schema = schema["$defs"]["entry"]
    entries, seen = [], set()
    for index, raw in enumerate(raw_entries):
        label = _entry_label(raw, index)
        if validate:
            problems = schema_errors(raw, entry_schema, schema, path=f"entries[{index}]")
            if problems:
                raise RegistryError(f"Registry file {path}, {label}: {'; '.join(problems[:5])}. "
                                    f"Fix the entry (format: {SCHEMA_PATH.name}).")
        try:
            entry = _make_entry(raw, str(path))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RegistryError(f"Registry file {path}, {label}: {exc}. Fix the entry "
                                f"(format: {SCHEMA_PATH.name}).") from exc
        if entry.id in seen:
            raise RegistryError(f"Registry file {path}, {label}: duplicate id {entry.id!r}. Give each entry its own id.")
        seen.add(entry.id)
        entries.append(entry)
    return entries


def _make_entry(raw: dict, defined_in: str) -> WeightsEntry:
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise ValueError(f"missing required field(s) {missing}")
    hashes = {}
    for algorithm, rx in _HEX.items():
        value = raw.get(algorithm)
        if value is not None:
            value = str(value).lower()
            if not rx.match(value):
                digits = 32 if algorithm == "md5" else 64
                raise ValueError(f"{algorithm} {raw.get(algorithm)!r} is not a {digits}-digit hex string")
        hashes[algorithm] = value
    pinned = bool(hashes["md5"] or hashes["sha256"])
    trust = raw.get("trust") or ("pinned" if pinned else "tofu")
    if trust == "pinned" and not pinned:
        raise ValueError("trust is 'pinned' but neither md5 nor sha256 is given (use trust 'tofu')")
    if trust == "tofu" and pinned:
        raise ValueError("trust is 'tofu' but a hash is given (use trust 'pinned')")
    if raw["tag"].endswith("_notop"):
        raise ValueError(f"tag {raw['tag']!r} must not end in '_notop' (include_top says that)")
    urls = raw["urls"]
    if isinstance(urls, str) or not all(isinstance(u, str) for u in urls):
        raise ValueError("urls must be a list of strings")
    variant = dict(raw.get("variant") or {})
    conversion = raw.get("conversion")
    return WeightsEntry(
        id=raw["id"], model=raw["model"].lower(), tag=raw["tag"], include_top=bool(raw["include_top"]),
        variant=variant, file_name=raw["file_name"], urls=tuple(urls), md5=hashes["md5"],
        sha256=hashes["sha256"], size=raw.get("size"), format=raw["format"], origin=raw.get("origin"),
        license=raw.get("license"), preprocessing=raw.get("preprocessing"), input_size=raw.get("input_size"),
        num_classes=raw.get("num_classes"), superseded_by=raw.get("superseded_by"),
        conversion=dict(conversion) if conversion else None, trust=trust,
        available_in=tuple(raw.get("available_in") or ()), source=raw.get("source"), notes=raw.get("notes"),
        legacy=dict(raw["legacy"]) if raw.get("legacy") else None,
        defined_in=defined_in,
    )


# ------------------------------------------------------------------------------------------ the registry

class Registry(Mapping):
    """Read-only ``{id: WeightsEntry}`` in file order (shipped entries first, then user additions)."""

    def __init__(self, entries: list[WeightsEntry], files: tuple = ()):
        self._by_id = {e.id: e for e in entries}
        self.files = files
        self._by_model: dict[str, list[WeightsEntry]] = {}
        self._by_hash: dict[str, list[WeightsEntry]] = {}
        for e in self._by_id.values():
            self._by_model.setdefault(e.model, []).append(e)
            for h in e.hashes.values():
                self._by_hash.setdefault(h, []).append(e)

    def __getitem__(self, key: str) -> WeightsEntry:
        return self._by_id[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    @property
    def entries(self) -> list[WeightsEntry]:
        return list(self._by_id.values())

    def for_model(self, model: str) -> list[WeightsEntry]:
        return list(self._by_model.get(model, ()))

    def by_hash(self, digest: str) -> list[WeightsEntry]:
        return list(self._by_hash.get(digest.lower(), ()))


_lock = threading.Lock()
_cache: dict[tuple, Registry] = {}


def _user_files() -> list[Path]:
    value = os.environ.get(ENV_REGISTRY, "")
    return [Path(p).expanduser() for p in value.split(os.pathsep) if p.strip()]


def _file_key(path: Path) -> tuple:
    try:
        st = path.stat()
        return (str(path), st.st_mtime_ns, st.st_size)
    except OSError:
        return (str(path), None, None)


def load_registry() -> Registry:
    """The merged registry: shipped entries, then each ``KZOO_REGISTRY`` file in order (later wins).

    Cached per process; re-read when ``KZOO_REGISTRY`` or one of its files changes. The shipped file is
    trusted (the test suite validates it against the schema); user files are validated on every load.
    """
    user = _user_files()
    key = tuple(_file_key(p) for p in user)
    cached = _cache.get(key)
    if cached is not None:
        return cached
    with _lock:
        if key in _cache:
            return _cache[key]
        merged = {e.id: e for e in _shipped_entries()}
        for path in user:
            if not path.is_file():
                raise RegistryError(f"Registry file {path} (listed in ${ENV_REGISTRY}) does not exist. "
                                    f"Create it or remove it from ${ENV_REGISTRY}.")
            for entry in _parse_file(path, validate=True):
                merged[entry.id] = entry  # a user entry overrides a shipped one with the same id
        for entry in merged.values():
            if entry.superseded_by is not None and entry.superseded_by not in merged:
                raise RegistryError(f"Registry file {entry.defined_in}, entry {entry.id!r}: superseded_by "
                                    f"{entry.superseded_by!r} is not an entry id. Fix superseded_by.")
        registry = Registry(list(merged.values()), tuple(str(p) for p in user))
        _cache.clear()  # only the current configuration is worth keeping
        _cache[key] = registry
        return registry


_shipped: list[WeightsEntry] | None = None


def _shipped_entries() -> list[WeightsEntry]:
    global _shipped
    if _shipped is None:
        _shipped = _parse_file(REGISTRY_PATH, validate=False)
    return _shipped


def clear_cache() -> None:
    """Forget the parsed registry (tests; after editing a registry file in place within the same second)."""
    global _shipped
    with _lock:
        _cache.clear()
        _shipped = None


# ------------------------------------------------------------------------------------------ look-ups

def _canonical_model(model: str) -> str:
    return index.normalise(model)  # aliases (efficientnet_b0 -> efficientnetb0) without importing Keras


def get_entry(entry_id: str) -> WeightsEntry:
    """The entry with this id; UnknownWeights (with close ids) when there is none."""
    registry = load_registry()
    try:
        return registry[entry_id]
    except KeyError:
        close = difflib.get_close_matches(entry_id, list(registry), n=5, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownWeights(f"No weights entry {entry_id!r}.{hint} Run `kzoo list` to see every id."
                             f"{_overlays_text(registry)}") from None


def _overlays_text(registry: Registry) -> str:
    """Where user entries came from, for a look-up that failed (an edited or damaged overlay may be why)."""
    if not registry.files:
        return ""
    return f" User entries are read from ${ENV_REGISTRY}: {', '.join(registry.files)}."


def _candidates(model: str, tag: str, include_top: bool, variant: dict) -> list[WeightsEntry]:
    registry = load_registry()
    entries = [e for e in registry.for_model(_canonical_model(model)) if not e.superseded and e.tag == tag]
    exact = [e for e in entries if e.include_top == include_top and e.matches_variant(variant)]
    if exact or include_top:
        return exact
    # a checkpoint that carries the head also serves include_top=False (the converter drops the head)
    return [e for e in entries if e.include_top and (e.conversion or {}).get("include_top_optional")
            and e.matches_variant(variant)]


def resolve_weights(model: str, tag: str, include_top: bool, **variant) -> WeightsEntry:
    """The current (non-superseded) entry for ``model`` / ``tag`` / top-or-notop / variant.

    ``variant`` is matched as given (e.g. ``alpha=1.0, rows=224``): keys an entry is not split on are
    ignored, so ``resolve_weights("resnet50", "imagenet", False)`` needs no variant. The builder decides
    the variant the way keras.applications does (e.g. MobileNet's rows fall back to 224).
    Raises UnknownWeights when nothing, or more than one entry, matches.
    """
    found = _candidates(model, tag, include_top, variant)
    if len(found) == 1:
        return found[0]
    top = "include_top=True" if include_top else "include_top=False"
    asked = ", ".join(f"{k}={v!r}" for k, v in variant.items())
    request = f"model {model!r}, weights={tag!r}, {top}" + (f", {asked}" if asked else "")
    if found:
        options = "; ".join(f"{e.id} ({e.variant_text})" for e in found)
        raise UnknownWeights(f"Several weight files fit {request}: {options}. Pass the variant arguments "
                             f"(e.g. alpha=, rows=) that pick one.")
    same_model = [e for e in load_registry().for_model(_canonical_model(model)) if not e.superseded]
    if not same_model:
        raise UnknownWeights(f"No registered weights for {request}: kzoo has no weights for model "
                             f"{model!r}. Use weights=None or a path, or add an entry via ${ENV_REGISTRY}.")
    tags = sorted({e.tag for e in same_model})
    near = [e for e in same_model if e.tag == tag and e.include_top == include_top]
    if near:
        options = ", ".join(sorted({e.variant_text for e in near}))
        hint = f" Available variants: {options}."
    else:
        hint = f" Available tags for {model!r}: {', '.join(tags)}."
    raise UnknownWeights(f"No registered weights for {request}.{hint}")


def has_weights(model: str, tag: str, include_top: bool, **variant) -> bool:
    """True when at least one current entry fits (``resolve_weights`` may still ask for a variant)."""
    return bool(_candidates(model, tag, include_top, variant))


def list_weights(model: str | None = None, include_superseded: bool = False) -> list[WeightsEntry]:
    """Entries in registry order, for one model or all; superseded releases only on request."""
    registry = load_registry()
    entries = registry.for_model(_canonical_model(model)) if model else registry.entries
    return [e for e in entries if include_superseded or not e.superseded]


def identify(sha256: str | None = None, md5: str | None = None) -> list[WeightsEntry]:
    """Every entry (superseded ones included) that the given digest(s) identify.

    An entry matches when each hash both sides know agrees and at least one is shared; a sha256
    recorded in the user pin file counts for a trust-on-first-use entry.
    """
    if not sha256 and not md5:
        raise ValueError("identify() needs sha256 or md5")
    sha256, md5 = (sha256 or "").lower() or None, (md5 or "").lower() or None
    registry = load_registry()
    found: dict[str, WeightsEntry] = {}
    for digest in (sha256, md5):
        if digest:
            for e in registry.by_hash(digest):
                if (not sha256 or not e.sha256 or e.sha256 == sha256) and (not md5 or not e.md5 or e.md5 == md5):
                    found.setdefault(e.id, e)
    if sha256:
        for entry_id, pin in user_pins().items():
            entry = registry.get(entry_id)
            if entry is not None and not entry.pinned and pin.get("sha256") == sha256 \
                    and pin.get("file_name") in (None, entry.file_name):
                found.setdefault(entry.id, entry)
    return [e for e in registry.values() if e.id in found]


# ------------------------------------------------------------------------------------------ user pins (TOFU)
# The pin file is kzoo.pins; these accept a registered id too, which kzoo.pins cannot resolve.

def _as_entry(entry):
    """An entry, from an entry or an id; an unregistered id stays a bare id (pins are keyed by id)."""
    if isinstance(entry, str):
        return load_registry().get(entry, entry)
    return entry


def pinned_sha256(entry) -> str | None:
    """The sha256 to check ``entry`` (an entry or its id) against: the registry's, else the user pin."""
    return pins.pinned_sha256(_as_entry(entry))


def record_pin(entry, sha256: str, size: int | None = None, source: str | None = None) -> Path:
    """Remember the sha256 of the first verified download of ``entry`` (an entry or its id).

    Re-recording the same hash is a no-op. A different hash for an already-pinned entry raises
    HashMismatch: trust on first use means the first answer is the one kept.
    """
    return pins.record_pin(_as_entry(entry), sha256, size=size, source=source)
