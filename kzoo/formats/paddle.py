"""Read PaddlePaddle parameter files with numpy only (Paddle itself is never imported).

``open_params(src)`` accepts

- a folder of per-variable LoDTensor files, one file per variable named after it (what
  ``fluid.io.save_params`` / ``save_persistables`` wrote, and what the 2019 ImageNet archives hold); the
  folder is found by content anywhere below ``src`` (the archives' folder names were inconsistent,
  https://github.com/PaddlePaddle/models/issues/2100), skipping ``__MACOSX/`` and ``._*`` (issue #2196);
- a ``.zip`` / ``.tar`` / ``.tar.gz`` of such a folder, extracted with the TF archives' safe extraction
  (:func:`kzoo.formats.archives.extract_archive`) into a temporary folder removed on ``close()``;
- a ``.pdparams`` file (``paddle.save`` of a state dict: a pickle of ``{name: ndarray}``), read by an
  unpickler that builds nothing but dicts and numpy arrays; a dygraph file's
  ``StructuredToParameterName@@`` table renames its structured keys to the parameter names set with
  ``ParamAttr(name=...)`` (dygraph's automatic ``conv2d_0.w_0``-style names are not used: the structured key,
  e.g. PaddleClas' ``conv_block_1.conv1.weight``, is kept);
- a combined params file (``save_vars(..., filename=...)``: the same tensor records concatenated, no
  names), which needs the variable names in the order they were saved (``names=``, Paddle sorts them).

One LoDTensor record (paddle/fluid/framework/lod_tensor.cc, tensor_util.cc, framework.proto in
https://github.com/PaddlePaddle/Paddle): uint32 version 0; uint64 LoD level count, each level a uint64
byte size and its offsets; uint32 tensor version 0; int32 size of a ``TensorDesc`` protobuf
(field 1 data type, field 2 dims); the raw little-endian data.

A file below the folder that is not a tensor (``run.log``, AppleDouble ``._*``) is skipped and listed in
``skipped``; a tensor file shorter than its header declares raises ConversionError naming the file.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import struct
from pathlib import Path

import numpy as np

from kzoo.errors import ConversionError
from kzoo.formats.archives import ExtractedReader

# framework.proto VarType.Type -> numpy dtype (BF16 is read as uint16 and widened below).
_DTYPES = {0: np.bool_, 1: np.int16, 2: np.int32, 3: np.int64, 4: np.float16, 5: np.float32, 6: np.float64,
           20: np.uint8, 21: np.int8, 22: np.uint16, 23: np.complex64, 24: np.complex128}
_BF16 = 22
_HEADER = struct.Struct("<IQ")  # version, LoD level count
_MAX_DIMS = 16
_SKIPPED_DIRS = ("__MACOSX",)
_STRUCTURED_TABLE = "StructuredToParameterName@@"
# Names dygraph gives parameters created without ParamAttr(name=...): they say nothing, the structured key does.
_AUTO_NAME = re.compile(r"^(conv2d|batch_norm2d|batch_norm|linear|create_parameter)_\d+\.(w|b)_\d+$")
_SUFFIX_PDPARAMS = (".pdparams", ".pdparams.pkl")
_FIX = "Download the file again."


class NotATensor(ValueError):
    """The bytes do not start like a LoDTensor record."""


class TruncatedTensor(ValueError):
    """The header is a LoDTensor's, the data is shorter than it declares."""


def _varint(buf: bytes, off: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if off >= len(buf) or shift > 63:
            raise NotATensor("bad varint in the tensor description")
        byte = buf[off]
        off += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, off
        shift += 7


def _tensor_desc(desc: bytes) -> tuple[int, tuple]:
    """(data type, dims) from a serialized TensorDesc; repeated dims packed or not."""
    dtype, dims, off = None, [], 0
    while off < len(desc):
        key, off = _varint(desc, off)
        field, wire = key >> 3, key & 7
        if field == 1 and wire == 0:
            dtype, off = _varint(desc, off)
        elif field == 2 and wire == 0:
            dim, off = _varint(desc, off)
            dims.append(dim)
        elif field == 2 and wire == 2:
            size, off = _varint(desc, off)
            end = off + size
            if end > len(desc):
                raise NotATensor("bad packed dims")
            while off < end:
                dim, off = _varint(desc, off)
                dims.append(dim)
        else:
            raise NotATensor(f"unexpected field {field} in the tensor description")
    if dtype not in _DTYPES or len(dims) > _MAX_DIMS:
        raise NotATensor(f"data type {dtype} / {len(dims)} dims is not a Paddle tensor")
    dims = tuple(d - (1 << 64) if d >= 1 << 63 else d for d in dims)  # int64 on the wire
    if any(d < 0 for d in dims):
        raise NotATensor(f"negative dimension in {dims}")
    return dtype, dims


def parse_header(buf: bytes, off: int = 0) -> tuple[int, tuple, int]:
    """(data type, dims, offset of the data) of the record at ``off``; NotATensor / TruncatedTensor."""
    if len(buf) - off < 4 or struct.unpack_from("<I", buf, off)[0] != 0:
        raise NotATensor("no LoDTensor version 0 header")
    if len(buf) - off < _HEADER.size:
        raise TruncatedTensor("the header is cut short")
    _, levels = _HEADER.unpack_from(buf, off)
    off += _HEADER.size
    if levels > _MAX_DIMS:
        raise NotATensor(f"{levels} LoD levels")
    for _ in range(levels):
        if len(buf) - off < 8:
            raise TruncatedTensor("the LoD table is cut short")
        size, = struct.unpack_from("<Q", buf, off)
        off += 8 + size
        if size % 8 or off > len(buf):
            raise TruncatedTensor("the LoD table is cut short")
    if len(buf) - off < 8:
        raise TruncatedTensor("the tensor header is cut short")
    version, desc_size = struct.unpack_from("<Ii", buf, off)
    off += 8
    if version != 0 or desc_size < 0 or desc_size > 4096:
        raise NotATensor(f"tensor version {version}, description size {desc_size}")
    if len(buf) - off < desc_size:
        raise TruncatedTensor("the tensor description is cut short")
    dtype, dims = _tensor_desc(buf[off:off + desc_size])
    return dtype, dims, off + desc_size


def _nbytes(dtype: int, dims: tuple) -> int:
    count = 1
    for d in dims:
        count *= d  # Python ints: a damaged huge shape cannot wrap around
    return count * np.dtype(_DTYPES[dtype]).itemsize


def _array(buf, dtype: int, dims: tuple, off: int) -> np.ndarray:
    count = _nbytes(dtype, dims) // np.dtype(_DTYPES[dtype]).itemsize
    value = np.frombuffer(buf, np.dtype(_DTYPES[dtype]).newbyteorder("<"), count, off).reshape(dims)
    if dtype == _BF16:
        return (value.astype(np.uint32) << 16).view(np.float32)
    return value.astype(value.dtype.newbyteorder("="), copy=True)


def read_tensor(buf: bytes, off: int = 0) -> tuple[np.ndarray, int]:
    """One LoDTensor record at ``off``: (array, offset after it)."""
    dtype, dims, data = parse_header(buf, off)
    end = data + _nbytes(dtype, dims)
    if end > len(buf):
        raise TruncatedTensor(f"{len(buf) - data} data bytes, the header declares {end - data}")
    return _array(buf, dtype, dims, data), end


def write_tensor(array: np.ndarray) -> bytes:
    """The LoDTensor record of ``array`` (float32/float64/ints), byte-identical to Paddle's (tests, fuzzing)."""
    array = np.ascontiguousarray(array)
    code = next(k for k, v in _DTYPES.items() if np.dtype(v) == array.dtype and k != _BF16)
    desc = bytes([0x08, code]) + b"".join(b"\x10" + _encode_varint(d) for d in array.shape)
    data = array.astype(array.dtype.newbyteorder("<")).tobytes()
    return struct.pack("<IQ", 0, 0) + struct.pack("<Ii", 0, len(desc)) + desc + data


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


# ---------------------------------------------------------------------------------------------
# .pdparams: a pickle that may only build dicts and numpy arrays
# ---------------------------------------------------------------------------------------------

_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to build {module}.{name} (a .pdparams holds arrays only)")
        return super().find_class(module, name)


def read_pdparams(path) -> tuple[dict, list]:
    """``({parameter name: array}, [(key, why skipped), ...])`` of a ``.pdparams`` file."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = _ArraysOnly(io.BufferedReader(handle)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            struct.error, MemoryError, ImportError, UnicodeDecodeError, OverflowError, RecursionError) as exc:
        raise ConversionError(f"{path}: not a readable .pdparams file ({type(exc).__name__}: {str(exc)[:200]}); "
                              f"it is truncated, damaged or not a Paddle state dict. {_FIX}") from exc
    if not isinstance(data, dict):
        raise ConversionError(f"{path}: a .pdparams holds a dict of arrays, this one a {type(data).__name__}. {_FIX}")
    table = data.pop(_STRUCTURED_TABLE, None)
    renames = table if isinstance(table, dict) else {}
    arrays, skipped = {}, []
    for key, value in data.items():
        if not isinstance(key, str) or not isinstance(value, np.ndarray) or value.dtype.kind not in "fiub":
            skipped.append((str(key), f"not an array ({type(value).__name__})"))
            continue
        name = renames.get(key, key)
        keep = not isinstance(name, str) or _AUTO_NAME.match(name)
        arrays[key if keep else name] = value
    return arrays, skipped


# ---------------------------------------------------------------------------------------------
# Finding the variable folder
# ---------------------------------------------------------------------------------------------


def _probe(path: Path) -> str:
    """'tensor', 'truncated' or 'other' from a file's header."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096 + 64)
        dtype, dims, data = parse_header(head)
    except TruncatedTensor:
        return "truncated"
    except NotATensor:
        return "other"
    return "truncated" if path.stat().st_size < data + _nbytes(dtype, dims) else "tensor"


def find_variable_folder(root) -> tuple[Path, list, list]:
    """(folder, [tensor files], [skipped files]) for the folder below ``root`` holding the most tensor files."""
    root = Path(root)
    by_folder: dict[Path, list] = {}
    pdparams = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED_DIRS)
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.startswith("._") or not path.is_file():
                continue
            if name.endswith(_SUFFIX_PDPARAMS):
                pdparams.append(path)
            by_folder.setdefault(Path(dirpath), []).append(path)
    best, best_count, kinds = None, 0, {}
    for folder, files in by_folder.items():
        kinds[folder] = {f: _probe(f) for f in files}
        count = sum(k != "other" for k in kinds[folder].values())
        if count > best_count:
            best, best_count = folder, count
    if best is None:
        if len(pdparams) == 1:
            return pdparams[0], [], []
        raise ConversionError(
            f"{root}: no Paddle parameter files found (neither per-variable tensor files nor one .pdparams). "
            f"Pass the folder that holds files such as 'conv1_weights'.")
    files = [f for f, k in kinds[best].items() if k != "other"]
    skipped = [f for f, k in kinds[best].items() if k == "other"]
    return best, files, skipped


# ---------------------------------------------------------------------------------------------
# The opened parameters
# ---------------------------------------------------------------------------------------------


class PaddleParams(ExtractedReader):
    """Open Paddle parameters: ``shapes()``, ``dtypes()``, ``read(name)``, ``skipped``; a context manager
    whose ``close()`` removes the folder an archive was extracted into. The same interface as
    :class:`kzoo.formats.tf_checkpoint.Checkpoint`, so the converter reads either."""

    def __init__(self, path: Path, fmt: str, source: Path, cleanup: Path | None = None):
        self.path, self.format, self.source = str(path), fmt, source
        self._cleanup = cleanup
        self._files: dict[str, Path] = {}
        self._arrays: dict[str, np.ndarray] = {}
        self._headers: dict[str, tuple] = {}
        self.skipped: list = []  # (name, reason)

    # -- construction ------------------------------------------------------------------------
    def _add_folder(self, folder: Path, files, skipped):
        for f in files:
            with open(f, "rb") as handle:
                head = handle.read(4096 + 64)
            try:
                dtype, dims, data = parse_header(head)
            except (NotATensor, TruncatedTensor) as exc:
                raise ConversionError(
                    f"{self._shown(f)}: the tensor file is truncated or damaged ({exc}). {_FIX}") from None
            need = data + _nbytes(dtype, dims)
            size = f.stat().st_size
            if size < need:
                raise ConversionError(f"{self._shown(f)}: the tensor file is truncated ({size} bytes, its header "
                                      f"declares {need}). {_FIX}")
            if size > need:
                raise ConversionError(f"{self._shown(f)}: {size - need} bytes follow the tensor its header "
                                      f"declares; the file is damaged. {_FIX}")
            self._files[f.name] = f
            self._headers[f.name] = (dtype, dims, data)
        self.skipped += [(f.relative_to(folder).as_posix(), "not a tensor file") for f in skipped]

    def _add_arrays(self, arrays: dict):
        self._arrays.update(arrays)

    def rename(self, names: dict):
        """Read each variable ``old`` as ``names[old]`` (another naming of the same parameters)."""
        self._files = {names.get(k, k): v for k, v in self._files.items()}
        self._headers = {names.get(k, k): v for k, v in self._headers.items()}
        self._arrays = {names.get(k, k): v for k, v in self._arrays.items()}

    # -- the Checkpoint interface ----------------------------------------------------------------
    def shapes(self) -> dict:
        shapes = {n: tuple(int(d) for d in h[1]) for n, h in self._headers.items()}
        shapes.update({n: tuple(int(d) for d in a.shape) for n, a in self._arrays.items()})
        return shapes

    def dtypes(self) -> dict:
        dtypes = {n: np.dtype(_DTYPES[h[0]]).name for n, h in self._headers.items()}
        dtypes.update({n: a.dtype.name for n, a in self._arrays.items()})
        return dtypes

    @property
    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self._files.values()) + sum(a.nbytes for a in self._arrays.values())

    def __contains__(self, name) -> bool:
        return name in self._files or name in self._arrays

    def read(self, name: str) -> np.ndarray:
        if name in self._arrays:
            return np.asarray(self._arrays[name])
        if name not in self._files:
            raise ConversionError(f"{self._shown(self.path)}: no variable {name!r} in the Paddle parameters.")
        path = self._files[name]
        dtype, dims, data = self._headers[name]
        count = _nbytes(dtype, dims) // np.dtype(_DTYPES[dtype]).itemsize
        # One read straight into the array (sizes were checked at open).
        value = np.fromfile(path, np.dtype(_DTYPES[dtype]).newbyteorder("<"), count, offset=data)
        if value.size != count:  # changed since it was opened
            raise ConversionError(f"{self._shown(path)}: the tensor file is truncated ({value.size} of {count} "
                                  f"values). {_FIX}")
        if dtype == _BF16:
            return (value.astype(np.uint32) << 16).view(np.float32).reshape(dims)
        return value.astype(value.dtype.newbyteorder("="), copy=False).reshape(dims)



def is_pdparams(path) -> bool:
    path = Path(path)
    if not path.is_file():
        return False
    if path.name.endswith(_SUFFIX_PDPARAMS):
        return True
    with open(path, "rb") as handle:
        return handle.read(1) == b"\x80"  # a pickle's PROTO opcode


def read_combined(path, names) -> dict:
    """``{name: array}`` of a combined params file saved with the variables ``names`` in that order."""
    path = Path(path)
    buf, off, arrays = path.read_bytes(), 0, {}
    for name in names:
        try:
            arrays[name], off = read_tensor(buf, off)
        except (NotATensor, TruncatedTensor) as exc:
            what = "truncated" if off < len(buf) else (
                f"truncated (it ends before {name!r}: {len(arrays)} of {len(names)} tensors)")
            raise ConversionError(f"{path}: the combined params file is {what} ({exc}). {_FIX}") from None
    if off != len(buf):
        raise ConversionError(f"{path}: the combined params file holds more than the {len(names)} tensors "
                              f"expected ({len(buf) - off} bytes left): it was saved for another model. Pass the "
                              f"matching --model.")
    return arrays


def _open_local(path: Path, source: Path, cleanup, names) -> PaddleParams:
    if path.is_dir():
        folder, files, skipped = find_variable_folder(path)
        if folder.is_file():  # a folder (archive) holding one .pdparams
            return _open_local(folder, source, cleanup, names)
        params = PaddleParams(folder, "paddle per-variable folder", source, cleanup)
        params._add_folder(folder, files, skipped)
        return params
    if not path.is_file():
        raise ConversionError(f"{path}: no such file or folder.")
    if is_pdparams(path):
        params = PaddleParams(path, "paddle .pdparams", source, cleanup)
        arrays, params.skipped = read_pdparams(path)
        params._add_arrays(arrays)
        return params
    if _probe(path) == "other":
        raise ConversionError(f"{path}: not Paddle parameters (not a tensor folder, archive, .pdparams or "
                              f"combined params file).")
    if names is None:
        raise ConversionError(f"{path}: a combined params file holds no variable names; convert it with --model "
                              f"so the names are known.")
    params = PaddleParams(path, "paddle combined params", source, cleanup)
    params._add_arrays(read_combined(path, names))
    return params


def open_params(src, *, names=None, workdir=None, limits=None) -> PaddleParams:
    """Open ``src`` (folder, archive, ``.pdparams`` or combined params file; see the module docstring).

    ``names``: the variable names, in saved order, for a combined params file (ignored otherwise).
    """
    from kzoo.formats.archives import archive_kind, open_extracted

    source = Path(os.fspath(src)).expanduser()
    if archive_kind(source) is None or is_pdparams(source):
        return _open_local(source, source, None, names)
    return open_extracted(source, lambda folder: _open_local(folder, source, folder, names), "kzoo-paddle-",
                          limits, workdir)
