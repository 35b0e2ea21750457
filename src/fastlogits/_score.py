"""Offline scoring (API section 4): ``score`` and ``fit_temperature``, streamed over row chunks.

How the streaming stays exact and cheap:

- Rows are the positions of the logits without the class axis, in C order. Chunks are cut
  along one axis of the row shape (the *lead* axis), so a chunk of a memmap is a view.
- The kernel (csrc/fl_score.c) sums weighted per-row statistics per FIXED block of rows whose
  boundaries depend on the shape only, and adds the block sums in block order to running
  compensated sums carried from chunk to chunk. Chunk boundaries are multiples of the block
  period, hence the result is bitwise the same for every ``chunk_rows`` and thread count.
- Pages of a read-only memmap are handed back to the OS after each chunk, so the resident
  memory of scoring a file larger than RAM stays at about one chunk.
- ``roc_auc`` needs every score at once (it sorts them): it keeps one score, one label and one
  weight per row and label, so its memory grows with the number of rows (N, or N x L for
  multilabel). The other metrics use memory independent of N.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, cast

import numpy as np

from . import _core
from ._input import as_array, as_logits, is_bfloat16, normalize_axis
from ._layout import make_grid, with_axis
from ._pages import CHUNK_BYTES, PageReleaser
from ._progress import progress_reporter

ALL_METRICS = ("count", "nll", "accuracy", "top_k_accuracy", "ece", "brier", "mean_entropy", "roc_auc")
TASKS = ("multiclass", "binary", "multilabel")
TASK_METRICS = {
    "multiclass": ("count", "nll", "accuracy", "top_k_accuracy", "ece", "brier", "mean_entropy"),
    "binary": ("count", "nll", "accuracy", "ece", "brier", "mean_entropy", "roc_auc"),
    "multilabel": ("count", "nll", "accuracy", "ece", "brier", "mean_entropy", "roc_auc"),
}

# kernel modes and the order of its running sums (csrc/fastlogits.h)
_SOFTMAX, _SIGMOID = 0, 1
_W, _NLL, _CORRECT, _HIT, _BRIER, _ENT, _GAP, _NSUMS = range(8)
_METRIC_SUM = {"nll": _NLL, "accuracy": _CORRECT, "top_k_accuracy": _HIT, "brier": _BRIER, "mean_entropy": _ENT}

# A block holds about this many logits: it is the unit of parallel work and of summation order.
_BLOCK_ELEMS = 16384


@dataclass
class _Problem:
    """A scoring problem in the kernel's terms, before chunking."""

    task: str
    x: np.ndarray                 # logits with a class axis (binary: of length 1)
    ax: int                       # the class axis of x
    t: np.ndarray                 # target: the row shape, or x's shape (multilabel)
    w: Optional[np.ndarray]       # sample weights with the row shape, or None
    row_shape: Tuple[int, ...]

    @property
    def c(self) -> int:
        c: int = self.x.shape[self.ax]
        return c

    @property
    def mode(self) -> int:
        return _SOFTMAX if self.task == "multiclass" else _SIGMOID

    @property
    def n_rows(self) -> int:
        return int(np.prod(self.row_shape))

    @property
    def lead(self) -> int:
        """The axis of x along which chunks are cut (the first one that is not the class axis)."""
        return 0 if self.ax != 0 else 1


# --------------------------------------------------------------------------- preparing

def _is_numeric(dt: np.dtype) -> bool:
    return dt.kind in "biuf" or is_bfloat16(dt)


def _infer_task(x: np.ndarray, t: np.ndarray, task: Optional[str], ax: Optional[int]) -> str:
    if task is not None:
        if task not in TASKS:
            raise ValueError(f"task: expected 'multiclass', 'binary', 'multilabel' or None, got {task!r}")
        return task
    if ax is None or x.shape[ax] == 1:
        return "binary"
    if t.shape == x.shape:
        return "multilabel"
    if t.shape == x.shape[:ax] + x.shape[ax + 1:]:
        return "multiclass"
    raise ValueError(
        f"target: shape {t.shape} matches neither the logits' shape {x.shape} nor it without "
        f"axis {ax} ({x.shape[:ax] + x.shape[ax + 1:]})"
    )


def _binary_problem(x: np.ndarray, t: np.ndarray, ax: Optional[int]) -> Tuple[np.ndarray, int, np.ndarray]:
    """Binary logits as a length-1 class axis: 1-D logits, a class axis of length 1, or any
    logits scored elementwise against a target of their own shape."""
    if ax is None:
        xb, axb = x[:, None], 1
    elif x.shape[ax] == 1:
        xb, axb = x, ax
    elif t.shape == x.shape:
        xb, axb = x[..., None], x.ndim
    else:
        raise ValueError(
            f"logits: the binary task needs 1-D logits, a class axis of length 1 or a target of "
            f"the logits' shape, got logits {x.shape} (axis {ax}) and target {t.shape}"
        )
    row_shape = xb.shape[:axb] + xb.shape[axb + 1:]
    if t.shape == row_shape:
        tb = t
    elif t.shape == xb.shape:
        tb = np.squeeze(t, axb)
    else:
        raise ValueError(f"target: expected shape {row_shape} for the binary task, got {t.shape}")
    return xb, axb, tb


def _prepare(logits: Any, target: Any, task: Optional[str], axis: Any, sample_weight: Any) -> _Problem:
    x = as_logits(logits, "logits")
    t = as_array(target, "target")
    if x.ndim == 0:
        raise ValueError("logits: expected at least 1 dimension, got a 0-d input")
    if not _is_numeric(t.dtype):
        raise TypeError(f"target: expected a numeric array (bool, integer or float), got dtype {t.dtype}")
    ax = None if x.ndim == 1 else normalize_axis(axis, x.ndim)
    task = _infer_task(x, t, task, ax)
    if task == "binary":
        x, ax, t = _binary_problem(x, t, ax)
    elif ax is None:
        raise ValueError(f"logits: task {task!r} needs a class axis, got 1-D logits of shape {x.shape}")
    row_shape = x.shape[:ax] + x.shape[ax + 1:]
    if task == "multiclass":
        if t.shape != row_shape:
            raise ValueError(f"target: the multiclass target must have shape {row_shape}, got {t.shape}")
        if t.dtype.kind == "b":
            raise TypeError("target: the multiclass target must hold integer class indices, got bool")
    elif task == "multilabel" and t.shape != x.shape:
        raise ValueError(f"target: the multilabel target must have the logits' shape {x.shape}, got {t.shape}")
    w = None
    if sample_weight is not None:
        w = as_array(sample_weight, "sample_weight")
        if not _is_numeric(w.dtype):
            raise TypeError(f"sample_weight: expected real numbers, got dtype {w.dtype}")
        if w.shape != row_shape:
            raise ValueError(f"sample_weight: expected shape {row_shape}, got {w.shape}")
    return _Problem(task, x, ax, t, w, row_shape)


def _select_metrics(metrics: Any, task: str, k: Any, c: int) -> List[str]:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k: expected an int, got {type(k).__name__}")
    if metrics is None:
        names = [m for m in TASK_METRICS[task] if m != "top_k_accuracy" or 1 <= k <= c]
    else:
        names = [m.strip() for m in metrics.split(",") if m.strip()] if isinstance(metrics, str) else list(metrics)
        for m in names:
            if m not in ALL_METRICS:
                raise ValueError(f"metrics: unknown metric {m!r}; valid names are {', '.join(ALL_METRICS)}")
            if m not in TASK_METRICS[task]:
                raise ValueError(
                    f"metrics: {m!r} does not apply to the {task} task; it has {', '.join(TASK_METRICS[task])}"
                )
    if "top_k_accuracy" in names and not 1 <= k <= c:
        raise ValueError(f"k: expected 1 <= k <= {c} (the number of classes), got {k}")
    return list(dict.fromkeys(names))


def _check_scalar_args(bins: Any, temperature: Any, chunk_rows: Any) -> Tuple[int, float]:
    if isinstance(bins, (bool, np.bool_)) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins: expected an int >= 1, got {bins!r}")
    try:
        if isinstance(temperature, (str, bytes)):  # float("2") would accept text
            raise TypeError
        temp = float(temperature)
    except (TypeError, ValueError):
        raise TypeError(f"temperature: expected a positive number, got {type(temperature).__name__}") from None
    if not (temp > 0 and math.isfinite(temp)):
        raise ValueError(f"temperature: expected a finite value > 0, got {temperature!r}")
    if chunk_rows is not None and (
        isinstance(chunk_rows, (bool, np.bool_)) or not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1
    ):
        raise ValueError(f"chunk_rows: expected None or an int >= 1, got {chunk_rows!r}")
    return int(bins), temp


# --------------------------------------------------------------------------- chunks

@dataclass
class _Blocks:
    """The fixed block structure and the chunk size in lead-axis units."""

    period: int        # rows per period (chunk starts are multiples of it)
    block_rows: int    # rows per block inside a period
    lead_unit: int     # lead-axis indices per period
    chunk_lead: int    # lead-axis indices per chunk (a multiple of lead_unit)


def _plan_blocks(p: _Problem, chunk_rows: Optional[int]) -> _Blocks:
    lead_len = p.x.shape[p.lead]
    per_lead = p.n_rows // lead_len if lead_len else 1
    per_lead = max(per_lead, 1)
    block = max(1, _BLOCK_ELEMS // max(p.c, 1))
    if per_lead <= block:
        unit = block // per_lead
        period = block_rows = unit * per_lead
    else:
        unit, period, block_rows = 1, per_lead, block
    if chunk_rows is None:
        chunk_rows = max(1, CHUNK_BYTES // max(1, p.c * p.x.itemsize))
    chunk_lead = -(-int(chunk_rows) // per_lead)
    chunk_lead = -(-chunk_lead // unit) * unit
    return _Blocks(period, block_rows, unit, chunk_lead)


def _lead_slice(a: np.ndarray, axis: int, lo: int, hi: int) -> np.ndarray:
    return a[(slice(None),) * axis + (slice(lo, hi),)]


def _class_indices(t: np.ndarray, c: int, lead_offset: int) -> np.ndarray:
    """A chunk of a multiclass target as int64 class indices, checked."""
    if t.dtype.kind == "f" or is_bfloat16(t.dtype):
        tf = np.asarray(t, dtype=np.float64)
        bad = ~(tf == np.round(tf))
        if bad.any():
            pos = _position(bad, lead_offset)
            raise ValueError(f"target: the multiclass target must hold integer class indices, got {tf[bad][0].item()!r} at position {pos}")
    bad = (t < 0) | (t >= c)
    if bad.any():
        pos = _position(bad, lead_offset)
        raise IndexError(f"target: class index {t[bad][0].item()!r} at position {pos} is out of range [0, {c})")
    return np.require(t, np.int64, ["C", "A"])  # aligned too: a memmapped .npz member may not be


def _binary_labels(t: np.ndarray, lead_offset: int, lead_axis: int) -> np.ndarray:
    """A chunk of a binary or multilabel target as bool, checked to hold only 0 and 1."""
    if t.dtype.kind == "b":
        return t
    bad = ~((t == 0) | (t == 1))
    if bad.any():
        pos = _position(bad, lead_offset, lead_axis)
        raise ValueError(f"target: binary and multilabel targets must be 0 or 1, got {t[bad][0].item()!r} at position {pos}")
    labels: np.ndarray = t != 0
    return labels


def _position(bad: np.ndarray, lead_offset: int, lead_axis: int = 0) -> Tuple[int, ...]:
    pos = [int(i) for i in np.argwhere(bad)[0]]
    pos[lead_axis] += lead_offset
    return tuple(pos)


# --------------------------------------------------------------------------- the pass

@dataclass
class _Sums:
    """The kernel's running sums after a full pass, plus what roc_auc collected."""

    values: np.ndarray                 # W, the metric sums, then the ECE bins
    n_rows: int
    scores: Optional[np.ndarray]       # (N, L) logits, for roc_auc
    labels: Optional[np.ndarray]       # (N, L) bool
    weights: Optional[np.ndarray]      # (N,) float64 or None


def _pass(p: _Problem, *, temperature: float, k: int, bins: int, want_rank: bool, want_auc: bool,
          chunk_rows: Optional[int], progress: Any) -> _Sums:
    """One streaming pass of the kernel over all rows."""
    blocks = _plan_blocks(p, chunk_rows)
    acc = np.zeros(2 * (_NSUMS + 3 * bins), dtype=np.float64)
    n, c, ax, lead = p.n_rows, p.c, p.ax, p.lead
    lead_len = p.x.shape[lead]
    t_lead = lead if p.task == "multilabel" else 0
    auc = _AucCollector(p) if want_auc else None
    releasers = [PageReleaser(a) for a in (p.x, p.t, p.w) if a is not None]
    update, close = progress_reporter(progress, n)
    try:
        for lo in range(0, lead_len, blocks.chunk_lead):
            hi = min(lo + blocks.chunk_lead, lead_len)
            xc = _lead_slice(p.x, lead, lo, hi)
            tc = _lead_slice(p.t, t_lead, lo, hi)
            ws = None if p.w is None else _lead_slice(p.w, 0, lo, hi)
            wc = None if ws is None else np.require(ws, np.float64, ["C", "A"])
            if p.mode == _SOFTMAX:
                tk = with_axis(_class_indices(tc, c, lo), ax)
            else:
                tb = _binary_labels(tc, lo, t_lead)
                tk = tb if p.task == "multilabel" else with_axis(tb, ax)
            ops = [xc, tk] + ([] if wc is None else [with_axis(wc, ax)])
            if xc.size:
                g = make_grid(ops, ax, c)
                _core.score(g.specs[0], g.specs[1], None if wc is None else g.specs[2], g.grid, p.mode,
                            want_rank, k, bins, temperature, blocks.period, blocks.block_rows, acc)
            if auc is not None:
                auc.add(xc, tk, wc)
            for r, a in zip(releasers, (xc, tc, ws)):
                r.release(cast(np.ndarray, a))  # ws is None only when p.w is, which has no releaser
            update(hi * (n // lead_len) if lead_len else n)
    finally:
        close()
    values = acc[0::2] + acc[1::2]
    values = np.where(np.isfinite(acc[0::2]), values, acc[0::2])
    return _Sums(values, n, *(auc.result() if auc else (None, None, None)))


class _AucCollector:
    """Keeps the scores, labels and weights roc_auc needs (memory grows with N)."""

    def __init__(self, p: _Problem):
        self.p = p
        self.scores: List[np.ndarray] = []
        self.labels: List[np.ndarray] = []
        self.weights: List[np.ndarray] = []

    def add(self, xc: np.ndarray, tk: np.ndarray, wc: Optional[np.ndarray]) -> None:
        c = self.p.c
        self.scores.append(np.moveaxis(xc, self.p.ax, -1).reshape(-1, c).copy())
        self.labels.append(np.moveaxis(tk, self.p.ax, -1).reshape(-1, c).copy())
        if wc is not None:
            self.weights.append(wc.reshape(-1).copy())

    def result(self) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        c = self.p.c
        s = np.concatenate(self.scores) if self.scores else np.zeros((0, c), self.p.x.dtype)
        y = np.concatenate(self.labels) if self.labels else np.zeros((0, c), bool)
        w = np.concatenate(self.weights) if self.weights else None
        return s, y, w


def roc_auc(scores: np.ndarray, y: np.ndarray, w: Optional[np.ndarray]) -> float:
    """Exact (sample-weighted) ROC AUC with ties averaged, as sklearn.metrics.roc_auc_score:
    the weighted probability that a positive scores above a negative, ties counting one half.
    NaN if a class is absent (or has no weight) or a score is NaN."""
    scores = np.asarray(scores, dtype=np.float64)
    if np.isnan(scores).any():
        return float("nan")
    w = np.ones(scores.shape, dtype=np.float64) if w is None else np.asarray(w, dtype=np.float64)
    wp_total, wn_total = float(np.sum(w[y])), float(np.sum(w[~y]))
    if not (wp_total > 0 and wn_total > 0):
        return float("nan")
    order = np.argsort(scores, kind="stable")
    s, yy, ww = scores[order], y[order], w[order]
    starts = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1])))
    wp = np.add.reduceat(np.where(yy, ww, 0.0), starts)
    wn = np.add.reduceat(np.where(yy, 0.0, ww), starts)
    neg_below = np.concatenate(([0.0], np.cumsum(wn)[:-1]))
    return float((np.sum(wp * neg_below) + 0.5 * np.sum(wp * wn)) / (wp_total * wn_total))


def _ratio(a: float, b: float) -> float:
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.float64(a) / np.float64(b))


def _results(p: _Problem, names: Sequence[str], sums: _Sums) -> Dict[str, Any]:
    v = sums.values
    out: Dict[str, Any] = {}
    for m in names:
        if m == "count":
            out[m] = sums.n_rows
        elif m in _METRIC_SUM:
            out[m] = _ratio(v[_METRIC_SUM[m]], v[_W])
        elif m == "ece":
            bins = v[_NSUMS:_NSUMS + (len(v) - _NSUMS) // 3]
            total = math.fsum(abs(float(b)) for b in bins) if np.all(np.isfinite(bins)) else float(np.sum(np.abs(bins)))
            out[m] = _ratio(total, v[_W])
        elif m == "roc_auc":
            out[m] = _roc_auc_metric(p, sums)
    return out


def _reliability(sums: _Sums) -> Dict[str, np.ndarray]:
    """Per confidence bin: total weight, weighted mean confidence and accuracy (NaN when empty)."""
    v = sums.values
    bins = (len(v) - _NSUMS) // 3
    diff, weight, conf = (v[_NSUMS + i * bins:_NSUMS + (i + 1) * bins] for i in range(3))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = conf / weight
        accuracy = (diff + conf) / weight
    edges = np.linspace(0.0, 1.0, bins + 1)
    return {"edges": edges, "weight": weight.copy(), "confidence": mean_conf, "accuracy": accuracy}


def _roc_auc_metric(p: _Problem, sums: _Sums) -> float:
    # not None: the pass collects scores and labels whenever roc_auc is asked for
    s, y = cast(np.ndarray, sums.scores), cast(np.ndarray, sums.labels)
    if p.task == "binary":
        return roc_auc(s[:, 0], y[:, 0], sums.weights)
    aucs = [roc_auc(s[:, j], y[:, j], sums.weights) for j in range(s.shape[1])]
    aucs = [a for a in aucs if not math.isnan(a)]
    return float(np.mean(aucs)) if aucs else float("nan")


# --------------------------------------------------------------------------- public

def score(logits: Any, target: Any, *, task: Optional[str] = None, axis: int = -1, metrics: Any = None,
          k: int = 5, bins: int = 15, sample_weight: Any = None, temperature: float = 1.0,
          chunk_rows: Optional[int] = None, progress: Any = None) -> Dict[str, Any]:
    """Offline evaluation metrics of logits against targets, in one streaming pass.

    Parameters
    ----------
    logits : array_like
        Model outputs; a memmap larger than memory is fine (it is read chunk by chunk and its
        pages are released after each chunk).
    target : array_like
        Class indices (multiclass: the logits' shape without ``axis``), or 0/1 labels (binary:
        one per logit of a length-1 or absent class axis; multilabel: the logits' shape).
    task : {"multiclass", "binary", "multilabel"}, optional
        Inferred when None: 1-D logits or a class axis of length 1 are binary; a target of the
        logits' shape is multilabel; otherwise multiclass. ``task="binary"`` with a target of
        the logits' shape scores every logit as one binary prediction.
    axis : int, default -1
        The class axis.
    metrics : str or sequence of str, optional
        Names among ``count, nll, accuracy, top_k_accuracy, ece, brier, mean_entropy,
        roc_auc`` (a comma-separated string is accepted). None computes every metric that
        applies to the task; ``top_k_accuracy`` is left out then when ``k`` exceeds the number
        of classes (asking for it explicitly with such a ``k`` raises ``ValueError``).
    k : int, default 5
        For ``top_k_accuracy``; ``1 <= k <= C``.
    bins : int, default 15
        Equal-width confidence bins of the ECE, ``[0, 1/B), ..., [(B-1)/B, 1]``.
    sample_weight : array_like, optional
        One weight per row (the target's row shape); weights every averaged metric
        (``count`` stays the number of rows).
    temperature : float, default 1.0
        The logits are divided by it (inside the kernel) before every metric.
    chunk_rows : int, optional
        Rows per chunk (default: about 32 MiB of logits). Rounded up to a multiple of the
        internal block size; the result is bitwise the same for every value.
    progress : callable or True, optional
        ``progress(rows_done, rows_total)`` after each chunk, or True for a tqdm bar on stderr
        (without tqdm installed, a plain progress line on stderr).

    Returns
    -------
    dict
        Metric name to value (``count`` an int, the rest Python floats).

    Notes
    -----
    Multiclass (``p = softmax(logits / T)``): ``nll`` is the weighted mean of ``-log p_y``;
    ``accuracy`` of ``predict == y`` (ties to the lowest index, NaN largest);
    ``top_k_accuracy`` of the target being among the ``k`` best in ``topk`` order; ``ece`` on
    the top-label confidence ``max p``; ``brier`` the mean of ``sum_c (p_c - onehot_c)**2``;
    ``mean_entropy`` the mean Shannon entropy (nats). Binary and multilabel use
    ``p = sigmoid(logits / T)`` per element: ``nll`` is the BCE, the prediction ``x > 0``,
    the confidence ``max(p, 1 - p)``, ``brier`` the mean ``(p - y)**2``, the entropy that of
    the Bernoulli; multilabel averages over every element (each weighted by its row's weight).
    ``roc_auc`` is exact (sort-based, ties averaged, like ``sklearn.metrics.roc_auc_score``),
    binary over all scores, multilabel the macro mean over labels having both classes; it
    needs all scores at once, so its memory grows with N (N x L for multilabel). All sums are
    float64; a metric over zero total weight is NaN; NaN logits give NaN metrics.

    Examples
    --------
    >>> import numpy as np, fastlogits as fl
    >>> logits = np.array([[2.0, 0.5, -1.0], [0.1, 1.5, 0.3], [0.2, 0.1, 3.0]], np.float32)
    >>> r = fl.score(logits, np.array([0, 2, 2]), k=2)
    >>> r["count"], round(r["accuracy"], 4), round(r["top_k_accuracy"], 4)
    (3, 0.6667, 1.0)
    """
    return score_details(logits, target, task=task, axis=axis, metrics=metrics, k=k, bins=bins,
                         sample_weight=sample_weight, temperature=temperature, chunk_rows=chunk_rows,
                         progress=progress)[0]


def score_details(logits: Any, target: Any, *, task: Optional[str] = None, axis: int = -1, metrics: Any = None,
                  k: int = 5, bins: int = 15, sample_weight: Any = None, temperature: float = 1.0,
                  chunk_rows: Optional[int] = None, progress: Any = None
                  ) -> Tuple[Dict[str, Any], str, Dict[str, np.ndarray]]:
    """:func:`score` plus the task it scored and the reliability table (per confidence bin:
    ``edges``, ``weight``, ``confidence``, ``accuracy``), for the command line's ``--plot``."""
    p = _prepare(logits, target, task, axis, sample_weight)
    names = _select_metrics(metrics, p.task, k, p.c if p.task == "multiclass" else 1)
    bins, temp = _check_scalar_args(bins, temperature, chunk_rows)
    want_rank = any(m in names for m in ("accuracy", "top_k_accuracy", "ece"))
    sums = _pass(p, temperature=temp, k=int(k), bins=bins, want_rank=want_rank, want_auc="roc_auc" in names,
                 chunk_rows=chunk_rows, progress=progress)
    return _results(p, names, sums), p.task, _reliability(sums)


# Temperatures are searched in [1/_T_RANGE, _T_RANGE], to |log T - log T*| <= _LOG_T_TOL.
_T_RANGE = 1e6
_LOG_T_TOL = 1e-8


def fit_temperature(logits: Any, target: Any, *, axis: int = -1, sample_weight: Any = None) -> float:
    """The temperature T > 0 minimising the (sample-weighted) NLL of ``logits / T``.

    The task is inferred as in :func:`score`. The NLL is convex in ``1/T``; its derivative in
    ``1/T`` is ``T * sum_i s_i (E_p[z_i] - z_{i,y})`` (``z = logits/T``; binary: ``(p - y) z``),
    which the scoring kernel returns from one streaming pass. Its root is bracketed in
    ``log T`` starting from T = 1 and refined with Brent's method to
    ``|log T - log T*| <= 1e-8`` (a relative tolerance of 1e-8 on T, down to the rounding noise
    of the float32 arithmetic for float32 logits). Each evaluation is one pass over the data,
    typically 10 to 20 in all. The search is limited to ``[1e-6, 1e6]``: ``1e6`` is returned
    when no finite T improves on T -> inf (uninformative logits), ``1e-6`` for separable data.
    NaN logits give NaN.

    Examples
    --------
    >>> import numpy as np, fastlogits as fl
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(20000, 5)) * 3
    >>> y = (rng.random(20000)[:, None] < np.cumsum(fl.softmax(z), axis=1)).argmax(axis=1)
    >>> round(fl.fit_temperature(z * 2.0, y), 1)  # logits twice too sharp
    2.0
    """
    p = _prepare(logits, target, None, axis, sample_weight)

    def derivative(u: float) -> float:
        """The derivative of the NLL in 1/T, at T = exp(-u)."""
        t = math.exp(-u)
        s = _pass(p, temperature=t, k=1, bins=1, want_rank=False, want_auc=False, chunk_rows=None, progress=None)
        return t * float(s.values[_GAP])

    u_max = math.log(_T_RANGE)
    f0 = derivative(0.0)
    if math.isnan(f0):
        return float("nan")
    if f0 == 0.0:
        return 1.0
    a, fa = 0.0, f0
    direction = 1.0 if f0 < 0 else -1.0  # f increases with u = log(1/T)
    step = 1.0
    while True:
        b = direction * min(step, u_max)
        fb = derivative(b)
        if math.isnan(fb):
            return float("nan")
        if (fb > 0 and direction > 0) or (fb < 0 and direction < 0):
            break
        if abs(b) >= u_max:
            return 1.0 / _T_RANGE if direction > 0 else _T_RANGE
        a, fa = b, fb
        step *= 2.0
    return math.exp(-_brent(derivative, a, b, fa, fb, _LOG_T_TOL))


def _brent(f: Callable[[float], float], a: float, b: float, fa: float, fb: float, tol: float) -> float:
    """Root of f in [a, b] (fa, fb of opposite signs) by Brent's method, to |x - x*| <= tol."""
    if fb == 0.0:
        return b
    c, fc = a, fa
    d = e = b - a
    for _ in range(200):
        if (fb > 0) == (fc > 0):
            c, fc = a, fa
            d = e = b - a
        if abs(fc) < abs(fb):
            a, b, c = b, c, b
            fa, fb, fc = fb, fc, fb
        tol1 = 2.0 * 2.2e-16 * abs(b) + 0.5 * tol
        xm = 0.5 * (c - b)
        if abs(xm) <= tol1 or fb == 0.0:
            return b
        if abs(e) >= tol1 and abs(fa) > abs(fb):
            s = fb / fa
            if a == c:
                pp, q = 2.0 * xm * s, 1.0 - s
            else:
                q, r = fa / fc, fb / fc
                pp = s * (2.0 * xm * q * (q - r) - (b - a) * (r - 1.0))
                q = (q - 1.0) * (r - 1.0) * (s - 1.0)
            if pp > 0:
                q = -q
            pp = abs(pp)
            if 2.0 * pp < min(3.0 * xm * q - abs(tol1 * q), abs(e * q)):
                e, d = d, pp / q
            else:
                d = e = xm
        else:
            d = e = xm
        a, fa = b, fb
        b += d if abs(d) > tol1 else math.copysign(tol1, xm)
        fb = f(b)
    return b
