"""TF-slim / TI-ONE checkpoints -> Keras h5 weight files.

``convert_checkpoint(src, "resnet_v2_50", "out.h5")`` opens the checkpoint (V1 file, V2 prefix,
folder or archive: :mod:`kzoo.formats.tf_checkpoint`), builds the kzoo model, asks the model's
family for its mapping rules (:mod:`kzoo.convert._base`), reads every variable through them and
writes a legacy-layout h5 that both ``keras.Model.load_weights`` and kzoo's ``weights=path`` load.

Families live in ``kzoo/convert/slim_<family>.py`` and register themselves with
``@register_family``; every such module is imported on first use, so adding one is adding a file.

``weights="tione"`` goes through :func:`converted_weights_path`, which caches the converted h5 under
(source sha256, converter version, conversion options): a second call converts nothing.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib
import importlib.util
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kzoo.convert._base import (
    EMA_SUFFIX,
    FAMILIES,
    RuleContext,
    drop_background,
    preferred_variable,
    unused_category,
)
from kzoo import index
from kzoo.errors import ConversionError

# Bump whenever a rule or the output layout changes: cached conversions are keyed by it.
CONVERTER_VERSION = "1"

__all__ = ["ConversionReport", "convert_checkpoint", "converted_weights_path", "cli_main",
           "supported_models", "CONVERTER_VERSION"]


# ---------------------------------------------------------------------------------------------
# Families
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _load_families() -> None:
    # The index names each model's rule module; importing it registers its @register_family rules.
    for rule in sorted({row.rule for row in index.MODELS.values() if row.rule}):
        importlib.import_module(f"{__name__}.{rule}")


def supported_models() -> list[str]:
    """Every kzoo model name a checkpoint can be converted to (by its default rules)."""
    _load_families()
    return sorted(name for name in FAMILIES if ":" not in name)


def _canonical(model: str) -> str:
    return index.normalise(model)


def _family(model_name: str, rules: str | None = None):
    """The rules for ``model_name``: its default family, or the rule set ``rules`` (a module under
    kzoo.convert registering ``"<rules>:<model>"``, e.g. ``od_resnet_v1``: the same builder's weights from
    another checkpoint layout)."""
    _load_families()
    if rules is not None:
        key = f"{rules}:{model_name}"
        if key not in FAMILIES and importlib.util.find_spec(f"{__name__}.{rules}") is not None:
            importlib.import_module(f"{__name__}.{rules}")
        if key not in FAMILIES:
            raise ConversionError(f"No checkpoint conversion rules {rules!r} for model {model_name!r}.")
        return FAMILIES[key]
    if model_name not in FAMILIES:
        raise ConversionError(
            f"No checkpoint conversion rules for model {model_name!r}. Convertible models: "
            f"{', '.join(supported_models())}.")
    return FAMILIES[model_name]


def _guess_models(shapes) -> list[str]:
    """Models whose head variable this checkpoint has (for 'wrong architecture' messages)."""
    _load_families()
    return sorted(name for name, fam in FAMILIES.items()
                  if ":" not in name and fam.head and not fam.missing(name, shapes))


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


@dataclass
class ConversionReport:
    """What a conversion did.

    mapped:  (checkpoint key read, Keras layer, Keras weight, shape written), in file order;
             the key ends in ``/ExponentialMovingAverage`` where the EMA shadow was used.
    unused:  checkpoint variables not needed, grouped by reason (auxiliary head, optimizer slots,
             training state, replaced by moving averages, ...). Information only.
    """

    source: Path
    checkpoint: str
    checkpoint_format: str
    model: str
    output: Path | None
    include_top: bool
    classes: int | None
    checkpoint_classes: int | None
    background_dropped: bool
    mapped: list = field(default_factory=list)
    unused: dict = field(default_factory=dict)
    bytes_read: int = 0
    bytes_written: int = 0
    seconds: float = 0.0

    @property
    def ema_used(self) -> int:
        return sum(1 for key, *_ in self.mapped if key.endswith(EMA_SUFFIX))

    def summary(self) -> str:
        lines = [
            f"Converted {self.checkpoint} ({self.checkpoint_format}) -> {self.output}",
            f"  model {self.model}, include_top={self.include_top}, classes={self.classes}"
            + (f" (checkpoint has {self.checkpoint_classes}; background class 0 dropped)"
               if self.background_dropped else ""),
            f"  {len(self.mapped)} weights mapped ({self.ema_used} from moving averages), "
            f"{self.bytes_read / 1e6:.1f} MB read, {self.bytes_written / 1e6:.1f} MB written "
            f"in {self.seconds:.2f} s",
        ]
        for reason, names in sorted(self.unused.items()):
            shown = ", ".join(names[:4]) + (f", ... ({len(names)} in all)" if len(names) > 4 else "")
            lines.append(f"  unused ({reason}): {shown}")
        return "\n".join(lines)

    __str__ = summary


# ---------------------------------------------------------------------------------------------
# The plan: which Keras weight comes from which variable (depends only on the model and the
# checkpoint's variable set, so it is cached: building a Keras model is the slow part).
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Slot:
    layer: str
    weight_path: str  # legacy h5 dataset name, "conv1_conv/kernel:0"
    shape: tuple
    rule: object  # WeightRule or None (no rule: a converter bug)


def _build_model(model_name: str, classes: int | None, include_top: bool):
    from kzoo.models import create_model

    kwargs = {"weights": None, "include_top": include_top}
    if include_top and classes is not None:
        kwargs["classes"] = classes
    return create_model(model_name, **kwargs)


@functools.lru_cache(maxsize=8)
def _plan(model_name, classes, include_top, drop, checkpoint_classes, variables, conversion="{}", rule_set=None):
    """[(layer name, [_Slot, ...]), ...] for every layer, in model order."""
    from kzoo.formats.keras_h5 import legacy_weights

    model = _build_model(model_name, classes, include_top)
    ctx = RuleContext(model_name, checkpoint_classes, drop, include_top, dict(variables), json.loads(conversion))
    rules = {}
    for rule in _family(model_name, rule_set).rules(model, ctx):
        rules[(rule.layer, rule.weight)] = rule
    plan = []
    for layer in model.layers:
        slots = []
        for position, variable in enumerate(legacy_weights(layer)):
            short = str(variable.name).rsplit("/", 1)[-1]
            rule = rules.pop((layer.name, short), None) or rules.pop((layer.name, position), None)
            slots.append(_Slot(layer.name, f"{layer.name}/{short}:0", tuple(variable.shape), rule))
        plan.append((layer.name, slots))
    layer_names = {layer.name for layer in model.layers}
    # Rules for layers the model lacks (the head of a notop model) are fine; rules for a weight
    # that an existing layer lacks are a family bug.
    stray = [f"{layer}/{weight}" for (layer, weight) in rules if layer in layer_names]
    del model
    return plan, tuple(stray)


# ---------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------


def _limited(items, limit=25):
    items = list(items)
    text = "\n".join(f"  - {item}" for item in items[:limit])
    return text + (f"\n  ... and {len(items) - limit} more" if len(items) > limit else "")


def _default_output(model_name: str) -> Path:
    return Path.cwd() / f"{model_name}.h5"


def convert_checkpoint(src, model: str, output=None, keep_background: bool = False, use_ema: bool = True,
                       *, include_top: bool = True, progress: bool | None = None,
                       workdir=None, hint: str | None = None, conversion=None,
                       rules: str | None = None) -> ConversionReport:
    """Convert a TF-slim checkpoint into a Keras h5 weight file for the kzoo model ``model``.

    src:             V1 checkpoint file, V2 prefix, folder, or .tar.gz/.tgz/.zip archive.
    model:           kzoo model name (``resnet_v2_50``, ``vgg_16``, ``mobilenet_v2_140``, ...).
    output:          the h5 to write (default ``./<model>.h5``).
    keep_background: keep a 1001-class head's background class 0 (``classes=1001``); by default it
                     is dropped so the file fits ``classes=1000`` and Keras' class order.
    use_ema:         read ``<var>/ExponentialMovingAverage`` shadows when present.
    include_top:     write the classification head too (False: a notop file).
    progress:        tqdm bar (None: only when stderr is a terminal).
    hint:            file-name prefix that picks the checkpoint when a folder or archive holds
                     several (default: the model name).
    conversion:      the registry entry's ``conversion`` block, handed to the rules as
                     ``ctx.conversion`` (e.g. ShuffleNet's ``label_order``).
    rules:           a rule set other than the model's default (``od_resnet_v1``: a detector's backbone);
                     default: the entry's ``conversion.rules``, else the model's own family.

    Raises ConversionError naming every missing variable and shape mismatch (nothing is written),
    UnsafeArchive for archives that would escape their folder or exceed the size limits.
    """
    from kzoo._progress import progress_bar
    from kzoo.formats.tf_checkpoint import open_checkpoint

    started = time.perf_counter()
    model_name = _canonical(model)
    rules = rules or (conversion or {}).get("rules")
    family = _family(model_name, rules)
    if getattr(index.MODELS.get(model_name), "kind", "image") == "text":
        raise ConversionError(
            f"{model_name} is a text model: it converts into a keras-hub preset folder, not an h5. Use "
            f"`kzoo convert SRC --model {model_name} -o FOLDER` or kzoo.convert.google_bert_preset.write_preset.")
    output = Path(output) if output is not None else _default_output(model_name)

    if family.name.startswith("paddle_"):  # PaddlePaddle folders, archives, .pdparams (kzoo.formats.paddle)
        from kzoo.convert.paddle_common import open_source

        opened = open_source(src, model_name, family.name, workdir=workdir)
    else:
        opened = open_checkpoint(src, hint=hint or model_name, workdir=workdir)
    with opened as ckpt:
        shapes = ckpt.shapes()
        head = family.head_variable(model_name)
        missing = family.missing(model_name, shapes)
        if missing:
            guesses = [g for g in _guess_models(shapes) if g != model_name]
            scopes = sorted({name.split("/")[0] for name in shapes})[:8]
            advice = (f"It looks like a checkpoint for {', '.join(guesses)}: convert it with --model {guesses[0]}."
                      if guesses else f"Its top-level scopes are {scopes}.")
            what = "head variable" if missing[0] == head else "variable"
            raise ConversionError(
                f"{ckpt.path}: this is not a {model_name} checkpoint (its {what} {missing[0]!r} is "
                f"missing). {advice}")
        checkpoint_classes = shapes[head][-1] if head else None
        drop = checkpoint_classes == 1001 and not keep_background
        classes = checkpoint_classes - 1 if drop else checkpoint_classes
        variables = tuple(sorted(shapes.items())) if family.needs_variables else ()
        # The entry's conversion block reaches the rules as ctx.conversion (JSON: a hashable cache key).
        plan, stray = _plan(model_name, classes, include_top, drop, checkpoint_classes, variables,
                            json.dumps(conversion or {}, sort_keys=True), rules)

        report = ConversionReport(Path(os.fspath(src)), ckpt.path, ckpt.format, model_name, output,
                                  include_top, classes if include_top else None, checkpoint_classes,
                                  drop and include_top)
        uncovered, missing, mismatched = [], [], []
        for _, slots in plan:
            for slot in slots:
                if slot.rule is None:
                    uncovered.append(f"{slot.weight_path} {slot.shape}")
                elif preferred_variable(slot.rule.variable, shapes, use_ema) is None:
                    missing.append(f"{slot.rule.variable} (for {slot.weight_path})")
        if stray or uncovered:
            raise ConversionError(
                f"kzoo's {family.name} rules do not fit the {model_name} builder (a kzoo bug, please "
                f"report it). Keras weights without a rule:\n{_limited(uncovered)}\n"
                f"Rules for weights the layers lack:\n{_limited(stray)}")
        if missing:
            raise ConversionError(
                f"{ckpt.path}: {len(missing)} variable(s) the {model_name} model needs are not in the "
                f"checkpoint:\n{_limited(missing)}\nCheck that the checkpoint is a {model_name} "
                f"checkpoint (guess from its head: {', '.join(_guess_models(shapes)) or 'unknown'}).")

        to_read = sum(int(np.prod(shapes[preferred_variable(s.rule.variable, shapes, use_ema)]))
                      for _, slots in plan for s in slots) * 4
        layers, used = [], set()
        with progress_bar(to_read, f"kzoo convert {model_name}", progress) as bar:
            for layer_name, slots in plan:
                weights = []
                for slot in slots:
                    key = preferred_variable(slot.rule.variable, shapes, use_ema)
                    value = ckpt.read(key)
                    report.bytes_read += value.nbytes
                    bar.update(value.nbytes)
                    if slot.rule.transform is not None:
                        value = slot.rule.transform(value)
                    if slot.rule.class_axis is not None and drop:
                        value = drop_background(value, slot.rule.class_axis)
                    if tuple(value.shape) != slot.shape:
                        mismatched.append(f"{key} {tuple(shapes[key])} -> {slot.weight_path}: "
                                          f"got {tuple(value.shape)}, the model needs {slot.shape}")
                    used.add(key)
                    weights.append((slot.weight_path, value))
                    report.mapped.append((key, layer_name, slot.weight_path, tuple(value.shape)))
                layers.append((layer_name, weights))
        if mismatched:
            raise ConversionError(
                f"{ckpt.path}: {len(mismatched)} shape mismatch(es) converting to {model_name}:\n"
                f"{_limited(mismatched)}\nThe checkpoint is probably of another depth or width "
                f"(guess from its head: {', '.join(_guess_models(shapes)) or 'unknown'}).")

        for name in shapes:
            if name in used:
                continue
            if name + EMA_SUFFIX in used:
                reason = "replaced by moving averages"
            elif head and not include_top and name.startswith(head.rsplit("/", 1)[0]):
                reason = "classification head (include_top=False)"
            else:
                reason = unused_category(name)
            report.unused.setdefault(reason, []).append(name)
        for name, why in getattr(ckpt, "skipped", ()):  # files in a Paddle folder that are not tensors
            report.unused.setdefault(f"skipped: {why}", []).append(name)
        for names in report.unused.values():
            names.sort()

    _write_output(output, layers)
    report.bytes_written = output.stat().st_size
    report.seconds = time.perf_counter() - started
    return report


def _write_output(output: Path, layers) -> None:
    """Write the converted h5 through kzoo's in-memory h5 writer and one rename: a full disk, a file-size
    limit or a kill never leaves a half-written file under the output name, an older file there stays as
    it was, and a refused write is a StorageError naming the folder and the bytes needed."""
    from kzoo.formats import keras_h5

    keras_h5.write_weights(output, layers, what=f"Converted weights {output.name}",
                           elsewhere="convert to another folder (-o / output=)")


# ---------------------------------------------------------------------------------------------
# weights="tione": convert once, cache by source hash
# ---------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    """The file's sha256, memoised next to the conversions by (path, size, mtime)."""
    from kzoo import sources

    stat = path.stat()
    memo_file = Path(sources.cache_dir()) / "converted" / "sha256-memo.json"
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    if key in memo:
        return memo[key]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(2**22), b""):
            digest.update(chunk)
    memo[key] = digest.hexdigest()
    try:
        memo_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo_file.with_name(f"{memo_file.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(memo))
        os.replace(tmp, memo_file)
    except OSError:
        pass
    return memo[key]


def converted_weights_path(entry, archive_path) -> Path:
    """The Keras h5 for a ``tf-checkpoint`` registry entry, converting ``archive_path`` on first use.

    The h5 is cached in ``<cache>/converted/`` under the source's sha256, the converter version and
    the conversion options, so a second call (any process) only checks that the file exists.
    The entry's ``conversion`` block may set ``model`` (default: ``entry.model``),
    ``keep_background`` (default False), ``use_ema`` (default True) and ``checkpoint`` (the
    checkpoint's file name inside an archive, used when it holds several); the whole block reaches the
    family's rules (``ctx.conversion``).
    """
    archive_path = Path(archive_path)
    options = dict(getattr(entry, "conversion", None) or {})
    model_name = options.get("model") or entry.model
    keep_background = bool(options.get("keep_background", False))
    use_ema = bool(options.get("use_ema", True))
    include_top = bool(getattr(entry, "include_top", True))
    sha256 = getattr(entry, "sha256", None) or _sha256(archive_path)
    tags = ("top" if include_top else "notop") + ("-bg" if keep_background else "") + (
        "" if use_ema else "-noema")
    folder = converted_folder()
    target = folder / f"{model_name}-{tags}-{sha256[:16]}-c{CONVERTER_VERSION}.h5"
    return convert_once(target, lambda: convert_checkpoint(
        archive_path, model_name, target, keep_background=keep_background, use_ema=use_ema, include_top=include_top,
        workdir=folder / "tmp", hint=options.get("checkpoint"), conversion=options))


def converted_folder() -> Path:
    """``<cache>/converted``, where converted weights live (keyed by their source's sha256)."""
    from kzoo import sources

    folder = Path(sources.cache_dir()) / "converted"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def convert_once(target: Path, convert, done: Path | None = None) -> Path:
    """``target``, made by ``convert()`` unless ``done`` (default: ``target``) exists; under a file lock, so
    processes sharing the cache convert once and none reads a half-written result."""
    from filelock import FileLock

    done = done or target
    if not done.exists():
        with FileLock(str(target) + ".lock"):
            if not done.exists():  # another process may have converted it while we waited
                convert()
    return target


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kzoo convert",
        description="Convert a TF-slim / TI-ONE checkpoint (V1 file, V2 prefix, folder, .tar.gz/.tgz/.zip) "
                    "into a Keras h5 weight file.")
    parser.add_argument("src", help="checkpoint file, V2 prefix, folder or archive")
    parser.add_argument("--model", required=True, help="kzoo model name, e.g. resnet_v2_50 (see --list)")
    parser.add_argument("-o", "--output", help="the h5 to write (default: ./<model>.h5)")
    parser.add_argument("--keep-background", action="store_true",
                        help="keep the background class of 1001-class heads (classes=1001)")
    parser.add_argument("--no-ema", dest="use_ema", action="store_false",
                        help="ignore ExponentialMovingAverage shadow variables")
    parser.add_argument("--notop", dest="include_top", action="store_false",
                        help="write a notop file (no classification head)")
    parser.add_argument("--verbose", "-v", action="store_true", help="list every mapped variable")
    return parser


def cli_main(argv=None) -> int:
    from kzoo.errors import KzooError

    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--model")
    wanted = peek.parse_known_args(argv)[0].model
    if wanted and getattr(index.MODELS.get(_canonical(wanted)), "kind", "") == "text":  # writes a keras-hub preset
        from kzoo.convert.google_bert_preset import cli_main as preset_cli_main

        return preset_cli_main(argv)
    args = _parser().parse_args(argv)
    try:
        report = convert_checkpoint(args.src, args.model, args.output, keep_background=args.keep_background,
                                    use_ema=args.use_ema, include_top=args.include_top)
    except KzooError as exc:
        print(f"kzoo convert: error: {exc}", file=sys.stderr)
        return 1
    print(report.summary())
    if args.verbose:
        for key, layer, weight, shape in report.mapped:
            print(f"  {key} -> {weight} {shape}")
    return 0
