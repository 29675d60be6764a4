"""Every error kzoo raises on purpose. Each message names the entry, the file and the next step."""


class KzooError(Exception):
    """Base class of all kzoo errors."""


class RegistryError(KzooError):
    """The weight registry (or a user registry file) is malformed."""


class UnknownModel(KzooError, ValueError):
    """No builder is registered under this name."""


class UnknownWeights(KzooError, ValueError):
    """No registry entry matches the requested model / tag / variant."""


class WeightsNotFound(KzooError, FileNotFoundError):
    """No source could provide the file (offline, or every source failed)."""


class HashMismatch(KzooError):
    """Bytes did not match the pinned hash."""


class DownloadError(KzooError):
    """A source failed for a reason other than a hash mismatch."""


class StorageError(KzooError, OSError):
    """A file could not be written: the disk is full, a file-size limit was hit, or the folder is read-only.

    The message names the folder, the bytes needed and a way out; ``errno`` is the operating system's.
    """


class IncompatibleWeights(KzooError, ValueError):
    """A weight file does not fit the model (missing, unexpected or wrongly shaped weights)."""


class WeightsFileError(KzooError, OSError):
    """A weight file is truncated, damaged or not a weight file at all (``weights=PATH``, ``kzoo.load_weights``).

    An OSError too, as h5py's own error for a damaged file was, so existing ``except OSError`` still holds.
    """


class ConversionError(KzooError):
    """A checkpoint could not be converted into Keras weights."""


class UnsafeArchive(ConversionError):
    """An archive member would escape its folder, is a link out, or exceeds the size limits."""


class MissingExtra(KzooError, ImportError):
    """An optional dependency is not installed; the message names the ``pip install "kzoo[...]"`` line."""


class InvalidFeatureIndex(KzooError, ValueError):
    """``out_indices`` asks for a stride the network does not have (``create_model(..., features_only=True)``)."""


class ExportError(KzooError):
    """``kzoo.export`` could not produce the artifact: an unknown format, a layer the format cannot hold, an
    unwritable or already existing path, a missing engine. Nothing is left at the path asked for."""


class ParityError(ExportError):
    """An exported artifact, run in its own runtime, differs from the Keras model by more than the format's
    tolerance; the artifact was discarded."""
