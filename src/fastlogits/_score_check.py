"""A scoring problem and its arguments (``score``, ``Scorer``, ``calibration_curve``,
``fit_temperature``, ``fastlogits.dask``): the arrays of a call checked and laid out as the
scoring kernel (csrc/fl_score.c) reads them (``check``, a ``Problem``); the metrics and options
checked and put in the kernel's terms (``spec``, a ``Spec`` every chunk shares); a chunk's
targets checked value by value, an error naming the bad target's position in the whole target.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from ._input import as_array, as_logits, is_bfloat16, normalize_axis

TASKS = ("multiclass", "binary", "multilabel")
# the per-class block (multiclass): computed when per_class=True or named in metrics
PER_CLASS_METRICS = ("confusion_matrix", "per_class", "macro_f1", "weighted_f1", "micro_f1",
                     "balanced_accuracy", "classwise_ece")
_MULTICLASS = ("count", "nll", "perplexity", "accuracy", "top_k_accuracy", "ece", "brier", "mean_entropy")
_BINARY = ("count", "nll", "accuracy", "ece", "brier", "mean_entropy", "roc_auc", "average_precision", "f1",
           "precision", "recall")
TASK_METRICS = {
    "multiclass": _MULTICLASS + PER_CLASS_METRICS + ("roc_auc_ovr", "average_precision_ovr"),
    "binary": _BINARY,
    "multilabel": _BINARY,
}
DEFAULT_METRICS = {"multiclass": _MULTICLASS, "binary": _BINARY, "multilabel": _BINARY}
ALL_METRICS = tuple(dict.fromkeys(TASK_METRICS["multiclass"] + _BINARY))

# kernel modes, the order of its sums and the flag of the ECE bins' sums (csrc/fastlogits.h)
_SOFTMAX, _SIGMOID = 0, 1
_W, _NLL, _CORRECT, _HIT, _BRIER, _ENT, _GAP, _TP, _PP, _AP, _NSUMS = range(11)
_WANT_BINS = 1 << _NSUMS
_METRIC_SUM = {"nll": _NLL, "accuracy": _CORRECT, "top_k_accuracy": _HIT, "brier": _BRIER, "mean_entropy": _ENT}
_COUNTS = {"f1": (_TP, _PP, _AP), "precision": (_TP, _PP), "recall": (_TP, _AP)}
# the kernel's per-class sums (fl_score_opts.per_class)
PC_CONFUSION, PC_ECE, PC_AUC = 1, 2, 4
_CM_METRICS = ("confusion_matrix", "per_class", "macro_f1", "weighted_f1", "micro_f1", "balanced_accuracy")
_RANK_METRICS = ("roc_auc", "average_precision", "roc_auc_ovr", "average_precision_ovr")
# the largest confusion matrix (of int64 counts) a scoring may allocate
_MAX_CONFUSION_BYTES = 1 << 32


@dataclass
class Problem:
    """A scoring problem (or a chunk of its rows) in the kernel's terms."""

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


def check(logits: Any, target: Any, task: Optional[str], axis: Any, sample_weight: Any) -> Problem:
    """The arrays of a call (or stand-ins of their shapes and dtypes, or a chunk of rows)
    checked and laid out as the kernel reads them; ``task`` None is inferred."""
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
    return Problem(task, x, ax, t, w, row_shape)


def _select_metrics(metrics: Any, task: str, k: Any, c: int, per_class: bool = False) -> List[str]:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k: expected an int, got {type(k).__name__}")
    if metrics is None:
        names = [m for m in DEFAULT_METRICS[task] if m != "top_k_accuracy" or 1 <= k <= c]
        if per_class and task == "multiclass":
            names += PER_CLASS_METRICS
    else:
        names = [m.strip() for m in metrics.split(",") if m.strip()] if isinstance(metrics, str) else list(metrics)
        for m in names:
            if m not in ALL_METRICS:
                raise ValueError(f"metrics: unknown metric {m!r}; valid names are {', '.join(ALL_METRICS)}")
            if m not in TASK_METRICS[task]:
                raise ValueError(
                    f"metrics: {m!r} does not apply to the {task} task; it has {', '.join(TASK_METRICS[task])}"
                )
        if per_class and task == "multiclass":
            names += PER_CLASS_METRICS
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


# --------------------------------------------------------------------------- options

@dataclass(frozen=True)
class Spec:
    """What every chunk of one scoring shares: the metrics and the kernel's options."""

    names: Tuple[str, ...]    # the metrics, in the order of the result
    k: int
    bins: int
    temperature: float
    want_rank: bool           # the kernel ranks the target (accuracy, top-k, ECE)
    want_auc: bool            # keep the scores for the exact ranking metrics
    sums: int                 # the kernel's sums to fill (fl_score_opts.sums)
    ignore_index: int = -100  # targets equal to it count in no metric (rows; multilabel: elements)
    per_class: int = 0        # the kernel's per-class sums (PC_* bits)
    auc_bins: int = 0         # the binned ranking metrics' thresholds (0: exact)
    c: int = 1                # classes (labels) of the per-class sums

    @property
    def nsums(self) -> int:
        return _NSUMS + 3 * self.bins

    @property
    def npc(self) -> int:
        """Per-class sum states (fl_score_opts.pc)."""
        return (3 * self.bins if self.per_class & PC_ECE else 0) + (
            2 * (self.auc_bins + 1) if self.per_class & PC_AUC else 0)


def check_auc_bins(auc_bins: Any) -> int:
    """``auc_bins`` as an int (0 for None: exact), checked."""
    if auc_bins is None:
        return 0
    if isinstance(auc_bins, (bool, np.bool_)) or not isinstance(auc_bins, (int, np.integer)) or auc_bins < 2:
        raise ValueError(f"auc_bins: expected None or an int >= 2, got {auc_bins!r}")
    return int(auc_bins)


def check_ignore_index(ignore_index: Any) -> int:
    if isinstance(ignore_index, (bool, np.bool_)) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"ignore_index: expected an int, got {type(ignore_index).__name__}")
    return int(ignore_index)


def spec(p: Problem, metrics: Any, k: Any, bins: Any, temperature: Any, *, per_class: bool = False,
         auc_bins: Any = None, ignore_index: Any = -100) -> Spec:
    """The options of a scoring of ``p``'s task, checked."""
    if not isinstance(per_class, (bool, np.bool_)):
        raise TypeError(f"per_class: expected a bool, got {type(per_class).__name__}")
    names = _select_metrics(metrics, p.task, k, p.c if p.task == "multiclass" else 1, bool(per_class))
    names = list(dict.fromkeys(names))
    nbins, temp = _check_scalar_args(bins, temperature, None)
    ab = check_auc_bins(auc_bins)
    ign = check_ignore_index(ignore_index)
    sums = 1 << _W
    for m in names:
        if m in _METRIC_SUM:
            sums |= 1 << _METRIC_SUM[m]
        if m == "perplexity":
            sums |= 1 << _NLL
        for q in _COUNTS.get(m, ()):
            sums |= 1 << q
    if "ece" in names:
        sums |= _WANT_BINS
    pc = PC_CONFUSION if any(m in names for m in _CM_METRICS) else 0
    if pc and p.c * p.c * 8 > _MAX_CONFUSION_BYTES:
        raise ValueError(f"per_class: the confusion matrix of {p.c} classes would take {p.c * p.c * 8 / 2**30:.0f} GiB "
                         f"(more than {_MAX_CONFUSION_BYTES >> 30} GiB); ask for per-class metrics with fewer classes")
    pc |= PC_ECE if "classwise_ece" in names else 0
    ranked = any(m in names for m in _RANK_METRICS)
    pc |= PC_AUC if ranked and ab else 0
    return Spec(tuple(names), int(k), nbins, temp, any(m in names for m in ("accuracy", "top_k_accuracy", "ece")),
                ranked and not ab, sums, ign, pc, ab, p.c)


# --------------------------------------------------------------------------- targets

def _class_indices(t: np.ndarray, c: int, origin: Sequence[int], ignore_index: int = -100) -> np.ndarray:
    """A chunk of a multiclass target as int64 class indices, checked (``ignore_index`` is
    allowed anywhere)."""
    if t.dtype.kind == "f" or is_bfloat16(t.dtype):
        tf = np.asarray(t, dtype=np.float64)
        bad = ~(tf == np.round(tf))
        if bad.any():
            pos = _position(bad, origin)
            raise ValueError(f"target: the multiclass target must hold integer class indices, got {tf[bad][0].item()!r} at position {pos}")
    bad = ((t < 0) | (t >= c)) & (t != ignore_index)
    if bad.any():
        pos = _position(bad, origin)
        raise IndexError(f"target: class index {t[bad][0].item()!r} at position {pos} is out of range [0, {c})")
    return np.require(t, np.int64, ["C", "A"])  # aligned too: a memmapped .npz member may not be


# the kernel's byte for an ignored binary or multilabel element (any byte but 0 and 1: fl_score)
IGNORED = -1


def _equal_to(t: np.ndarray, value: int) -> Optional[np.ndarray]:
    """Where ``t`` equals the integer ``value`` exactly; None when its dtype holds no such value
    (a bool target and a value other than 0 and 1, an integer out of the dtype's range, a value
    a float dtype would round)."""
    if t.dtype.kind == "b":
        return t == bool(value) if value in (0, 1) else None
    if t.dtype.kind in "iu":
        info = np.iinfo(t.dtype)
        return t == value if info.min <= value <= info.max else None
    with np.errstate(over="ignore"):
        v = t.dtype.type(value)
    eq: np.ndarray = t == v
    return eq if float(v) == value else None


def _binary_labels(t: np.ndarray, origin: Sequence[int], ignore_index: int) -> np.ndarray:
    """A chunk of a binary or multilabel target as the kernel reads it, checked to hold only 0,
    1 and ``ignore_index``: bool labels, or when an element equals ``ignore_index``, int8
    labels with ``IGNORED`` there (the kernel leaves those elements out). The common case, no
    ignored element, costs no pass over the target beyond the check of 0 and 1."""
    if t.dtype.kind == "b" and ignore_index not in (0, 1):
        return t
    bad = ~((t == 0) | (t == 1))
    ignored = None
    if ignore_index in (0, 1) or bad.any():
        ignored = _equal_to(t, ignore_index)
        if ignored is not None:
            bad &= ~ignored
        if bad.any():
            pos = _position(bad, origin)
            raise ValueError(f"target: binary and multilabel targets must be 0 or 1 (or ignore_index, {ignore_index}), "
                             f"got {t[bad][0].item()!r} at position {pos}")
    labels: np.ndarray = t != 0
    if ignored is None or not ignored.any():
        return labels
    codes = labels.astype(np.int8)
    codes[ignored] = IGNORED
    return codes


def kept_elements(labels: np.ndarray) -> Optional[np.ndarray]:
    """Where the kernel's binary labels (``_binary_labels``) are scored; None: everywhere."""
    return None if labels.dtype == np.bool_ else labels != IGNORED


def _position(bad: np.ndarray, origin: Sequence[int]) -> Tuple[int, ...]:
    """The first bad position, in the whole target when ``origin`` is the chunk's first index
    along each axis of it."""
    pos = [int(i) for i in np.argwhere(bad)[0]]
    return tuple(i + int(o) for i, o in zip(pos, origin)) if origin else tuple(pos)
