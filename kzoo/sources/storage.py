"""Writing a file so that it lands whole or not at all, and the error for a write the disk refuses.

``write_atomically`` writes into a temp file beside the destination and renames it into place, so a full
disk, a file-size limit or a kill leaves the older file under that name as it was and no temp file behind.
A refusal becomes :class:`~kzoo.errors.StorageError` (``storage_error``): it names the folder, the bytes
needed and free, and a way out that fits the cause. Files that C libraries would write themselves (HDF5,
which has crashed on ENOSPC) are built in memory first and written through here.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from pathlib import Path

from kzoo.errors import StorageError

PART_SUFFIX = ".part"  # a temp file; the cache's stale-temp sweep removes ``.NAME.*.part``
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def error_number(error: BaseException) -> int | None:
    """The errno behind a failed write. h5py reports some (a file-size limit) as a RuntimeError whose text
    carries ``errno = N``; TensorFlow's file errors carry only the text, so it is read too."""
    code = getattr(error, "errno", None)
    if isinstance(code, int):
        return code
    text = str(error)
    match = re.search(r"errno = (\d+)", text)
    if match:
        return int(match.group(1))
    for code in NO_ROOM:
        if os.strerror(code) in text:
            return code
    return None


def no_room_cause(error: BaseException | None) -> BaseException | None:
    """The full-disk or file-size-limit error in ``error``'s chain (``raise ... from``), if any."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if error_number(error) in NO_ROOM:
            return error
        error = error.__cause__ or error.__context__
    return None


def free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _size_text(n: int) -> str:
    return f"{n} bytes ({n / 2**20:.1f} MiB)"


def writable_alternative(instead_of: Path, needed: int | None = None) -> Path | None:
    """A folder kzoo could write instead of ``instead_of`` (on another filesystem with room): the user
    cache folder, else the temp folder. Nothing is created; this only picks a suggestion."""
    home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    try:
        avoid = os.stat(existing_ancestor(instead_of)).st_dev
    except OSError:
        avoid = None
    for candidate in (Path(home) / "kzoo", Path(tempfile.gettempdir()) / "kzoo-cache"):
        base = existing_ancestor(candidate)
        try:
            if os.stat(base).st_dev == avoid or not os.access(base, os.W_OK | os.X_OK):
                continue
            if needed is not None and shutil.disk_usage(base).free < needed:
                continue
        except OSError:
            continue
        return candidate
    return None


def existing_ancestor(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists."""
    path = Path(path).absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def storage_error(what: str, folder: Path, error: BaseException, needed: int | None = None, kept: str = "",
                  elsewhere: str = "", about: bool = False, at_least: bool = False) -> StorageError:
    """A StorageError for ``what`` failing to write into ``folder``: why, the bytes it needs (``about``: an
    estimate; ``at_least``: a lower bound) and the bytes free, what was ``kept`` (or not), and a way out
    that fits the cause, ending with ``elsewhere`` (how to write somewhere else) where that helps."""
    code = error_number(error)
    reason = f"{os.strerror(code)}, errno {code}" if code else f"{type(error).__name__}: {error}"
    text = f"{what}: could not write to {folder} ({reason})."
    qualifier = "about " if about else "more than " if at_least else ""
    need = f"{qualifier}{_size_text(needed)}" if needed is not None else "more bytes than fit"
    limit = None
    if code == errno.EFBIG:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        limit = None if limit == resource.RLIM_INFINITY else limit
    if limit is not None:  # the disk may be empty: the process's own limit is what stops it
        text += f" It needs {need}, and this process may not write files over {_size_text(limit)} (ulimit -f)."
    elif code in NO_ROOM or needed is not None:
        free = free_bytes(folder)
        text += f" It needs {need}" + (f"; {_size_text(free)} are free there." if free is not None else ".")
    if kept:
        text += f" {kept}"
    if code == errno.EFBIG:
        text += " Raise the file-size limit (ulimit -f unlimited) and run it again."
    elif code in NO_ROOM:
        text += " Free space there" + (f", or {elsewhere}." if elsewhere else ".")
    else:
        text += f" Make {folder} writable" + (f", or {elsewhere}." if elsewhere else ".")
    result = StorageError(text)
    result.errno = code
    return result


def write_atomically(path, data, what: str, elsewhere: str = "write it to another folder") -> Path:
    """Write ``data`` (bytes, or a function that writes into a binary file object) to ``path`` through a
    temp file beside it and one rename. A refused write raises StorageError naming the folder and the
    bytes needed; the temp file is gone and an older file at ``path`` is unchanged."""
    path = Path(path)
    needed = len(data) if isinstance(data, (bytes, bytearray, memoryview)) else None
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=PART_SUFFIX)
        with os.fdopen(fd, "wb") as out:
            if needed is None:
                data(out)
            else:
                view = memoryview(data)
                while view:  # a write may be short near the end of a disk
                    view = view[out.write(view):]
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        if tmp is not None:  # gone before the message counts the free bytes
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            tmp = None
        raise storage_error(what, path.parent, e, needed,
                            kept="Nothing was written under that name (an older file there is unchanged).",
                            elsewhere=elsewhere) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return path


def h5_bytes(build) -> bytes:
    """An HDF5 file built in memory by ``build(h5py_file)``: HDF5 then never meets a full disk (on which
    HDF5 1.14 has crashed with SIGSEGV), and the bytes go to disk through ``write_atomically``."""
    import io

    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        build(f)
    return buffer.getvalue()
