"""fastlogits on Dask arrays (API section 6): the same functions, for data that is chunked,
larger than memory or spread over a ``distributed`` cluster.

What each function returns:

- Elementwise and per-row functions (``sigmoid``, ``log_sigmoid``, ``softmax``,
  ``log_softmax``, ``logsumexp``, ``entropy``, ``predict``, ``predict_binary``, ``topk``,
  and the losses with ``reduction="none"``) map the in-memory function over the blocks and
  return lazy Dask arrays. A row's result does not depend on its neighbours, so every element
  equals the in-memory result bitwise. The class axis must be a single chunk (a ``ValueError``
  says how to rechunk); the other axes may be chunked freely.
- Reductions (``score``, and the losses with ``reduction="mean"``/``"sum"``) are computed at
  once on the current Dask scheduler (a ``distributed.Client`` if one is active) and return a
  Python ``float`` (``score``: a ``dict``), like the in-memory functions.

How reductions stay bitwise equal to the in-memory functions: the in-memory kernels sum rows in
FIXED blocks (their boundaries depend on the shape only) and add the per-block partial sums in
block order (compensated for ``score`` and ``cross_entropy``, plainly for ``bce_with_logits``).
Here the rows are rechunked along their first axis so that chunk boundaries fall on block
boundaries, every task returns the partial sum of each of its blocks (one kernel call per
block, so each partial is exactly the in-memory one), and the driver adds the partials in block
order with the kernels' own summation. ``roc_auc`` (and, for probability targets with sample
weights, the ``"mean"`` denominator ``sum(sample_weight)``) gather one float per row to the
driver, as the in-memory functions hold them in memory.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, cast

import numpy as np

try:
    import dask
    import dask.array as da
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("fastlogits.dask needs Dask: pip install 'fastlogits[dask]'") from exc

from . import _bce, _ce, _core, _post, _score
from ._dask_npy import from_npy
from ._input import as_array, as_logits, is_bfloat16, normalize_axis
from ._layout import make_grid

__all__ = [
    "bce_with_logits", "cross_entropy", "entropy", "from_npy", "log_sigmoid", "log_softmax", "logsumexp",
    "predict", "predict_binary", "score", "sigmoid", "softmax", "topk",
]

# csrc/fl_rowio.h FL_BLOCK_ELEMS: the kernels' unit of parallel work and of summation order
_BLOCK_ELEMS = 16384
_INT64_MAX = np.iinfo(np.int64).max


# --------------------------------------------------------------------------- inputs

def _as_dask(a: Any, name: str) -> "da.Array":
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


def _probe(a: "da.Array") -> np.ndarray:
    """A stand-in of ``a``'s shape holding no memory (one broadcast zero), for the in-memory
    argument checks. Dtypes those checks would convert (copying the whole shape) are replaced
    by what they convert to: integer/bool logits and weights by float64, integer targets by int64."""
    return np.broadcast_to(np.zeros((), a.dtype), a.shape)


def _probe_as(a: "da.Array", dtype: Any) -> np.ndarray:
    return np.broadcast_to(np.zeros((), dtype), a.shape)


def _logits_probe(x: "da.Array") -> np.ndarray:
    return _probe_as(x, np.float64) if x.dtype.kind in "iub" else _probe(x)


def _target_probe(t: "da.Array") -> np.ndarray:
    dt = t.dtype
    if dt.kind in "iu" and dt not in (np.dtype(np.int32), np.dtype(np.int64)):
        return _probe_as(t, np.int64)
    if dt.kind == "f" and dt.itemsize > 8:
        return _probe_as(t, np.float64)
    return _probe(t)


def _weight_probe(w: Optional["da.Array"]) -> Optional[np.ndarray]:
    if w is None:
        return None
    return _probe_as(w, np.float64) if w.dtype.kind in "iubf" or is_bfloat16(w.dtype) else _probe(w)


def _single_class_chunk(x: "da.Array", ax: int, name: str = "x") -> None:
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
    x = _as_dask(x, "x")
    dt = _block_call(func, np.zeros((1,) * x.ndim, x.dtype), **kwargs).dtype
    fn = functools.partial(_block_call, func, **kwargs)
    return x.map_blocks(fn, dtype=dt, meta=np.empty((0,) * x.ndim, dt))


def _per_row(func: Callable[..., Any], x: Any, axis: Any, keep: str, **kwargs: Any) -> "da.Array":
    """``func`` along the class axis of every block; ``keep`` says what becomes of that axis:
    "same" (softmax-like), "drop" (a reduction) or "one" (a reduction with keepdims)."""
    x = _as_dask(x, "x")
    if x.ndim == 0:
        func(np.zeros((), x.dtype), axis=axis, **kwargs)  # raises the in-memory function's error
    ax = normalize_axis(axis, x.ndim)
    dt = _block_call(func, _small_probe(x, ax), axis=ax, **kwargs).dtype
    _single_class_chunk(x, ax)
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
    x = _as_dask(x, "x")
    if x.ndim == 0:
        _post.topk(np.zeros((), x.dtype), k, axis)
    ax = normalize_axis(axis, x.ndim)
    values, _ = _post.topk(_small_probe(x, ax), k, axis=ax)
    _single_class_chunk(x, ax)
    pair: Tuple[Any, Any] = da.apply_gufunc(
        functools.partial(_topk_last, k=int(k)), "(c)->(k),(k)", x, axes=[(ax,), (ax,), (ax,)],
        output_dtypes=(values.dtype, np.dtype(np.int64)), output_sizes={"k": int(k)})
    return pair


# --------------------------------------------------------------------------- fixed blocks

def _aligned_chunks(chunks: Sequence[int], unit: int) -> Tuple[int, ...]:
    """Chunk lengths near ``chunks`` whose boundaries are multiples of ``unit`` (so they fall on
    the kernels' block boundaries)."""
    n = int(sum(chunks))
    cuts = {int(round(b / unit)) * unit for b in np.cumsum(chunks)[:-1]}
    edges = [0] + sorted(c for c in cuts if 0 < c < n) + [n]
    return tuple(int(e) for e in np.diff(edges)) or (n,)


def _lead_blocks(arrays: Sequence[Optional["da.Array"]], leads: Sequence[Optional[int]], chunks: Tuple[int, ...]
                 ) -> List[List[Any]]:
    """Every array rechunked to ``chunks`` along its lead axis (None: one chunk) and to one
    chunk along the others, as per-chunk lists of Delayed blocks (None for a missing array)."""
    out: List[List[Any]] = []
    for a, lead in zip(arrays, leads):
        if a is None:
            out.append([None] * len(chunks))
            continue
        spec: Dict[int, Any] = {d: -1 for d in range(a.ndim)}
        if lead is not None:
            spec[lead] = chunks
        blocks = list(a.rechunk(spec).to_delayed().ravel())
        out.append(blocks if lead is not None else blocks * len(chunks))
    return [list(per_chunk) for per_chunk in zip(*out)]


def _lead_offsets(chunks: Sequence[int]) -> List[int]:
    return [int(o) for o in np.concatenate(([0], np.cumsum(chunks)[:-1]))]


def _compensated_total(parts: np.ndarray) -> np.ndarray:
    """The kernels' Neumaier sum of per-block partials (rows of ``parts``) in block order, one
    total per column; a total that becomes infinite or NaN is carried without compensation."""
    m = parts.shape[1]
    s, comp = np.zeros(m), np.zeros(m)
    with np.errstate(invalid="ignore", over="ignore"):
        for v in parts:
            t = s + v
            c = np.where(np.abs(s) >= np.abs(v), (s - t) + v, (v - t) + s)
            comp = np.where(np.isfinite(t), comp + c, comp)
            s = t
        return np.where(np.isfinite(s), s + comp, s)


def _row_major(a: np.ndarray, ax: int) -> np.ndarray:
    """Rows of ``a`` (class axis ``ax`` last) as a 2-D array in the kernels' row order (C order
    of the other axes)."""
    m = np.moveaxis(a, ax, -1)
    return m.reshape(-1, m.shape[-1])


def _position(flat: int, shape: Tuple[int, ...]) -> Tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat, shape))


# --------------------------------------------------------------------------- score

@dataclass(frozen=True)
class _ScoreSpec:
    """What a score task needs to know about the whole problem."""

    task: str
    ax: int
    c: int
    t_lead: int
    period: int
    block_rows: int
    want_rank: bool
    k: int
    bins: int
    temperature: float
    want_auc: bool

    @property
    def mode(self) -> int:
        return _score._SOFTMAX if self.task == "multiclass" else _score._SIGMOID


def _score_block_ranges(n: int, period: int, block_rows: int) -> List[Tuple[int, int]]:
    """The kernel's blocks (csrc/fl_score.c fl_score_block_range) of rows [0, n)."""
    return [(r0, min(r0 + block_rows, q + period, n))
            for q in range(0, n, period) for r0 in range(q, min(q + period, n), block_rows)]


def _score_chunk(x: np.ndarray, t: np.ndarray, w: Optional[np.ndarray], lead_offset: int, s: _ScoreSpec
                 ) -> Tuple[np.ndarray, Optional[Tuple[Any, ...]]]:
    """The partial sums (W, the metric sums, the ECE bins) of each of the chunk's blocks, one
    block per row of the result, plus the scores, labels and weights roc_auc needs."""
    nsums = _score._NSUMS + 3 * s.bins
    x = as_logits(x, "logits")
    if s.mode == _score._SOFTMAX:
        tk = np.expand_dims(_score._class_indices(t, s.c, lead_offset), s.ax)
    else:
        tb = _score._binary_labels(t, lead_offset, s.t_lead)
        tk = tb if s.task == "multilabel" else np.expand_dims(tb, s.ax)
    x2, t2 = _row_major(x, s.ax), _row_major(tk, s.ax)
    w2 = None if w is None else np.ascontiguousarray(w, dtype=np.float64).reshape(-1, 1)
    ranges = _score_block_ranges(x2.shape[0], s.period, s.block_rows) if x.size else []
    parts = np.zeros((len(ranges), nsums))
    for i, (r0, r1) in enumerate(ranges):
        ops = [x2[r0:r1], t2[r0:r1]] + ([] if w2 is None else [w2[r0:r1]])
        g = make_grid(ops, 1, s.c)
        acc = np.zeros(2 * nsums)
        _core.score(g.specs[0], g.specs[1], None if w2 is None else g.specs[2], g.grid, s.mode, s.want_rank,
                    s.k, s.bins, s.temperature, r1 - r0, r1 - r0, acc)
        parts[i] = acc[0::2]  # one Neumaier addition to zero: exactly the block's partial sum
    auc = (np.array(x2), np.array(t2, dtype=bool), None if w2 is None else w2.reshape(-1).copy()) if s.want_auc else None
    return parts, auc


def _binary_view(x: "da.Array", t: "da.Array", p: "_score._Problem") -> Tuple["da.Array", "da.Array"]:
    """The dask logits and target reshaped as _score._prepare reshaped their probes."""
    if p.x.ndim == x.ndim + 1:
        x = x[..., None]
    if p.t.ndim != t.ndim:
        t = da.squeeze(t, axis=p.ax)
    return x, t


def score(logits: Any, target: Any, *, task: Optional[str] = None, axis: int = -1, metrics: Any = None,
          k: int = 5, bins: int = 15, sample_weight: Any = None, temperature: float = 1.0) -> Dict[str, Any]:
    """:func:`fastlogits.score` of Dask arrays, computed now on the current Dask scheduler.

    Arguments and result as in :func:`fastlogits.score` (the chunking is the Dask arrays'
    own, so there is no ``chunk_rows``; for progress use Dask's diagnostics, e.g.
    ``dask.diagnostics.ProgressBar`` or ``distributed.progress``). ``target`` and
    ``sample_weight`` may be Dask or NumPy arrays. The result is bitwise equal to
    ``fastlogits.score`` of the same data in memory: the rows are rechunked along their first
    axis onto the kernel's block boundaries, every task returns its blocks' partial sums and
    these are added in block order as the in-memory pass adds them. ``roc_auc`` gathers one
    score, label and weight per row (and label) to the caller, as the in-memory function keeps
    them. A class index out of range raises ``IndexError`` naming one offending position.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastlogits as fl, fastlogits.dask as fld
    >>> logits = np.array([[2.0, 0.5, -1.0], [0.1, 1.5, 0.3], [0.2, 0.1, 3.0]], np.float32)
    >>> y = np.array([0, 2, 2])
    >>> r = fld.score(da.from_array(logits, chunks=(2, 3)), y, k=2)
    >>> r == fl.score(logits, y, k=2)
    True
    """
    x = _as_dask(logits, "logits")
    t = _as_dask(target, "target")
    w = None if sample_weight is None else _as_dask(sample_weight, "sample_weight")
    p = _score._prepare(_logits_probe(x), _probe(t), task, axis, _weight_probe(w))
    names = _score._select_metrics(metrics, p.task, k, p.c if p.task == "multiclass" else 1)
    bins, temp = _score._check_scalar_args(bins, temperature, None)
    x, t = _binary_view(x, t, p)
    _single_class_chunk(x, p.ax, "logits")
    plan = _score._plan_blocks(p, None)
    t_lead = p.lead if p.task == "multilabel" else 0
    spec = _ScoreSpec(p.task, p.ax, p.c, t_lead, plan.period, plan.block_rows,
                      any(m in names for m in ("accuracy", "top_k_accuracy", "ece")), int(k), bins, temp,
                      "roc_auc" in names)
    chunks = _aligned_chunks(x.chunks[p.lead], plan.lead_unit)
    per_chunk = _lead_blocks([x, t, w], [p.lead, t_lead, 0], chunks)
    task_fn = dask.delayed(_score_chunk, pure=True)
    results = dask.compute(*[task_fn(xb, tb, wb, off, spec)
                             for (xb, tb, wb), off in zip(per_chunk, _lead_offsets(chunks))])
    parts = np.concatenate([r[0] for r in results]) if results else np.zeros((0, _score._NSUMS + 3 * bins))
    sums = _score._Sums(_compensated_total(parts), p.n_rows, *_gathered_auc(results, p.c, x.dtype, spec.want_auc))
    return _score._results(p, names, sums)


def _gathered_auc(results: Sequence[Tuple[Any, ...]], c: int, dtype: np.dtype, want: bool) -> Tuple[Any, ...]:
    if not want:
        return None, None, None
    aucs = [r[1] for r in results]
    s = np.concatenate([a[0] for a in aucs]) if aucs else np.zeros((0, c), dtype)
    y = np.concatenate([a[1] for a in aucs]) if aucs else np.zeros((0, c), bool)
    w = np.concatenate([a[2] for a in aucs]) if aucs and aucs[0][2] is not None else None
    return s, y, w


# --------------------------------------------------------------------------- cross_entropy

@dataclass(frozen=True)
class _CeSpec:
    """What a cross-entropy task needs to know about the whole problem."""

    ax: int
    c: int
    index: bool
    weight: Optional[np.ndarray]
    ignore_index: int
    label_smoothing: float
    z_loss: float


def _checked_indices(t: np.ndarray, c: int, ignore: int, origin: Sequence[int]) -> np.ndarray:
    """A block of class indices as the kernel reads them (int64 or int32), checked as _ce
    checks them; ``origin`` (the block's first index along each axis) makes the error name
    the position in the whole target."""
    def fail(mask: np.ndarray, what: str) -> IndexError:
        local = np.unravel_index(int(np.argmax(mask)), t.shape)
        pos = tuple(int(i) + int(o) for i, o in zip(local, origin))
        return IndexError(f"target: class index {int(t[local])} at position {pos} is out of range{what}")
    if t.dtype == np.uint64 and t.size and (t > _INT64_MAX).any():
        raise fail(t > _INT64_MAX, "")
    ti = t if t.dtype in (np.dtype(np.int64), np.dtype(np.int32)) else t.astype(np.int64)
    bad = (ti != ignore) & ((ti < 0) | (ti >= c))
    if bad.any():
        raise fail(bad, f" [0, {c}) and is not ignore_index={ignore}")
    return ti


def _ce_chunk(x: np.ndarray, t: np.ndarray, sw: Optional[np.ndarray], lead_offset: int, s: _CeSpec) -> np.ndarray:
    """(ce_sum, z_sum, d1, d2, n_valid) of each of the chunk's blocks, one block per row of the
    result, each exactly the in-memory kernel's partial for that block."""
    x2 = _row_major(as_logits(x, "logits"), s.ax)
    if s.index:
        origin = (lead_offset,) + (0,) * (t.ndim - 1)
        t2 = np.ascontiguousarray(_checked_indices(t, s.c, s.ignore_index, origin)).reshape(-1, 1)
    else:
        t2 = _row_major(_ce._prob_target(as_array(t, "target"), t.shape), s.ax)
    s2 = None if sw is None else np.asarray(sw, dtype=np.float64).reshape(-1, 1)
    rpb = max(1, _BLOCK_ELEMS // max(s.c, 1))
    n = x2.shape[0]
    parts = np.zeros((-(-n // rpb), 5))
    for i, r0 in enumerate(range(0, n, rpb)):
        ops = [x2[r0:r0 + rpb], t2[r0:r0 + rpb]] + ([] if s2 is None else [s2[r0:r0 + rpb]])
        g = make_grid(ops, 1, s.c)
        r = _core.cross_entropy(g.specs[0], g.specs[1], None if s2 is None else g.specs[2], None, None, g.grid,
                                s.weight, s.ignore_index, s.label_smoothing, s.z_loss, 1.0, 1.0, False)
        parts[i] = r[:5]
    return parts


def _ce_none_block(x: np.ndarray, t: np.ndarray, sw: Optional[np.ndarray] = None, *, s: _CeSpec,
                   block_info: Optional[Dict[Any, Any]] = None) -> np.ndarray:
    """Per-row losses of one block; class indices and sample weights come with a length-1
    class axis (so Dask aligns their blocks with the logits' blocks)."""
    if s.index:
        t = np.squeeze(t, s.ax)
        origin = [lo for d, (lo, _) in enumerate(block_info[0]["array-location"]) if d != s.ax] if block_info else ()
        t = _checked_indices(t, s.c, s.ignore_index, origin or (0,) * t.ndim)
    sw = None if sw is None else np.squeeze(sw, s.ax)
    return np.asarray(_ce.cross_entropy(x, t, axis=s.ax, weight=s.weight, sample_weight=sw,
                                        ignore_index=s.ignore_index, reduction="none",
                                        label_smoothing=s.label_smoothing, z_loss=s.z_loss))


def _ce_none(x: "da.Array", t: "da.Array", sw: Optional["da.Array"], s: _CeSpec, dtype: np.dtype) -> "da.Array":
    row_chunks = x.chunks[:s.ax] + x.chunks[s.ax + 1:]
    args = [x, da.expand_dims(t.rechunk(row_chunks), s.ax) if s.index else t.rechunk(x.chunks)]
    if sw is not None:
        args.append(da.expand_dims(sw.rechunk(row_chunks), s.ax))
    fn = functools.partial(_ce_none_block, s=s)
    return da.map_blocks(fn, *args, dtype=dtype, drop_axis=s.ax, meta=np.empty((0,) * (x.ndim - 1), dtype))


def cross_entropy(logits: Any, target: Any, *, axis: int = -1, weight: Any = None, sample_weight: Any = None,
                  ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0,
                  z_loss: float = 0.0) -> Any:
    """:func:`fastlogits.cross_entropy` of Dask arrays.

    Arguments and semantics as in :func:`fastlogits.cross_entropy`; ``target`` and
    ``sample_weight`` may be Dask or NumPy arrays (rechunked to the logits' rows), ``weight``
    (C values) anything array-like. ``reduction="none"`` returns a lazy Dask array of per-row
    losses (bitwise the in-memory ones). ``"mean"``/``"sum"`` are computed now and return a
    Python float bitwise equal to the in-memory result: every task returns the kernel's
    per-block sums of its rows (loss, z-loss, ``sum s_i*w[y_i]``, ``sum s_i``, valid rows)
    and they are combined in block order. With probability targets and sample weights,
    ``"mean"`` divides by ``sum(sample_weight)``, summed as NumPy sums it in memory (the
    weights, one float per row, are gathered for that). The class axis must be a single chunk.
    A class index out of range raises ``IndexError`` naming one offending position.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastlogits.dask as fld
    >>> logits = da.from_array(np.array([[2.5, 0.3, -1.2], [0.1, 0.2, 3.0]]), chunks=(1, 3))
    >>> round(fld.cross_entropy(logits, np.array([0, 2])), 6)
    0.118349
    >>> fld.cross_entropy(logits, np.array([0, -100]), reduction="none").compute().round(6).tolist()
    [0.127097, 0.0]
    """
    x = _as_dask(logits, "logits")
    t = _as_dask(target, "target")
    sw = None if sample_weight is None else _as_dask(sample_weight, "sample_weight")
    w = None if weight is None else as_array(weight, "weight")
    probe_x = _logits_probe(x)
    p = _ce._problem(probe_x, _target_probe(t), axis, w, _weight_probe(sw), ignore_index, reduction,
                     label_smoothing, z_loss)
    _single_class_chunk(x, p.axis, "logits")
    spec = _CeSpec(p.axis, x.shape[p.axis], p.index, p.weight, p.ignore_index, p.label_smoothing, p.z_loss)
    if p.reduction == "none":
        return _ce_none(x, t, sw, spec, probe_x.dtype)
    # rows are cut along the first axis that is not the class axis (1-D logits are one row)
    lead = None if x.ndim == 1 else (0 if p.axis != 0 else 1)
    rows = int(np.prod(p.row_shape))
    if lead is None or x.shape[lead] == 0:
        chunks: Tuple[int, ...] = (1,) if lead is None else (0,)
    else:
        rpb, per_lead = max(1, _BLOCK_ELEMS // max(spec.c, 1)), max(1, rows // x.shape[lead])
        chunks = _aligned_chunks(x.chunks[lead], rpb // math.gcd(rpb, per_lead))
    t_lead = None if lead is None else (0 if p.index else lead)
    per_chunk = _lead_blocks([x, t, sw], [lead, t_lead, None if lead is None else 0], chunks)
    task_fn = dask.delayed(_ce_chunk, pure=True)
    tasks = [task_fn(xb, tb, sb, off, spec) for (xb, tb, sb), off in zip(per_chunk, _lead_offsets(chunks))]
    want_sw = not p.index and p.reduction == "mean" and sw is not None
    results = dask.compute(*tasks, *([cast(Any, sw).astype(np.float64)] if want_sw else []))
    totals = tuple(float(v) for v in _compensated_total(np.concatenate(results[:len(tasks)])))
    if want_sw:
        p = dataclasses.replace(p, sample_weight=results[-1])  # _reduced sums it as in memory
    ce_sum, z_sum, d1, d2, n_valid = totals
    return _ce._reduced(p, (ce_sum, z_sum, d1, d2, n_valid, -1))


# --------------------------------------------------------------------------- bce_with_logits

@dataclass(frozen=True)
class _BceSpec:
    """The in-memory kernel's element grid of a C-contiguous array: rows of ``length``
    elements along the last axis longer than 1 (``one_row``: axis 0, so the whole array is one
    row chunked along its elements), cut into pieces of ``piece`` elements, ``per_block``
    pieces per block."""

    one_row: bool
    length: int
    piece: int
    per_block: int


def _bce_plan(shape: Tuple[int, ...]) -> Tuple[_BceSpec, int]:
    """The grid of csrc/fl_bce.c for logits of ``shape`` in C order, and the unit (along
    axis 0) that chunk boundaries must be multiples of to fall on its block boundaries."""
    dims = [d for d in range(len(shape)) if shape[d] > 1]
    ga = dims[-1] if dims else len(shape) - 1
    length = shape[ga]
    piece = max(1, min(length, _BLOCK_ELEMS))
    per_block = max(1, _BLOCK_ELEMS // piece)
    spec = _BceSpec(ga == 0, length, piece, per_block)
    if ga == 0:
        return spec, piece
    if piece >= _BLOCK_ELEMS:
        return spec, 1  # a block is one piece of a row: every row boundary is a block boundary
    per_lead = max(1, int(np.prod(shape[1:ga])))
    return spec, per_block // math.gcd(per_block, per_lead)


def _bce_bad_targets(t: np.ndarray) -> np.ndarray:
    """Where a target is invalid, as _bce checks it (bool targets are always valid)."""
    if t.dtype.kind in "biu":
        return np.asarray((t != 0) & (t != 1))
    with np.errstate(invalid="ignore"):
        return ~((t >= 0) & (t <= 1))


def _check_bce_targets(t: np.ndarray, origin: Sequence[int]) -> None:
    """_bce's target check for a block whose first element is at ``origin`` of the target,
    the error naming the position in the whole target."""
    bad = _bce_bad_targets(t)
    if not bad.any():
        return
    local = np.unravel_index(int(np.argmax(bad)), t.shape)
    pos = tuple(int(i) + int(o) for i, o in zip(local, origin))
    expected = "0 or 1 (integer targets)" if t.dtype.kind in "biu" else "values in [0, 1] (float targets)"
    raise ValueError(f"target: expected {expected}, got {t[local]!r} at position {pos}")


def _bce_chunk(x: np.ndarray, t: np.ndarray, w: Optional[np.ndarray], pw: Optional[np.ndarray],
               lead_offset: int, s: _BceSpec) -> np.ndarray:
    """The loss sum of each of the chunk's blocks, each exactly the in-memory kernel's."""
    _check_bce_targets(t, (lead_offset,) + (0,) * (t.ndim - 1))
    shape2 = (1, -1) if s.one_row else (-1, s.length)
    x2, t2 = x.reshape(shape2), t.reshape(shape2)
    w2, pw2 = (None if a is None else a.reshape(shape2) for a in (w, pw))
    cuts: List[Tuple[Any, ...]]
    if s.piece >= _BLOCK_ELEMS or s.one_row:
        cuts = [(r, slice(k0, k0 + s.piece)) for r in range(x2.shape[0]) for k0 in range(0, x2.shape[1], s.piece)]
    else:
        cuts = [(slice(r0, r0 + s.per_block),) for r0 in range(0, x2.shape[0], s.per_block)]
    return np.array([_bce.bce_with_logits(x2[c], t2[c], weight=None if w2 is None else w2[c],
                                          pos_weight=None if pw2 is None else pw2[c], reduction="sum")
                     for c in cuts], dtype=np.float64)


def _bce_none_block(x: np.ndarray, t: np.ndarray, *weights: np.ndarray, names: Tuple[str, ...],
                    block_info: Optional[Dict[Any, Any]] = None) -> np.ndarray:
    _check_bce_targets(t, [lo for lo, _ in block_info[0]["array-location"]] if block_info else [0] * t.ndim)
    return np.asarray(_bce.bce_with_logits(x, t, reduction="none", **dict(zip(names, weights))))


def bce_with_logits(logits: Any, target: Any, *, weight: Any = None, pos_weight: Any = None,
                    reduction: str = "mean") -> Any:
    """:func:`fastlogits.bce_with_logits` of Dask arrays.

    Arguments and semantics as in :func:`fastlogits.bce_with_logits`; ``target``, ``weight``
    and ``pos_weight`` may be Dask or NumPy arrays and broadcast against the logits as there.
    ``reduction="none"`` returns a lazy Dask array (bitwise the in-memory losses, any
    chunks). ``"mean"``/``"sum"`` are computed now and return a Python float bitwise equal to
    the in-memory result on the same data in C order: the elements are rechunked along axis 0
    onto the kernel's blocks and the per-block sums are added in block order. An invalid
    target raises ``ValueError`` naming one offending position.

    Examples
    --------
    >>> import dask.array as da, fastlogits.dask as fld
    >>> round(fld.bce_with_logits(da.from_array([2.0, -1.0, 0.5], chunks=2), [1, 0, 1]), 6)
    0.304756
    """
    x = _as_dask(logits, "logits")
    t = _as_dask(target, "target")
    weights = {name: _as_dask(a, name) for name, a in (("weight", weight), ("pos_weight", pos_weight)) if a is not None}
    reduction = _bce._check_reduction(reduction)
    probe_x = _logits_probe(x)
    _bce._as_target(_target_probe(t), probe_x.shape)
    cdt = np.dtype(np.float64) if probe_x.dtype == np.float64 else np.dtype(np.float32)
    for name, a in weights.items():
        _bce._as_weight(_probe_as(a, cdt) if a.dtype.kind in "biuf" else _probe(a), name, x.shape, cdt)
    scalar = x.ndim == 0
    if scalar:
        x, t = x.reshape(1), t.reshape(1)
    t = t.rechunk(x.chunks)
    weights = {name: da.broadcast_to(a, x.shape).rechunk(x.chunks) for name, a in weights.items()}
    if reduction == "none":
        fn = functools.partial(_bce_none_block, names=tuple(weights))
        out = da.map_blocks(fn, x, t, *weights.values(), dtype=probe_x.dtype,
                            meta=np.empty((0,) * x.ndim, probe_x.dtype))
        return out.reshape(()) if scalar else out
    spec, unit = _bce_plan(x.shape)
    chunks = _aligned_chunks(x.chunks[0], unit)
    w, pw = weights.get("weight"), weights.get("pos_weight")
    per_chunk = _lead_blocks([x, t, w, pw], [0, 0, 0, 0], chunks)
    task_fn = dask.delayed(_bce_chunk, pure=True)
    results = dask.compute(*[task_fn(*blocks, off, spec) for blocks, off in zip(per_chunk, _lead_offsets(chunks))])
    total = 0.0
    for part in results:
        for v in part:  # the kernel's plain float64 sum, in block order
            total += float(v)
    if reduction == "sum":
        return total
    return total / x.size if x.size else math.nan
