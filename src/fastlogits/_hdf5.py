"""HDF5 datasets for the command line and ``fl.open_logits`` (needs h5py, the ``hdf5`` extra),
checked as hostile input and read lazily in row chunks sized in bytes.

Checks when the dataset is opened (before any data is read):
- the dataset exists (``key`` names it; without a key the file must hold exactly one), has at
  least one dimension and a numeric dtype (integers, float16/32/64; compound, string,
  variable-length, reference and other types are refused by name);
- no virtual dataset and no external storage: both read other files named inside this one (a
  hostile file could point at any file the user can read, and a missing source reads as the
  fill value);
- every chunk was written (a chunked dataset), or the whole extent (a contiguous one): HDF5
  reads an unwritten chunk as the fill value, so the file of a writer that stopped early would
  otherwise read as complete, its tail zeros.

Reads go through h5py into native-byte-order arrays (HDF5 converts a big-endian dataset),
``chunk_rows`` rows at a time: about 32 MiB, a multiple of the dataset's chunk rows so that no
stored chunk is decompressed twice. A chunk that cannot be read (a truncated file, corrupt
compressed data, a filter that is not available) is an error naming the rows, when read.
"""
from __future__ import annotations

import math
from typing import Any, List, Optional, Tuple

import numpy as np

from ._atomic import FileError
from ._chunked import ChunkedRows
from ._npy import check_dtype, one_line
from ._safetensors import name_list


def h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise FileError("reading HDF5 needs h5py: pip install 'fastlogits[hdf5]'") from None
    return h5py


class Hdf5Rows(ChunkedRows):
    """An HDF5 dataset read in row chunks; the file stays open while this object lives (h5py
    closes it when the last reference goes)."""

    def __init__(self, path: str, name: str, file: Any, dataset: Any, dtype: np.dtype):
        super().__init__(path, name, dataset.shape, dtype, storage_rows=dataset.chunks[0] if dataset.chunks else 1)
        self._file, self._dataset = file, dataset

    def _read(self, lo: int, hi: int) -> np.ndarray:
        out = np.empty((hi - lo,) + self.shape[1:], self.dtype)
        try:
            self._dataset.read_direct(out, np.s_[lo:hi], np.s_[0:hi - lo])
        except Exception as exc:  # h5py raises OSError, RuntimeError, ValueError, ... for a bad chunk
            raise FileError(f"{self.name}: cannot read rows {lo}:{hi} ({one_line(exc)})") from None
        return out


def open_hdf5(path: str, key: Optional[str]) -> Hdf5Rows:
    lib = h5py()
    try:
        f = lib.File(path, "r")
    except Exception as exc:  # OSError for a file that is not HDF5 or is truncated, others for worse
        raise FileError(f"{path}: cannot read as HDF5 ({one_line(exc)})") from None
    try:
        ds, name = _dataset(lib, f, path, key)
        dtype = _dtype(lib, ds, name)
        _check_storage(lib, ds, name)
        return Hdf5Rows(path, name, f, ds, dtype)
    except FileError:
        f.close()
        raise
    except Exception as exc:
        f.close()
        raise FileError(f"{path}: cannot read as HDF5 ({one_line(exc)})") from None


def _datasets(lib: Any, f: Any) -> List[str]:
    found: List[str] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, lib.Dataset):
            found.append(name)
    f.visititems(visit)
    return found


def _dataset(lib: Any, f: Any, path: str, key: Optional[str]) -> Tuple[Any, str]:
    if key is None:
        names = _datasets(lib, f)
        if len(names) != 1:
            raise FileError(f"{path}: holds datasets {name_list(names)}; choose one with --key")
        key = names[0]
    obj = f.get(key)
    if not isinstance(obj, lib.Dataset):
        what = "a group" if isinstance(obj, lib.Group) else "nothing"
        raise FileError(f"{path}: {key!r} is {what}, not a dataset; it holds datasets {name_list(_datasets(lib, f))}")
    return obj, f"{path}[{key}]"


def _dtype(lib: Any, ds: Any, name: str) -> np.dtype:
    if ds.ndim == 0:
        raise FileError(f"{name}: a scalar dataset; expected an array of at least 1 dimension")
    dt = ds.dtype
    if dt.names is not None or dt.kind not in "biuf":
        raise FileError(f"{name}: expected a numeric dataset (integer or float), got HDF5 type {dt}")
    check_dtype(name, dt)
    native: np.dtype = dt.newbyteorder("=") if dt.byteorder in "<>" else dt
    return native


def _check_storage(lib: Any, ds: Any, name: str) -> None:
    plist = ds.id.get_create_plist()
    layout = plist.get_layout()
    if ds.is_virtual:
        raise FileError(f"{name}: a virtual dataset (its data lives in other files); not supported: only the file "
                        f"given is read")
    if plist.get_external_count():
        raise FileError(f"{name}: the data is stored in external files; not supported: only the file given is read")
    nbytes = ds.dtype.itemsize * math.prod(ds.shape)
    if nbytes == 0:
        return
    if layout == lib.h5d.CHUNKED:
        expected = math.prod(-(-s // c) for s, c in zip(ds.shape, ds.chunks))
        written = ds.id.get_num_chunks()
        if written < expected:
            raise FileError(f"{name}: only {written} of its {expected} chunks were ever written (the writer "
                            f"stopped early?); the rest would read as the fill value")
    elif layout == lib.h5d.CONTIGUOUS and ds.id.get_storage_size() < nbytes:
        raise FileError(f"{name}: the data was never written (the writer stopped early?); it would read as the "
                        f"fill value")
