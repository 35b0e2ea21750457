"""The per-class metrics of the Scorer (API section 7), finished from merged states.

The kernel (csrc/fl_score.c, csrc/fl_score_pc.h) fills, in the same pass as the other metrics:
the confusion matrix (exact int64 counts for unweighted rows, order-independent sum states for
weighted ones), and per class the classwise ECE bins of ``p_c`` and the histogram of ``p_c``
over the binned AUC's levels. This module turns those into metrics; every value is a fixed
function of the merged states, so it is bitwise the same for every split of the rows.

Definitions follow scikit-learn (``zero_division=0``) and, for the binned ranking metrics,
torchmetrics' ``thresholds=B``: thresholds ``t_j = j/(B-1)``, a score is positive when
``p >= t_j``, ROC AUC the trapezoidal area of the ``(fpr, tpr)`` points, and
``AP = -sum_j (R_{j+1} - R_j) P_j`` over the points followed by ``(R, P) = (0, 1)``.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

import numpy as np

from . import _rsum


def _div0(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b, 0 where b == 0 (scikit-learn's zero_division=0)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b != 0, a / np.where(b != 0, b, 1.0), 0.0)


def confusion(counts: Optional[np.ndarray], weighted: Optional[np.ndarray], c: int) -> np.ndarray:
    """The (C, C) float64 confusion matrix from the unweighted counts and the weighted states."""
    # the counts converted in one pass (a zeroed (C, C) matrix added to was two more)
    cm = counts.astype(np.float64) if counts is not None else np.zeros((c, c), dtype=np.float64)
    if weighted is not None:
        cm += _rsum.value(weighted)
    return cm


def from_confusion(cm: np.ndarray, names: List[str]) -> Dict[str, Any]:
    """The metrics of ``names`` that come from the confusion matrix ``cm`` (rows true, columns
    predicted). macro_f1 averages over the classes with weight in the targets or the
    predictions (scikit-learn's labels present in y_true or y_pred)."""
    tp = np.diag(cm).copy()
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    present = (support != 0) | (predicted != 0)
    precision = _div0(tp, predicted)
    recall = _div0(tp, support)
    f1 = _div0(2.0 * tp, support + predicted)
    out: Dict[str, Any] = {}
    total = float(support.sum())
    for m in names:
        if m == "confusion_matrix":
            out[m] = cm
        elif m == "per_class":
            out[m] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
        elif m == "macro_f1":
            out[m] = float(np.mean(f1[present])) if present.any() else math.nan
        elif m == "weighted_f1":
            out[m] = float(np.sum(f1 * support) / total) if total > 0 else math.nan
        elif m == "micro_f1":
            out[m] = float(tp.sum() / total) if total > 0 else math.nan
        elif m == "balanced_accuracy":
            has = support > 0
            out[m] = float(np.mean(recall[has])) if has.any() else math.nan
    return out


def classwise_ece(states: np.ndarray, bins: int, total: float) -> float:
    """Mean over the C classes of the ECE of p_c against y == c, from the per-class states
    (C, 3*bins, WORDS): per bin the weight, the weight of y == c and the weighted sum of p_c."""
    # the bins' weights are valued too: a contiguous block (no copy), and as counts they take
    # fl_rsum_value's short path
    v = _rsum.value(states[:, :3 * bins])
    pos, conf = v[:, bins:2 * bins], v[:, 2 * bins:]
    with np.errstate(invalid="ignore", divide="ignore"):
        per = np.abs(pos - conf).sum(axis=1) / total
    return float(np.mean(per)) if per.size else math.nan


def binned_curves(states: np.ndarray) -> Dict[str, np.ndarray]:
    """Per class (rows), per threshold j: tp, fp, and the totals of positives and negatives,
    from the level histograms (C, 2*(B+1), WORDS): weight per level, then positives' weight."""
    v = _rsum.value(states)
    levels = v.shape[1] // 2
    allw, pos = v[:, :levels], v[:, levels:]
    neg = allw - pos
    # positive at threshold j when the level (thresholds <= p) is >= j + 1: suffix sums
    tp = np.cumsum(pos[:, ::-1], axis=1)[:, ::-1][:, 1:]
    fp = np.cumsum(neg[:, ::-1], axis=1)[:, ::-1][:, 1:]
    return {"tp": tp, "fp": fp, "p": pos.sum(axis=1), "n": neg.sum(axis=1)}


def binned_auc(states: np.ndarray) -> np.ndarray:
    """Per class: the binned ROC AUC (torchmetrics thresholds=B); NaN for a class without
    both positives and negatives."""
    c = binned_curves(states)
    tpr = _div0(c["tp"], c["p"][:, None])[:, ::-1]
    fpr = _div0(c["fp"], c["n"][:, None])[:, ::-1]
    auc = np.sum((fpr[:, 1:] - fpr[:, :-1]) * (tpr[:, 1:] + tpr[:, :-1]) / 2.0, axis=1)
    return np.where((c["p"] > 0) & (c["n"] > 0), auc, np.nan)


def binned_ap(states: np.ndarray) -> np.ndarray:
    """Per class: the binned average precision (torchmetrics thresholds=B); NaN for a class
    without both positives and negatives."""
    c = binned_curves(states)
    k = c["tp"].shape[0]
    precision = np.concatenate([_div0(c["tp"], c["tp"] + c["fp"]), np.ones((k, 1))], axis=1)
    recall = np.concatenate([_div0(c["tp"], c["p"][:, None]), np.zeros((k, 1))], axis=1)
    ap = -np.sum((recall[:, 1:] - recall[:, :-1]) * precision[:, :-1], axis=1)
    return np.where((c["p"] > 0) & (c["n"] > 0), ap, np.nan)


def macro(values: np.ndarray) -> float:
    """The mean over the non-NaN entries (classes with both outcomes), NaN if none."""
    ok = ~np.isnan(values)
    return float(np.mean(values[ok])) if ok.any() else math.nan
