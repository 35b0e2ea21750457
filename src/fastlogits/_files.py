"""Reading and writing logits files for the command line, without loading them whole.

- ``.npy``: ``np.load(mmap_mode="r", allow_pickle=False)``: memory-mapped, never unpickled.
- ``.npz`` (``key``): a member stored uncompressed (``np.savez``) is memory-mapped in place (its
  offset inside the zip is known); a compressed member (``np.savez_compressed``) cannot be
  mapped and is loaded into memory whole.
- Parquet (``.parquet``/``.pq``, needs pyarrow, the ``parquet`` extra): one fixed-size-list
  (or list) column, or one numeric column per class. The file is read in record batches and
  copied into a temporary ``.npy`` (removed when the run ends) that is then memory-mapped, so
  memory stays bounded; the temporary file needs as much disk as the logits.
- Outputs are written to a temporary file next to the destination and renamed into place
  with ``os.replace`` only when complete, so a failure never leaves a truncated file.
"""
from __future__ import annotations

import contextlib
import os
import struct
import tempfile
import zipfile
import zlib
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import numpy as np


class FileError(Exception):
    """A file cannot be used: reported by the command line as one line, exit status 2."""


_PARQUET = (".parquet", ".pq")


def _suffix(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def open_array(path: str, *, key: Optional[str] = None, columns: Optional[Sequence[str]] = None,
               scratch: Optional[contextlib.ExitStack] = None) -> np.ndarray:
    """The array stored in ``path`` (memory-mapped where the format allows)."""
    if not os.path.exists(path):
        raise FileError(f"{path}: no such file")
    if os.path.isdir(path):
        raise FileError(f"{path}: is a directory, expected a .npy, .npz or Parquet file")
    ext = _suffix(path)
    if ext == ".npz":
        return _open_npz(path, key)
    if ext in _PARQUET:
        if scratch is None:
            raise FileError(f"{path}: Parquet input needs a scratch directory")
        return _open_parquet(path, columns, scratch)
    if ext != ".npy":
        raise FileError(f"{path}: unsupported file type {ext or '(none)'!r}; expected .npy, .npz, .parquet or .pq")
    try:
        arr: np.ndarray = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError) as exc:  # EOFError: an empty file
        raise FileError(f"{path}: cannot read as .npy ({_one_line(exc)})") from None
    _check_dtype(path, arr.dtype)
    return arr


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _check_dtype(path: str, dtype: np.dtype) -> None:
    if dtype.hasobject or dtype.kind not in "biuf" and dtype.name != "bfloat16":
        raise FileError(f"{path}: expected a numeric array, got dtype {dtype}")


# --------------------------------------------------------------------------- npz

def _open_npz(path: str, key: Optional[str]) -> np.ndarray:
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise FileError(f"{path}: not a valid .npz (zip) file") from None
    with zf:
        names = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
        if key is None:
            if len(names) != 1:
                raise FileError(f"{path}: holds arrays {', '.join(names)}; choose one with --key")
            key = names[0]
        if key not in names:
            raise FileError(f"{path}: no array named {key!r}; it holds {', '.join(names) or 'nothing'}")
        info = zf.getinfo(key + ".npy")
        if info.compress_type == zipfile.ZIP_STORED:
            return _memmap_stored_member(path, info)
    with np.load(path, allow_pickle=False) as npz:  # compressed: cannot be mapped
        try:
            arr: np.ndarray = npz[key]
        except (ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:  # corrupt member
            raise FileError(f"{path}[{key}]: cannot read ({_one_line(exc)})") from None
    _check_dtype(f"{path}[{key}]", arr.dtype)
    return arr


def _memmap_stored_member(path: str, info: zipfile.ZipInfo) -> np.ndarray:
    """Memory-map an uncompressed .npy member of a zip: its data starts after the local file
    header (30 bytes + name + extra field) and the .npy header."""
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise FileError(f"{path}: corrupt zip member {info.filename}")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        try:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
        except ValueError as exc:
            raise FileError(f"{path}[{info.filename}]: cannot read ({_one_line(exc)})") from None
        offset = f.tell()
    _check_dtype(f"{path}[{info.filename}]", dtype)
    if int(np.prod(shape)) == 0:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


# --------------------------------------------------------------------------- parquet

def _pyarrow() -> Any:
    """The pyarrow module (with pyarrow.parquet loaded); Any, as pyarrow ships no type information."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise FileError("reading or writing Parquet needs pyarrow: pip install 'fastlogits[parquet]'") from None
    return pyarrow


def _open_parquet(path: str, columns: Optional[Sequence[str]], scratch: contextlib.ExitStack) -> np.ndarray:
    pa = _pyarrow()
    try:
        pf = pa.parquet.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise FileError(f"{path}: cannot read as Parquet ({_one_line(exc)})") from None
    schema = pf.schema_arrow
    cols = list(columns) if columns else list(schema.names)
    missing = [c for c in cols if c not in schema.names]
    if missing:
        raise FileError(f"{path}: no column {missing[0]!r}; it has {', '.join(schema.names)}")
    types = [schema.field(c).type for c in cols]
    is_list = [pa.types.is_list(t) or pa.types.is_fixed_size_list(t) or pa.types.is_large_list(t) for t in types]
    if any(is_list) and len(cols) != 1:
        raise FileError(f"{path}: give one list column or several numeric columns, got {', '.join(cols)}")
    n = pf.metadata.num_rows
    if is_list[0]:
        value_type = types[0].value_type
        width = _list_width(pf, cols[0], types[0])
        shape: Tuple[int, ...] = (n, width)
    else:
        value_type = types[0]
        shape = (n,) if len(cols) == 1 else (n, len(cols))
    dtype = np.dtype(value_type.to_pandas_dtype())
    _check_dtype(path, dtype)
    tmp = _ScratchNpy(os.path.dirname(os.path.abspath(path)), shape, dtype, scratch)
    row = 0
    for batch in pf.iter_batches(columns=cols, batch_size=65536):
        block = _batch_to_numpy(batch, is_list[0], shape, path)
        tmp.array[row:row + len(block)] = block
        row += len(block)
    return tmp.finish()


def _list_width(pf: Any, column: str, typ: Any) -> int:
    pa = _pyarrow()
    if pa.types.is_fixed_size_list(typ):
        return int(typ.list_size)
    for batch in pf.iter_batches(columns=[column], batch_size=1):
        return len(batch.column(0)[0])
    return 0


def _batch_to_numpy(batch: Any, is_list: bool, shape: Tuple[int, ...], path: str) -> np.ndarray:
    if is_list:
        col = batch.column(0)
        values: np.ndarray = col.flatten().to_numpy(zero_copy_only=False)
        if values.size != len(col) * shape[1]:
            raise FileError(f"{path}: list column rows have different lengths (expected {shape[1]})")
        return values.reshape(len(col), shape[1])
    arrays = [batch.column(i).to_numpy(zero_copy_only=False) for i in range(batch.num_columns)]
    return arrays[0] if len(shape) == 1 else np.stack(arrays, axis=1)


class _ScratchNpy:
    """A temporary .npy in ``directory``, deleted when ``scratch`` closes."""

    def __init__(self, directory: str, shape: Tuple[int, ...], dtype: np.dtype, scratch: contextlib.ExitStack):
        try:
            fd, self.path = tempfile.mkstemp(suffix=".npy", prefix=".fastlogits-", dir=directory)
        except OSError:
            fd, self.path = tempfile.mkstemp(suffix=".npy", prefix="fastlogits-")
        os.close(fd)
        scratch.callback(_remove_quietly, self.path)
        self.array = np.lib.format.open_memmap(self.path, mode="w+", dtype=dtype, shape=shape)

    def finish(self) -> np.ndarray:
        self.array.flush()
        del self.array
        arr: np.ndarray = np.load(self.path, mmap_mode="r", allow_pickle=False)
        return arr


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


# --------------------------------------------------------------------------- outputs

class AtomicOutput:
    """An output array filled chunk by chunk and renamed into place only when complete.

    ``.npy`` is written through ``np.lib.format.open_memmap``; Parquet (needs pyarrow) through
    a ``ParquetWriter``, one record batch per chunk. Use as a context manager: leaving it with
    an exception removes the temporary file.
    """

    def __init__(self, path: str, shape: Tuple[int, ...], dtype: np.dtype, column: str):
        self.path = path
        self.ext = _suffix(path)
        if self.ext not in (".npy",) + _PARQUET:
            raise FileError(f"{path}: unsupported output type {self.ext or '(none)'!r}; expected .npy, .parquet or .pq")
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise FileError(f"{path}: directory {directory} does not exist")
        fd, self.tmp = tempfile.mkstemp(suffix=self.ext + ".part", prefix=".fastlogits-", dir=directory)
        os.close(fd)
        self.shape, self.dtype, self.column = shape, np.dtype(dtype), column
        self._array: Optional[np.memmap] = None
        self._writer: Any = None

    def __enter__(self) -> "AtomicOutput":
        try:
            if self.ext == ".npy":
                self._array = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=self.dtype, shape=self.shape)
            else:
                pa = _pyarrow()
                self._pa = pa
                self._writer = pa.parquet.ParquetWriter(self.tmp, self._schema(pa))
        except BaseException:
            _remove_quietly(self.tmp)
            raise
        return self

    def _schema(self, pa: Any) -> Any:
        value = pa.from_numpy_dtype(self.dtype)
        if len(self.shape) == 1:
            return pa.schema([(self.column, value)])
        return pa.schema([(self.column, pa.list_(value, int(np.prod(self.shape[1:]))))])

    def write(self, start: int, block: np.ndarray) -> None:
        if self._array is not None:
            self._array[start:start + len(block)] = block
            return
        pa = self._pa
        flat = np.ascontiguousarray(block).reshape(len(block), -1)
        if len(self.shape) == 1:
            col = pa.array(flat[:, 0])
        else:
            col = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])
        self._writer.write_batch(pa.record_batch([col], schema=self._writer.schema))

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if self._array is not None:
                self._array.flush()
                self._array = None
            if self._writer is not None:
                self._writer.close()
        finally:
            if exc_type is None:
                os.replace(self.tmp, self.path)
            else:
                _remove_quietly(self.tmp)


def row_chunks(n: int, rows: int) -> Iterator[slice]:
    for lo in range(0, n, rows):
        yield slice(lo, min(n, lo + rows))


__all__: List[str] = ["AtomicOutput", "FileError", "open_array", "row_chunks"]
