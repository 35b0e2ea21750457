"""The ``.npy`` format for the command line, checked as hostile input.

Reading: :func:`read_header` parses the magic string and header of a stream (NumPy's own
parser, ``literal_eval`` of at most 10000 bytes, nothing unpickled) and checks the dtype is
numeric and every dimension non-negative; :func:`data_nbytes` is the size the header promises,
in Python integers (a dimension of 2**64 does not overflow). The caller compares it with the
bytes the file really holds before mapping anything. :func:`map_data` maps the data read-only
through an open descriptor (never by name), or copies it first into an anonymous scratch file
when its offset is not aligned for its dtype (the kernels read aligned data; a copy in memory
would cost the whole array).

Writing: :func:`header_bytes` is the version 1.0 header (2.0 when it does not fit), padded to a
multiple of 64 bytes as ``np.save`` writes it.
"""
from __future__ import annotations

import io
import math
from typing import IO, Optional, Tuple

import numpy as np

from ._atomic import FileError, scratch_errors, scratch_file

Header = Tuple[Tuple[int, ...], bool, np.dtype]

# bytes copied per piece into a scratch file
_PIECE = 1 << 22


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def check_dtype(name: str, dtype: np.dtype) -> None:
    if dtype.hasobject or dtype.kind not in "biuf" and dtype.name != "bfloat16":
        raise FileError(f"{name}: expected a numeric array, got dtype {dtype}")


def read_header(f: IO[bytes], name: str) -> Header:
    """(shape, fortran_order, dtype) of the .npy starting at ``f``'s position; ``f`` is left at
    the first byte of the data."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
    except (ValueError, TypeError, EOFError, OverflowError, SyntaxError, MemoryError, RecursionError) as exc:
        raise FileError(f"{name}: cannot read as .npy ({one_line(exc)})") from None
    if any(d < 0 for d in shape):
        raise FileError(f"{name}: the .npy header has a negative dimension: shape {shape}")
    check_dtype(name, dtype)
    return tuple(int(d) for d in shape), bool(fortran), dtype


def data_nbytes(header: Header) -> int:
    shape, _, dtype = header
    return math.prod(shape) * dtype.itemsize


def size_error(name: str, header: Header, holds: int) -> FileError:
    shape, _, dtype = header
    return FileError(
        f"{name}: truncated or corrupt: the header describes shape {shape} of {dtype} "
        f"({data_nbytes(header)} bytes of data) but the file holds {holds} bytes of data")


def _mapped(f: IO[bytes], offset: int, header: Header) -> np.ndarray:
    shape, fortran, dtype = header
    if data_nbytes(header) == 0:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(f, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def map_data(f: IO[bytes], offset: int, header: Header) -> np.ndarray:
    """The array whose data starts at ``offset`` in ``f`` (already checked to hold it),
    memory-mapped read-only through ``f``'s descriptor (the mapping outlives ``f``)."""
    if offset % header[2].alignment == 0:
        return _mapped(f, offset, header)
    f.seek(offset)
    name = getattr(f, "name", None)
    return copy_to_scratch(f, header, name if isinstance(name, str) else None)


def copy_to_scratch(src: IO[bytes], header: Header, near: Optional[str]) -> np.ndarray:
    """The next ``data_nbytes(header)`` bytes of ``src`` copied piece by piece (bounded memory)
    into an anonymous scratch file (beside the file ``near`` if there is room), mapped. Errors
    of ``src`` propagate; those of the scratch file (a full disk) become FileError."""
    left = data_nbytes(header)
    tmp, directory = scratch_file(near, left)
    with tmp:
        while left:
            piece = src.read(min(left, _PIECE))
            if not piece:
                raise EOFError(f"the data ends {left} bytes early")
            with scratch_errors(directory):
                tmp.write(piece)
            left -= len(piece)
        with scratch_errors(directory):
            tmp.flush()
        return _mapped(tmp, 0, header)


def header_bytes(shape: Tuple[int, ...], dtype: np.dtype) -> bytes:
    d = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
    buf = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(buf, d)
    except ValueError:  # a header longer than 65535 bytes
        buf = io.BytesIO()
        np.lib.format.write_array_header_2_0(buf, d)
    return buf.getvalue()
