"""``fastlogits.dask.from_npy``: a Dask array over a ``.npy`` file whose tasks read their own rows.

``da.from_array(np.load(path, mmap_mode="r"))`` puts the memmap itself in the task graph, and a
distributed scheduler pickles it, i.e. the whole file, to ship it to the workers. Here every
task holds only the path, the header it expects and its row range; a worker maps the file
(read-only, as the command line reads it, with the same checks) and copies out its rows. The
file must be readable at the same path on every worker (a shared filesystem).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

from ._atomic import FileError
from ._npy import Header, data_nbytes, map_data, read_header, size_error
from ._pages import chunk_rows


def _read(path: str) -> Tuple[np.ndarray, Header]:
    with open(path, "rb") as f:
        header = read_header(f, path)
        data = f.tell()
        holds = f.seek(0, 2) - data
        if data_nbytes(header) > holds:
            raise size_error(path, header, holds)
        return map_data(f, data, header), header


def _rows(path: str, expected: Header, block_info: Optional[Dict[Any, Any]] = None) -> np.ndarray:
    """The rows of one block, read on the worker."""
    arr, header = _read(path)
    if header != expected:
        raise FileError(f"{path}: the file changed since the Dask array was made: now {header}, was {expected}")
    assert block_info is not None
    (lo, hi), *_ = block_info[None]["array-location"]
    return np.array(arr[lo:hi])


def from_npy(path: str, chunks: Optional[int] = None) -> Any:
    """A lazy Dask array of the ``.npy`` file at ``path``, chunked along its first axis only
    (``chunks`` rows per block; by default about 32 MiB per block), the other axes whole (the
    class axis must be a single chunk). Tasks read their rows on the workers; the graph holds
    the path, not the data, so it stays small whatever the file's size.

    Examples
    --------
    >>> import numpy as np, fastlogits.dask as fld, tempfile, os
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "logits.npy")
    >>> np.save(path, np.arange(12, dtype=np.float32).reshape(4, 3))
    >>> x = fld.from_npy(path, chunks=3)
    >>> x.chunks, fld.predict(x).compute().tolist()
    (((3, 1), (3,)), [2, 2, 2, 2])
    >>> tmp.cleanup()
    """
    import dask.array as da

    arr, header = _read(path)
    shape, _, dtype = header
    if not shape:
        raise ValueError(f"{path}: expected at least 1 dimension, got a 0-d array")
    if chunks is None:
        chunks = chunk_rows(arr[:1].nbytes)
    if isinstance(chunks, (bool, np.bool_)) or not isinstance(chunks, (int, np.integer)) or chunks < 1:
        raise ValueError(f"chunks: expected a positive number of rows, got {chunks!r}")
    del arr
    row_chunks = tuple(min(int(chunks), shape[0] - lo) for lo in range(0, shape[0], int(chunks))) or (0,)
    return da.map_blocks(_rows, path, header, chunks=(row_chunks,) + tuple((d,) for d in shape[1:]),
                         dtype=dtype, meta=np.empty((0,) * len(shape), dtype))
