"""The weight registry: its JSON against the schema, against every pin in the installed Keras / tf_keras
source, against the TI-ONE seed, and the look-up / user-file / trust-on-first-use behaviour."""

import ast
import copy
import importlib.util
import json
import os
import re
from pathlib import Path

import pytest

from kzoo import registry
from kzoo.errors import HashMismatch, RegistryError, UnknownWeights

SHARED = Path(os.environ.get("KZOO_SHARED_DIR", "/work/shared"))
REFERENCE = SHARED / "reference" / "keras_weights.md"
TIONE_SEED = SHARED / "seeds" / "000_06304e50f596cd10.txt"

# The 16 TI-ONE image-classification checkpoints, as listed in the seed (checked against the seed
# file itself when it is available).
TIONE_URLS = [
    "https://coronet-1256322946.cos.ap-chengdu.myqcloud.com/pretrain/tf/cv/classification/" + path
    for path in (
        "resnet/resnet_v1_50.ckpt", "resnet/resnet_v1_101.ckpt", "resnet/resnet_v1_152.ckpt",
        "resnet/resnet_v2_50.ckpt", "resnet/resnet_v2_101.ckpt", "resnet/resnet_v2_152.ckpt",
        "vgg/vgg_16.ckpt", "vgg/vgg_19.ckpt",
        "inception/inception_v1.ckpt", "inception/inception_v2.ckpt", "inception/inception_v3.ckpt",
        "inception/inception_v4.ckpt",
        "mobilenet_v2/mobilenet_v2_1.0_224.tgz", "mobilenet_v2/mobilenet_v2_1.4_224.tgz",
        "nasnet/nasnet-a_mobile_04_10_2017.tar.gz", "shufflenet/shufflenet_v2_0.5x.tar.gz",
    )
]
NOT_WEIGHTS = {"imagenet_class_index.json"}  # pinned by imagenet_utils.py; shipped in kzoo/data instead


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No user registry, a private pin file, and a fresh parse for every test."""
    monkeypatch.delenv(registry.ENV_REGISTRY, raising=False)
    monkeypatch.setenv(registry.ENV_PINS, str(tmp_path / "pins.json"))
    registry.clear_cache()
    yield
    registry.clear_cache()


@pytest.fixture(scope="module")
def raw_doc():
    return json.loads(registry.REGISTRY_PATH.read_text(encoding="utf-8"))


def current_entries():
    return [e for e in registry.list_weights()]


# --------------------------------------------------------------------------------------- schema

def test_shipped_registry_matches_its_schema(raw_doc):
    assert registry.schema_errors(raw_doc) == []
    schema = json.loads(registry.SCHEMA_PATH.read_text())
    every_field = set(schema["$defs"]["entry"]["properties"]) - {"notes", "legacy"}  # optional: notes, old layouts
    for raw in raw_doc["entries"]:
        assert every_field <= set(raw), f"{raw['id']} lacks {every_field - set(raw)} (unknown must be null)"


@pytest.mark.parametrize("mutate, message", [
    (lambda e: e.update(md5="xyz"), "does not match"),
    (lambda e: e.update(sha256="A" * 63), "does not match"),
    (lambda e: e.update(size="12"), "expected integer"),
    (lambda e: e.update(include_top="yes"), "expected boolean"),
    (lambda e: e.update(format="pickle"), "is not one of"),
    (lambda e: e.update(colour="blue"), "unknown field"),
    (lambda e: e.pop("file_name"), "missing required field"),
    (lambda e: e.update(urls=["ftp://x/y.h5"]), "does not match"),
    (lambda e: e.update(variant={"alpha": [1]}), "expected number or string or boolean"),
    (lambda e: e.update(conversion={"converter": "slim"}), "missing required field 'family'"),
])
def test_schema_validator_rejects_bad_entries(raw_doc, mutate, message):
    doc = {"schema_version": 1, "entries": [copy.deepcopy(raw_doc["entries"][0])]}
    mutate(doc["entries"][0])
    errors = registry.schema_errors(doc)
    assert errors and any(message in e for e in errors), errors


def test_schema_validator_refuses_keywords_it_does_not_check():
    with pytest.raises(RegistryError, match="oneOf"):
        registry.schema_errors({}, {"oneOf": [{"type": "string"}]})


# --------------------------------------------------------------------------------------- internal consistency

def test_ids_are_unique_and_follow_the_scheme(raw_doc):
    ids = [e["id"] for e in raw_doc["entries"]]
    assert len(ids) == len(set(ids))
    for e in raw_doc["entries"]:
        base, _, release = e["id"].partition("@")
        stem, _, tail = base.rpartition(".")
        assert tail == e["tag"] + ("" if e["include_top"] else "_notop"), e["id"]
        assert stem.startswith(e["model"]), e["id"]
        assert bool(release) == (e["superseded_by"] is not None), e["id"]


def test_trust_agrees_with_the_hashes(raw_doc):
    for e in raw_doc["entries"]:
        if e["trust"] == "tofu":
            assert e["md5"] is None and e["sha256"] is None, e["id"]
        else:
            assert e["trust"] == "pinned" and (e["md5"] or e["sha256"]), e["id"]
        if e["md5"] is not None:
            assert re.fullmatch(r"[0-9a-f]{32}", e["md5"]), e["id"]
        if e["sha256"] is not None:
            assert re.fullmatch(r"[0-9a-f]{64}", e["sha256"]), e["id"]


def test_superseded_entries_point_at_a_current_entry(raw_doc):
    by_id = {e["id"]: e for e in raw_doc["entries"]}
    superseded = [e for e in raw_doc["entries"] if e["superseded_by"]]
    assert len(superseded) >= 40
    for e in superseded:
        seen, target = {e["id"]}, by_id[e["superseded_by"]]
        while target["superseded_by"]:  # chains (v0.1 -> v0.2 -> current) end at a current entry
            assert target["id"] not in seen, f"cycle at {e['id']}"
            seen.add(target["id"])
            target = by_id[target["superseded_by"]]
        assert target["model"] == e["model"] and target["include_top"] == e["include_top"], e["id"]


def test_same_file_name_different_bytes_are_told_apart():
    # fchollet v0.2 ResNet50 and the current file share a cache name (keras-applications#138)
    legacy = registry.identify(md5="a7b3fe01876f51b976af0dea6bc144eb")
    assert [e.id for e in legacy] == ["resnet50.imagenet@dlm-v0.2"]
    assert legacy[0].file_name == registry.get_entry("resnet50.imagenet").file_name
    assert [e.id for e in registry.identify(md5="2cb95161c43110f7111970584f804107")] == ["resnet50.imagenet"]


def test_mobilenet_counts_as_the_reference_says():
    v1 = registry.list_weights("mobilenet")
    v2 = registry.list_weights("mobilenetv2")
    assert len(v1) == 32 and len(v2) == 44
    assert {(e.variant["alpha"], e.variant["rows"]) for e in v1} == {
        (a, r) for a in (0.25, 0.5, 0.75, 1.0) for r in (128, 160, 192, 224)}
    pairs_v2 = {(e.variant["alpha"], e.variant["rows"]) for e in v2}
    assert len(pairs_v2) == 22 and (1.4, 224) in pairs_v2 and (1.4, 96) not in pairs_v2
    assert all(e.trust == "tofu" and len(e.urls) == 1 for e in v1 + v2)


def test_entry_counts():
    everything = registry.list_weights(include_superseded=True)
    current = [e for e in everything if not e.superseded]
    assert len([e for e in current if e.format == "keras-h5" and "keras3" in e.available_in]) == 160
    assert len([e for e in current if e.available_in == ("tf_keras",)]) == 70  # RegNet 48 + ResNet-RS 22
    assert len([e for e in current if e.model.startswith("resnext")]) == 4
    assert len([e for e in everything if e.superseded]) == 54
    assert len([e for e in current if e.tag == "tione"]) == 18  # 16 classification checkpoints + 2 BERT archives


# --------------------------------------------------------------------------------------- Keras source pins

def applications_dir(package):
    spec = importlib.util.find_spec(package)  # the installed package, without importing it (no TF start-up)
    if spec is None or spec.origin is None:
        pytest.skip(f"{package} is not installed")
    return Path(spec.origin).parent / "src" / "applications"


HEX_LITERAL = re.compile(r"""["']([0-9a-f]{64}|[0-9a-f]{32})["']""")

# How each module that pins hashes in a dict turns the dict key into a file name (Keras' own rule).
DICT_NAMING = {
    "resnet.py": lambda k, top: f"{k}_weights_tf_dim_ordering_tf_kernels{'' if top else '_notop'}.h5",
    "mobilenet_v3.py": lambda k, top: f"weights_mobilenet_v3_{k}{'' if top else '_no_top_v2'}.h5",
    "efficientnet.py": lambda k, top: f"efficientnet{k}{'' if top else '_notop'}.h5",
    "efficientnet_v2.py": lambda k, top: f"efficientnetv2{k if k.startswith('-') else '-' + k}"
                                          f"{'' if top else '_notop'}.h5",
    "convnext.py": lambda k, top: f"{k}{'' if top else '_notop'}.h5",
    "regnet.py": lambda k, top: f"regnet{k}{'' if top else '_notop'}.h5",
    "resnet_rs.py": lambda k, top: k,
}


def _string_value(node, names):
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _string_value(node.left, names), _string_value(node.right, names)
        return left + right if left is not None and right is not None else None
    if isinstance(node, ast.JoinedStr):  # f"{BASE}name.h5" with plain names only
        parts = [_string_value(v.value if isinstance(v, ast.FormattedValue) else v, names) for v in node.values]
        return "".join(parts) if None not in parts else None
    return None


def _get_file_pins(body, names, out):
    """(file name, hash) of every ``get_file(<literal or local name>, ..., file_hash=<literal>)``."""
    names = dict(names)
    for stmt in body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            value = _string_value(stmt.value, names)
            if value is not None:
                names[stmt.targets[0].id] = value
        for node in ast.walk(stmt):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "get_file":
                kw = {k.arg: k.value for k in node.keywords}
                fname = node.args[0] if node.args else kw.get("fname")
                digest = kw.get("file_hash")
                fname, digest = _string_value(fname, names), _string_value(digest, {})
                if fname and digest:
                    out.add((fname, digest))
        for field in ("body", "orelse", "finalbody"):
            inner = getattr(stmt, field, None)
            if isinstance(inner, list) and not isinstance(stmt, (ast.FunctionDef, ast.ClassDef)):
                _get_file_pins(inner, names, out)
            elif isinstance(stmt, ast.FunctionDef) and field == "body":
                _get_file_pins(inner, names, out)
    return out


def source_pins(package):
    """[(module, file name, include_top, hash)] for every hash pinned in ``package``'s applications."""
    pins, constants = [], {}
    for path in sorted(applications_dir(package).glob("*.py")):
        text = path.read_text()
        literals = set(HEX_LITERAL.findall(text))
        if not literals:
            continue
        tree = ast.parse(text)
        module_names = {}
        found = set()
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                value = _string_value(node.value, module_names)
                if value is not None:
                    module_names[node.targets[0].id] = value
                if isinstance(node.value, ast.Dict):
                    try:
                        table = ast.literal_eval(node.value)
                    except ValueError:
                        continue
                    for key, value in table.items():
                        hashes = value if isinstance(value, tuple) else (value,)
                        if not all(isinstance(h, str) and h in literals for h in hashes):
                            continue
                        naming = DICT_NAMING[path.name]
                        for i, h in enumerate(hashes):
                            top = (i == 0) if isinstance(value, tuple) else "_notop" not in key
                            pins.append((path.name, naming(key, top), top, h))
                            found.add(h)
        for fname, h in _get_file_pins(tree.body, module_names, set()):
            if fname in NOT_WEIGHTS:
                found.add(h)
                continue
            pins.append((path.name, fname, "notop" not in fname and "no_top" not in fname, h))
            found.add(h)
        assert found == literals, f"{path.name}: hashes not understood by the test: {literals - found}"
        constants[path.name] = module_names
    return pins, constants


@pytest.mark.parametrize("package, expected", [("keras", 88), ("tf_keras", 158)])
def test_every_pin_in_the_installed_source_is_registered(package, expected):
    pins, _ = source_pins(package)
    assert len(pins) == expected  # ResNeXt's 4 pins included; the class index excluded
    current = current_entries()
    for module, fname, top, digest in pins:
        named = [e for e in current if e.file_name == fname]
        assert len(named) == 1, f"{package} {module}: {fname} has {len(named)} current entries"
        entry = named[0]
        assert entry.include_top == top, entry.id
        assert digest in (entry.md5, entry.sha256), f"{entry.id}: {package} {module} pins {digest}"
        algorithm = "sha256" if len(digest) == 64 else "md5"  # Keras' resolve_hasher("auto") rule
        assert getattr(entry, algorithm) == digest


@pytest.mark.parametrize("package", ["keras", "tf_keras"])
def test_first_url_is_the_one_keras_downloads(package):
    pins, constants = source_pins(package)
    for module, fname, _top, _digest in pins:
        entry = next(e for e in current_entries() if e.file_name == fname)
        strings = set(constants[module].values())
        url = entry.urls[0]
        by_base = any(url == base + fname for base in strings if base.endswith("/"))
        if module == "nasnet.py":  # the cache name is not the URL basename
            by_base = False
        if module == "resnet.py" and fname.startswith("resnext"):  # Keras 3 never downloads ResNeXt
            assert url.startswith("https://github.com/keras-team/keras-applications/releases/download/resnet/")
            continue
        assert url in strings or by_base, f"{entry.id}: {url} is not what {package} {module} fetches"


def test_mobilenet_file_names_follow_keras():
    source = (applications_dir("keras") / "mobilenet.py").read_text()
    assert '"mobilenet_%s_%d_tf.h5"' in source and '"mobilenet_%s_%d_tf_no_top.h5"' in source
    alpha_text = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}
    for a, text in alpha_text.items():
        assert f'alpha_text = "{text}"' in source
    base = re.search(r'BASE_WEIGHT_PATH = \(\s*"([^"]+)"', source).group(1)
    for e in registry.list_weights("mobilenet"):
        pattern = "mobilenet_%s_%d_tf.h5" if e.include_top else "mobilenet_%s_%d_tf_no_top.h5"
        assert e.file_name == pattern % (alpha_text[e.variant["alpha"]], e.variant["rows"])
        assert e.urls == (base + e.file_name,)
    source = (applications_dir("keras") / "mobilenet_v2.py").read_text()
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels" in source and "float(alpha)" in source
    base = re.search(r'BASE_WEIGHT_PATH = \(\s*"([^"]+)"', source).group(1)
    for e in registry.list_weights("mobilenetv2"):
        v = e.variant
        suffix = "" if e.include_top else "_no_top"
        assert e.file_name == f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(v['alpha'])}_{v['rows']}{suffix}.h5"
        assert e.urls == (base + e.file_name,)


@pytest.mark.skipif(not REFERENCE.is_file(), reason="shared reference notes not available")
def test_every_fact_is_quoted_from_a_source(raw_doc):
    """No hash or size is invented: each appears in the reference notes (or, for the tf_keras-only
    families the reference points to, in the tf_keras source)."""
    text = REFERENCE.read_text()
    tfk = ""
    if importlib.util.find_spec("tf_keras"):
        tfk = "".join(p.read_text() for p in applications_dir("tf_keras").glob("*.py"))
    for e in raw_doc["entries"]:
        for key in ("md5", "sha256"):
            if e[key]:
                assert e[key] in text or e[key] in tfk, f"{e['id']}: {key} {e[key]} has no source"
        if e["size"] is not None:
            assert f"**{e['size']}**" in text, f"{e['id']}: size {e['size']} is not a bold (strong) reference fact"


# --------------------------------------------------------------------------------------- TI-ONE

def test_tione_entries_follow_the_seed():
    entries = [e for e in registry.list_weights() if e.tag == "tione" and e.conversion["converter"] == "slim"]
    assert len(entries) == 16
    assert [u for e in entries for u in e.urls] == TIONE_URLS
    if TIONE_SEED.is_file():
        seed = TIONE_SEED.read_text(encoding="utf-8")
        classification = seed.split("## 图像分类")[1].split("## 目标检测")[0]
        assert re.findall(r"\((https://[^)]+)\)", classification) == TIONE_URLS
    names = {"resnet_v1_50", "resnet_v1_101", "resnet_v1_152", "resnet_v2_50", "resnet_v2_101", "resnet_v2_152",
             "vgg_16", "vgg_19", "inception_v1", "inception_v2", "inception_v3", "inception_v4",
             "mobilenet_v2", "mobilenet_v2_140", "nasnet_mobile", "shufflenet_v2_050"}
    assert {e.model for e in entries} == names
    for e in entries:
        assert e.format == "tf-checkpoint" and e.trust == "tofu" and e.md5 is e.sha256 is e.size is None
        assert e.include_top and e.conversion["converter"] == "slim"
        assert e.conversion["background_class"] == (e.num_classes == 1001)
        assert e.file_name == e.urls[0].rsplit("/", 1)[1]
    one_thousand = {e.model for e in entries if e.num_classes == 1000}
    assert one_thousand == {"resnet_v1_50", "resnet_v1_101", "resnet_v1_152", "vgg_16", "vgg_19",
                            "shufflenet_v2_050"}
    assert registry.get_entry("shufflenet_v2_050.tione").conversion["label_order"] == "ilsvrc_devkit"
    assert registry.get_entry("mobilenet_v2_140.tione").conversion["checkpoint"] == "mobilenet_v2_1.4_224.ckpt"
    # The seed's last list: Google's two BERT archives (kzoo/convert/google_bert.py).
    bert = [e for e in registry.list_weights() if e.tag == "tione" and e.conversion["converter"] == "google_bert"]
    assert [e.model for e in bert] == ["bert_base_chinese", "bert_base_uncased"]
    if TIONE_SEED.is_file():
        assert [e.urls[0] for e in bert] == re.findall(r"\((https://[^)]+)\)", seed.split("## BERT")[1])


# --------------------------------------------------------------------------------------- look-ups

def test_resolve_picks_the_current_file():
    assert registry.resolve_weights("resnet50", "imagenet", True).id == "resnet50.imagenet"
    assert registry.resolve_weights("ResNet50", "imagenet", False).id == "resnet50.imagenet_notop"
    e = registry.resolve_weights("mobilenet", "imagenet", False, alpha=0.25, rows=128)
    assert e.id == "mobilenet_0.25_128.imagenet_notop" and e.file_name == "mobilenet_2_5_128_tf_no_top.h5"
    assert registry.resolve_weights("mobilenetv2", "imagenet", True, alpha=1, rows=224).variant["alpha"] == 1.0
    e = registry.resolve_weights("mobilenetv3large", "imagenet", False, alpha=1.0, minimalistic=True)
    assert e.file_name == "weights_mobilenet_v3_large_minimalistic_224_1.0_float_no_top_v2.h5"
    assert registry.resolve_weights("nasnetlarge", "imagenet", True).file_name == "nasnet_large.h5"


def test_resolve_explains_what_is_missing():
    with pytest.raises(UnknownWeights, match="Several weight files.*rows"):
        registry.resolve_weights("mobilenet", "imagenet", True, alpha=1.0)
    with pytest.raises(UnknownWeights, match="Available variants"):
        registry.resolve_weights("mobilenetv2", "imagenet", False, alpha=1.4, rows=96)  # keras#16452
    with pytest.raises(UnknownWeights, match="Available tags for 'resnet50': imagenet"):
        registry.resolve_weights("resnet50", "tione", True)
    with pytest.raises(UnknownWeights, match="no weights for model"):
        registry.resolve_weights("nosuchnet", "imagenet", True)
    assert not registry.has_weights("mobilenetv2", "imagenet", True, alpha=1.3, rows=128)
    assert registry.has_weights("mobilenetv2", "imagenet", True, alpha=1.3, rows=224)


def test_a_checkpoint_with_a_head_also_serves_include_top_false():
    e = registry.resolve_weights("resnet_v1_50", "tione", False)
    assert e.id == "resnet_v1_50.tione" and e.include_top
    assert registry.resolve_weights("mobilenet_v2_140", "tione", False, alpha=1.4, rows=224).id == "mobilenet_v2_140.tione"
    assert not registry.has_weights("mobilenet_v2", "tione", True, alpha=1.4)


def test_list_and_get():
    assert all(not e.superseded for e in registry.list_weights())
    legacy = [e for e in registry.list_weights("resnet50", include_superseded=True) if e.superseded]
    assert {e.id for e in legacy} >= {"resnet50.imagenet@dlm-v0.2", "resnet50.imagenet@dlm-v0.1-th"}
    with pytest.raises(UnknownWeights, match="resnet50.imagenet_notop"):
        registry.get_entry("resnet50.imagenet_notp")
    e = registry.get_entry("convnexttiny.imagenet")
    assert e.hash_for_display.startswith("sha256:8ae6e78c") and e.pinned
    assert registry.get_entry("mobilenet_1.0_224.imagenet").hash_for_display == "unpinned, trusted on first use"
    assert registry.load_registry() is registry.load_registry()  # parsed once


def test_identify_needs_every_known_hash_to_agree():
    convnext = registry.get_entry("convnexttiny.imagenet")
    assert registry.identify(sha256=convnext.sha256) == [convnext]
    assert registry.identify(sha256=convnext.sha256.upper()) == [convnext]
    xception = registry.get_entry("xception.imagenet")  # md5 (Keras) and sha256 (LFS pointer) known
    assert registry.identify(md5=xception.md5, sha256=xception.sha256) == [xception]
    assert registry.identify(md5=xception.md5, sha256="0" * 64) == []
    assert registry.identify(md5="0" * 32) == []
    with pytest.raises(ValueError):
        registry.identify()


# --------------------------------------------------------------------------------------- user registry files

def user_entry(**changes):
    entry = {"id": "mynet.finetuned", "model": "resnet50", "tag": "finetuned", "include_top": True,
             "file_name": "mynet.h5", "urls": ["https://example.org/mynet.h5"], "format": "keras-h5",
             "sha256": "ab" * 32, "num_classes": 5}
    entry.update(changes)
    return entry


def write_registry(path, entries, **top):
    path.write_text(json.dumps({"schema_version": 1, "entries": entries, **top}))
    return path


def test_user_files_add_and_override(monkeypatch, tmp_path):
    override = registry.get_entry("mobilenet_1.0_224.imagenet").to_dict()
    override.update(urls=["https://mirror.example/mobilenet_1_0_224_tf.h5"], sha256="cd" * 32, trust="pinned")
    first = write_registry(tmp_path / "a.json", [user_entry()])
    second = write_registry(tmp_path / "b.json", [override, user_entry(num_classes=7)])
    monkeypatch.setenv(registry.ENV_REGISTRY, os.pathsep.join([str(first), str(second)]))
    mine = registry.resolve_weights("resnet50", "finetuned", True)
    assert mine.num_classes == 7 and mine.trust == "pinned" and mine.defined_in == str(second)  # later file wins
    replaced = registry.resolve_weights("mobilenet", "imagenet", True, alpha=1.0, rows=224)
    assert replaced.urls == ("https://mirror.example/mobilenet_1_0_224_tf.h5",) and replaced.pinned
    shipped = json.loads(registry.REGISTRY_PATH.read_text())["entries"]
    assert len(registry.load_registry()) == len(shipped) + 1
    monkeypatch.delenv(registry.ENV_REGISTRY)
    assert not registry.has_weights("resnet50", "finetuned", True)


def test_user_entry_without_hash_is_trusted_on_first_use(monkeypatch, tmp_path):
    path = write_registry(tmp_path / "u.json", [user_entry(sha256=None)])
    monkeypatch.setenv(registry.ENV_REGISTRY, str(path))
    assert registry.get_entry("mynet.finetuned").trust == "tofu"


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not valid JSON"),
    (json.dumps({"schema_version": 2, "entries": []}), "schema_version must be 1"),
    (json.dumps({"schema_version": 1, "entries": [user_entry(md5="123")]}), r"entry 0 \('mynet.finetuned'\).*md5"),
    (json.dumps({"schema_version": 1, "entries": [user_entry(), user_entry()]}), "duplicate id 'mynet.finetuned'"),
    (json.dumps({"schema_version": 1, "entries": [user_entry(trust="tofu")]}), "trust is 'tofu' but a hash"),
    (json.dumps({"schema_version": 1, "entries": [user_entry(superseded_by="nope.x")]}), "'mynet.finetuned'.*nope.x"),
    (json.dumps({"schema_version": 1, "entries": [user_entry(tag="x_notop")]}), "must not end in '_notop'"),
    (json.dumps({"schema_version": 1, "entries": [{"id": "half.entry"}]}), "'half.entry'.*missing required"),
])
def test_bad_user_files_name_the_file_and_the_entry(monkeypatch, tmp_path, content, message):
    path = tmp_path / "bad_registry.json"
    path.write_text(content)
    monkeypatch.setenv(registry.ENV_REGISTRY, str(path))
    with pytest.raises(RegistryError, match=message) as info:
        registry.load_registry()
    assert str(path) in str(info.value)


def test_missing_user_file_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv(registry.ENV_REGISTRY, str(tmp_path / "absent.json"))
    with pytest.raises(RegistryError, match="absent.json.*does not exist"):
        registry.resolve_weights("resnet50", "imagenet", True)


def test_edited_user_file_is_reloaded(monkeypatch, tmp_path):
    path = write_registry(tmp_path / "u.json", [user_entry()])
    monkeypatch.setenv(registry.ENV_REGISTRY, str(path))
    assert registry.get_entry("mynet.finetuned").num_classes == 5
    write_registry(path, [user_entry(num_classes=12, file_name="mynet-longer-name.h5")])
    assert registry.get_entry("mynet.finetuned").num_classes == 12


# --------------------------------------------------------------------------------------- trust on first use

def test_pins_record_and_check(tmp_path):
    entry = registry.get_entry("mobilenetv2_1.0_224.imagenet")
    assert registry.pinned_sha256(entry) is None
    digest = "12" * 32
    path = registry.record_pin(entry, digest, size=14536120, source="https://example/x.h5")
    assert path == tmp_path / "pins.json" and path.is_file()
    assert registry.pinned_sha256(entry) == digest
    assert registry.pinned_sha256(entry.id) == digest  # ids work too
    registry.record_pin(entry.id, digest.upper())  # same hash again: nothing changes
    assert registry.user_pins()[entry.id]["size"] == 14536120
    assert registry.identify(sha256=digest) == [entry]
    assert "recorded sha256:" + digest in entry.trust_for_display
    with pytest.raises(HashMismatch, match=f"{entry.id}.*{path}"):
        registry.record_pin(entry, "34" * 32)


def test_registry_pins_win_over_user_pins():
    entry = registry.get_entry("convnexttiny.imagenet")
    assert registry.pinned_sha256(entry) == entry.sha256
    registry.record_pin(entry, entry.sha256)
    with pytest.raises(HashMismatch, match="registry pins"):
        registry.record_pin(entry, "56" * 32)


def test_pin_location_defaults_to_the_config_folder(monkeypatch, tmp_path):
    monkeypatch.delenv(registry.ENV_PINS)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert registry.pins_path() == tmp_path / "cfg" / "kzoo" / "pins.json"


def test_broken_pin_file_is_a_clear_error(tmp_path):
    (tmp_path / "pins.json").write_text("{")
    with pytest.raises(RegistryError, match="pins.json"):
        registry.pinned_sha256("mobilenet_1.0_224.imagenet")


def test_pins_for_ids_outside_the_registry():
    assert registry.pinned_sha256("not.registered") is None
    registry.record_pin("not.registered", "78" * 32)
    assert registry.pinned_sha256("not.registered") == "78" * 32
