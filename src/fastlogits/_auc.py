"""The exact ranking metrics of ``score`` and the Scorer: ROC AUC (sort-based, ties averaged,
as sklearn.metrics.roc_auc_score) and average precision (as
sklearn.metrics.average_precision_score), and the scores, labels and weights they need,
collected chunk by chunk (binary and multilabel: the logits; multiclass one-vs-rest: the
probabilities, with one-hot labels).

The AUC needs every score at once, so ``AucData`` keeps one score and label per row and label
(and one weight per row, once a weighted row came; one kept flag per row and label, once a
row with an element left out by ``ignore_index`` came): its memory grows with the number of
rows. A row with no element kept is not kept at all.
They are kept in buffers that grow geometrically, so streaming N rows costs O(N) copies
whatever the number of chunks, updates and merges. The AUC sorts the pairs into an order that
depends only on their multiset (by score, then label, then weight), so the result is bitwise
the same for any split into chunks and any order of merging.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np


def _label_last(a: np.ndarray, ax: int) -> np.ndarray:
    """``a`` with the label axis last (itself when it already is: moveaxis costs a chunk's
    worth of Python overhead when chunks are small)."""
    return a if ax == a.ndim - 1 else np.moveaxis(a, ax, -1)


def _kept_dtype(a: np.dtype, b: np.dtype) -> np.dtype:
    """The dtype that keeps scores of dtypes ``a`` and ``b``: their own when they agree, else
    float64 (every float dtype converts to it exactly, so the AUC, which ranks the scores as
    float64, is the same however the rows were split)."""
    return a if a == b else np.dtype(np.float64)


class AucData:
    """Scores (rows x labels), labels, row weights (None while every weight is 1) and kept
    flags (None while every element is kept) of some rows: ``add`` appends in place; ``copy``
    owns its arrays."""

    def __init__(self) -> None:
        self.n = 0                                  # rows kept
        self._s: Optional[np.ndarray] = None        # (capacity, labels) scores
        self._y: Optional[np.ndarray] = None        # (capacity, labels) bool labels
        self._w: Optional[np.ndarray] = None        # (capacity,) float64 weights, once one is not implied 1
        self._k: Optional[np.ndarray] = None        # (capacity, labels) bool kept, once one is not kept

    @classmethod
    def of_arrays(cls, s: np.ndarray, y: np.ndarray, w: Optional[np.ndarray],
                  k: Optional[np.ndarray] = None) -> "AucData":
        """Data holding copies of scores ``s`` (rows x labels), bool labels ``y``, weights
        ``w`` (None: all 1) and kept flags ``k`` (None: all kept)."""
        d = cls()
        d.add(s, y, w, k)
        return d

    def add(self, s: np.ndarray, y: np.ndarray, w: Optional[np.ndarray], k: Optional[np.ndarray] = None) -> None:
        """Append rows, in place: scores ``s`` (rows x labels), bool labels ``y`` of the same
        shape, row weights ``w`` (None: all 1), bool flags ``k`` of the elements kept (None:
        all; a row without one is left out)."""
        if k is not None:
            rows = k.any(axis=1)
            if not rows.all():
                s, y, k = s[rows], y[rows], k[rows]
                w = None if w is None else w[rows]
            if k.all():
                k = None
        m = s.shape[0]
        self._reserve(self.n + m, s.shape[1], s.dtype, w is not None, k is not None)
        assert self._s is not None and self._y is not None  # reserved
        lo, hi = self.n, self.n + m
        self._s[lo:hi] = s
        self._y[lo:hi] = y
        if self._w is not None:
            self._w[lo:hi] = 1.0 if w is None else w
        if self._k is not None:
            self._k[lo:hi] = True if k is None else k
        self.n = hi

    def add_logits(self, x: np.ndarray, t: np.ndarray, w: Optional[np.ndarray], ax: int,
                   k: Optional[np.ndarray] = None) -> None:
        """Append a chunk of logits ``x``, bool labels ``t`` and kept flags ``k`` (None: all)
        with the label axis ``ax``, row weights ``w`` (None: all 1)."""
        c = x.shape[ax]
        self.add(_label_last(x, ax).reshape(-1, c), _label_last(t, ax).reshape(-1, c),
                 None if w is None else np.asarray(w, dtype=np.float64).reshape(-1),
                 None if k is None else _label_last(k, ax).reshape(-1, c))

    def merge_from(self, other: "AucData") -> None:
        """Append the rows of ``other``, in place."""
        if other.n:
            self.add(*other._views())

    def copy(self) -> "AucData":
        """Data owning copies of these rows."""
        d = AucData()
        d.merge_from(self)
        return d

    def _reserve(self, rows: int, c: int, dtype: np.dtype, weighted: bool, flagged: bool) -> None:
        """Room for ``rows`` rows of ``c`` labels and scores of ``dtype``, weights if
        ``weighted``, kept flags if ``flagged``."""
        if self._s is None or self._y is None:
            self._s, self._y = np.empty((rows, c), dtype), np.empty((rows, c), bool)
        cap = self._s.shape[0]
        kept = _kept_dtype(self._s.dtype, dtype)
        if rows > cap or kept != self._s.dtype:
            # a full buffer grows by half at least: every row is moved O(1) times, amortised
            cap = max(rows, cap + cap // 2) if rows > cap else cap
            self._s = _moved(self._s, self.n, cap, kept)
            self._y = _moved(self._y, self.n, cap, np.dtype(bool))
            if self._w is not None:
                self._w = _moved(self._w, self.n, cap, np.dtype(np.float64))
            if self._k is not None:
                self._k = _moved(self._k, self.n, cap, np.dtype(bool))
        if weighted and self._w is None:
            self._w = np.empty(cap, np.float64)
            self._w[:self.n] = 1.0
        if flagged and self._k is None:
            self._k = np.empty((cap, c), bool)
            self._k[:self.n] = True

    def _views(self) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
        assert self._s is not None and self._y is not None  # n > 0
        return (self._s[:self.n], self._y[:self.n], None if self._w is None else self._w[:self.n],
                None if self._k is None else self._k[:self.n])

    def arrays(self, c: int) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
        """Every kept score (rows x labels), label, weight (None: all 1) and kept flag (None:
        all kept), as views."""
        if not self.n:
            return np.zeros((0, c)), np.zeros((0, c), bool), None, None
        s, y, w, k = self._views()
        return s, y, None if w is None or np.all(w == 1.0) else w, None if k is None or np.all(k) else k

    def per_label(self, c: int, name: str) -> np.ndarray:
        """``name`` ("roc_auc" or "average_precision") of each label column, over its kept
        elements; NaN for a label without both classes."""
        s, y, w, k = self.arrays(c)
        fn = roc_auc if name == "roc_auc" else average_precision

        def column(j: int) -> float:
            if k is None:
                return fn(s[:, j], y[:, j], w)
            kj = k[:, j]
            return fn(s[kj, j], y[kj, j], None if w is None else w[kj])
        return np.array([column(j) for j in range(c)], dtype=np.float64)

    def metric(self, task: str, c: int, name: str = "roc_auc") -> float:
        """``name`` ("roc_auc" or "average_precision"): binary over every score; otherwise the
        macro mean over labels with both classes (NaN when none has)."""
        vals = self.per_label(c, name)
        if task == "binary":
            return float(vals[0])
        vals = vals[~np.isnan(vals)]
        return float(np.mean(vals)) if vals.size else float("nan")


def _moved(a: np.ndarray, n: int, rows: int, dtype: np.dtype) -> np.ndarray:
    """A buffer of ``rows`` rows of ``dtype`` holding the first ``n`` rows of ``a``."""
    out = np.empty((rows,) + a.shape[1:], dtype)
    out[:n] = a[:n]
    return out


def _grouped(scores: np.ndarray, y: np.ndarray, w: Optional[np.ndarray]
             ) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """The weights of the positives and of the negatives at each distinct score, ascending;
    None if a score is NaN. The order of the sums depends only on the multiset of (score,
    label, weight), so the result does not depend on how the rows were split."""
    scores = np.asarray(scores, dtype=np.float64)
    if np.isnan(scores).any():
        return None
    if w is None:
        # unit weights: every sum below is an exact count, whatever the order within ties
        order = np.argsort(scores, kind="stable")
        ww = np.ones(scores.shape, dtype=np.float64)
    else:
        order = np.lexsort((np.asarray(w, dtype=np.float64), y, scores))
        ww = np.asarray(w, dtype=np.float64)[order]
    s, yy = scores[order], y[order]
    starts = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1])))
    wp = np.add.reduceat(np.where(yy, ww, 0.0), starts) if s.size else np.zeros(0)
    wn = np.add.reduceat(np.where(yy, 0.0, ww), starts) if s.size else np.zeros(0)
    return wp, wn


def roc_auc(scores: np.ndarray, y: np.ndarray, w: Optional[np.ndarray]) -> float:
    """Exact (sample-weighted) ROC AUC with ties averaged, as sklearn.metrics.roc_auc_score:
    the weighted probability that a positive scores above a negative, ties counting one half.
    NaN if a class is absent (or has no weight) or a score is NaN."""
    g = _grouped(scores, y, w)
    if g is None:
        return float("nan")
    wp, wn = g
    wp_total, wn_total = float(np.sum(wp)), float(np.sum(wn))
    if not (wp_total > 0 and wn_total > 0):
        return float("nan")
    neg_below = np.concatenate(([0.0], np.cumsum(wn)[:-1]))
    return float((np.sum(wp * neg_below) + 0.5 * np.sum(wp * wn)) / (wp_total * wn_total))


def average_precision(scores: np.ndarray, y: np.ndarray, w: Optional[np.ndarray]) -> float:
    """Exact (sample-weighted) average precision, as sklearn.metrics.average_precision_score:
    ``sum_k (R_k - R_{k-1}) P_k`` over the distinct scores in descending order (a tie is one
    threshold). NaN if a class is absent (or has no weight) or a score is NaN."""
    g = _grouped(scores, y, w)
    if g is None:
        return float("nan")
    wp, wn = g[0][::-1], g[1][::-1]
    tps, fps = np.cumsum(wp), np.cumsum(wn)
    if not (tps.size and tps[-1] > 0 and fps[-1] > 0):
        return float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tps + fps > 0, tps / (tps + fps), 0.0)
    recall = np.concatenate(([0.0], tps / tps[-1]))
    return float(np.sum(np.diff(recall) * precision))
