"""Reliability bins as data (API section 7): ``calibration_curve``.

``kind="top_label"`` is the ECE's own binning: the scoring kernel's bins of the top-label
confidence (csrc/fl_score.c), from the same streaming pass as ``score``, so the curve and the
``ece`` metric come from the same sums. ``kind="positive"`` (binary and multilabel) bins the
positive-class probability ``p = sigmoid(x / T)`` instead, a chunk at a time, every bin's sums
kept as order-independent sums (``_rsum``) like the kernel's: both kinds are bitwise the same
for every chunking and thread count.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

from . import _rsum, _score, _score_check
from ._input import int64_value, positive_value
from ._post import sigmoid
from ._score_check import Problem

KINDS = ("top_label", "positive")


def _check_options(bins: Any, temperature: Any, ignore_index: Any, kind: Any) -> Tuple[int, float, int]:
    if isinstance(bins, (bool, np.bool_)) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins: expected an int >= 1, got {bins!r}")
    if kind not in KINDS:
        raise ValueError(f"kind: expected 'top_label' or 'positive', got {kind!r}")
    return int(bins), positive_value(temperature, "temperature"), int64_value(ignore_index, "ignore_index")


def _table(bins: int, weight: np.ndarray, count: np.ndarray, hits: np.ndarray, conf: np.ndarray
           ) -> Dict[str, np.ndarray]:
    """The result dict from each bin's weight, row count, weighted hits and weighted confidence."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(count > 0, hits / weight, np.nan)
        confidence = np.where(count > 0, conf / weight, np.nan)
    return {"edges_low": edges[:-1], "edges_high": edges[1:], "weight": weight,
            "count": count.astype(np.int64), "accuracy": accuracy, "confidence": confidence}


# --------------------------------------------------------------------------- top label

def _top_label(p: Problem, bins: int, temperature: float, ignore_index: int) -> Dict[str, np.ndarray]:
    s = _score_check.spec(p, ("ece",), 1, bins, temperature, ignore_index=ignore_index)
    state = _score.run(p, s)
    weight, hits, conf = np.split(_rsum.value(state.sums)[_score_check._NSUMS:], 3)
    if p.w is None:
        count = weight
    else:
        # the rows per bin: the same bins without the weights (a second pass)
        unweighted = Problem(p.task, p.x, p.ax, p.t, None, p.row_shape)
        count = np.split(_rsum.value(_score.run(unweighted, s).sums)[_score_check._NSUMS:], 3)[0]
    return _table(bins, weight, count, hits, conf)


# --------------------------------------------------------------------------- positive class

def _bin_of(p: np.ndarray, bins: int) -> np.ndarray:
    """The bin of each probability: [0, 1/B), ..., [(B-1)/B, 1]; NaN in bin 0 (as the ECE's)."""
    with np.errstate(invalid="ignore"):
        b = np.floor(np.where(np.isnan(p), 0.0, p) * bins)
    out: np.ndarray = np.clip(b, 0, bins - 1).astype(np.intp)
    return out


def _positive_chunk(c: Problem, bins: int, temperature: float, ignore_index: int, origin: Tuple[int, ...],
                    sums: np.ndarray, count: np.ndarray) -> None:
    """Add a chunk's per-bin weight, weighted positives and weighted p to ``sums`` (bins, 3)
    states and its per-bin element counts to ``count`` (the elements not ignored)."""
    x = np.moveaxis(c.x, c.ax, -1)
    y = _score_check._binary_labels(c.t, origin, ignore_index)
    if c.task == "binary":
        x = x[..., 0]
    else:
        y = np.moveaxis(y, c.ax, -1)
    keep = _score_check.kept_elements(y)
    prob = np.asarray(sigmoid(np.asarray(x, np.float64) / temperature)).reshape(-1)
    y = np.asarray(y == 1, np.float64).reshape(-1)
    if c.w is None:
        w = np.ones(prob.shape)
    else:
        wr = np.asarray(c.w, np.float64)
        w = np.broadcast_to(wr[..., None] if c.task == "multilabel" else wr, x.shape).reshape(-1)
    if keep is not None:
        k = keep.reshape(-1)
        prob, y, w = prob[k], y[k], w[k]
    b = _bin_of(prob, bins)
    count += np.bincount(b, minlength=bins)
    order = np.argsort(b, kind="stable")
    starts = np.searchsorted(b[order], np.arange(bins + 1))
    for j in range(bins):
        sel = order[starts[j]:starts[j + 1]]
        if sel.size:
            for q, v in enumerate((w[sel], w[sel] * y[sel], w[sel] * prob[sel])):
                _rsum.add(sums[j, q], v)


def _positive(p: Problem, bins: int, temperature: float, ignore_index: int) -> Dict[str, np.ndarray]:
    sums = _rsum.empty((bins, 3))
    count = np.zeros(bins, np.int64)
    for c, origin, _, _ in _score._chunks(p, None, None):
        _positive_chunk(c, bins, temperature, ignore_index, origin, sums, count)
    v = _rsum.value(sums)
    return _table(bins, v[:, 0], count, v[:, 1], v[:, 2])


# --------------------------------------------------------------------------- public

def calibration_curve(logits: Any, target: Any, *, task: Optional[str] = None, axis: int = -1, bins: int = 15,
                      sample_weight: Any = None, ignore_index: int = -100, temperature: float = 1.0,
                      kind: str = "top_label") -> Dict[str, np.ndarray]:
    """The reliability diagram's bins as data: per equal-width probability bin, the weight,
    the row count, the observed accuracy and the mean confidence.

    Parameters
    ----------
    logits, target, task, axis, sample_weight, temperature
        As in :func:`score` (the task is inferred the same way).
    bins : int, default 15
        Equal-width bins ``[0, 1/B), ..., [(B-1)/B, 1]``.
    ignore_index : int, default -100
        Targets equal to it are left out, as in :func:`score`: multiclass and binary rows,
        multilabel elements.
    kind : {"top_label", "positive"}, default "top_label"
        ``"top_label"``: the bins of the ``ece`` metric of :func:`score`: the confidence is
        the top-label probability (multiclass ``max softmax(x / T)``, binary and multilabel
        ``max(p, 1 - p)``), the accuracy whether the prediction is right; the ``ece`` is
        ``sum_b weight_b * |accuracy_b - confidence_b| / sum_b weight_b``.
        ``"positive"`` (binary and multilabel): the bins of the positive-class probability
        ``p = sigmoid(x / T)`` (every element a prediction for multilabel); the accuracy is
        the observed rate of positives, the confidence the mean ``p``.

    Returns
    -------
    dict of (bins,) arrays
        ``edges_low``, ``edges_high``, ``weight`` (summed sample weight; the count when
        unweighted), ``count`` (int64 rows; elements for multilabel),
        ``accuracy``, ``confidence`` (weighted means; nan for an empty bin). The sums are
        order-independent (csrc/fl_rsum.h): bitwise the same for every thread count; with
        ``sample_weight``, ``kind="top_label"`` takes a second pass for the counts.

    Examples
    --------
    >>> import numpy as np, fastlogits as fl
    >>> logits = np.array([[2.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.1, 0.0]])
    >>> c = fl.calibration_curve(logits, np.array([0, 0, 0, 1]), bins=4)
    >>> c["count"].tolist(), c["accuracy"][2:].round(3).tolist()
    ([0, 0, 1, 3], [0.0, 0.667])
    """
    nbins, temp, ignore = _check_options(bins, temperature, ignore_index, kind)
    p = _score_check.check(logits, target, task, axis, sample_weight)
    if kind == "top_label":
        return _top_label(p, nbins, temp, ignore)
    if p.task == "multiclass":
        raise ValueError("kind: 'positive' applies to the binary and multilabel tasks; for multiclass use 'top_label'")
    return _positive(p, nbins, temp, ignore)
