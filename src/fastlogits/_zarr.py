"""Zarr arrays for the command line and ``fl.open_logits`` (needs zarr, the ``zarr`` extra),
checked as hostile input and read lazily in row chunks sized in bytes.

A store is a local directory holding Zarr metadata: ``zarr.json`` (format 3), ``.zarray`` or
``.zgroup`` (format 2); both formats are read through the installed zarr. ``key`` names an
array inside a group (``"eval/logits"``); without a key the store must be an array or a group
holding exactly one array.

Checks when the array is opened: metadata zarr accepts (anything zarr raises on a malformed
store, such as bad JSON, an unknown codec or an impossible shape, is one error naming the
store), at least one dimension, a numeric dtype (integers, floats; strings, structured,
datetime, complex and object arrays are refused by name). A chunk that is not in the store
reads as the array's fill value, Zarr's own rule (zarr 3 does not store a chunk that holds only
the fill value): a format-2 array whose fill value is null defines no such value, so there a
missing chunk is an error. Reads take ``chunk_rows`` rows at a time: about 32 MiB, a multiple
of the array's chunk rows so that no stored chunk is decompressed twice; a chunk that cannot be
decoded is an error naming the rows, when read.
"""
from __future__ import annotations

import math
import os
from typing import Any, List, Optional, Tuple

import numpy as np

from ._atomic import FileError
from ._chunked import ChunkedRows
from ._npy import check_dtype, one_line
from ._safetensors import name_list

_METADATA = ("zarr.json", ".zarray", ".zgroup")


def zarr() -> Any:
    try:
        import zarr
    except ImportError:
        raise FileError("reading Zarr needs zarr: pip install 'fastlogits[zarr]'") from None
    return zarr


def is_zarr_store(path: str) -> bool:
    return any(os.path.isfile(os.path.join(path, m)) for m in _METADATA)


class ZarrRows(ChunkedRows):
    """A Zarr array read in row chunks."""

    def __init__(self, path: str, name: str, array: Any, dtype: np.dtype):
        super().__init__(path, name, array.shape, dtype, storage_rows=int(array.chunks[0]))
        self._array = array

    def _read(self, lo: int, hi: int) -> np.ndarray:
        try:
            block = np.asarray(self._array[lo:hi])
        except Exception as exc:  # zarr and its codecs raise many types for a corrupt chunk
            raise FileError(f"{self.name}: cannot read rows {lo}:{hi} ({one_line(exc)})") from None
        return block.astype(self.dtype, copy=False)


def open_zarr(path: str, key: Optional[str]) -> ZarrRows:
    lib = zarr()
    try:
        node = lib.open(store=path, mode="r")
        array, name = _array(lib, node, path, key)
        dtype = _dtype(array, name)
        _check_missing_chunks(array, name)
    except FileError:
        raise
    except Exception as exc:  # a malformed store: zarr raises ValueError, KeyError, TypeError, JSON errors, ...
        raise FileError(f"{path}: cannot read as Zarr ({one_line(exc)})") from None
    return ZarrRows(path, name, array, dtype)


def _arrays(lib: Any, group: Any) -> List[str]:
    """The paths of every array in a group and its subgroups."""
    if hasattr(group, "members"):  # zarr 3
        return sorted(name for name, node in group.members(max_depth=None) if isinstance(node, lib.Array))
    found: List[str] = []  # zarr 2
    group.visititems(lambda name, node: found.append(name) if isinstance(node, lib.Array) else None)
    return sorted(found)


def _array(lib: Any, node: Any, path: str, key: Optional[str]) -> Tuple[Any, str]:
    if isinstance(node, lib.Array):
        if key is not None:
            raise FileError(f"{path}: the store is one array; --key names an array inside a Zarr group")
        return node, path
    if key is None:
        names = _arrays(lib, node)
        if len(names) != 1:
            raise FileError(f"{path}: holds arrays {name_list(names)}; choose one with --key")
        key = names[0]
    try:
        found = node[key]
    except KeyError:
        found = None
    if not isinstance(found, lib.Array):
        what = "a group" if found is not None else "nothing"
        raise FileError(f"{path}: {key!r} is {what}, not an array; it holds arrays {name_list(_arrays(lib, node))}")
    return found, f"{path}[{key}]"


def _dtype(array: Any, name: str) -> np.dtype:
    if len(array.shape) == 0:
        raise FileError(f"{name}: a 0-d array; expected an array of at least 1 dimension")
    try:
        dt = np.dtype(array.dtype)
    except TypeError:
        raise FileError(f"{name}: expected a numeric array (integer or float), got Zarr dtype {array.dtype}") from None
    if dt.names is not None or dt.kind not in "biuf":
        raise FileError(f"{name}: expected a numeric array (integer or float), got dtype {dt}")
    check_dtype(name, dt)
    if any(int(c) < 1 for c in array.chunks):
        raise FileError(f"{name}: corrupt metadata: chunk shape {tuple(array.chunks)}")
    native: np.dtype = dt.newbyteorder("=") if dt.byteorder in "<>" else dt
    return native


def _check_missing_chunks(array: Any, name: str) -> None:
    if array.fill_value is not None or math.prod(array.shape) == 0:
        return
    stored, expected = int(array.nchunks_initialized), int(array.nchunks)
    if stored < expected:
        raise FileError(f"{name}: only {stored} of its {expected} chunks are stored and its fill value is null, so "
                        f"the others have no defined value (the writer stopped early?)")
