"""The exact ranking metrics of ``score`` and the Scorer: ROC AUC (sort-based, ties averaged,
as sklearn.metrics.roc_auc_score) and average precision (as
sklearn.metrics.average_precision_score), and the scores, labels and weights they need,
collected chunk by chunk (binary and multilabel: the logits; multiclass one-vs-rest: the
probabilities, with one-hot labels).

The AUC needs every score at once, so ``AucData`` keeps one score, label and weight per row and
label: its memory grows with the number of rows. ``AucData.merge`` concatenates; the AUC sorts
the pairs into an order that depends only on their multiset (by score, then label, then
weight), so the result is bitwise the same for any split into chunks and any order of merging.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np


_MAX_PIECES = 64


def _label_last(a: np.ndarray, ax: int) -> np.ndarray:
    """``a`` with the label axis last (itself when it already is: moveaxis costs a chunk's
    worth of Python overhead when chunks are small)."""
    return a if ax == a.ndim - 1 else np.moveaxis(a, ax, -1)


@dataclass
class AucData:
    """Scores (rows x labels), labels and row weights (1 when unweighted) of some rows, as
    lists of chunks."""

    scores: List[np.ndarray] = field(default_factory=list)
    labels: List[np.ndarray] = field(default_factory=list)
    weights: List[np.ndarray] = field(default_factory=list)

    @classmethod
    def of(cls, x: np.ndarray, t: np.ndarray, w: Optional[np.ndarray], ax: int) -> "AucData":
        """The data of a chunk: logits ``x`` and bool labels ``t`` with the label axis ``ax``,
        row weights ``w`` (None: all 1)."""
        c = x.shape[ax]
        rows = _label_last(x, ax).reshape(-1, c).copy()
        ww = np.ones(rows.shape[0]) if w is None else np.asarray(w, dtype=np.float64).reshape(-1).copy()
        return cls([rows], [_label_last(t, ax).reshape(-1, c).copy()], [ww])

    def merge(self, other: "AucData") -> "AucData":
        """The data of both (new lists; many chunks are joined into one array, so merging
        chunk after chunk costs O(rows) per merge, not O(chunks))."""
        m = AucData(self.scores + other.scores, self.labels + other.labels, self.weights + other.weights)
        if len(m.scores) > _MAX_PIECES:
            m = AucData([np.concatenate(m.scores)], [np.concatenate(m.labels)], [np.concatenate(m.weights)])
        return m

    @property
    def n_bytes(self) -> int:
        return sum(a.nbytes for a in self.scores + self.labels + self.weights)

    def arrays(self, c: int) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """Every kept score (rows x labels), label and weight (None: all 1), concatenated."""
        s = np.concatenate(self.scores) if self.scores else np.zeros((0, c))
        y = np.concatenate(self.labels) if self.labels else np.zeros((0, c), bool)
        w = np.concatenate(self.weights) if self.weights else None
        return s, y, None if w is None or np.all(w == 1.0) else w

    def per_label(self, c: int, name: str) -> np.ndarray:
        """``name`` ("roc_auc" or "average_precision") of each label column; NaN for a label
        without both classes."""
        s, y, w = self.arrays(c)
        fn = roc_auc if name == "roc_auc" else average_precision
        return np.array([fn(s[:, j], y[:, j], w) for j in range(c)], dtype=np.float64)

    def metric(self, task: str, c: int, name: str = "roc_auc") -> float:
        """``name`` ("roc_auc" or "average_precision"): binary over every score; otherwise the
        macro mean over labels with both classes (NaN when none has)."""
        vals = self.per_label(c, name)
        if task == "binary":
            return float(vals[0])
        vals = vals[~np.isnan(vals)]
        return float(np.mean(vals)) if vals.size else float("nan")


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
