"""Generate ``kzoo/data/imagenet_class_index.json`` in the exact format Keras downloads.

Keras' file (``imagenet_class_index.json``, MD5 c2c37ea517e94d9795004a39431a14cb, 35363 bytes) maps the
class index to ``[wordnet_id, label]``, where the label is the first lemma of the synset with spaces
written as underscores, on one line: ``{"0": ["n01440764", "tench"], "1": [...], ...}``.

Its inputs are two plain-text data files that timm ships (no network needed; timm is not a kzoo
dependency): ``timm/data/_info/imagenet_synsets.txt`` (the 1000 ILSVRC-2012 synsets in class order) and
``imagenet_synset_to_lemma.txt`` (``wnid<TAB>lemma, lemma, ...``). Get them with
``pip download timm --no-deps -d /tmp/timm && unzip /tmp/timm/timm-*.whl 'timm/data/_info/*' -d /tmp/timm``.

Usage: python tools/make_imagenet_class_index.py /tmp/timm/timm/data/_info [out.json]
"""

import hashlib
import json
import pathlib
import sys

KERAS_MD5 = "c2c37ea517e94d9795004a39431a14cb"
KERAS_SIZE = 35363


def build(info_dir: pathlib.Path) -> bytes:
    synsets = (info_dir / "imagenet_synsets.txt").read_text().split()
    lemmas = {}
    for line in (info_dir / "imagenet_synset_to_lemma.txt").read_text(encoding="utf8").splitlines():
        wnid, _, names = line.partition("\t")
        lemmas[wnid] = names.split(",")[0].strip().replace(" ", "_")
    assert len(synsets) == 1000, len(synsets)
    index = {str(i): [wnid, lemmas[wnid]] for i, wnid in enumerate(synsets)}
    return json.dumps(index).encode("utf8")


def main(argv):
    info_dir = pathlib.Path(argv[1])
    out = pathlib.Path(argv[2]) if len(argv) > 2 else (
        pathlib.Path(__file__).resolve().parents[1] / "kzoo" / "data" / "imagenet_class_index.json")
    data = build(info_dir)
    out.write_bytes(data)
    md5 = hashlib.md5(data).hexdigest()
    print(f"{out}: {len(data)} bytes, md5 {md5}")
    print("matches Keras' pinned file" if md5 == KERAS_MD5 else
          f"differs from Keras' pinned file (md5 {KERAS_MD5}, {KERAS_SIZE} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
