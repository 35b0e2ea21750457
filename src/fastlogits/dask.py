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

How reductions stay bitwise equal to the in-memory functions: every reduced sum of fastlogits
is order-independent (csrc/fl_rsum.h): its state, a few int64 words, is the same for any split
of the rows and any order of merging. Each task computes the partial state of its block of
rows with the in-memory module's own ``partial`` (any chunking of the row axes; the class axis,
and for ``bce_with_logits`` the last axis, in one chunk), the driver merges the states and
finishes them as the in-memory function does. ``roc_auc`` gathers one score, label and weight
per row (and label) to the driver, as the in-memory function holds them in memory.

This module holds the reductions; the per-block maps and the argument probes are in
``_dask_map``, ``from_npy`` in ``_dask_npy``.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

try:
    import dask
    import dask.array as da
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("fastlogits.dask needs Dask: pip install 'fastlogits[dask]'") from exc

from . import _bce, _ce, _score_check, _score_state, _sequence, _temperature
from ._dask_map import (
    as_dask, entropy, log_sigmoid, log_softmax, logits_probe, logsumexp, predict, predict_binary, probe, probe_as,
    sigmoid, single_class_chunk, softmax, target_probe, topk, weight_probe,
)
from ._dask_npy import from_npy
from ._input import as_array, int64_value
from ._scorer import Scorer, check_group

__all__ = [
    "bce_with_logits", "cross_entropy", "entropy", "fit_temperature", "from_npy", "log_sigmoid", "log_softmax",
    "logsumexp", "predict", "predict_binary", "score", "sequence_scores", "sigmoid", "softmax", "topk",
]


# --------------------------------------------------------------------------- reductions

def _blocks(x: "da.Array", ax: Optional[int], operands: Sequence[Tuple[Optional["da.Array"], bool]]
            ) -> List[Tuple[Tuple[int, ...], List[Any]]]:
    """For every block of ``x``: its origin (first index along each axis), its Delayed block
    and those of ``operands`` that match it, each rechunked to x's chunks (``True``: of x's
    shape) or to those of its row axes (``False``: x's shape without the class axis ``ax``)."""
    row_chunks = x.chunks if ax is None else x.chunks[:ax] + x.chunks[ax + 1:]
    delayed = [(x.to_delayed(), True)] + [None if a is None else (a.rechunk(x.chunks if full else row_chunks)
                                                                  .to_delayed(), full) for a, full in operands]
    starts = [np.concatenate(([0], np.cumsum(c)[:-1])).astype(int) for c in x.chunks]
    out = []
    for idx in np.ndindex(*x.numblocks):
        rows = idx if ax is None else idx[:ax] + idx[ax + 1:]
        origin = tuple(int(starts[d][i]) for d, i in enumerate(idx))
        out.append((origin, [None if d is None else d[0][idx if d[1] else rows] for d in delayed]))
    return out


def _merged(task: Callable[..., Any], blocks: List[Tuple[Tuple[int, ...], List[Any]]], empty: Any, *args: Any) -> Any:
    """Run ``task(*blocks, origin, *args)`` on every block on the current scheduler and merge
    the partial states (in any order: the result does not depend on it)."""
    fn = dask.delayed(task, pure=True)
    states = dask.compute(*[fn(*ops, origin, *args) for origin, ops in blocks])
    return functools.reduce(lambda a, b: a.merge(b), states, empty)


def _drop(origin: Tuple[int, ...], ax: int) -> Tuple[int, ...]:
    return origin[:ax] + origin[ax + 1:]


# --------------------------------------------------------------------------- score

def _score_task(x: np.ndarray, t: np.ndarray, w: Optional[np.ndarray], g: Optional[np.ndarray],
                origin: Tuple[int, ...], p: "_score_check.Problem", config: Dict[str, Any]) -> Scorer:
    """A block's Scorer (pickled back to the driver as its state_dict)."""
    c = _score_check.check(x, t, p.task, p.ax, w)
    scorer = Scorer(**config)
    scorer._update_problem(c, origin if p.task == "multilabel" else _drop(origin, p.ax), g)
    return scorer


def score(logits: Any, target: Any, *, task: Optional[str] = None, axis: int = -1, metrics: Any = None,
          k: int = 5, bins: int = 15, sample_weight: Any = None, temperature: float = 1.0,
          ignore_index: int = -100, num_classes: Optional[int] = None, per_class: bool = False,
          auc_bins: Optional[int] = None, group: Any = None) -> Dict[str, Any]:
    """:func:`fastlogits.score` of Dask arrays, computed now on the current Dask scheduler.

    Arguments and result as in :func:`fastlogits.score` (the chunking is the Dask arrays'
    own, so there is no ``chunk_rows``; for progress use Dask's diagnostics, e.g.
    ``dask.diagnostics.ProgressBar`` or ``distributed.progress``). ``target`` and
    ``sample_weight`` (and ``group``) may be Dask or NumPy arrays. The result is bitwise equal
    to ``fastlogits.score`` of the same data in memory, for any chunking of the row axes: every
    task returns the :class:`fastlogits.Scorer` of its block and the driver merges them. The
    exact ranking metrics (``roc_auc``, ``average_precision`` and their ``_ovr`` forms with
    ``auc_bins=None``) gather their scores to the caller, as the in-memory function keeps them. A class index out of range raises ``IndexError`` naming one
    offending position.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastlogits as fl, fastlogits.dask as fld
    >>> logits = np.array([[2.0, 0.5, -1.0], [0.1, 1.5, 0.3], [0.2, 0.1, 3.0]], np.float32)
    >>> y = np.array([0, 2, 2])
    >>> r = fld.score(da.from_array(logits, chunks=(2, 3)), y, k=2)
    >>> r == fl.score(logits, y, k=2)
    True
    """
    x = as_dask(logits, "logits")
    t = as_dask(target, "target")
    w = None if sample_weight is None else as_dask(sample_weight, "sample_weight")
    g = None if group is None else as_dask(group, "group")
    scorer = Scorer(task, num_classes=num_classes, metrics=metrics, k=k, bins=bins, axis=axis,
                    ignore_index=ignore_index, temperature=temperature, per_class=per_class, auc_bins=auc_bins)
    p = _score_check.check(logits_probe(x), probe(t), task, axis, weight_probe(w))
    if g is not None:
        check_group(probe(g), p.row_shape)
    if p.x.ndim == x.ndim + 1:  # binary logits scored with a class axis of length 1
        x = x[..., None]
    if p.t.ndim != t.ndim:
        t = da.squeeze(t, axis=p.ax)
    single_class_chunk(x, p.ax, "logits")
    blocks = _blocks(x, p.ax, [(t, p.task == "multilabel"), (w, False), (g, False)])
    merged: Scorer = _merged(_score_task, blocks, scorer, p, scorer._config)
    return merged.compute()


# --------------------------------------------------------------------------- fit_temperature

def _slope_task(x: np.ndarray, t: np.ndarray, w: Optional[np.ndarray], origin: Tuple[int, ...],
               p: "_score_check.Problem", s: "_score_check.Spec") -> "_score_state.ScoreState":
    c = _score_check.check(x, t, p.task, p.ax, w)
    return _score_state.partial(c, s, origin if p.task == "multilabel" else _drop(origin, p.ax))


def fit_temperature(logits: Any, target: Any, *, axis: int = -1, sample_weight: Any = None,
                    ignore_index: int = -100) -> float:
    """:func:`fastlogits.fit_temperature` of Dask arrays, computed now on the current Dask
    scheduler.

    Arguments and result as in :func:`fastlogits.fit_temperature` (``target`` and
    ``sample_weight`` may be Dask or NumPy arrays). Each step of the search is one pass over
    the blocks (persist the arrays first to keep them in memory between the 10 to 20 passes):
    every task returns the state of its block's order-independent sums and the driver merges
    them, so every step, and the result, is bitwise the in-memory one for any chunking of the
    row axes. A search that ends on a bound warns as the in-memory function does.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastlogits as fl, fastlogits.dask as fld
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(2000, 5)) * 3
    >>> y = (rng.random(2000)[:, None] < np.cumsum(fl.softmax(z), axis=1)).argmax(axis=1)
    >>> fld.fit_temperature(da.from_array(z * 2.0, chunks=(500, 5)), y) == fl.fit_temperature(z * 2.0, y)
    True
    """
    x = as_dask(logits, "logits")
    t = as_dask(target, "target")
    w = None if sample_weight is None else as_dask(sample_weight, "sample_weight")
    p = _score_check.check(logits_probe(x), probe(t), None, axis, weight_probe(w))
    ignore = int64_value(ignore_index, "ignore_index")
    if p.x.ndim == x.ndim + 1:  # binary logits scored with a class axis of length 1
        x = x[..., None]
    if p.t.ndim != t.ndim:
        t = da.squeeze(t, axis=p.ax)
    single_class_chunk(x, p.ax, "logits")
    blocks = _blocks(x, p.ax, [(t, p.task == "multilabel"), (w, False)])

    def derivative(u: float) -> float:
        temp = math.exp(-u)
        s = _temperature.slope_spec(temp, ignore)
        return _temperature.slope(temp, _merged(_slope_task, blocks, _score_state.ScoreState.empty(s), p, s))

    return _temperature.search(derivative)


# --------------------------------------------------------------------------- sequence_scores

def _seq_task(x: np.ndarray, t: np.ndarray, origin: Tuple[int, ...], p: "_sequence.Problem"
              ) -> Tuple[int, "_sequence.SeqState"]:
    """A block's state and its first sequence."""
    c = _sequence.check(x, t, p.axis, p.ignore_index, p.temperature)
    rows = _drop(origin, p.axis)
    return rows[0], _sequence.partial(c, rows)


def sequence_scores(logits: Any, tokens: Any, *, axis: int = -1, ignore_index: int = -100,
                    temperature: float = 1.0) -> Dict[str, np.ndarray]:
    """:func:`fastlogits.sequence_scores` of Dask arrays, computed now on the current Dask
    scheduler.

    Arguments and result as in :func:`fastlogits.sequence_scores`; ``tokens`` may be a Dask or
    NumPy array (rechunked to the logits' blocks). The sequence and position axes may be
    chunked freely (long sequences split along the positions too); the vocabulary axis must be
    a single chunk. Every task returns the per-sequence states of its block (order-independent
    sums, counts, greedy flags) and the driver merges them, so the result is bitwise equal to
    the in-memory one for any chunking. A token out of range raises ``IndexError`` naming one
    offending position.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastlogits as fl, fastlogits.dask as fld
    >>> logits = np.log(np.array([[[0.5, 0.25, 0.25], [0.1, 0.1, 0.8], [0.2, 0.6, 0.2]]]))
    >>> r = fld.sequence_scores(da.from_array(logits, chunks=(1, 2, 3)), np.array([[-100, 2, 1]]))
    >>> round(float(r["logprob"][0]), 6), int(r["count"][0]), bool(r["greedy"][0])
    (-0.733969, 2, True)
    """
    x = as_dask(logits, "logits")
    t = as_dask(tokens, "tokens")
    p = _sequence.check(logits_probe(x), target_probe(t), axis, ignore_index, temperature)
    single_class_chunk(x, p.axis, "logits")
    fn = dask.delayed(_seq_task, pure=True)
    parts = dask.compute(*[fn(*ops, origin, p) for origin, ops in _blocks(x, p.axis, [(t, False)])])
    state = _sequence.SeqState.empty(p.tokens.shape[0])
    for start, part in parts:
        state.merge_at(part, start)
    return _sequence.finish(state)


# --------------------------------------------------------------------------- cross_entropy

def _ce_check(x: np.ndarray, t: np.ndarray, sw: Optional[np.ndarray], p: "_ce.Problem") -> "_ce.Problem":
    """A block's arguments checked with the call's options."""
    return _ce.check(x, t, p.axis, p.weight, sw, p.ignore_index, p.reduction, p.label_smoothing, p.z_loss)


def _ce_task(x: np.ndarray, t: np.ndarray, sw: Optional[np.ndarray], origin: Tuple[int, ...],
             p: "_ce.Problem") -> "_ce.CeState":
    return _ce.partial(_ce_check(x, t, sw, p), _drop(origin, p.axis))


def _ce_none_block(x: np.ndarray, t: np.ndarray, sw: Optional[np.ndarray] = None, *, p: "_ce.Problem",
                   block_info: Optional[Dict[Any, Any]] = None) -> np.ndarray:
    """Per-row losses of one block; class indices and sample weights come with a length-1
    class axis (so Dask aligns their blocks with the logits' blocks)."""
    origin = tuple(lo for lo, _ in block_info[0]["array-location"]) if block_info else (0,) * x.ndim
    t = np.squeeze(t, p.axis) if p.index else t
    sw = None if sw is None else np.squeeze(sw, p.axis)
    return np.asarray(_ce.losses(_ce_check(x, t, sw, p), _drop(origin, p.axis)))


def cross_entropy(logits: Any, target: Any, *, axis: int = -1, weight: Any = None, sample_weight: Any = None,
                  ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0,
                  z_loss: float = 0.0) -> Any:
    """:func:`fastlogits.cross_entropy` of Dask arrays.

    Arguments and semantics as in :func:`fastlogits.cross_entropy`; ``target`` and
    ``sample_weight`` may be Dask or NumPy arrays (rechunked to the logits' rows), ``weight``
    (C values) anything array-like. ``reduction="none"`` returns a lazy Dask array of per-row
    losses (bitwise the in-memory ones). ``"mean"``/``"sum"`` are computed now and return a
    Python float bitwise equal to the in-memory result, for any chunking of the row axes:
    every task returns the state of its block's order-independent sums (loss, z-loss, the
    denominators ``sum s_i*w[y_i]`` and ``sum s_i``, valid rows) and the driver merges them. The
    class axis must be a single chunk. A class index out of range raises ``IndexError``
    naming one offending position.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastlogits.dask as fld
    >>> logits = da.from_array(np.array([[2.5, 0.3, -1.2], [0.1, 0.2, 3.0]]), chunks=(1, 3))
    >>> round(fld.cross_entropy(logits, np.array([0, 2])), 6)
    0.118349
    >>> fld.cross_entropy(logits, np.array([0, -100]), reduction="none").compute().round(6).tolist()
    [0.127097, 0.0]
    """
    x = as_dask(logits, "logits")
    t = as_dask(target, "target")
    sw = None if sample_weight is None else as_dask(sample_weight, "sample_weight")
    w = None if weight is None else as_array(weight, "weight")
    p = _ce.check(logits_probe(x), target_probe(t), axis, w, weight_probe(sw), ignore_index, reduction,
                  label_smoothing, z_loss)
    single_class_chunk(x, p.axis, "logits")
    if p.reduction != "none":
        blocks = _blocks(x, p.axis, [(t, not p.index), (sw, False)])
        return _ce.finish(p, _merged(_ce_task, blocks, _ce.CeState.empty(), p))
    row_chunks = x.chunks[:p.axis] + x.chunks[p.axis + 1:]
    args = [x, da.expand_dims(t.rechunk(row_chunks), p.axis) if p.index else t.rechunk(x.chunks)]
    if sw is not None:
        args.append(da.expand_dims(sw.rechunk(row_chunks), p.axis))
    dt = p.x.dtype
    return da.map_blocks(functools.partial(_ce_none_block, p=p), *args, dtype=dt, drop_axis=p.axis,
                         meta=np.empty((0,) * (x.ndim - 1), dt))


# --------------------------------------------------------------------------- bce_with_logits

def _bce_check(x: np.ndarray, t: np.ndarray, w: Optional[np.ndarray], pw: Optional[np.ndarray],
               p: "_bce.Problem") -> "_bce.Problem":
    """A block's arguments checked with the call's options."""
    return _bce.check(p.kind, x, t, w, pw, p.reduction, p.alpha, p.gamma)


def _bce_task(x: np.ndarray, t: np.ndarray, w: Optional[np.ndarray], pw: Optional[np.ndarray],
              origin: Tuple[int, ...], p: "_bce.Problem") -> "_bce.BceState":
    return _bce.partial(_bce_check(x, t, w, pw, p), origin)


def _bce_none_block(x: np.ndarray, t: np.ndarray, w: Optional[np.ndarray], pw: Optional[np.ndarray], *,
                    p: "_bce.Problem", block_info: Optional[Dict[Any, Any]] = None) -> np.ndarray:
    origin = tuple(lo for lo, _ in block_info[0]["array-location"]) if block_info else (0,) * x.ndim
    return np.asarray(_bce.losses(_bce_check(x, t, w, pw, p), origin))


def bce_with_logits(logits: Any, target: Any, *, weight: Any = None, pos_weight: Any = None,
                    reduction: str = "mean") -> Any:
    """:func:`fastlogits.bce_with_logits` of Dask arrays.

    Arguments and semantics as in :func:`fastlogits.bce_with_logits`; ``target``, ``weight``
    and ``pos_weight`` may be Dask or NumPy arrays and broadcast against the logits as there.
    ``reduction="none"`` returns a lazy Dask array (bitwise the in-memory losses, any
    chunks). ``"mean"``/``"sum"`` are computed now and return a Python float bitwise equal to
    the in-memory result, for any chunking: the last axis (the rows whose losses are added in
    a fixed order) is put in one chunk, every task returns the state of its block's
    order-independent sum and the driver merges them. An invalid target raises ``ValueError``
    naming one offending position.

    Examples
    --------
    >>> import dask.array as da, fastlogits.dask as fld
    >>> round(fld.bce_with_logits(da.from_array([2.0, -1.0, 0.5], chunks=2), [1, 0, 1]), 6)
    0.304756
    """
    x = as_dask(logits, "logits")
    t = as_dask(target, "target")
    weights = [None if a is None else as_dask(a, name) for name, a in (("weight", weight), ("pos_weight", pos_weight))]
    probe_x = logits_probe(x)
    cdt = np.dtype(np.float64) if probe_x.dtype == np.float64 else np.dtype(np.float32)
    probes = [None if a is None else probe_as(a, cdt) if a.dtype.kind in "biuf" else probe(a) for a in weights]
    p = _bce.check(_bce.BCE, probe_x, target_probe(t), probes[0], probes[1], reduction)
    if x.ndim == 0:
        x, t = x.reshape(1), t.reshape(1)
    elif p.reduction != "none" and x.shape[-1] > 1:
        x = x.rechunk({x.ndim - 1: -1})  # rows of the last axis are summed whole
    t = t.rechunk(x.chunks)
    w, pw = (None if a is None else da.broadcast_to(a, x.shape).rechunk(x.chunks) for a in weights)
    if p.reduction != "none":
        blocks = _blocks(x, None, [(t, True), (w, True), (pw, True)])
        return _bce.finish(p, _merged(_bce_task, blocks, _bce.BceState.empty(), p))
    out = da.map_blocks(functools.partial(_bce_none_block, p=p), x, t, w, pw, dtype=p.x.dtype,
                        meta=np.empty((0,) * x.ndim, p.x.dtype))
    return out.reshape(()) if p.scalar else out
