"""Parquet for the command line and ``fl.open_logits`` (needs pyarrow, the ``parquet`` extra),
checked as hostile input and read lazily.

Logits are one list column (fixed-size or variable lists, every row of the same length) or
one numeric column per class; targets are one numeric column. :class:`ParquetRows` reads the
rows asked for in record batches of about ``_BATCH_BYTES`` (never a whole row group: pyarrow
streams the column chunks through a small buffer), carrying its position from one read to
the next, so a pass over the rows in order decodes each row once and holds about one chunk.
:class:`ParquetColumn` reads any one column (an id to pass through to an output) the same way,
as Arrow arrays.

Checks that keep the numbers right:
- the row groups add up to the rows the metadata announces, and every row group yields the
  rows it announces (a file that ends early is an error, not a short array);
- list rows: every row's length is read from the list offsets and must equal the first row's;
  a null row is refused by name ("row 7 is null");
- one column per class: the array takes the common type of all the columns (``np.result_type``:
  an int8 column beside a float64 one gives float64);
- nulls: refused in integer and boolean columns (there is no faithful value to put there); in
  float columns a null is read as NaN;
- any other column type (struct, string, dictionary, decimal, ...) is refused by name.
Errors in the data itself (a null, an uneven row, a corrupt page) are raised when the rows
holding them are read.
"""
from __future__ import annotations

import bisect
from typing import Any, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Type

import numpy as np

from ._atomic import FileError
from ._chunked import ChunkedRows
from ._npy import check_dtype, one_line
from ._pages import chunk_rows

# bytes pyarrow buffers per column chunk while it decodes (instead of the whole chunk)
_READ_BUFFER = 1 << 20
# bytes of values per record batch: pyarrow holds about five times a batch while it decodes a
# list column (measured: a 165 MB peak of its pool for 32 MiB batches), so batches stay small
_BATCH_BYTES = 1 << 22


def pyarrow() -> Any:
    """The pyarrow module (with pyarrow.parquet loaded); Any, as pyarrow ships no type information."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise FileError("reading or writing Parquet needs pyarrow: pip install 'fastlogits[parquet]'") from None
    return pyarrow


class _Layout(NamedTuple):
    columns: List[str]
    is_list: bool
    dtype: np.dtype
    floats: List[bool]         # per column: a float column reads nulls as NaN, others refuse them
    shape: Tuple[int, ...]


def _arrow_errors(pa: Any) -> Tuple[Type[BaseException], ...]:
    """What pyarrow raises for a malformed file."""
    return (pa.lib.ArrowException, OSError, ValueError, NotImplementedError, IndexError, KeyError)


def _open_file(pa: Any, path: str) -> Any:
    try:
        pf = pa.parquet.ParquetFile(path, buffer_size=_READ_BUFFER, pre_buffer=False)
        n = int(pf.metadata.num_rows)
        groups = [int(pf.metadata.row_group(i).num_rows) for i in range(pf.metadata.num_row_groups)]
    except _arrow_errors(pa) as exc:
        raise FileError(f"{path}: cannot read as Parquet ({one_line(exc)})") from None
    if n < 0 or any(g < 0 for g in groups) or sum(groups) != n:
        raise FileError(f"{path}: corrupt metadata: {n} rows, row groups of {groups[:8]}{' ...' if len(groups) > 8 else ''} rows")
    return pf


def open_parquet(path: str, columns: Optional[Sequence[str]]) -> "ParquetRows":
    pa = pyarrow()
    pf = _open_file(pa, path)
    try:
        layout = _layout(pa, pf, path, columns)
    except FileError:
        raise
    except _arrow_errors(pa) as exc:
        raise FileError(f"{path}: cannot read as Parquet ({one_line(exc)})") from None
    return ParquetRows(pa, pf, path, layout)


class _Cursor:
    """Reads of consecutive row ranges of some columns, as Arrow record batches. A read that
    starts where the last one ended continues the same stream of batches; any other restarts
    at the row group holding its first row (and decodes and drops the rows before it)."""

    def __init__(self, pa: Any, pf: Any, path: str, columns: List[str], batch_rows: int):
        self.pa, self.pf, self.path, self.columns, self.batch_rows = pa, pf, path, columns, batch_rows
        meta = pf.metadata
        self.starts = [0]
        for i in range(meta.num_row_groups):
            self.starts.append(self.starts[-1] + int(meta.row_group(i).num_rows))
        self._batches: Optional[Iterator[Any]] = None
        self._pending: Any = None
        self._pos = 0

    def read(self, lo: int, hi: int) -> List[Any]:
        """Record batches holding rows ``lo:hi``, in order."""
        try:
            if self._batches is None or lo != self._pos:
                self._seek(lo)
            out = []
            while self._pos < hi:
                batch = self._take(hi - self._pos)
                out.append(batch)
                self._pos += len(batch)
            return out
        except FileError:
            self._batches = None
            raise
        except _arrow_errors(self.pa) as exc:
            self._batches = None
            raise FileError(f"{self.path}: cannot read rows {lo}:{hi} ({one_line(exc)})") from None

    def _seek(self, lo: int) -> None:
        group = max(0, bisect.bisect_right(self.starts, lo) - 1)
        groups = list(range(group, len(self.starts) - 1))
        self._batches = iter(self.pf.iter_batches(batch_size=self.batch_rows, row_groups=groups, columns=self.columns))
        self._pending, self._pos = None, self.starts[group]
        while self._pos < lo:
            self._pos += len(self._take(lo - self._pos))

    def _take(self, most: int) -> Any:
        """The next at most ``most`` rows (a batch, or the first part of one)."""
        assert self._batches is not None
        batch, self._pending = self._pending, None
        while batch is None or len(batch) == 0:
            batch = next(self._batches, None)
            if batch is None:
                raise FileError(f"{self.path}: the file ends at row {self._pos}; its metadata announces "
                                f"{self.starts[-1]} rows")
        if len(batch) > most:
            batch, self._pending = batch.slice(0, most), batch.slice(most)
        return batch


class ParquetRows(ChunkedRows):
    """Logits or targets of a Parquet file (one list column, or numeric columns), read lazily."""

    def __init__(self, pa: Any, pf: Any, path: str, layout: "_Layout"):
        row_bytes = layout.dtype.itemsize * (layout.shape[1] if len(layout.shape) == 2 else 1)
        batch_rows = chunk_rows(row_bytes, _BATCH_BYTES)
        # iter_chunks (and the scratch copy of np.asarray) go one record batch at a time
        super().__init__(path, path, layout.shape, layout.dtype, chunk_rows=batch_rows)
        self.layout = layout
        self._cursor = _Cursor(pa, pf, path, layout.columns, batch_rows)

    def _read(self, lo: int, hi: int) -> np.ndarray:
        out = np.empty((hi - lo,) + self.shape[1:], self.dtype)
        row = lo
        for batch in self._cursor.read(lo, hi):
            block = _list_block if self.layout.is_list else _column_block
            out[row - lo:row - lo + len(batch)] = block(batch, self.layout, row, self.path)
            row += len(batch)
        return out


class ParquetColumn:
    """One column of a Parquet file, any type, read in consecutive row ranges as Arrow arrays
    (an id column passed through to a prediction table)."""

    def __init__(self, path: str, name: str):
        pa = pyarrow()
        pf = _open_file(pa, path)
        schema = pf.schema_arrow
        if name not in schema.names:
            raise FileError(f"{path}: no column {name!r}; it has {', '.join(schema.names)}")
        self.name, self.type, self.length = name, schema.field(name).type, int(pf.metadata.num_rows)
        self.pa = pa
        self._cursor = _Cursor(pa, pf, path, [name], 65536)

    def read(self, lo: int, hi: int) -> Any:
        """Rows ``lo:hi`` as one Arrow array."""
        chunks = [b.column(0) for b in self._cursor.read(lo, hi)]
        if not chunks:
            return self.pa.array([], self.type)
        return chunks[0] if len(chunks) == 1 else self.pa.concat_arrays(chunks)


def _numeric(pa: Any, t: Any) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t))


def _layout(pa: Any, pf: Any, path: str, columns: Optional[Sequence[str]]) -> _Layout:
    schema = pf.schema_arrow
    cols = list(columns) if columns else list(schema.names)
    missing = [c for c in cols if c not in schema.names]
    if missing:
        raise FileError(f"{path}: no column {missing[0]!r}; it has {', '.join(schema.names)}")
    if not cols:
        raise FileError(f"{path}: the file has no columns")
    types = [schema.field(c).type for c in cols]
    lists = [pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t) for t in types]
    n = int(pf.metadata.num_rows)
    if any(lists):
        if len(cols) != 1:
            raise FileError(f"{path}: give one list column or several numeric columns, got {', '.join(cols)}")
        value = types[0].value_type
        if not _numeric(pa, value):
            raise FileError(f"{path}: column {cols[0]!r} holds lists of {value}; expected lists of numbers")
        dtype = np.dtype(value.to_pandas_dtype())
        width = int(types[0].list_size) if pa.types.is_fixed_size_list(types[0]) else _first_length(pf, cols[0], path)
        return _Layout(cols, True, dtype, [bool(pa.types.is_floating(value))], (n, width))
    for c, t in zip(cols, types):
        if not _numeric(pa, t):
            raise FileError(f"{path}: column {c!r} has type {t}; expected numbers (integer, float or "
                            f"boolean) or one list column")
    dtype = np.result_type(*[np.dtype(t.to_pandas_dtype()) for t in types])
    check_dtype(path, dtype)
    floats = [bool(pa.types.is_floating(t)) for t in types]
    return _Layout(cols, False, dtype, floats, (n,) if len(cols) == 1 else (n, len(cols)))


def _first_length(pf: Any, column: str, path: str) -> int:
    """The length of the first row of a variable-length list column (0 if there are no rows)."""
    for batch in pf.iter_batches(columns=[column], batch_size=1):
        if len(batch):
            col = batch.column(0)
            if col.null_count:
                raise FileError(f"{path}: column {column!r}: row 0 is null; every row must hold a list of numbers")
            return int(len(col[0].values))
    return 0


def _null_error(path: str, column: str, row: int, what: str) -> FileError:
    return FileError(f"{path}: column {column!r}: row {row} {what}; nulls are read as NaN in float columns only")


def _first_null(arr: Any) -> int:
    return int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])


def _list_block(batch: Any, layout: _Layout, row0: int, path: str) -> np.ndarray:
    col, name, width = batch.column(0), layout.columns[0], layout.shape[1]
    if col.null_count:
        raise FileError(f"{path}: column {name!r}: row {row0 + _first_null(col)} is null; "
                        f"every row must hold a list of {width} numbers")
    if hasattr(col, "offsets"):  # variable lists: every length from the offsets
        lengths = np.diff(col.offsets.to_numpy(zero_copy_only=False))
        bad = np.flatnonzero(lengths != width)
        if bad.size:
            i = int(bad[0])
            raise FileError(f"{path}: column {name!r}: row {row0 + i} holds {int(lengths[i])} values, the first "
                            f"row {width}; every row must hold the same number of values")
    values = col.flatten()
    if values.null_count and not layout.floats[0]:
        raise _null_error(path, name, row0 + _first_null(values) // max(width, 1), "holds a null value")
    flat: np.ndarray = values.to_numpy(zero_copy_only=False)
    return flat.astype(layout.dtype, copy=False).reshape(len(col), width)


def _column_block(batch: Any, layout: _Layout, row0: int, path: str) -> np.ndarray:
    block = np.empty((len(batch),) + layout.shape[1:], dtype=layout.dtype)
    for j, name in enumerate(layout.columns):
        col = batch.column(j)
        if col.null_count and not layout.floats[j]:
            raise _null_error(path, name, row0 + _first_null(col), "is null")
        values = col.to_numpy(zero_copy_only=False)
        if block.ndim == 1:
            block[:] = values
        else:
            block[:, j] = values
    return block
