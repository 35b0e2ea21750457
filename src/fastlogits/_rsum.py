"""Order-independent float64 sums as small exportable states (the accumulator of csrc/fl_rsum.h).

Every reduced sum of fastlogits (the losses, their denominators, ``score``'s sums) is kept as
one of these states: ``WORDS`` int64 words on the last axis of an array. A state is a function
of the multiset of values deposited into it, bit for bit, so partial states computed anywhere
(chunks, threads, Dask tasks, processes, a streaming ``Scorer``) combine into the same words,
and the same float, whatever the split and the order of merging::

    s = _rsum.of(values)                 # the state of a sum (an (WORDS,) int64 array)
    t = _rsum.merge(s, _rsum.of(more))   # exact: merge(a, b) == merge(b, a), any grouping
    _rsum.value(t)                       # the sum, rounded once to float64

``empty(shape)`` makes states of empty sums (shape + (WORDS,)); ``merge`` and ``value`` work
elementwise over the leading axes. States are plain NumPy arrays: they pickle, and ``check``
validates one that comes back from outside (a saved state) before it is used.

The sum is within 0.5 ulp + n * 2^-96 * max|x| of the exact sum (usually it is math.fsum's);
non-finite values give what a float sum would (NaN for any NaN or for +inf with -inf, else
the infinity); an exact zero is +0.0.
"""
from __future__ import annotations

from typing import Any, Tuple, Union

import numpy as np

from . import _core

WORDS: int = _core.RSUM_WORDS


def empty(shape: Union[int, Tuple[int, ...]] = ()) -> np.ndarray:
    """States of empty sums, of shape ``shape + (WORDS,)``."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    s = np.empty(shape + (WORDS,), dtype=np.int64)
    _core.rsum_init(s)
    return s


def check(states: Any, name: str = "state") -> np.ndarray:
    """``states`` as a C-contiguous int64 array of states, or ValueError naming ``name``."""
    a = np.asarray(states)
    if a.dtype != np.int64 or a.ndim == 0 or a.shape[-1] != WORDS:
        raise ValueError(f"{name}: expected int64 sum states (last axis of length {WORDS}), got {a.dtype} {a.shape}")
    a = np.ascontiguousarray(a)
    bad = _core.rsum_check(a)
    if bad >= 0:
        pos = np.unravel_index(bad, a.shape[:-1]) if a.ndim > 1 else ()
        raise ValueError(f"{name}: the sum state at {tuple(int(i) for i in pos)} is not a valid state")
    return a


def of(values: Any) -> np.ndarray:
    """The state of the sum of ``values`` (any shape, converted to float64)."""
    s = empty()
    add(s, values)
    return s


def add(state: np.ndarray, values: Any) -> None:
    """Deposit ``values`` (any shape) into one state, in place."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size:
        _core.rsum_add(state, v if v.flags.aligned else v.copy())


def merge(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A new array of states ``a[i] + b[i]`` (same shapes)."""
    if a.shape != b.shape:
        raise ValueError(f"state: cannot merge sum states of shapes {a.shape} and {b.shape}")
    out = np.array(a, dtype=np.int64, order="C")
    _core.rsum_merge(out, np.ascontiguousarray(b))
    return out


def value(states: np.ndarray) -> Any:
    """The sums of ``states`` as float64: an array of the leading shape (a Python float for
    one state)."""
    s = np.ascontiguousarray(states)
    out = np.empty(s.shape[:-1], dtype=np.float64)
    _core.rsum_value(s, out)
    return float(out) if out.ndim == 0 else out
