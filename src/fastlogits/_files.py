"""Reading and writing logits files for the command line, without loading them whole.

Inputs (every one checked as hostile: sizes against the bytes present, CRCs, offsets, nulls):

- ``.npy``: the header is parsed by NumPy's parser (nothing unpickled), the size it promises is
  compared with the file's, and the data is memory-mapped read-only (``_npy``).
- ``.npz`` (``key``): the member's CRC-32 is checked in one bounded-memory pass; a stored
  member is then mapped in place, a compressed one inflated into an anonymous scratch file and
  mapped (``_npz``).
- Parquet (``.parquet``/``.pq``, needs pyarrow): one list column or one numeric column per class,
  copied batch by batch into an anonymous scratch file and mapped (``_parquet``).

Scratch files have no name (``O_TMPFILE``, or unlinked at once), so nothing is ever left
behind. Outputs are written by :class:`ArrayOutput` through ``_atomic.AtomicFile``: a temporary
file beside the destination, written with write() through the descriptor ``mkstemp`` returned,
space reserved first, renamed into place only when complete (mode: that of the file it
replaces, else ``0o666 & ~umask``).
"""
from __future__ import annotations

import contextlib
import os
from types import TracebackType
from typing import IO, Any, Iterable, Iterator, List, Optional, Sequence, Tuple, Type

import numpy as np

from ._atomic import AtomicFile, FileError, check_destination, os_error, reserve, write_array
from ._npy import data_nbytes, header_bytes, map_data, read_header, size_error
from ._npz import open_npz
from ._parquet import open_parquet, pyarrow

_PARQUET = (".parquet", ".pq")


def _suffix(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def open_array(path: str, *, key: Optional[str] = None, columns: Optional[Sequence[str]] = None) -> np.ndarray:
    """The array stored in ``path``, memory-mapped read-only."""
    if not os.path.exists(path):
        raise FileError(f"{path}: no such file")
    if os.path.isdir(path):
        raise FileError(f"{path}: is a directory, expected a .npy, .npz or Parquet file")
    ext = _suffix(path)
    try:
        if ext == ".npz":
            return open_npz(path, key)
        if ext in _PARQUET:
            return open_parquet(path, columns)
        if ext != ".npy":
            raise FileError(f"{path}: unsupported file type {ext or '(none)'!r}; expected .npy, .npz, .parquet or .pq")
        return _open_npy(path)
    except OSError as exc:  # reading the input failed (permissions, I/O error, no memory to map)
        raise os_error(path, exc) from None


def _open_npy(path: str) -> np.ndarray:
    with open(path, "rb") as f:
        header = read_header(f, path)
        data = f.tell()
        holds = os.fstat(f.fileno()).st_size - data
        if data_nbytes(header) > holds:
            raise size_error(path, header, holds)
        return map_data(f, data, header)


def check_output(path: str, inputs: Iterable[str] = ()) -> str:
    """The extension of an output path :class:`ArrayOutput` can write (checked before any work)."""
    ext = _suffix(path)
    if ext not in (".npy",) + _PARQUET:
        raise FileError(f"{path}: unsupported output type {ext or '(none)'!r}; expected .npy, .parquet or .pq")
    check_destination(path, inputs)
    return ext


class ArrayOutput:
    """An output array written chunk by chunk, in row order, through an :class:`AtomicFile`:
    ``.npy`` (the header, then the rows with write(); the whole size reserved first) or Parquet
    (needs pyarrow; one record batch per chunk). Use as a context manager: leaving it with an
    exception removes the temporary file and leaves any previous file at ``path`` as it was.
    ``inputs``: paths the output must not overwrite (see AtomicFile).
    """

    def __init__(self, path: str, shape: Tuple[int, ...], dtype: np.dtype, column: str, *,
                 inputs: Iterable[str] = ()):
        self.path = path
        self.ext = check_output(path, inputs)
        self.pa: Any = pyarrow() if self.ext in _PARQUET else None
        self.atomic = AtomicFile(path, inputs=inputs)
        self.shape, self.dtype, self.column = tuple(shape), np.dtype(dtype), column
        self.rows = 0
        self._file: Optional[IO[bytes]] = None
        self._writer: Any = None

    def __enter__(self) -> "ArrayOutput":
        self._file = self.atomic.__enter__()
        try:
            with self._errors():
                if self.pa is None:
                    header = header_bytes(self.shape, self.dtype)
                    reserve(self._file, len(header) + int(np.prod(self.shape)) * self.dtype.itemsize)
                    self._file.write(header)
                else:
                    self._writer = self.pa.parquet.ParquetWriter(self._file, self._schema())
        except BaseException as exc:
            self.atomic.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def _schema(self) -> Any:
        pa = self.pa
        value = pa.from_numpy_dtype(self.dtype)
        if len(self.shape) == 1:
            return pa.schema([(self.column, value)])
        return pa.schema([(self.column, pa.list_(value, int(np.prod(self.shape[1:]))))])

    def write(self, start: int, block: np.ndarray) -> None:
        """Rows ``start:start + len(block)``; chunks come in order."""
        assert self._file is not None and start == self.rows, "chunks must be written in order"
        with self._errors():
            if self._writer is None:
                write_array(self._file, np.asarray(block, dtype=self.dtype))
            else:
                self._writer.write_batch(self.pa.record_batch([self._column(block)], schema=self._writer.schema))
        self.rows += len(block)

    def _column(self, block: np.ndarray) -> Any:
        pa = self.pa
        flat = np.ascontiguousarray(block, dtype=self.dtype).reshape(len(block), -1)
        if len(self.shape) == 1:
            return pa.array(flat[:, 0])
        return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        failure = exc
        if self._writer is not None:
            writer, self._writer = self._writer, None
            try:
                with self._errors():
                    writer.close()  # the footer (into a file about to be removed, on failure)
            except BaseException as err:
                failure = failure or err
        if failure is None and self.rows != self.shape[0]:
            failure = RuntimeError(f"{self.path}: {self.rows} of {self.shape[0]} rows written")
        if failure is exc:
            self.atomic.__exit__(exc_type, exc, tb)
            return
        assert failure is not None
        self.atomic.__exit__(type(failure), failure, failure.__traceback__)
        raise failure

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """An OSError (a full disk: ENOSPC, EFBIG) or a pyarrow error while writing, as one
        FileError naming the output."""
        try:
            yield
        except OSError as exc:
            raise os_error(self.path, exc) from None
        except Exception as exc:
            if self.pa is None or not isinstance(exc, self.pa.lib.ArrowException):
                raise
            raise FileError(f"{self.path}: cannot write ({' '.join(str(exc).split())})") from None


def row_chunks(n: int, rows: int) -> Iterator[slice]:
    for lo in range(0, n, rows):
        yield slice(lo, min(n, lo + rows))


__all__: List[str] = ["ArrayOutput", "AtomicFile", "FileError", "check_output", "open_array", "row_chunks"]
