"""Benchmarks run with ``python -m pytest benchmarks/ --benchmark-only``: collect ``bench_*.py`` files and
let them use the test helpers in ``tests/`` (the loopback server, generated weight files)."""

import sys
from pathlib import Path

import pytest

from kzoo import bench

# TensorFlow's BFC pool for every benchmark, as `kzoo bench` uses by default (its module docstring
# says why); it must be chosen before TensorFlow allocates, so here, before any benchmark module.
bench.use_allocator("bfc")

_TESTS = Path(__file__).resolve().parent.parent / "tests"
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))


def pytest_collect_file(file_path, parent):
    # Files named on the command line are collected by pytest itself whatever their name.
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
