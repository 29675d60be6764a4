"""One progress-bar helper for downloads and conversions: a tqdm bar on a terminal, silence otherwise."""

from __future__ import annotations

import sys


class _Silent:
    """Stands in for a tqdm bar when nothing should be printed."""

    def update(self, n=1):
        pass

    def reset(self, total=None):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def wants_progress(progress: bool | None) -> bool:
    """``progress=None`` means: only when stderr is an interactive terminal."""
    if progress is not None:
        return bool(progress)
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # closed or replaced stderr
        return False


def progress_bar(total: int | None, desc: str, progress: bool | None = None, unit: str = "B"):
    """A context-managed bar with ``update(n)``/``reset(total)``; byte units scale to kB/MB."""
    if not wants_progress(progress):
        return _Silent()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == "B", unit_divisor=1024,
                file=sys.stderr, leave=False, dynamic_ncols=True)
