"""The evaluation cases of the benchmark table (fastlogits.bench): ``fl.score`` with and without
its per-class block against torchmetrics and scikit-learn computing the same report, and
``fl.sequence_scores`` on a language model's positions seen as sequences.

The peers are fed as their users feed them: torchmetrics' MulticlassAccuracy, F1Score,
ConfusionMatrix and CalibrationError updated with the softmax of the same chunks of about
32 MiB of logits as ``fl.score`` reads, at the same thread count; scikit-learn on the whole
arrays in memory. Each returns (accuracy, macro F1), checked against a NumPy confusion matrix.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple

import numpy as np

from fastlogits import reference as ref

if TYPE_CHECKING:
    from .bench import Data


def per_class_pair(r: Dict[str, Any]) -> Tuple[float, float]:
    return r["accuracy"], r["macro_f1"]


def accuracy_f1(d: Data) -> Tuple[float, float]:
    """Accuracy and macro F1 of the argmax, from a NumPy confusion matrix (the check)."""
    c = d.x.shape[1]
    assert d.target is not None
    cm = np.bincount(d.target * c + ref.predict(d.x), minlength=c * c).reshape(c, c).astype(np.float64)
    tp, support, predicted = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(support + predicted > 0, 2 * tp / (support + predicted), 0.0)
    present = (support + predicted) > 0
    return float(tp.sum() / cm.sum()), float(f1[present].mean())


def torchmetrics_per_class() -> Optional[Callable[[Data], Any]]:
    """torchmetrics' MulticlassAccuracy + ConfusionMatrix + CalibrationError + F1 fed the same
    chunks as fl.score (about 32 MiB of logits each), or None without torchmetrics."""
    try:
        import torch
        import torchmetrics.classification as tc
    except ImportError:
        return None

    def run(d: Data) -> Tuple[float, float]:
        n, c = d.x.shape
        metrics = [tc.MulticlassAccuracy(c, average="micro"), tc.MulticlassF1Score(c, average="macro"),
                   tc.MulticlassConfusionMatrix(c), tc.MulticlassCalibrationError(c, n_bins=15)]
        step = max(1, (1 << 25) // (4 * c))
        for lo in range(0, n, step):
            p = torch.softmax(d.torch_x[lo:lo + step], -1)
            for m in metrics:
                m.update(p, d.torch_target[lo:lo + step])
        out = [m.compute() for m in metrics]
        return float(out[0]), float(out[1])
    return run


def sklearn_per_class() -> Optional[Callable[[Data], Any]]:
    """scikit-learn computing what fl.score(per_class=True) reports where it has the metric:
    the probabilities (scipy.special.softmax), log loss, accuracy, top-5 accuracy, the
    confusion matrix, precision/recall/F1 per class and their averages, balanced accuracy (not
    ECE, Brier or entropy: scikit-learn has no multiclass ones); or None."""
    try:
        import scipy.special as sp
        import sklearn.metrics as skm
    except ImportError:
        return None

    def run(d: Data) -> Tuple[float, float]:
        c = d.x.shape[1]
        labels = np.arange(c)
        p = sp.softmax(d.x, axis=1)
        pred = np.argmax(d.x, axis=1)
        skm.log_loss(d.target, p, labels=labels)
        skm.top_k_accuracy_score(d.target, p, k=min(5, c), labels=labels)
        skm.confusion_matrix(d.target, pred, labels=labels)
        skm.precision_recall_fscore_support(d.target, pred, labels=labels, zero_division=0)
        skm.f1_score(d.target, pred, average="weighted", zero_division=0)
        skm.balanced_accuracy_score(d.target, pred)
        return float(skm.accuracy_score(d.target, pred)), float(skm.f1_score(d.target, pred, average="macro"))
    return run


def sequences(d: Data) -> Tuple[np.ndarray, np.ndarray]:
    """The rows of positions as 8 sequences (B, T, V) and their tokens (B, T) (views)."""
    assert d.target is not None  # a case with class targets
    b = 8 if d.x.shape[0] % 8 == 0 else 1
    return d.x.reshape(b, -1, d.x.shape[-1]), d.target.reshape(b, -1)
