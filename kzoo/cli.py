"""The ``kzoo`` command: list | info | fetch | verify | doctor | export | predict here; convert and bench delegate
to their modules.

Every failure kzoo expects (a ``KzooError``) is printed as one message on stderr with exit status 1;
usage errors exit 2 (argparse). No traceback reaches the user for either.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import sys

from kzoo.errors import KzooError

_DELEGATED = {
    "convert": ("kzoo.convert", "convert a TF / TF-slim checkpoint into a Keras h5 weight file "
                                "(a Google BERT archive into a keras-hub preset)"),
    "bench": ("kzoo.bench", "measure model speed and memory"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kzoo",
        description="kzoo: a hashed, verified model zoo for Keras.",
        epilog="Environment: KZOO_CACHE_DIR, KZOO_MIRRORS, KZOO_OFFLINE, KZOO_REGISTRY. "
               "Run `kzoo COMMAND --help` for a command's options.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("list", help="list models (or weight files with --weights)",
                       description="List model names, or registry weight ids with --weights.")
    p.add_argument("pattern", nargs="?", help="glob on the name, e.g. 'resnet*'")
    p.add_argument("--pretrained", action="store_true", help="only models that have registry weights")
    p.add_argument("--weights", action="store_true", help="list weight entries instead of models")
    p.add_argument("--superseded", action="store_true", help="with --weights: include superseded releases")

    p = sub.add_parser("info", help="show a weight entry (or a model's weights)",
                       description="Sources, hashes, size, license, preprocessing and cache status of a "
                                   "weight entry; for a model name, the same for each of its weights.")
    p.add_argument("id", help="a weight id such as 'resnet50.imagenet.notop', or a model name")

    p = sub.add_parser("fetch", help="download and verify weight files into the cache",
                       description="Fetch weight files into the cache, verifying their hashes.")
    p.add_argument("ids", nargs="*", metavar="ID", help="weight ids")
    p.add_argument("--all", action="store_true", help="every current (not superseded) weight file")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar (default: when stderr is a terminal)")

    p = sub.add_parser("verify", help="re-hash files and identify them against the registry",
                       description="Re-hash files, say which registry entry each one is (superseded "
                                   "releases included), and exit 1 on any mismatch or unknown file.")
    p.add_argument("paths", nargs="*", metavar="PATH", help="files to check")
    p.add_argument("--cache", action="store_true", help="check every file in the kzoo cache")

    p = sub.add_parser("doctor", help="check this machine's set-up: cache, files, pins, mirrors, engines",
                       description="Whether the cache is writable, which cached files verify, which are unpinned "
                                   "(trust on first use), which KZOO_MIRRORS answer (none are contacted when "
                                   "offline), and which optional engines are installed. Exit 1 if a check fails.")
    from kzoo.selfcheck import add_arguments

    add_arguments(p)

    _add_deployment_commands(sub)

    for name, (_, summary) in _DELEGATED.items():
        sub.add_parser(name, help=summary, add_help=False)
    return parser


def _add_deployment_commands(sub) -> None:
    """``kzoo export`` and ``kzoo predict`` (their work is in kzoo.export; Keras loads only when they run)."""
    p = sub.add_parser("export", help="export a model to SavedModel, ONNX, OpenVINO or LiteRT, proven by parity",
                       description="Export a model with Keras' exporter, run the artifact in its own runtime "
                                   "against the Keras model (seeded random images and a picture), and write its "
                                   "provenance (kzoo.json in a folder artifact, FILE.kzoo.json beside a file). "
                                   "Nothing is left at the path if any step fails.")
    p.add_argument("model", help="a model name, e.g. resnet50")
    p.add_argument("-o", "--output", required=True, metavar="PATH",
                   help="folder (tf_saved_model, openvino) or file (onnx, litert: *.tflite)")
    p.add_argument("--format", choices=("tf_saved_model", "onnx", "openvino", "litert"),
                   help="default: from the file suffix (.onnx, .tflite)")
    p.add_argument("--weights", metavar="TAG", help="a registry tag, a weights file, or 'none' (random); "
                                                    "default: the model's default weights")
    p.add_argument("--optimize", action="store_true",
                   help="export optimize_for_inference's graph (without layers the format cannot hold)")
    p.add_argument("--force", action="store_true", help="replace an existing artifact (once the new one passed)")
    p.add_argument("--batch-size", type=int, metavar="N", help="a fixed batch (default: any batch)")
    p.add_argument("--input-size", type=int, metavar="N", help="square input size (default: the model's)")
    p.add_argument("--image", metavar="FILE", help="a picture for the parity check (default: a drawn scene)")

    p = sub.add_parser("predict", help="print the top-5 ImageNet classes of image files",
                       description="Top-5 classes of each image, preprocessed as the registry entry of the "
                                   "weights (else the model) says, on Keras or an exported engine.")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--model", required=True, help="a model name, e.g. resnet50")
    p.add_argument("--weights", metavar="TAG", help="a registry tag, a weights file, or 'none'")
    p.add_argument("--engine", default="keras", choices=("keras", "tensorflow", "onnxruntime", "openvino", "litert"),
                   help="run on Keras (default) or on an artifact exported for this engine")


def main(argv=None) -> int:
    if argv is None:  # the console script: builders may import TensorFlow, whose C++ logs are not ours
        from kzoo._native_logs import filter_stderr

        filter_stderr()
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        if argv and argv[0] in _DELEGATED:
            return _delegate(argv[0], argv[1:])
        try:
            args = _parser().parse_args(argv)
        except SystemExit as exit_:  # --help (0) and usage errors (2)
            return int(exit_.code or 0)
        return _COMMANDS[args.command](args)
    except KzooError as error:
        print(f"kzoo: error: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `kzoo list | head`: the reader left; say nothing more
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1
    except KeyboardInterrupt:
        print("kzoo: interrupted", file=sys.stderr)
        return 130
    except OSError as error:  # a disk or permission problem outside kzoo's own checks
        print(f"kzoo: error: {error}", file=sys.stderr)
        return 1


def _delegate(command: str, rest: list[str]) -> int:
    import importlib

    module_name, _ = _DELEGATED[command]
    try:
        cli_main = importlib.import_module(module_name).cli_main
    except (ImportError, AttributeError) as error:
        print(f"kzoo: error: `kzoo {command}` is not available in this install ({error}).", file=sys.stderr)
        return 1
    try:
        code = cli_main(rest)
    except SystemExit as exit_:
        code = exit_.code
    return int(code or 0)


# --------------------------------------------------------------------------------------------- commands

def _cmd_list(args) -> int:
    if args.weights:
        import kzoo.registry as registry

        entries = registry.list_weights(include_superseded=args.superseded)
        for entry in sorted(entries, key=lambda e: e.id):
            if args.pattern and not fnmatch.fnmatch(entry.id, args.pattern.lower()):
                continue
            size = f"{entry.size:>11,d}" if entry.size is not None else f"{'?':>11}"
            flags = "" if entry.pinned else " tofu"
            flags += f" superseded by {entry.superseded_by}" if entry.superseded_by else ""
            print(f"{entry.id:<56} {size}{flags}")
        return 0
    from kzoo.models import list_models  # the index: no Keras import

    for name in list_models(args.pattern, pretrained=args.pretrained):
        print(name)
    return 0


def _cmd_info(args) -> int:
    import difflib

    import kzoo.registry as registry
    from kzoo import index
    from kzoo.errors import UnknownModel, UnknownWeights

    try:
        entries = [registry.get_entry(args.id)]
    except UnknownWeights:
        # Not a weight id: a model name (or alias), resolved through the index without importing Keras,
        # or the model name of entries a user registered (KZOO_REGISTRY) for a builder of their own.
        try:
            info = index.get(args.id)
        except UnknownModel:
            entries = registry.list_weights(model=args.id, include_superseded=True)
            if entries:
                print("\n\n".join(_describe_entry(e) for e in entries))
                return 0
            known = [e.id for e in registry.list_weights(include_superseded=True)] + index.names()
            close = difflib.get_close_matches(args.id.lower(), known, n=5, cutoff=0.6)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise UnknownWeights(
                f"{args.id!r} is neither a weight id nor a model name.{hint} `kzoo list --weights` lists "
                f"weight ids, `kzoo list` model names.") from None
        entries = registry.list_weights(model=info.name, include_superseded=True)
        print(_describe_model(info))
        if not entries:
            print(f"  {'weights:':<15}none registered (build it with weights=None, or add an entry through "
                  "KZOO_REGISTRY)")
            return 0
        print(f"  {'weights:':<15}{', '.join(e.id for e in entries)}\n")
    print("\n\n".join(_describe_entry(e) for e in entries))
    return 0


def _describe_model(info) -> str:
    """Where a model's three parts live (builder, conversion rule, registry entries), and its facts."""
    def row(label, value):
        return f"  {label + ':':<15}{value}"

    lines = [info.name]
    if info.aliases:
        lines.append(row("aliases", ", ".join(info.aliases)))
    call = f"kzoo.{info.builder}" if info.public else f"kzoo.create_model({info.name!r})"
    fixed = ", ".join(f"{k}={v!r}" for k, v in info.kwargs.items())
    if not info.public:
        call += f"  (the {info.builder} builder" + (f", {fixed}" if fixed else "") + ")"
    lines.append(row("build", call))
    lines.append(row("builder", f"{info.builder_path}  ({info.builder})"))
    lines.append(row("rule", info.rule_path if info.rule_path else "none (Keras h5 weights load by layer name)"))
    lines.append(row("family", info.family))
    lines.append(row("input size", info.input_size))
    lines.append(row("preprocessing", info.preprocessing))
    lines.append(row("default tag", info.weights_default or "imagenet"))
    return "\n".join(lines)


def _describe_entry(entry) -> str:
    import kzoo.sources as sources

    def row(label, value):
        return f"  {label + ':':<15}{value}"

    lines = [entry.id, row("model", f"{entry.model}  (tag {entry.tag}, include_top={entry.include_top}"
                                    + (f", {entry.variant_text}" if entry.variant else "") + ")")]
    lines.append(row("file", entry.file_name))
    lines.append(row("size", f"{entry.size:,d} bytes" if entry.size is not None else "unknown"))
    lines.append(row("format", entry.format))
    lines.append(row("trust", entry.trust_for_display))
    if entry.pinned:
        lines.append(row("md5", entry.md5 or "unknown"))
        lines.append(row("sha256", entry.sha256 or "unknown"))
    for label, attr in (("license", "license"), ("origin", "origin"), ("preprocessing", "preprocessing"),
                        ("input size", "input_size"), ("classes", "num_classes")):
        value = getattr(entry, attr)
        lines.append(row(label, value if value is not None else "unknown"))
    if entry.superseded_by:
        lines.append(row("superseded by", entry.superseded_by))
        if entry.format == "keras-h5":
            from kzoo.formats.keras_legacy import describe_release

            lines.extend(row(label, text) for label, text in describe_release(entry))
    if entry.conversion:
        lines.append(row("conversion", entry.conversion))
    status = sources.cache_status(entry)
    lines.append(row("cache", f"{status.state}: {status.path}" + (f" ({status.detail})" if status.detail else "")))
    lines.append(row("sources", ""))
    for n, source in enumerate(sources.sources_for(entry), 1):
        lines.append(f"    {n}. {source}")
    if sources.is_offline():
        lines.append("  (offline: only the cache and local mirrors are used)")
    return "\n".join(lines)


def _cmd_fetch(args) -> int:
    import kzoo.registry as registry
    import kzoo.sources as sources

    if args.all and args.ids:
        print("kzoo: error: give weight ids or --all, not both", file=sys.stderr)
        return 2
    if args.all:
        entries = registry.list_weights(include_superseded=False)
    elif args.ids:
        entries = [registry.get_entry(i) for i in args.ids]  # unknown ids fail before any download
    else:
        print("kzoo: error: name at least one weight id, or --all (see `kzoo list --weights`)", file=sys.stderr)
        return 2
    failed = 0
    for entry in entries:
        try:
            path = sources.fetch(entry, progress=args.progress)
        except KzooError as error:
            failed += 1
            print(f"kzoo: error: {error}", file=sys.stderr)
            continue
        print(f"{entry.id}\t{path}")
    if failed and len(entries) > 1:
        print(f"kzoo: {failed} of {len(entries)} files failed", file=sys.stderr)
    return 1 if failed else 0


def _cmd_verify(args) -> int:
    from pathlib import Path

    import kzoo.sources as sources

    paths = [Path(p) for p in args.paths]
    if args.cache:
        paths += sources.cached_files()
    elif not paths:
        print("kzoo: error: name files to verify, or --cache", file=sys.stderr)
        return 2
    if not paths:
        print(f"The cache {sources.cache_dir()} holds no weight files.")
        return 0
    bad = 0
    for path in paths:
        if not path.is_file():
            print(f"MISSING {path}: no such file")
            bad += 1
            continue
        result = sources.verify_file(path)
        print(result.describe())
        bad += not result.ok
    if bad:
        print(f"kzoo: {bad} of {len(paths)} files did not verify", file=sys.stderr)
    return 1 if bad else 0


def _cmd_doctor(args) -> int:
    from kzoo.selfcheck import report

    return report(args)


def _weights_option(value):
    return None if value is not None and value.lower() == "none" else value


def _cmd_export(args) -> int:
    from kzoo.export import export

    kwargs = {} if args.weights is None else {"weights": _weights_option(args.weights)}
    result = export(args.model, args.output, format=args.format, batch_size=args.batch_size,
                    optimize=args.optimize, force=args.force, input_size=args.input_size, image=args.image,
                    **kwargs)
    print(result.summary())
    return 0


def _cmd_predict(args) -> int:
    from kzoo.export.predict import format_predictions, predict

    kwargs = {} if args.weights is None else {"weights": _weights_option(args.weights)}
    print(format_predictions(predict(args.images, args.model, engine=args.engine, **kwargs)))
    return 0


_COMMANDS = {"list": _cmd_list, "info": _cmd_info, "fetch": _cmd_fetch, "verify": _cmd_verify,
             "doctor": _cmd_doctor, "export": _cmd_export, "predict": _cmd_predict}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
