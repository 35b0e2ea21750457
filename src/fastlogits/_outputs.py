"""What ``fastlogits predict`` writes: one array (``.npy``) or a table (``.csv``, ``.jsonl``,
``.parquet``/``.pq``), chosen by the suffix of ``--out``, written chunk by chunk in row order
through an ``_atomic.AtomicFile`` (complete and renamed into place, or nothing).

A table has one row per prediction: first the id (a column passed through from the input,
or the row number as ``row``), then the fields (``label``; ``proba``; ``log_proba``;
``topk_index`` and ``topk_proba``). A field holds one value per row or a list of values per row:
- ``.parquet``: the id keeps its Arrow type; a list is a fixed-size list column; bfloat16
  values are written as float32 (Arrow has no bfloat16; every bfloat16 is a float32 exactly).
- ``.csv``: a header line, then the rows (quoted where needed, as the ``csv`` module does); a list
  is one field holding a JSON array (``"[0.5,0.25,0.25]"``); a float outside a list is written
  ``nan``, ``inf`` or ``-inf`` when not finite (what pandas and NumPy read back).
- ``.jsonl``: one strict JSON object per line; a list is a JSON array.
Floats are written in the shortest form that reads back to the same value of their dtype
(``0.1`` for the float32 nearest 0.1), booleans as ``true``/``false``; in JSON (``.jsonl``, and
the lists of ``.csv``) a NaN or an infinity, which JSON cannot express, is ``null``.
``.npy`` holds the first field only, with its own dtype (bfloat16 as float32: NumPy's ``.npy``
format has no bfloat16, ``np.save`` would write anonymous 2-byte records).
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from types import TracebackType
from typing import IO, Any, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Type

import numpy as np

from ._atomic import AtomicFile, FileError, check_destination, os_error, reserve, write_array
from ._input import is_bfloat16
from ._npy import header_bytes
from ._parquet import pyarrow

PARQUET = (".parquet", ".pq")
TABLES = (".csv", ".jsonl") + PARQUET
OUTPUTS = (".npy",) + TABLES


class Field(NamedTuple):
    """One output column: its name, the shape of one row's value (``()`` or ``(m,)``), dtype."""

    name: str
    shape: Tuple[int, ...]
    dtype: np.dtype


def output_suffix(path: str, inputs: Iterable[str] = ()) -> str:
    """The suffix of an output path ``predict`` can write (checked before any work)."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in OUTPUTS:
        raise FileError(f"{path}: unsupported output type {ext or '(none)'!r}; expected .npy, .csv, .jsonl, "
                        f".parquet or .pq")
    check_destination(path, inputs)
    return ext


class PredictionOutput:
    """Use as a context manager: ``write`` the chunks in row order; leaving with an exception
    removes the temporary file and leaves any previous file at ``path`` as it was.

    ``fields``: the columns after the id (``.npy``: exactly one). ``id_name``/``id_type``: the
    id column passed through (its Arrow type), or None for the row number ``row``.
    ``inputs``: paths the output must not overwrite (see AtomicFile).
    """

    def __init__(self, path: str, rows: int, fields: Sequence[Field], *, id_name: Optional[str] = None,
                 id_type: Any = None, inputs: Iterable[str] = ()):
        self.path, self.total = path, rows
        self.ext = output_suffix(path, inputs)
        self.fields = list(fields)
        self.id_name = id_name or "row"
        if self.ext == ".npy" and len(self.fields) != 1:
            raise ValueError(f"a .npy output holds one array, got fields {[f.name for f in self.fields]}")
        if self.ext != ".npy" and self.id_name in [f.name for f in self.fields]:
            raise FileError(f"{path}: the id column {self.id_name!r} has the name of a prediction column; "
                            f"rename it in the input")
        for f in self.fields:
            if len(f.shape) > 1 and self.ext != ".npy":
                raise FileError(f"{path}: a table holds one value or one list per row; {f.name} has rows of shape "
                                f"{f.shape} (write a .npy instead)")
        self.pa: Any = pyarrow() if self.ext in PARQUET else None
        self.id_type = id_type if id_type is not None else (self.pa.int64() if self.pa is not None else None)
        self.atomic = AtomicFile(path, inputs=inputs)
        self.rows = 0
        self._file: Optional[IO[bytes]] = None
        self._writer: Any = None

    # -- the context

    def __enter__(self) -> "PredictionOutput":
        self._file = self.atomic.__enter__()
        try:
            with self._errors():
                self._begin(self._file)
        except BaseException as exc:
            self.atomic.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

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
        if failure is None and self.rows != self.total:
            failure = RuntimeError(f"{self.path}: {self.rows} of {self.total} rows written")
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
        except FileError:
            raise
        except OSError as exc:
            raise os_error(self.path, exc) from None
        except Exception as exc:
            if self.pa is None or not isinstance(exc, self.pa.lib.ArrowException):
                raise
            raise FileError(f"{self.path}: cannot write ({' '.join(str(exc).split())})") from None

    # -- writing

    def _begin(self, f: IO[bytes]) -> None:
        if self.ext == ".npy":
            dtype = _table_dtype(self.fields[0].dtype)
            shape = (self.total,) + self.fields[0].shape
            header = header_bytes(shape, dtype)
            reserve(f, len(header) + int(np.prod(shape)) * dtype.itemsize)
            f.write(header)
        elif self.ext == ".csv":
            f.write(_csv_lines([[self.id_name] + [fl.name for fl in self.fields]]))
        elif self.pa is not None:
            self._writer = self.pa.parquet.ParquetWriter(f, self._schema())

    def _schema(self) -> Any:
        pa = self.pa
        cols = [pa.field(self.id_name, self.id_type)]
        for f in self.fields:
            value = pa.from_numpy_dtype(_table_dtype(f.dtype))
            cols.append(pa.field(f.name, pa.list_(value, f.shape[0]) if f.shape else value, nullable=False))
        return pa.schema(cols)

    def write(self, start: int, values: Sequence[np.ndarray], ids: Any = None) -> None:
        """Rows ``start:start + n`` in order: one array per field (rows first) and, when an id
        column is passed through, its ``n`` values as an Arrow array."""
        assert self._file is not None and start == self.rows, "chunks must be written in order"
        n = len(values[0])
        with self._errors():
            if self.ext == ".npy":
                write_array(self._file, np.asarray(values[0], dtype=_table_dtype(self.fields[0].dtype)))
            elif self._writer is not None:
                self._writer.write_batch(self._batch(start, n, values, ids))
            else:
                json_ = self.ext == ".jsonl"
                id_text = _id_texts(ids, start, n, json_=json_)
                texts = [_texts(v, f, json_=json_) for v, f in zip(values, self.fields)]
                if self.ext == ".csv":
                    self._file.write(_csv_lines(zip(id_text, *texts)))
                else:
                    self._file.write(_jsonl_lines([self.id_name] + [f.name for f in self.fields], [id_text] + texts))
        self.rows += n

    def _batch(self, start: int, n: int, values: Sequence[np.ndarray], ids: Any) -> Any:
        pa = self.pa
        cols = [pa.array(np.arange(start, start + n, dtype=np.int64)) if ids is None else ids]
        for v, f in zip(values, self.fields):
            flat = np.ascontiguousarray(v, dtype=_table_dtype(f.dtype)).reshape(-1)
            col = pa.array(flat)
            cols.append(pa.FixedSizeListArray.from_arrays(col, f.shape[0]) if f.shape else col)
        return pa.record_batch(cols, schema=self._writer.schema)


def _table_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype a value is stored with: its own, bfloat16 as float32."""
    return np.dtype(np.float32) if is_bfloat16(np.dtype(dtype)) else np.dtype(dtype)


# --------------------------------------------------------------------------- text

def _csv_lines(rows: Iterable[Sequence[str]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue().encode("utf-8")


def _jsonl_lines(names: List[str], columns: List[List[str]]) -> bytes:
    keys = [json.dumps(n, ensure_ascii=False) + ": " for n in names]
    lines = ["{" + ", ".join(k + v for k, v in zip(keys, row)) + "}\n" for row in zip(*columns)]
    return "".join(lines).encode("utf-8")


def _value_strings(v: np.ndarray, *, json_: bool) -> np.ndarray:
    """Each value as text: the shortest form that reads back to the same value of its dtype;
    booleans ``true``/``false``; NaN and infinities ``null`` in JSON, else ``nan``/``inf``/``-inf``."""
    if v.dtype.kind == "b":
        return np.where(v, "true", "false")
    if v.dtype.kind in "iu":
        return v.astype(str)
    if is_bfloat16(v.dtype):
        v = v.astype(np.float32)
    text = v.astype(str)
    if json_:
        text = np.where(np.isfinite(v), text, "null")
    return text


def _texts(v: np.ndarray, field: Field, *, json_: bool) -> List[str]:
    """One string per row: a value (JSON when ``json_``), or a JSON array of values."""
    if not field.shape:
        return _value_strings(np.asarray(v), json_=json_).tolist()  # type: ignore[no-any-return]
    rows = _value_strings(np.asarray(v).reshape(len(v), -1), json_=True).tolist()
    return ["[" + ",".join(r) + "]" for r in rows]


def _id_texts(ids: Any, start: int, n: int, *, json_: bool) -> List[str]:
    """The id column of a text table: the row numbers, or the Arrow ids (integers, floats,
    booleans or strings; a null is an empty CSV field, JSON null)."""
    if ids is None:
        return np.arange(start, start + n, dtype=np.int64).astype(str).tolist()
    out = []
    for value in ids.to_pylist():
        if value is None:
            out.append("null" if json_ else "")
        elif isinstance(value, bool):
            out.append("true" if value else "false")
        elif isinstance(value, str):
            out.append(json.dumps(value, ensure_ascii=False) if json_ else value)
        elif isinstance(value, float) and json_ and not np.isfinite(value):
            out.append("null")
        else:
            out.append(repr(value) if isinstance(value, float) else str(value))
    return out


def check_text_id_type(pa: Any, path: str, name: str, t: Any) -> None:
    """The id types a ``.csv``/``.jsonl`` output can write (a ``.parquet`` one takes any)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    ok = (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_string(t)
          or pa.types.is_large_string(t))
    if not ok:
        raise FileError(f"{path}: the id column {name!r} has type {t}; a .csv or .jsonl output takes integer, "
                        f"float, boolean or string ids (a .parquet output passes any type through)")
