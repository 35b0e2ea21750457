"""safetensors files for the command line and ``fl.open_logits``, checked as hostile input.

The format (huggingface/safetensors, its README "Format" section): 8 bytes, the header length
N as an unsigned little-endian 64-bit integer; N bytes of UTF-8 JSON, an object mapping each
tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the
first byte after the header), plus an optional ``"__metadata__"`` object of strings; then the
byte buffer, raw little-endian C-order data. Read here without the ``safetensors`` package.

Checks, before anything is mapped (what the reference implementation refuses, and more):
- the file holds the 8 bytes and the N it announces; N is at most 100 MB (the reference
  implementation's limit), so a header length of 2**64 - 1 is an error, not an allocation;
- the header starts with ``{``, is strict UTF-8 JSON (no NaN, no duplicate names), every entry
  has a known-shape ``dtype``, a ``shape`` of non-negative integers and two integer offsets;
- the tensors tile the byte buffer exactly: sorted by offset, each starts where the previous
  one ends, the first at 0, the last at the end of the file (no overlap, no hole, nothing
  after); each spans exactly ``prod(shape) * itemsize`` bytes (in Python integers: no overflow);
- the tensor read is of a numeric dtype: F16, BF16, F32, F64 (logits), the signed and unsigned
  integers (targets), or BOOL (read as uint8, so a byte other than 0 and 1 is seen, and refused
  where a target must be 0 or 1, instead of being an invalid NumPy bool).

The tensor is then memory-mapped read-only in place (copied first into a scratch file only
when its offset is not aligned for its dtype, as ``.npy`` data), never read whole.
"""
from __future__ import annotations

import json
import math
import os
import struct
from typing import Any, Dict, IO, List, NamedTuple, Optional, Tuple

import numpy as np

from ._atomic import FileError
from ._input import bfloat16
from ._npy import map_data, one_line

MAX_HEADER = 100_000_000

# the dtypes read (BOOL as bytes), as NumPy dtypes; BF16 is ml_dtypes' bfloat16, made on first use
# (importing ml_dtypes costs more than NumPy): a placeholder of its size here
_READABLE: Dict[str, np.dtype] = {
    "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"), "F32": np.dtype("<f4"), "F64": np.dtype("<f8"),
    "I8": np.dtype("i1"), "I16": np.dtype("<i2"), "I32": np.dtype("<i4"), "I64": np.dtype("<i8"),
    "U8": np.dtype("u1"), "U16": np.dtype("<u2"), "U32": np.dtype("<u4"), "U64": np.dtype("<u8"),
    "BOOL": np.dtype("u1"),
}
# dtypes the format defines that are not numbers fastlogits computes on (their sizes, for the
# layout checks); the sub-byte float formats are laid out in bits, so only their offsets are checked
_OTHER_SIZES = {"F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "C64": 8, "F4": None, "F6_E2M3": None, "F6_E3M2": None}


class Tensor(NamedTuple):
    dtype: str
    shape: Tuple[int, ...]
    begin: int
    end: int


def open_safetensors(path: str, key: Optional[str]) -> np.ndarray:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        tensors, data_start = read_header(f, path, size)
        name, t = _choose(path, tensors, key)
        dtype = bfloat16() if t.dtype == "BF16" else _READABLE.get(t.dtype)
        if dtype is None:
            raise FileError(f"{path}[{name}]: dtype {t.dtype} is not supported; expected F16, BF16, F32 or F64 "
                            f"(logits), an integer dtype or BOOL (targets)")
        return map_data(f, data_start + t.begin, (t.shape, False, dtype))


def read_header(f: IO[bytes], path: str, size: int) -> Tuple[Dict[str, Tensor], int]:
    """The tensors of the file and the offset of its byte buffer, every check above passed."""
    if size < 8:
        raise FileError(f"{path}: not a safetensors file: {size} bytes, too short for the 8-byte header length")
    (n,) = struct.unpack("<Q", f.read(8))
    if n > MAX_HEADER:
        raise FileError(f"{path}: not a safetensors file: a header of {n} bytes is over the format's "
                        f"limit of {MAX_HEADER}")
    if n > size - 8:
        raise FileError(f"{path}: truncated or corrupt: the header of {n} bytes runs past the end of the "
                        f"file ({size} bytes)")
    raw = f.read(n)
    if len(raw) != n:
        raise FileError(f"{path}: truncated: the header ends {n - len(raw)} bytes early")
    header = _parse_json(path, raw)
    tensors = {name: _tensor(path, name, entry) for name, entry in header.items() if name != "__metadata__"}
    _check_metadata(path, header.get("__metadata__"))
    _check_layout(path, tensors, size - 8 - n)
    return tensors, 8 + n


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _no_duplicates(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    d: Dict[str, Any] = {}
    for k, v in pairs:
        if k in d:
            raise ValueError(f"the name {k!r} appears twice")
        d[k] = v
    return d


def _parse_json(path: str, raw: bytes) -> Dict[str, Any]:
    if not raw.startswith(b"{"):
        raise FileError(f"{path}: not a safetensors file: the header does not start with '{{'")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError, MemoryError) as exc:
        raise FileError(f"{path}: corrupt safetensors header ({one_line(exc)})") from None
    if not isinstance(header, dict):
        raise FileError(f"{path}: corrupt safetensors header: expected a JSON object")
    return header


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _tensor(path: str, name: str, entry: Any) -> Tensor:
    where = f"{path}: tensor {name!r}"
    if not isinstance(entry, dict):
        raise FileError(f"{where}: expected an object with dtype, shape and data_offsets, got {type(entry).__name__}")
    for field in ("dtype", "shape", "data_offsets"):
        if field not in entry:
            raise FileError(f"{where}: the header entry has no {field!r}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or (dtype not in _READABLE and dtype not in _OTHER_SIZES):
        raise FileError(f"{where}: unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise FileError(f"{where}: shape {shape!r} is not a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)
            and offsets[0] <= offsets[1]):
        raise FileError(f"{where}: data_offsets {offsets!r} are not two integers 0 <= begin <= end")
    t = Tensor(dtype, tuple(shape), offsets[0], offsets[1])
    itemsize = _READABLE[dtype].itemsize if dtype in _READABLE else _OTHER_SIZES[dtype]
    if itemsize is not None and math.prod(t.shape) * itemsize != t.end - t.begin:
        raise FileError(f"{where}: shape {list(t.shape)} of {dtype} is {math.prod(t.shape) * itemsize} bytes, "
                        f"but its data_offsets span {t.end - t.begin} bytes")
    return t


def _check_metadata(path: str, meta: Any) -> None:
    if meta is None:
        return
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise FileError(f"{path}: corrupt safetensors header: __metadata__ must map names to strings")


def _check_layout(path: str, tensors: Dict[str, Tensor], buffer: int) -> None:
    """The tensors tile ``[0, buffer)`` exactly, in offset order."""
    at, previous = 0, None
    for name, t in sorted(tensors.items(), key=lambda item: (item[1].begin, item[1].end)):
        if t.begin != at:
            where = f"after tensor {previous!r}, which ends at {at}" if previous is not None else "at byte 0"
            what = "overlaps the data" if t.begin < at else "leaves a gap"
            raise FileError(f"{path}: corrupt safetensors file: tensor {name!r} (bytes {t.begin}:{t.end} of the data) "
                            f"{what} {where}; the tensors must tile the data")
        at, previous = t.end, name
    if at != buffer:
        if at > buffer:
            raise FileError(f"{path}: truncated or corrupt: the tensors need {at} bytes of data, the file holds "
                            f"{buffer}")
        raise FileError(f"{path}: corrupt safetensors file: {buffer - at} bytes after the last tensor's data")


def _choose(path: str, tensors: Dict[str, Tensor], key: Optional[str]) -> Tuple[str, Tensor]:
    names = list(tensors)
    if key is None:
        if len(names) != 1:
            raise FileError(f"{path}: holds tensors {name_list(names)}; choose one with --key")
        key = names[0]
    if key not in tensors:
        raise FileError(f"{path}: no tensor named {key!r}; it holds {name_list(names)}")
    return key, tensors[key]


def name_list(names: List[str], most: int = 8) -> str:
    """Names for a message: ``a, b, c``, ``(none)``, or the first ``most`` and how many in all."""
    if not names:
        return "(none)"
    shown = ", ".join(repr(n) for n in names[:most])
    return shown if len(names) <= most else f"{shown}, ... ({len(names)} in all)"
