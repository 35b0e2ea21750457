"""The exact ROC AUC of ``score`` (sort-based, ties averaged, as sklearn.metrics.roc_auc_score),
and the scores, labels and weights it needs, collected chunk by chunk.

The AUC needs every score at once, so ``AucData`` keeps one score, label and weight per row and
label: its memory grows with the number of rows. ``AucData.merge`` concatenates; the AUC sorts
the pairs into an order that depends only on their multiset (by score, then label, then
weight), so the result is bitwise the same for any split into chunks and any order of merging.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np


@dataclass
class AucData:
    """Scores (rows x labels), labels and row weights of some rows, as lists of chunks."""

    scores: List[np.ndarray] = field(default_factory=list)
    labels: List[np.ndarray] = field(default_factory=list)
    weights: List[np.ndarray] = field(default_factory=list)

    @classmethod
    def of(cls, x: np.ndarray, t: np.ndarray, w: Optional[np.ndarray], ax: int) -> "AucData":
        """The data of a chunk: logits ``x`` and bool labels ``t`` with the label axis ``ax``,
        row weights ``w`` (None: all 1)."""
        c = x.shape[ax]
        return cls([np.moveaxis(x, ax, -1).reshape(-1, c).copy()], [np.moveaxis(t, ax, -1).reshape(-1, c).copy()],
                   [] if w is None else [np.asarray(w, dtype=np.float64).reshape(-1).copy()])

    def merge(self, other: "AucData") -> "AucData":
        return AucData(self.scores + other.scores, self.labels + other.labels, self.weights + other.weights)

    def metric(self, task: str, c: int) -> float:
        """roc_auc: binary over every score; multilabel the macro mean over labels with both
        classes (NaN when none has)."""
        s = np.concatenate(self.scores) if self.scores else np.zeros((0, c))
        y = np.concatenate(self.labels) if self.labels else np.zeros((0, c), bool)
        w = np.concatenate(self.weights) if self.weights else None
        if task == "binary":
            return roc_auc(s[:, 0], y[:, 0], w)
        aucs = [roc_auc(s[:, j], y[:, j], w) for j in range(s.shape[1])]
        aucs = [a for a in aucs if not math.isnan(a)]
        return float(np.mean(aucs)) if aucs else float("nan")


def roc_auc(scores: np.ndarray, y: np.ndarray, w: Optional[np.ndarray]) -> float:
    """Exact (sample-weighted) ROC AUC with ties averaged, as sklearn.metrics.roc_auc_score:
    the weighted probability that a positive scores above a negative, ties counting one half.
    NaN if a class is absent (or has no weight) or a score is NaN."""
    scores = np.asarray(scores, dtype=np.float64)
    if np.isnan(scores).any():
        return float("nan")
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
    wp_total, wn_total = float(np.sum(wp)), float(np.sum(wn))
    if not (wp_total > 0 and wn_total > 0):
        return float("nan")
    neg_below = np.concatenate(([0.0], np.cumsum(wn)[:-1]))
    return float((np.sum(wp * neg_below) + 0.5 * np.sum(wp * wn)) / (wp_total * wn_total))
