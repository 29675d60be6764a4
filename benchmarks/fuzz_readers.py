"""The fuzz run of every reader, printed as the outcome table (the engine is tests/test_fuzz_readers.py).

    python benchmarks/fuzz_readers.py                        # 5000 mutants per reader, seed 15
    python benchmarks/fuzz_readers.py --cases 300 --by-mutation
    python benchmarks/fuzz_readers.py --readers h5,zip --seed 7 --keep /tmp/kzoo-fuzz

Each mutant is loaded in a worker subprocess (restarted when a C library kills it); see the test module's
docstring for what each reader row loads and what the outcomes mean. Exit status 1 when any mutant ended in
other / crash / hang, or a registered or pinned file loaded other numbers. Mutants worth a look (those, and
every "different" one) are kept under ``KEEP/findings`` with the description of their mutation.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import test_fuzz_readers as fuzz  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=5000, help="mutants per reader (default 5000)")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--readers", default=",".join(fuzz.READERS), help="comma-separated subset of "
                        + ", ".join(fuzz.READERS))
    parser.add_argument("--by-mutation", action="store_true", help="one row per reader and mutation kind")
    parser.add_argument("--keep", help="folder for fixtures, worker log and findings (default: a new temp folder)")
    parser.add_argument("--json", help="also write counts and findings to this JSON file")
    args = parser.parse_args(argv)
    readers = tuple(r for r in args.readers.split(",") if r)
    unknown = sorted(set(readers) - set(fuzz.READERS))
    if unknown:
        parser.error(f"unknown reader(s) {unknown}; choose from {', '.join(fuzz.READERS)}")
    root = Path(args.keep or tempfile.mkdtemp(prefix="kzoo-fuzz-"))

    done = {"n": 0}
    total = args.cases * len(readers)

    def progress(reader, index, outcome):
        done["n"] += 1
        if done["n"] % 500 == 0 or done["n"] == total:
            print(f"  {done['n']}/{total} mutants", file=sys.stderr, flush=True)

    result = fuzz.run_fuzz(args.cases, seed=args.seed, readers=readers, root=root, progress=progress)
    command = f"python benchmarks/fuzz_readers.py --cases {args.cases} --seed {args.seed}"
    if set(readers) != set(fuzz.READERS):
        command += f" --readers {','.join(readers)}"
    print(f"\n{fuzz.format_table(result, by_mutation=args.by_mutation)}\n")
    print(f"{args.cases} mutants per reader, seed {args.seed}: {result['seconds']:.0f} s, "
          f"{result['worker_starts']} worker start(s). Reproduce: {command}")
    bad = [f for f in result["findings"] if f["bad"]]
    for finding in bad[:50]:
        print(f"  {finding['reader']} #{finding['index']} {finding['mutation']} ({finding['description']}): "
              f"{finding['outcome']}: {finding['detail']}\n    kept: {finding['file']}")
    if args.json:
        counts = {reader: {kind: dict(counter) for kind, counter in by_kind.items()}
                  for reader, by_kind in result["counts"].items()}
        Path(args.json).write_text(json.dumps({"cases": args.cases, "seed": args.seed, "command": command,
                                               "seconds": result["seconds"], "counts": counts,
                                               "findings": result["findings"]}, indent=1))
    print(f"fixtures, worker log and findings: {root}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
