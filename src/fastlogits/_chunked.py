"""Arrays read lazily in row chunks: what :func:`fastlogits.open_logits` returns for HDF5
datasets, Zarr arrays and Parquet columns, whose bytes are not laid out (or not uncompressed)
so that they could be memory-mapped.

A :class:`ChunkedRows` holds no data. Reading rows ``lo:hi`` (an index, a slice, or
:meth:`ChunkedRows.iter_chunks`) decodes just those rows, so a pass over the rows in order
keeps about one chunk in memory whatever the size of the file. ``np.asarray`` on it (what
every fastlogits function does with its input) copies the rows chunk by chunk into an
anonymous scratch file and returns that file memory-mapped read-only: the whole array is then
available without being held in memory (``fl.score`` hands its pages back to the OS behind
its cursor). The copy is made once and kept while the object lives.
"""
from __future__ import annotations

import math
from typing import Any, Iterator, Optional, Tuple

import numpy as np

from ._atomic import FileError, scratch_errors, scratch_file, write_array
from ._pages import CHUNK_BYTES


def read_rows(row_bytes: int, storage_rows: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Rows per read: about ``chunk_bytes`` of data, a multiple of the storage's own chunk of
    ``storage_rows`` rows (so no stored chunk is decoded twice), at least one stored chunk."""
    storage_rows = max(1, storage_rows)
    rows = max(1, chunk_bytes // max(1, row_bytes))
    return max(storage_rows, rows // storage_rows * storage_rows)


class ChunkedRows:
    """A read-only array of ``shape`` and ``dtype`` whose rows (its first axis) are read on demand.

    Supported: ``shape``, ``dtype``, ``ndim``, ``size``, ``nbytes``, ``itemsize``, ``len()``;
    indexing whose first item is an integer or a slice (``a[i]``, ``a[lo:hi]``, ``a[lo:hi, j]``,
    ``a[...]``; the rows are read, then the rest of the index is applied by NumPy; the result
    is a new in-memory ndarray); :meth:`iter_chunks`; ``np.asarray(a)`` (a memory-mapped
    scratch copy, see the module notes). Anything else (arithmetic, ufuncs, fancy indexing) works
    on ``np.asarray(a)`` or on chunks. Read errors (a corrupt chunk, a null) raise
    ``ValueError`` naming the file and the row, when the rows holding them are read.
    """

    def __init__(self, path: str, name: str, shape: Tuple[int, ...], dtype: np.dtype, *, storage_rows: int = 1,
                 chunk_rows: Optional[int] = None):
        self.path = path  # the file (scratch copies go beside it)
        self.name = name  # how messages name the array: the path, with the key if any
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        # rows of one stored chunk: reads that start and end on multiples of it decode each once
        self.storage_rows = max(1, int(storage_rows))
        # rows per read of iter_chunks: about 32 MiB, a multiple of storage_rows
        row_bytes = self.dtype.itemsize * math.prod(self.shape[1:])
        self.chunk_rows = read_rows(row_bytes, self.storage_rows) if chunk_rows is None else max(1, int(chunk_rows))
        self._copy: Optional[np.ndarray] = None

    # -- what subclasses provide

    def _read(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo:hi`` (0 <= lo <= hi <= len) as a new array of ``shape[1:]`` rows and ``dtype``."""
        raise NotImplementedError

    # -- the array-like

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} shape={self.shape} dtype={self.dtype}>"

    def rows(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo:hi`` (clipped to the array), read now."""
        n = self.shape[0]
        lo, hi = max(0, min(lo, n)), max(0, min(hi, n))
        if hi <= lo:
            return np.empty((0,) + self.shape[1:], self.dtype)
        block = self._read(lo, hi)
        if block.shape != (hi - lo,) + self.shape[1:] or block.dtype != self.dtype:
            raise FileError(f"{self.name}: rows {lo}:{hi} read as shape {block.shape} of {block.dtype}, "
                            f"expected {(hi - lo,) + self.shape[1:]} of {self.dtype}")
        return block

    def iter_chunks(self, rows: Optional[int] = None) -> Iterator[Tuple[int, np.ndarray]]:
        """``(start, block)`` for consecutive blocks of ``rows`` rows (default: ``chunk_rows``,
        about 32 MiB aligned to the storage's chunks), in order."""
        step = self.chunk_rows if rows is None else max(1, int(rows))
        for lo in range(0, self.shape[0], step):
            yield lo, self.rows(lo, lo + step)

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        if not key or key[0] is Ellipsis:
            return np.asarray(self.rows(0, self.shape[0])[key])
        first, rest = key[0], key[1:]
        if isinstance(first, slice):
            lo, hi, step = first.indices(self.shape[0])
            if step == 1:
                return np.asarray(self.rows(lo, hi)[(slice(None),) + rest])
            picked = np.arange(lo, hi, step)
            a = int(picked.min()) if picked.size else 0
            b = int(picked.max()) + 1 if picked.size else 0
            return np.asarray(self.rows(a, b)[(picked - a,) + rest])
        if isinstance(first, (int, np.integer)) and not isinstance(first, (bool, np.bool_)):
            i = int(first)
            if not -self.shape[0] <= i < self.shape[0]:
                raise IndexError(f"index {i} is out of bounds for axis 0 with size {self.shape[0]}")
            i %= self.shape[0]
            return np.asarray(self.rows(i, i + 1)[(0,) + rest])
        raise TypeError(f"{type(self).__name__} indexing: the first index must be an integer, a slice or "
                        f"Ellipsis, got {type(first).__name__}; use np.asarray(a) for other indexing")

    def __array__(self, dtype: Any = None, copy: Optional[bool] = None) -> np.ndarray:
        if copy is False:
            raise ValueError(f"{self.name}: the array is read from its file in chunks; it cannot be "
                             f"viewed without a copy (np.asarray makes one in a scratch file)")
        if self._copy is None:
            self._copy = self._scratch_copy()
        return self._copy if dtype is None else self._copy.astype(dtype)

    def _scratch_copy(self) -> np.ndarray:
        tmp, directory = scratch_file(self.path, self.nbytes)
        with tmp:
            for _, block in self.iter_chunks():
                with scratch_errors(directory):
                    write_array(tmp, block)
            with scratch_errors(directory):
                tmp.flush()
            if self.nbytes == 0:
                return np.zeros(self.shape, self.dtype)
            return np.memmap(tmp, dtype=self.dtype, mode="r", shape=self.shape)
