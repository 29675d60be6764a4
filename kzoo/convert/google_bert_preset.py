"""A Google BERT archive (zip, tar, folder or checkpoint prefix with ``bert_config.json`` and ``vocab.txt`` beside
it) -> keras-hub models in memory, or a keras-hub preset directory that loads with no kzoo installed.

``kzoo convert chinese_L-12_H-768_A-12.zip --model bert_base_chinese -o DIR`` writes, through keras-hub's own
``save_to_preset``: ``config.json`` + ``model.weights.h5`` (the BertBackbone), ``task.json`` +
``task.weights.h5`` (BertMaskedLM: the ``cls/predictions`` head), ``preprocessor.json``, ``tokenizer.json`` and
``assets/tokenizer/vocabulary.txt`` (the archive's vocab), and ``kzoo.json`` (what was converted from what). So
``keras_hub.models.BertBackbone.from_preset(DIR)``, ``BertTextClassifier.from_preset(DIR, num_classes=N)`` and
``BertMaskedLM.from_preset(DIR)`` work anywhere keras-hub does. Two things only kzoo adds (keras-hub cannot
store them in a preset): the tokenizer's pre-normaliser (:mod:`kzoo.nlp.bert_tokenizer`) and Google's GELU /
epsilon in the masked-LM head (:func:`kzoo.convert.google_bert.google_head_semantics`).

``weights="tione"`` converts once into ``<cache>/converted/<model>-<sha256[:16]>-c<version>-preset/`` and loads
from there afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from kzoo.convert.google_bert import CONFIG_FILE, VOCAB_FILE, assign_checkpoint, backbone_config
from kzoo.errors import ConversionError, KzooError

# Bump whenever the rules or the preset layout change: cached presets are keyed by it.
PRESET_VERSION = "1"
MARKER = "kzoo.json"


def _member(ckpt, name: str) -> Path:
    path = Path(ckpt.path).parent / name
    if not path.is_file():
        raise ConversionError(
            f"{ckpt._shown(path)}: not found. A Google BERT checkpoint needs its {CONFIG_FILE} and {VOCAB_FILE} in "
            f"the same folder as bert_model.ckpt.* (as in Google's zips); pass the archive or that folder.")
    return path


def read_vocabulary(path: Path, vocabulary_size: int, shown: str) -> list:
    tokens = path.read_text(encoding="utf-8").split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    tokens = [token.rstrip("\r") for token in tokens]  # Google's load_vocab strips each line
    if len(tokens) != vocabulary_size:
        raise ConversionError(f"{shown}: {len(tokens)} tokens, but {CONFIG_FILE} says vocab_size {vocabulary_size}. "
                              f"The vocabulary and the config come from different archives.")
    return tokens


def load_checkpoint(src, model_name: str = "bert", *, masked_lm: bool = False, do_lower_case: bool = True,
                    workdir=None):
    """``(model, conversion)``: a keras-hub BertBackbone (or BertMaskedLM with its preprocessor, whose tokenizer
    holds the archive's vocabulary) carrying the checkpoint's weights, and the
    :class:`~kzoo.convert.google_bert.BertConversion` report."""
    from kzoo.formats.tf_checkpoint import open_checkpoint
    from kzoo.nlp import keras_hub

    hub = keras_hub()
    with open_checkpoint(src, hint="bert_model", workdir=workdir) as ckpt:
        config_path = _member(ckpt, CONFIG_FILE)
        config = backbone_config(config_path)
        google = json.loads(config_path.read_text(encoding="utf-8"))
        vocab_path = _member(ckpt, VOCAB_FILE)
        vocabulary = read_vocabulary(vocab_path, config["vocabulary_size"], ckpt._shown(vocab_path))
        backbone = hub.models.BertBackbone(**config, dropout=float(google.get("hidden_dropout_prob", 0.1)))
        model = backbone
        if masked_lm:
            from kzoo.nlp.bert_tokenizer import keras_hub_tokenizer

            tokenizer = keras_hub_tokenizer(vocabulary, do_lower_case)
            preprocessor = hub.models.BertMaskedLMPreprocessor(tokenizer,
                                                               sequence_length=config["max_sequence_length"])
            model = hub.models.BertMaskedLM(backbone, preprocessor=preprocessor)
        conversion = assign_checkpoint(model, ckpt, model_name)
    return model, conversion


def write_preset(src, output, model_name: str = "bert", *, do_lower_case: bool = True, force: bool = False,
                 workdir=None, source_sha256: str | None = None) -> dict:
    """Convert ``src`` into the keras-hub preset directory ``output`` (see the module docstring); returns the
    facts written to ``kzoo.json``. The preset is written in a hidden folder beside ``output`` and renamed into
    place once complete, so ``output`` never holds half a preset; an existing ``output`` needs ``force``."""
    started = time.perf_counter()
    output = Path(output)
    if output.exists() and not force and (not output.is_dir() or any(output.iterdir())):
        raise ConversionError(f"{output}: already exists. Choose another -o folder, or pass --force to replace it "
                              f"(the old one stays until the new preset is complete).")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.", suffix=".part"))
    try:
        model, conversion = load_checkpoint(src, model_name, masked_lm=True, do_lower_case=do_lower_case,
                                            workdir=workdir)
        preset = staging / "preset"
        model.save_to_preset(str(preset))
        facts = {"model": model_name, "source": str(src), "source_sha256": source_sha256,
                 "converter": f"kzoo.convert.google_bert (preset version {PRESET_VERSION})",
                 "do_lower_case": do_lower_case, "weights_mapped": len(conversion.mapped),
                 "left_out": conversion.unused, "seconds": round(time.perf_counter() - started, 2),
                 "note": "keras-hub's BertTokenizer here lowercases with NFKC case folding and its BertMaskedLM head "
                         "uses exact GELU; kzoo's tokenizer and masked-LM model match Google's exactly."}
        (preset / MARKER).write_text(json.dumps(facts, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        old = staging / "old"
        if output.exists():
            os.replace(output, old)
        try:
            os.replace(preset, output)
        except OSError:
            if old.exists():  # put the user's preset back before the staging folder goes
                os.replace(old, output)
            raise
    except OSError as exc:
        if isinstance(exc, KzooError):
            raise
        from kzoo.sources.storage import storage_error

        raise storage_error(f"{src}: writing the keras-hub preset {output}", output.parent, exc,
                            kept=f"Nothing was written at {output}" + (" (the old preset is unchanged)."
                                                                       if output.exists() else "."),
                            elsewhere="pass another -o folder") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    facts["summary"] = conversion.summary()
    return facts


def converted_preset(entry, archive_path) -> Path:
    """The keras-hub preset for a registry entry's archive, converted on first use and cached by its sha256."""
    from kzoo.convert import _sha256, convert_once, converted_folder

    archive_path = Path(archive_path)
    sha256 = getattr(entry, "sha256", None) or _sha256(archive_path)
    options = dict(getattr(entry, "conversion", None) or {})
    folder = converted_folder()
    target = folder / f"{entry.model}-{sha256[:16]}-c{PRESET_VERSION}-preset"
    return convert_once(target, lambda: write_preset(
        archive_path, target, entry.model, do_lower_case=bool(options.get("do_lower_case", True)), force=True,
        workdir=folder / "tmp", source_sha256=sha256), done=target / MARKER)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kzoo convert",
        description="Convert a Google BERT archive (zip/tar with bert_config.json, vocab.txt, bert_model.ckpt.*; "
                    "or its folder) into a keras-hub preset directory.")
    parser.add_argument("src", help="archive, folder, or checkpoint prefix (bert_config.json and vocab.txt beside it)")
    parser.add_argument("--model", required=True, help="bert_base_chinese or bert_base_uncased (any BERT size works)")
    parser.add_argument("-o", "--output", help="the preset directory to write (default: ./<model>)")
    parser.add_argument("--cased", action="store_true", help="a cased model (do_lower_case=False)")
    parser.add_argument("--force", action="store_true", help="replace an existing directory once the new one is done")
    return parser


def cli_main(argv=None) -> int:
    from kzoo import index
    from kzoo.errors import KzooError

    args = _parser().parse_args(argv)
    model_name = index.normalise(args.model)
    output = Path(args.output) if args.output else Path.cwd() / model_name
    try:
        facts = write_preset(args.src, output, model_name, do_lower_case=not args.cased, force=args.force)
    except KzooError as exc:
        print(f"kzoo convert: error: {exc}", file=sys.stderr)
        return 1
    print(f"Converted {args.src} -> keras-hub preset {output} in {facts['seconds']:.1f} s\n{facts['summary']}")
    return 0
