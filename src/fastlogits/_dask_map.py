"""The lazy per-block maps of ``fastlogits.dask`` (the elementwise and per-row functions, and
the argument probes every Dask function shares): each block goes through the in-memory
function, so every element equals the in-memory result bitwise. ``fastlogits.dask`` exports
these functions and adds the reductions."""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional, Tuple

import dask.array as da
import numpy as np

from . import _post
from ._input import as_array, is_bfloat16, normalize_axis


# --------------------------------------------------------------------------- inputs

def as_dask(a: Any, name: str) -> "da.Array":
    """A Dask array as it is; anything else (NumPy, memmap, DLPack tensor) as one chunk."""
    if isinstance(a, da.Array):
        if any(math.isnan(size) for sizes in a.chunks for size in sizes):
            raise ValueError(
                f"{name}: the Dask array has unknown chunk sizes (nan, e.g. after boolean indexing); "
                f"call {name}.compute_chunk_sizes() first"
            )
        return a
    arr = as_array(a, name)
    return da.from_array(arr, chunks=arr.shape, asarray=False)


def probe(a: "da.Array") -> np.ndarray:
    """A stand-in of ``a``'s shape holding no memory (one broadcast zero), for the in-memory
    argument checks. Dtypes those checks would convert (copying the whole shape) are replaced
    by what they convert to: integer/bool logits and weights by float64, integer targets by int64."""
    return np.broadcast_to(np.zeros((), a.dtype), a.shape)


def probe_as(a: "da.Array", dtype: Any) -> np.ndarray:
    return np.broadcast_to(np.zeros((), dtype), a.shape)


def logits_probe(x: "da.Array") -> np.ndarray:
    return probe_as(x, np.float64) if x.dtype.kind in "iub" else probe(x)


def target_probe(t: "da.Array") -> np.ndarray:
    dt = t.dtype
    if dt.kind in "iu" and dt not in (np.dtype(np.int32), np.dtype(np.int64)):
        return probe_as(t, np.int64)
    if dt.kind == "f" and dt.itemsize > 8:
        return probe_as(t, np.float64)
    return probe(t)


def weight_probe(w: Optional["da.Array"]) -> Optional[np.ndarray]:
    if w is None:
        return None
    return probe_as(w, np.float64) if w.dtype.kind in "iubf" or is_bfloat16(w.dtype) else probe(w)


def single_class_chunk(x: "da.Array", ax: int, name: str = "x") -> None:
    if len(x.chunks[ax]) > 1:
        raise ValueError(
            f"{name}: the class axis {ax} must be a single chunk, got chunks {x.chunks[ax]} along it; "
            f"rechunk first with {name}.rechunk({{{ax}: -1}})"
        )


def _small_probe(x: "da.Array", ax: Optional[int]) -> np.ndarray:
    """A real array of x's dtype with one element per axis except the class axis, to run the
    in-memory function once: it checks the arguments and tells the result's dtype."""
    shape = tuple(n if d == ax else 1 for d, n in enumerate(x.shape))
    return np.zeros(shape, x.dtype)


# --------------------------------------------------------------------------- postprocessing

def _block_call(func: Callable[..., Any], block: np.ndarray, **kwargs: Any) -> np.ndarray:
    """``func`` on one block, as an array (the in-memory functions return NumPy scalars for
    0-d results)."""
    return np.asarray(func(block, **kwargs))


def _elementwise(func: Callable[..., Any], x: Any, **kwargs: Any) -> "da.Array":
    x = as_dask(x, "x")
    dt = _block_call(func, np.zeros((1,) * x.ndim, x.dtype), **kwargs).dtype
    fn = functools.partial(_block_call, func, **kwargs)
    return x.map_blocks(fn, dtype=dt, meta=np.empty((0,) * x.ndim, dt))


def _per_row(func: Callable[..., Any], x: Any, axis: Any, keep: str, **kwargs: Any) -> "da.Array":
    """``func`` along the class axis of every block; ``keep`` says what becomes of that axis:
    "same" (softmax-like), "drop" (a reduction) or "one" (a reduction with keepdims)."""
    x = as_dask(x, "x")
    if x.ndim == 0:
        func(np.zeros((), x.dtype), axis=axis, **kwargs)  # raises the in-memory function's error
    ax = normalize_axis(axis, x.ndim)
    dt = _block_call(func, _small_probe(x, ax), axis=ax, **kwargs).dtype
    single_class_chunk(x, ax)
    fn = functools.partial(_block_call, func, axis=ax, **kwargs)
    if keep == "same":
        return x.map_blocks(fn, dtype=dt, meta=np.empty((0,) * x.ndim, dt))
    if keep == "one":
        chunks = x.chunks[:ax] + ((1,),) + x.chunks[ax + 1:]
        return x.map_blocks(fn, dtype=dt, chunks=chunks, meta=np.empty((0,) * x.ndim, dt))
    return x.map_blocks(fn, dtype=dt, drop_axis=ax, meta=np.empty((0,) * (x.ndim - 1), dt))


def sigmoid(x: Any, *, dtype: Any = None) -> "da.Array":
    """Lazy :func:`fastlogits.sigmoid` of a Dask array (any chunks).

    Examples
    --------
    >>> import dask.array as da, fastlogits.dask as fld
    >>> fld.sigmoid(da.from_array([1.2, 0.0], chunks=1)).compute().round(6).tolist()
    [0.768525, 0.5]
    """
    return _elementwise(_post.sigmoid, x, dtype=dtype)


def log_sigmoid(x: Any, *, dtype: Any = None) -> "da.Array":
    """Lazy :func:`fastlogits.log_sigmoid` of a Dask array (any chunks).

    Examples
    --------
    >>> import dask.array as da, fastlogits.dask as fld
    >>> fld.log_sigmoid(da.from_array([0.0, -800.0], chunks=1)).compute().tolist()
    [-0.6931471805599453, -800.0]
    """
    return _elementwise(_post.log_sigmoid, x, dtype=dtype)


def softmax(x: Any, axis: int = -1, *, dtype: Any = None) -> "da.Array":
    """Lazy :func:`fastlogits.softmax` along ``axis`` (which must be a single chunk).

    Examples
    --------
    >>> import dask.array as da, fastlogits.dask as fld
    >>> x = da.from_array([[2.5, 0.3, -1.2], [0.0, 0.0, 0.0]], chunks=(1, 3))
    >>> fld.softmax(x).compute().round(4).tolist()
    [[0.8806, 0.0976, 0.0218], [0.3333, 0.3333, 0.3333]]
    """
    return _per_row(_post.softmax, x, axis, "same", dtype=dtype)


def log_softmax(x: Any, axis: int = -1, *, dtype: Any = None) -> "da.Array":
    """Lazy :func:`fastlogits.log_softmax` along ``axis`` (which must be a single chunk).

    Examples
    --------
    >>> import dask.array as da, fastlogits.dask as fld
    >>> fld.log_softmax(da.from_array([[0.0, 0.0]], chunks=(1, 2))).compute().round(6).tolist()
    [[-0.693147, -0.693147]]
    """
    return _per_row(_post.log_softmax, x, axis, "same", dtype=dtype)


def logsumexp(x: Any, axis: int = -1, *, keepdims: bool = False) -> "da.Array":
    """Lazy :func:`fastlogits.logsumexp` along ``axis`` (which must be a single chunk).

    Examples
    --------
    >>> import dask.array as da, fastlogits.dask as fld
    >>> fld.logsumexp(da.from_array([[0.0, 0.0], [1.0, -1.0]], chunks=(1, 2))).compute().round(6).tolist()
    [0.693147, 1.126928]
    """
    return _per_row(_post.logsumexp, x, axis, "one" if keepdims else "drop", keepdims=keepdims)


def entropy(x: Any, axis: int = -1, *, keepdims: bool = False) -> "da.Array":
    """Lazy :func:`fastlogits.entropy` along ``axis`` (which must be a single chunk).

    Examples
    --------
    >>> import dask.array as da, fastlogits.dask as fld
    >>> fld.entropy(da.from_array([[0.0, 0.0]], chunks=(1, 2))).compute().round(6).tolist()
    [0.693147]
    """
    return _per_row(_post.entropy, x, axis, "one" if keepdims else "drop", keepdims=keepdims)


def predict(x: Any, axis: int = -1) -> "da.Array":
    """Lazy :func:`fastlogits.predict` (int64 argmax) along ``axis`` (a single chunk).

    Examples
    --------
    >>> import dask.array as da, fastlogits.dask as fld
    >>> fld.predict(da.from_array([[2.5, 0.3], [0.1, 4.0]], chunks=(1, 2))).compute().tolist()
    [0, 1]
    """
    return _per_row(_post.predict, x, axis, "drop")


def predict_binary(x: Any, threshold: float = 0.5) -> "da.Array":
    """Lazy :func:`fastlogits.predict_binary` of a Dask array (any chunks).

    Examples
    --------
    >>> import dask.array as da, fastlogits.dask as fld
    >>> fld.predict_binary(da.from_array([1.2, -0.3, 3.0], chunks=2), threshold=0.9).compute().tolist()
    [False, False, True]
    """
    return _elementwise(_post.predict_binary, x, threshold=threshold)


def _topk_last(block: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    return _post.topk(block, k, axis=-1)


def topk(x: Any, k: int, axis: int = -1) -> Tuple["da.Array", "da.Array"]:
    """Lazy :func:`fastlogits.topk`: ``(values, indices)`` with ``axis`` of length ``k``
    (``axis`` must be a single chunk). Both come from one pass over each block.

    Examples
    --------
    >>> import dask.array as da, fastlogits.dask as fld
    >>> v, i = fld.topk(da.from_array([[0.5, 2.0, -1.0, 2.0]], chunks=(1, 4)), 2)
    >>> v.compute().tolist(), i.compute().tolist()
    ([[2.0, 2.0]], [[1, 3]])
    """
    x = as_dask(x, "x")
    if x.ndim == 0:
        _post.topk(np.zeros((), x.dtype), k, axis)
    ax = normalize_axis(axis, x.ndim)
    values, _ = _post.topk(_small_probe(x, ax), k, axis=ax)
    single_class_chunk(x, ax)
    pair: Tuple[Any, Any] = da.apply_gufunc(
        functools.partial(_topk_last, k=int(k)), "(c)->(k),(k)", x, axes=[(ax,), (ax,), (ax,)],
        output_dtypes=(values.dtype, np.dtype(np.int64)), output_sizes={"k": int(k)})
    return pair
