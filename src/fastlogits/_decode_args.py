"""Argument checks of the decoding functions (API section 8): per-row settings, keys, tokens.

Every setting may be a Python scalar or an array of the rows shape (the logits' shape without
the class axis), one value per request of a serving batch. A checked setting comes back in the
dtype the kernels read, float64 or int64 (uint64 keys as int64 bit patterns): a 0-d array for
one value (the kernels read it with zero strides) or a contiguous array of the rows shape.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from ._input import as_array, is_bfloat16

_U64_MAX = (1 << 64) - 1
_INT64_MAX = np.iinfo(np.int64).max


def _position(bad: np.ndarray) -> Tuple[int, ...]:
    """The first True position of a boolean array, as a tuple of ints."""
    return tuple(int(i) for i in np.argwhere(bad)[0])


def _rows_array(value: Any, name: str, rows_shape: Tuple[int, ...]) -> np.ndarray:
    """value as an array that is a scalar or has exactly the rows shape."""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise TypeError(f"{name}: expected a number or an array of numbers, got {value!r}")
    a = as_array(value, name)
    if a.ndim and a.shape != rows_shape:
        raise ValueError(
            f"{name}: expected a scalar or an array of the rows shape {rows_shape} (the logits' shape "
            f"without the class axis), got shape {a.shape}"
        )
    if a.dtype.kind == "b" or not (a.dtype.kind in "iuf" or is_bfloat16(a.dtype)):
        raise TypeError(f"{name}: expected real numbers, got dtype {a.dtype}")
    return a


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def real_setting(value: Any, name: str, rows_shape: Tuple[int, ...], lo: float, hi: float, *,
                 lo_open: bool = False, what: str = "") -> np.ndarray:
    """A float64 setting with every value in [lo, hi] ((lo, hi] when lo_open)."""
    a = np.array(float(value)) if _is_number(value) else \
        np.ascontiguousarray(_rows_array(value, name, rows_shape), dtype=np.float64)
    ok = (a > lo if lo_open else a >= lo) & (a <= hi)
    if not ok.all():
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
        bad = ~ok
        got = float(a[_position(bad)]) if a.ndim else float(a)
        at = f" at position {_position(bad)}" if a.ndim else ""
        raise ValueError(f"{name}: expected {what or 'values'} in {interval}, got {got!r}{at}")
    return a


def int_setting(value: Any, name: str, rows_shape: Tuple[int, ...], lo: int) -> np.ndarray:
    """An int64 setting with every value >= lo."""
    a = np.asarray(value) if _is_number(value) else _rows_array(value, name, rows_shape)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected an int or an integer array, got dtype {a.dtype}")
    if a.size and a.min() < lo:
        bad = a < lo
        got = int(a[_position(bad)]) if a.ndim else int(a)
        at = f" at position {_position(bad)}" if a.ndim else ""
        raise ValueError(f"{name}: expected integers >= {lo}, got {got}{at}")
    r = np.asarray(np.minimum(a, _INT64_MAX), dtype=np.int64)  # an ndarray, also for one value
    return r if r.ndim == 0 else np.ascontiguousarray(r)       # (ascontiguousarray makes 0-d 1-d)


def u64_setting(value: Any, name: str, rows_shape: Tuple[int, ...]) -> Tuple[np.ndarray, bool]:
    """A uint64 key part (seed, offset) as int64 bit patterns, and whether it was given per row
    (an array) rather than as one int."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        v = int(value)
        if not 0 <= v <= _U64_MAX:
            raise ValueError(f"{name}: expected an int in [0, 2**64), got {v}")
        return np.array(v, dtype=np.uint64).view(np.int64), False
    a = _rows_array(value, name, rows_shape)
    if a.ndim == 0 or a.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected an int or an integer array of the rows shape {rows_shape}, "
                        f"got {type(value).__name__} of dtype {a.dtype}")
    if a.dtype.kind == "i" and a.size and a.min() < 0:
        bad = a < 0
        raise ValueError(f"{name}: expected integers in [0, 2**64), got {int(a[_position(bad)])} at position "
                         f"{_position(bad)}")
    return np.ascontiguousarray(a.astype(np.uint64)).view(np.int64), True


def temperature_setting(value: Any, rows_shape: Tuple[int, ...], logits_dtype: np.dtype, greedy: bool) -> np.ndarray:
    """Temperatures per row: finite and > 0 (>= 0 when greedy rows are allowed). For logits
    computed in float32 (all but float64) a positive temperature must be a positive finite
    float32, since the division x / T is carried out in float32."""
    t = real_setting(value, "temperature", rows_shape, 0.0, np.inf, lo_open=not greedy,
                     what="finite temperatures" + (" (0: greedy)" if greedy else ""))
    if not np.isfinite(t).all():
        raise ValueError("temperature: expected finite values, got inf")
    if logits_dtype != np.float64:
        with np.errstate(over="ignore", under="ignore"):
            t32 = t.astype(np.float32)
        bad = (t > 0) & ((t32 == 0) | ~np.isfinite(t32))
        if bad.any():
            got = float(t[_position(bad)]) if t.ndim else float(t)
            raise ValueError(f"temperature: {got!r} is outside the float32 range the division of "
                             f"{logits_dtype} logits is carried out in (1.2e-38 to 3.4e38)")
    return t


def index_array(value: Any, name: str, shape: Tuple[int, ...], what: str) -> np.ndarray:
    """Token ids of the given shape as int64 or int32 (read in place when native); other integer
    dtypes become int64."""
    a = as_array(value, name)
    if a.dtype.kind == "b" or a.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer token ids, got dtype {a.dtype}")
    if a.shape != shape:
        raise ValueError(f"{name}: expected shape {shape} ({what}), got shape {a.shape}")
    if a.dtype.newbyteorder("=") in (np.dtype(np.int64), np.dtype(np.int32)):
        if not a.dtype.isnative or not a.flags.aligned:
            a = a.astype(a.dtype.newbyteorder("="))
        return a
    if a.dtype == np.uint64 and a.size and a.max() > _INT64_MAX:
        bad = a > _INT64_MAX
        raise IndexError(f"{name}: token id {int(a[_position(bad)])} at position {_position(bad)} is out of range")
    return a.astype(np.int64)


def optional_top(value: Optional[Any], rows_shape: Tuple[int, ...], n_classes: int) -> np.ndarray:
    """top_k; None (off) becomes n_classes, which keeps every token."""
    if value is None:
        return np.array(max(n_classes, 1), dtype=np.int64)
    return int_setting(value, "top_k", rows_shape, 1)
