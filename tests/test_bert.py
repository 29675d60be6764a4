"""Google BERT checkpoints -> keras-hub, proven against Google's own code (bert-tensorflow's ``modeling.py`` and
``run_pretraining.py``, run by tests/_bert_reference.py in its own process) on random weights with non-trivial
LayerNorms and biases: sequence and pooled outputs and the masked-LM logits within 1e-5 (relative to the largest
output), each transform shown necessary, damaged checkpoints named, optimizer slots reported, the preset loaded by
keras-hub alone, ``weights="tione"`` converted once, and fine-tuning from the preset.

A small BERT (L=2, H=32, A=4) runs by default; Google's L-12 H-768 A-12 size under ``sweep``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _ckpt_helpers import make_zip, v2_files
from compat import assert_outputs_differ, relative_error

pytest.importorskip("keras_hub")
pytest.importorskip("bert")

import kzoo  # noqa: E402
from kzoo.convert import google_bert  # noqa: E402
from kzoo.convert.google_bert_preset import load_checkpoint, write_preset  # noqa: E402
from kzoo.errors import ConversionError, MissingExtra  # noqa: E402

TOL = 1e-5
HERE = Path(__file__).parent
SMALL = dict(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             max_position_embeddings=40)
BASE = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
            max_position_embeddings=512)


def _inputs(vocab_size: int, seed: int, batch: int = 2, length: int = 12) -> dict:
    """Token ids, two segments (0 then 1), a padded second row and three masked positions per row."""
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, length), np.int32)
    mask[1, length - 3:] = 0
    return {"token_ids": rng.integers(0, vocab_size, (batch, length)).tolist(),
            "segment_ids": np.tile((np.arange(length) >= length // 2).astype(int), (batch, 1)).tolist(),
            "padding_mask": mask.tolist(), "mask_positions": [[1, 3, 5], [2, 4, length - 4]][:batch]}


class Reference:
    """Google's BERT of one config: its checkpoint folder (config, vocab, weights), a zip of it, the same
    weights with Adam slots, and its outputs on two input cases."""

    def __init__(self, folder: Path, size: dict):
        self.config = {**size, "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
                       "type_vocab_size": 2, "initializer_range": 0.02}
        name = f"bert_L-{size['num_hidden_layers']}_H-{size['hidden_size']}"
        self.folder = folder / name
        self.folder.mkdir(parents=True)
        (self.folder / "bert_config.json").write_text(json.dumps(self.config))
        tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(size["vocab_size"] - 5)]
        (self.folder / "vocab.txt").write_text("\n".join(tokens) + "\n")
        self.cases = [_inputs(size["vocab_size"], seed) for seed in (1, 2)]
        slots = folder / "with_slots"
        slots.mkdir()
        job = {"config": str(self.folder / "bert_config.json"), "checkpoint": str(self.folder / "bert_model.ckpt"),
               "checkpoint_with_slots": str(slots / "bert_model.ckpt"), "output": str(folder / "reference.npz"),
               "inputs": self.cases, "seed": 0}
        (folder / "job.json").write_text(json.dumps(job))
        result = subprocess.run([sys.executable, str(HERE / "_bert_reference.py"), str(folder / "job.json")],
                                capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        outputs = np.load(folder / "reference.npz")
        self.outputs = [{key.split("/", 1)[1]: outputs[key] for key in outputs.files if key.startswith(f"{i}/")}
                        for i in range(len(self.cases))]
        for extra in ("bert_config.json", "vocab.txt"):
            (slots / extra).write_bytes((self.folder / extra).read_bytes())
        self.with_slots = slots
        files = {f"{name}/{p.name}": p for p in [self.folder / "bert_config.json", self.folder / "vocab.txt",
                                                 *v2_files(self.folder / "bert_model.ckpt")]}
        self.archive = make_zip(folder / f"{name}.zip", files)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return Reference(tmp_path_factory.mktemp("bert-small"), SMALL)


def _outputs(model, case) -> dict:
    """keras-hub's outputs for one case: the backbone's, and the masked-LM logits if ``model`` is a BertMaskedLM."""
    x = {key: np.asarray(case[key], np.int32) for key in ("token_ids", "segment_ids", "padding_mask")}
    backbone = getattr(model, "backbone", model)
    out = {key: np.asarray(value) for key, value in backbone(x).items()}
    if backbone is not model:
        logits = np.asarray(model({**x, "mask_positions": np.asarray(case["mask_positions"], np.int32)}))
        out["mlm_logits"] = logits.reshape(-1, logits.shape[-1])
    return out


def _errors(model, reference: Reference) -> dict:
    worst = {}
    for case, expected in zip(reference.cases, reference.outputs):
        actual = _outputs(model, case)
        for key in actual:
            worst[key] = max(worst.get(key, 0.0), relative_error(actual[key], expected[key]))
    return worst


def _check(model, reference: Reference, keys=("sequence_output", "pooled_output", "mlm_logits")):
    for key in keys:
        assert_outputs_differ(reference.outputs[0][key], reference.outputs[1][key], TOL, f"Google's {key}")
    errors = _errors(model, reference)
    assert set(keys) <= set(errors)
    assert all(errors[key] < TOL for key in keys), errors
    return errors


# ----------------------------------------------------------------------------- numerics against Google's BERT

def test_small_bert_equals_google(small):
    model, conversion = load_checkpoint(small.archive, "bert_base_uncased", masked_lm=True)
    google_bert.google_head_semantics(model)
    print("L-2 relative errors:", _check(model, small))
    assert len(conversion.mapped) == 5 + 16 * 2 + 2 + 5  # embeddings, 2 blocks, pooler, MLM head
    assert conversion.unused == {"next-sentence head: keras-hub has no next-sentence task":
                                 ["cls/seq_relationship/output_bias", "cls/seq_relationship/output_weights"]}


def test_optimizer_slots_and_global_step_are_skipped_and_reported(small):
    model, conversion = load_checkpoint(small.with_slots, "bert_base_uncased")
    _check(model, small, ("sequence_output", "pooled_output"))
    assert conversion.unused["training state"] == ["global_step"]
    slots = conversion.unused["optimizer slots"]
    assert len(slots) == 2 * (5 + 16 * 2 + 2 + 5 + 2) and all(n.endswith(("/adam_m", "/adam_v")) for n in slots)
    assert "masked-LM head" in " ".join(conversion.unused) and "left out (optimizer slots)" in conversion.summary()


@pytest.mark.parametrize("variant", ["heads_split_the_other_way", "output_heads_the_other_way", "segments_swapped",
                                     "keras_hub_masked_lm_head"])
def test_each_transform_is_necessary(small, variant, monkeypatch):
    """Each rule's transform, replaced by a plausible wrong one, moves an output by far more than the tolerance:
    the comparison above sees each of them."""
    heads = SMALL["num_attention_heads"]
    if variant == "heads_split_the_other_way":  # (H, head size, heads) instead of (H, heads, head size)
        monkeypatch.setattr(google_bert, "split_heads", lambda n: lambda a: np.swapaxes(
            a.reshape(*a.shape[:-1], a.shape[-1] // n, n), -1, -2))
    elif variant == "output_heads_the_other_way":
        monkeypatch.setattr(google_bert, "merge_heads", lambda n: lambda a: np.swapaxes(
            a.reshape(a.shape[0] // n, n, a.shape[1]), 0, 1))
    elif variant == "segments_swapped":  # token-type row 0 read as segment 1
        real_rules = google_bert.bert_rules

        def swapped(model, ctx):
            return [google_bert.WeightRule(r.layer, r.weight, r.variable, (lambda a: a[::-1].copy()))
                    if r.layer == "segment_embedding" else r for r in real_rules(model, ctx)]

        monkeypatch.setattr(google_bert, "bert_rules", swapped)
    model, _ = load_checkpoint(small.archive, "bert_base_uncased", masked_lm=True)
    if variant != "keras_hub_masked_lm_head":  # keras-hub's own head: exact GELU, epsilon 1e-5
        google_bert.google_head_semantics(model)
    errors = _errors(model, small)
    key = "mlm_logits" if variant == "keras_hub_masked_lm_head" else "sequence_output"
    print(f"{variant}: {key} relative error {errors[key]:.1e}")
    assert heads > 1 and errors[key] > 10 * TOL, errors  # an order of magnitude past the tolerance


def test_backbone_only_reports_the_masked_lm_head_as_left_out(small):
    model, conversion = load_checkpoint(small.folder / "bert_model.ckpt", "bert_base_chinese")
    assert type(model).__name__ == "BertBackbone"
    assert len(conversion.unused["masked-LM head: not asked for (masked_lm=True converts it into BertMaskedLM)"]) == 5


def test_weights_path_takes_an_archive_or_a_folder(small):
    """``weights=PATH``: a Google archive / folder is converted in memory (the size comes from its config)."""
    for path in (small.archive, small.folder):
        model = kzoo.create_model("bert_base_chinese", weights=str(path))
        assert model.vocabulary_size == SMALL["vocab_size"] and model.num_layers == 2
        _check(model, small, ("sequence_output", "pooled_output"))
    with pytest.raises(kzoo.errors.UnknownWeights, match="tione"):
        kzoo.create_model("bert_base_chinese", weights="imagenet")


# ----------------------------------------------------------------------------- bad input

def test_missing_and_misshapen_variables_are_each_named(small, tmp_path):
    from _ckpt_helpers import read_all, write_checkpoint

    arrays = read_all(small.folder / "bert_model.ckpt")
    del arrays["bert/encoder/layer_1/output/dense/bias"], arrays["bert/pooler/dense/kernel"]
    folder = tmp_path / "broken"
    write_checkpoint(folder / "bert_model.ckpt", arrays)
    for extra in ("bert_config.json", "vocab.txt"):
        (folder / extra).write_bytes((small.folder / extra).read_bytes())
    with pytest.raises(ConversionError) as missing:
        load_checkpoint(folder, "bert_base_uncased")
    message = str(missing.value)
    assert "2 variable(s)" in message and "bert/pooler/dense/kernel (for pooled_dense/kernel)" in message
    assert "bert/encoder/layer_1/output/dense/bias (for transformer_layer_1/feedforward_output_dense/bias)" in message

    config = json.loads((small.folder / "bert_config.json").read_text())
    (folder / "bert_config.json").write_text(json.dumps({**config, "intermediate_size": 48, "type_vocab_size": 4}))
    arrays = read_all(small.folder / "bert_model.ckpt")
    write_checkpoint(folder / "bert_model.ckpt", arrays)
    with pytest.raises(ConversionError) as misshapen:
        load_checkpoint(folder, "bert_base_uncased")
    message = str(misshapen.value)
    assert "bert/embeddings/token_type_embeddings (2, 32) -> segment_embedding/embeddings" in message
    assert "bert/encoder/layer_0/intermediate/dense/kernel (32, 64)" in message and "shape mismatch" in message


def test_archive_without_config_or_with_a_foreign_vocab_names_the_member(small, tmp_path):
    files = {f"bert/{p.name}": p for p in [small.folder / "vocab.txt", *v2_files(small.folder / "bert_model.ckpt")]}
    with pytest.raises(ConversionError, match=r"no_config\.zip \(member bert/bert_config\.json\): not found"):
        load_checkpoint(make_zip(tmp_path / "no_config.zip", files), "bert_base_uncased")
    short = tmp_path / "vocab.txt"
    short.write_text("[PAD]\n[UNK]\n")
    files = {**files, "bert/bert_config.json": small.folder / "bert_config.json", "bert/vocab.txt": short}
    with pytest.raises(ConversionError, match="2 tokens, but bert_config.json says vocab_size 97"):
        load_checkpoint(make_zip(tmp_path / "foreign_vocab.zip", files), "bert_base_uncased")


def test_without_keras_hub_the_entries_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras_hub", None)  # what `import keras_hub` meets when it is not installed
    with pytest.raises(MissingExtra, match=r'pip install "kzoo\[nlp\]"'):
        kzoo.create_model("bert_base_chinese", weights=None)
    with pytest.raises(ImportError):  # MissingExtra is an ImportError too
        kzoo.create_model("bert_base_uncased", weights="tione")


# ----------------------------------------------------------------------------- presets, the registry, the CLI

def test_cli_writes_a_preset_keras_hub_loads_without_kzoo(small, tmp_path):
    from kzoo.cli import main

    preset = tmp_path / "preset"
    assert main(["convert", str(small.archive), "--model", "bert_base_chinese", "-o", str(preset)]) == 0
    assert main(["convert", str(small.archive), "--model", "bert_base_chinese", "-o", str(preset)]) == 1  # exists
    with pytest.raises(ConversionError, match="keras-hub preset folder, not an h5"):
        kzoo.convert_checkpoint(small.archive, "bert_base_chinese", tmp_path / "bert.h5")
    facts = json.loads((preset / "kzoo.json").read_text())
    assert facts["weights_mapped"] == 44 and facts["do_lower_case"] is True
    case = small.cases[0]
    code = ("import sys, json, numpy as np, keras_hub\n"
            f"case = json.loads({json.dumps(json.dumps(case))})\n"
            "x = {k: np.asarray(case[k], 'int32') for k in ('token_ids', 'segment_ids', 'padding_mask')}\n"
            f"backbone = keras_hub.models.BertBackbone.from_preset({str(preset)!r})\n"
            f"pre = keras_hub.models.BertTextClassifierPreprocessor.from_preset({str(preset)!r}, sequence_length=16)\n"
            f"clf = keras_hub.models.BertTextClassifier.from_preset({str(preset)!r}, num_classes=3, preprocessor=pre)\n"
            "out = backbone(x)\n"
            "np.savez(sys.argv[1], sequence=np.asarray(out['sequence_output']), pooled=np.asarray(out['pooled_output']),\n"
            "         logits=np.asarray(clf.predict(['w1 w2 w3', 'W4 w5'], verbose=0)),\n"
            "         ids=np.asarray(pre.tokenizer('W4 w5,w6')))\n"
            "print(sorted(m for m in sys.modules if m.startswith('kzoo')))\n")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out.npz")], capture_output=True, text=True,
                            timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
    out = np.load(tmp_path / "out.npz")
    assert relative_error(out["sequence"], small.outputs[0]["sequence_output"]) < TOL
    assert relative_error(out["pooled"], small.outputs[0]["pooled_output"]) < TOL
    # The preset's tokenizer holds the archive's vocabulary (w<i> has id i + 5), lowercases, and splits at "," ([UNK]).
    assert out["logits"].shape == (2, 3) and out["ids"].tolist() == [9, 10, 1, 11]


def test_tione_weights_convert_once(small, tmp_path, monkeypatch):
    from kzoo import registry
    from kzoo.convert import google_bert_preset

    entry = registry.resolve_weights("bert_base_uncased", "tione", True)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / entry.file_name).write_bytes(small.archive.read_bytes())
    monkeypatch.setenv("KZOO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("KZOO_PINS", str(tmp_path / "pins.json"))  # trusted on first use
    monkeypatch.setenv("KZOO_MIRRORS", str(mirror))
    monkeypatch.setenv("KZOO_OFFLINE", "1")
    model = kzoo.create_model("bert_base_uncased", weights="tione")
    assert type(model).__name__ == "BertBackbone"
    _check(model, small, ("sequence_output", "pooled_output"))

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted twice")

    monkeypatch.setattr(google_bert_preset, "write_preset", no_conversion)
    masked_lm = kzoo.create_model("bert_base_uncased", weights="tione", masked_lm=True)
    _check(masked_lm, small)
    presets = list((tmp_path / "cache" / "converted").glob("bert_base_uncased-*-preset"))
    assert len(presets) == 1 and (presets[0] / "kzoo.json").is_file()
    from kzoo.nlp.bert_tokenizer import bert_tokenizer

    assert [int(i) for i in bert_tokenizer("bert_base_uncased")("W4\xa0w5\u200b w6\x07")] == [9, 10, 11]


def test_registry_entries_agree_with_the_index():
    from kzoo import index, registry

    for name, vocabulary in (("bert_base_chinese", 21128), ("bert_base_uncased", 30522)):
        entry = registry.resolve_weights(name, "tione", True)
        row = index.get(name)
        assert entry.conversion["vocabulary_size"] == row.kwargs["vocabulary_size"] == vocabulary
        assert entry.conversion["do_lower_case"] is True and entry.license == "Apache-2.0"
        assert entry.input_size == row.input_size == 512 and row.kind == "text"
        assert entry.trust == "tofu" and entry.sha256 is None and entry.size is None
        assert {Path(f).name for f in entry.conversion["contents"]} >= {"bert_config.json", "vocab.txt"}


def test_config_of_any_size_and_bad_configs(tmp_path):
    config = tmp_path / "bert_config.json"
    config.write_text(json.dumps({**BASE, "type_vocab_size": 2, "hidden_act": "gelu"}))
    assert google_bert.backbone_config(config) == {
        "vocabulary_size": 30522, "num_layers": 12, "num_heads": 12, "hidden_dim": 768, "intermediate_dim": 3072,
        "max_sequence_length": 512, "num_segments": 2}
    config.write_text(json.dumps({**BASE, "num_attention_heads": 5, "hidden_act": "relu"}))
    with pytest.raises(ConversionError) as error:
        google_bert.backbone_config(config)
    assert "type_vocab_size is missing" in str(error.value) and "'relu'" in str(error.value)
    assert "not a multiple of num_attention_heads 5" in str(error.value)


# ----------------------------------------------------------------------------- fine-tuning from the preset

def test_a_failed_preset_write_is_a_storage_error_and_keeps_the_old_preset(small, tmp_path, monkeypatch):
    """The disk fills as the finished preset is renamed into place: a kzoo StorageError naming the folder, the
    user's earlier preset back where it was, and no staging folder left."""
    import errno
    import os

    from kzoo.convert import google_bert_preset
    from kzoo.errors import StorageError

    output = tmp_path / "out"
    output.mkdir()
    (output / "kzoo.json").write_text("the user's preset")
    real_replace = os.replace

    def no_room(src, dst):
        if Path(dst) == output and Path(src).name == "preset":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)

    monkeypatch.setattr(google_bert_preset.os, "replace", no_room)
    with pytest.raises(StorageError, match=f"could not write to {tmp_path}"):
        write_preset(small.archive, output, "bert_base_uncased", force=True)
    assert (output / "kzoo.json").read_text() == "the user's preset"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_text_classifier_from_the_converted_preset_learns_a_task(small, tmp_path):
    """A BertTextClassifier from the converted preset learns which of two word groups a sentence is made of
    (w0-w19 vs w20-w39, random order and length): chance is 50 %, it must reach 90 % on held-out sentences."""
    import keras
    import keras_hub

    preset = tmp_path / "preset"
    write_preset(small.archive, preset, "bert_base_uncased")
    rng = np.random.default_rng(0)

    def sentences(count):
        labels = rng.integers(0, 2, count)
        text = [" ".join(f"w{20 * label + i}" for i in rng.integers(0, 20, rng.integers(3, 9))) for label in labels]
        return text, labels

    (train_x, train_y), (test_x, test_y) = sentences(256), sentences(128)
    keras.utils.set_random_seed(0)
    pre = keras_hub.models.BertTextClassifierPreprocessor.from_preset(str(preset), sequence_length=12)
    classifier = keras_hub.models.BertTextClassifier.from_preset(str(preset), num_classes=2, preprocessor=pre,
                                                                 dropout=0.0)
    classifier.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True), metrics=["accuracy"])
    classifier.fit(train_x, train_y, batch_size=32, epochs=4, verbose=0)
    accuracy = float(np.mean(np.argmax(classifier.predict(test_x, verbose=0), -1) == test_y))
    print(f"held-out accuracy {accuracy:.3f} (chance 0.5)")
    assert accuracy >= 0.9, accuracy


# ----------------------------------------------------------------------------- Google's size

@pytest.mark.sweep
def test_bert_base_size_equals_google(tmp_path):
    """L-12 H-768 A-12 with the uncased vocabulary (30522): the size of both TI-ONE archives."""
    reference = Reference(tmp_path, BASE)
    model, conversion = load_checkpoint(reference.archive, "bert_base_uncased", masked_lm=True)
    google_bert.google_head_semantics(model)
    errors = _check(model, reference)
    assert len(conversion.mapped) == 5 + 16 * 12 + 2 + 5
    print("L-12 relative errors:", errors)
