"""Writing an artifact so that the path asked for holds either nothing new or the whole, checked artifact.

The exporter writes into a hidden temporary folder *beside* the path (same folder, so same file system, so
``os.rename`` is atomic), parity runs there, and only then is the artifact moved into place. Whatever fails
(the exporter, the runtime, the parity check, Ctrl-C) the temporary folder is removed and the path is as it was.
A full disk or a file-size limit met anywhere on the way (Keras' exporter, TensorFlow's or tf2onnx's writers,
the provenance file) becomes a StorageError naming the folder and the bytes needed (the model's weights, or
what had been written when it stopped, if more).

Replacing (``force=True``): a file replaces a file with one ``os.replace``. A folder cannot be replaced in one
step, so the old one is first renamed into the temporary folder, then the new one renamed in; if that second
rename fails the old one is renamed back. A single-file artifact's provenance (``<file>.kzoo.json``) is a
second file: the old one is removed *before* the artifact is replaced, so a crash between the two renames
leaves an artifact without provenance, never one paired with another artifact's.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from kzoo.errors import ExportError, StorageError
from kzoo.sources.storage import no_room_cause, storage_error

SIDECAR_SUFFIX = ".kzoo.json"
PROVENANCE_NAME = "kzoo.json"


def sidecar(path) -> Path:
    return Path(os.fspath(path) + SIDECAR_SUFFIX)


class Staging:
    """``with Staging(path, folder, force) as stage:`` export to ``stage.artifact``, then ``stage.commit()``."""

    def __init__(self, path, *, folder: bool, force: bool):
        self.path = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
        self.folder = folder
        self.force = force
        self.needed: int | None = None  # an estimate of the artifact's bytes (weights_bytes), for a full disk
        self._tmp: Path | None = None
        self.check()

    def check(self) -> None:
        """Refuse an existing path without ``force`` and a parent folder that is missing or not a folder."""
        if os.path.lexists(self.path) and not self.force:
            raise ExportError(f"{self.path} already exists; pass force=True (kzoo export --force) to replace it.")
        parent = self.path.parent
        if not parent.is_dir():
            what = "is not a folder" if parent.exists() else "does not exist"
            raise ExportError(f"Cannot write {self.path}: the folder {parent} {what}.")
        if self.path.name in ("", ".", ".."):
            raise ExportError(f"Cannot write an artifact at {self.path}: name a file or folder.")

    def __enter__(self) -> "Staging":
        try:
            self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.kzoo-export-", dir=self.path.parent))
        except OSError as error:
            raise ExportError(f"Cannot write in {self.path.parent}: {error.strerror or error}.") from error
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        written = 0
        if self._tmp is not None:
            written = _bytes_in(self._tmp)
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        cause = no_room_cause(exc) if exc is not None and not isinstance(exc, StorageError) else None
        if cause is not None:  # a full disk or a file-size limit, wherever the exporter met it
            needed = max(written, self.needed or 0) or None
            raise storage_error(f"Export to {self.path.name}", self.path.parent, cause, needed,
                                about=needed == self.needed, at_least=needed == written,
                                elsewhere="export to a folder with room",
                                kept=f"Nothing was written at {self.path}"
                                     + (" (the artifact already there is unchanged)." if self.path.exists()
                                        else ".")) from exc

    @property
    def artifact(self) -> Path:
        """Where the exporter writes: a file, or a folder for folder formats (created here)."""
        staged = self._tmp / self.path.name
        if self.folder:
            staged.mkdir(exist_ok=True)
        return staged

    @property
    def provenance(self) -> Path:
        return self.artifact / PROVENANCE_NAME if self.folder else sidecar(self._tmp / self.path.name)

    def files(self) -> list[str]:
        """The artifact's files (relative to the folder for folder formats, else the file's own name)."""
        if not self.folder:
            return [self.path.name]
        root = self.artifact
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    def commit(self) -> Path:
        """Move the staged artifact (and its provenance) to the path asked for; returns that path."""
        if os.path.lexists(self.path) and not self.force:  # created by someone else while we exported
            raise ExportError(f"{self.path} appeared while exporting; pass force=True to replace it.")
        if self.folder:
            self._install(self.artifact, self.path)
            return self.path
        old_sidecar = sidecar(self.path)
        if os.path.lexists(old_sidecar):
            _remove(old_sidecar)
        self._install(self._tmp / self.path.name, self.path)
        self._install(self.provenance, old_sidecar)
        return self.path

    def _install(self, src: Path, dst: Path) -> None:
        if not os.path.lexists(dst) or (src.is_file() and dst.is_file() and not dst.is_symlink()):
            os.replace(src, dst)
            return
        old = self._tmp / ".replaced"
        os.rename(dst, old)
        try:
            os.rename(src, dst)
        except BaseException:
            os.rename(old, dst)
            raise


def weights_bytes(model) -> int:
    """The bytes of ``model``'s weights: about what any of the formats needs on disk."""
    import numpy as np

    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.weights)


def _bytes_in(folder: Path) -> int:
    """What the exporter had written when it stopped: a lower bound of what the artifact needs."""
    total = 0
    for root, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
