"""Reading logits files for the command line and :func:`open_logits`, without loading them whole.

Inputs (every one checked as hostile: sizes against the bytes present, CRCs, offsets, nulls):

- ``.npy``: the header is parsed by NumPy's parser (nothing unpickled), the size it promises is
  compared with the file's, and the data is memory-mapped read-only (``_npy``).
- ``.npz`` (``key``): the member's CRC-32 is checked in one bounded-memory pass; a stored
  member is then mapped in place, a compressed one inflated into an anonymous scratch file and
  mapped (``_npz``).
- ``.safetensors`` (``key``): the header is parsed and checked against the file (``_safetensors``),
  the tensor memory-mapped in place.
- HDF5 (``.h5``/``.hdf5``/``.hdf``, ``key``, needs h5py), Zarr (a directory, ``key`` inside a
  group, needs zarr) and Parquet (``.parquet``/``.pq``, ``columns``, needs pyarrow): read lazily in
  row chunks (``_chunked.ChunkedRows``; ``_hdf5``, ``_zarr``, ``_parquet``).

Scratch files have no name (``O_TMPFILE``, or unlinked at once), so nothing is ever left
behind. Outputs are written by ``_outputs`` through ``_atomic.AtomicFile``.
"""
from __future__ import annotations

import os
from typing import Any, Iterator, List, Optional, Sequence, Union

import numpy as np

from ._atomic import FileError, os_error
from ._chunked import ChunkedRows
from ._hdf5 import open_hdf5
from ._npy import data_nbytes, map_data, read_header, size_error
from ._npz import open_npz
from ._parquet import open_parquet
from ._safetensors import open_safetensors
from ._zarr import is_zarr_store, open_zarr

PARQUET = (".parquet", ".pq")
HDF5 = (".h5", ".hdf5", ".hdf")
_FORMATS = ".npy, .npz, .safetensors, .h5/.hdf5, .parquet/.pq or a Zarr store (a directory)"

def _suffix(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def open_array(path: str, *, key: Optional[str] = None, columns: Optional[Sequence[str]] = None,
               options: Sequence[str] = ("--key", "--column")) -> Union[np.ndarray, ChunkedRows]:
    """The array stored in ``path``: memory-mapped read-only (.npy, .npz, safetensors) or read
    lazily in row chunks (HDF5, Zarr, Parquet). ``key`` names the array of a container
    (.npz member, safetensors tensor, HDF5 dataset, array of a Zarr group), ``columns`` the
    Parquet column(s); ``options`` are how messages call these two."""
    if not os.path.exists(path):
        raise FileError(f"{path}: no such file")
    ext = _suffix(path)
    zarr = os.path.isdir(path)
    if zarr and not is_zarr_store(path):
        raise FileError(f"{path}: is a directory without Zarr metadata; expected {_FORMATS}")
    if key is not None and ext in PARQUET and not zarr:  # else every column would be read as logits
        raise FileError(f"{path}: {options[0]} names an array inside an .npz, safetensors, HDF5 or Zarr file; "
                        f"name Parquet columns with {options[1]}")
    a: Union[np.ndarray, ChunkedRows]
    try:
        if zarr:
            a = open_zarr(path, key)
        elif ext == ".npz":
            a = open_npz(path, key)
        elif ext == ".safetensors":
            a = open_safetensors(path, key)
        elif ext in HDF5:
            a = open_hdf5(path, key)
        elif ext in PARQUET:
            a = open_parquet(path, columns)
        elif ext == ".npy":
            a = _open_npy(path)
        else:
            raise FileError(f"{path}: unsupported file type {ext or '(none)'!r}; expected {_FORMATS}")
    except FileError:
        raise
    except OSError as exc:  # reading the input failed (permissions, I/O error, no memory to map)
        raise os_error(path, exc) from None
    _check_options(path, ext, zarr, key, columns, options)
    return a


def _check_options(path: str, ext: str, zarr: bool, key: Optional[str], columns: Optional[Sequence[str]],
                   options: Sequence[str]) -> None:
    """A key or columns given for a file that has no use for them is an error (checked after
    the file, so a malformed file is reported as such)."""
    if key is not None and not zarr and ext == ".npy":
        raise FileError(f"{path}: {options[0]} names an array inside an .npz, safetensors, HDF5 or Zarr file; "
                        f"a .npy file holds one array")
    if columns is not None and (zarr or ext not in PARQUET):
        hint = "a .npy file holds one array" if ext == ".npy" else f"name the array with {options[0]}"
        raise FileError(f"{path}: {options[1]} names Parquet columns; {hint}")


def open_logits(path: Union[str, "os.PathLike[str]"], key: Union[str, Sequence[str], None] = None
                ) -> Union[np.ndarray, ChunkedRows]:
    """Open an array stored in a file, as the command line does, without loading it.

    Parameters
    ----------
    path : str or path-like
        ``.npy``; ``.npz``; ``.safetensors``; HDF5 (``.h5``, ``.hdf5``, ``.hdf``; needs the
        ``hdf5`` extra, h5py); a Zarr store, v2 or v3 as the installed zarr reads them (a
        directory; needs the ``zarr`` extra); Parquet (``.parquet``, ``.pq``; needs the
        ``parquet`` extra, pyarrow).
    key : str or sequence of str, optional
        The array inside a container: the ``.npz`` member, the safetensors tensor, the HDF5
        dataset (a path such as ``"eval/logits"``), the array of a Zarr group. For Parquet, the
        column: one list column (``"logits"``) or several numeric columns, one per class (a
        sequence, or names separated by commas). Optional when the file holds exactly one
        array (for Parquet: all the columns are then taken, one per class).

    Returns
    -------
    numpy.memmap or ChunkedRows
        ``.npy``, ``.npz`` and safetensors: a read-only ``numpy.memmap`` of the data in place
        (a compressed ``.npz`` member, or data not aligned for its dtype, is first copied into
        an anonymous scratch file). HDF5, Zarr and Parquet: a ``ChunkedRows``, a read-only
        array-like that holds no data: ``shape``, ``dtype``, ``ndim``, ``size``, ``nbytes``,
        ``len()``; ``a[i]``, ``a[lo:hi]``, ``a[lo:hi, ...]`` (the first index an integer or a
        slice) read those rows now into a new ndarray; ``a.iter_chunks(rows=None)`` yields
        ``(start, block)`` over all rows in about 32 MiB blocks; ``np.asarray(a)`` copies the
        rows chunk by chunk into an anonymous scratch file (needs as much free disk as the
        array) and returns it memory-mapped, once (it is kept while ``a`` lives). Every
        fastlogits function accepts either: ``fl.score(fl.open_logits("val.h5", "logits"), y)``
        streams through the array in bounded memory.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        The file cannot be used: malformed (with what is wrong), an unknown ``key``, a
        missing optional dependency (naming the extra to install), an I/O error. Errors in
        the data of a ``ChunkedRows`` (a corrupt chunk, a null) are raised when the rows
        holding them are read.

    Examples
    --------
    >>> import numpy as np, fastlogits as fl, os, shutil, tempfile
    >>> d = tempfile.mkdtemp()
    >>> np.save(os.path.join(d, "x.npy"), np.array([[2.0, 0.5, -1.0], [0.1, 1.5, 0.3]], np.float32))
    >>> x = fl.open_logits(os.path.join(d, "x.npy"))
    >>> x.shape, fl.predict(x).tolist()
    ((2, 3), [0, 1])
    >>> del x; shutil.rmtree(d)
    """
    name = os.fspath(path)
    if not isinstance(name, str):
        raise TypeError(f"path: expected a str or os.PathLike of str, got {type(path).__name__}")
    if not os.path.exists(name):
        raise FileNotFoundError(2, "No such file or directory", name)
    columns: Optional[List[str]] = None
    if _suffix(name) in PARQUET and key is not None:
        columns = [c.strip() for c in key.split(",")] if isinstance(key, str) else [str(c) for c in key]
        key = None
    elif key is not None and not isinstance(key, str):
        raise TypeError(f"key: expected a str (a sequence of column names only for Parquet), got {type(key).__name__}")
    return open_array(name, key=key, columns=columns)


def _open_npy(path: str) -> np.ndarray:
    with open(path, "rb") as f:
        header = read_header(f, path)
        data = f.tell()
        holds = os.fstat(f.fileno()).st_size - data
        if data_nbytes(header) > holds:
            raise size_error(path, header, holds)
        return map_data(f, data, header)


def row_chunks(n: int, rows: int) -> Iterator[slice]:
    for lo in range(0, n, rows):
        yield slice(lo, min(n, lo + rows))


__all__: List[str] = ["ChunkedRows", "FileError", "open_array", "open_logits", "row_chunks"]
