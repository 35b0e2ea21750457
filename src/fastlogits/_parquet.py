"""Parquet for the command line (needs pyarrow, the ``parquet`` extra), checked as hostile input.

Logits are one list column (fixed-size or variable lists, every row of the same length) or
one numeric column per class; targets are one numeric column. The file is read in record
batches of about ``_BATCH_BYTES`` (never a whole row group: pyarrow streams the column chunks
through a small buffer) and copied into an anonymous scratch file (beside the input, else in
the system's temporary directory; it needs as much free disk as the logits and is reserved
before any batch is read) that is then memory-mapped read-only.

Checks that keep the numbers right:
- list rows: every row's length is read from the list offsets and must equal the first row's;
  a null row is refused by name ("row 7 is null").
- one column per class: the array takes the common type of all the columns (``np.result_type``:
  an int8 column beside a float64 one gives float64).
- nulls: refused in integer and boolean columns (there is no faithful value to put there); in
  float columns a null is read as NaN.
- any other column type (struct, string, dictionary, decimal, ...) is refused by name.
"""
from __future__ import annotations

from typing import Any, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ._atomic import FileError, scratch_errors, scratch_file, write_array
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


def open_parquet(path: str, columns: Optional[Sequence[str]]) -> np.ndarray:
    pa = pyarrow()
    try:
        pf = pa.parquet.ParquetFile(path, buffer_size=_READ_BUFFER, pre_buffer=False)
        layout = _layout(pa, pf, path, columns)
        return _copy(pf, layout, path)
    except (pa.lib.ArrowException, OSError, ValueError, NotImplementedError) as exc:
        raise FileError(f"{path}: cannot read as Parquet ({one_line(exc)})") from None


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
    if n < 0:
        raise FileError(f"{path}: corrupt metadata: {n} rows")
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


def _copy(pf: Any, layout: _Layout, path: str) -> np.ndarray:
    shape, dtype = layout.shape, layout.dtype
    row_bytes = dtype.itemsize * (shape[1] if len(shape) == 2 else 1)
    tmp, directory = scratch_file(path, shape[0] * row_bytes)
    with tmp:
        row = 0
        for batch in pf.iter_batches(columns=layout.columns, batch_size=chunk_rows(row_bytes, _BATCH_BYTES)):
            block = _list_block(batch, layout, row, path) if layout.is_list else _column_block(batch, layout, row, path)
            with scratch_errors(directory):
                write_array(tmp, block)
            row += len(block)
        if row != shape[0]:
            raise FileError(f"{path}: the file holds {row} rows, its metadata says {shape[0]}")
        with scratch_errors(directory):
            tmp.flush()
        if row_bytes * row == 0:
            return np.zeros(shape, dtype)
        return np.memmap(tmp, dtype=dtype, mode="r", shape=shape)


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
