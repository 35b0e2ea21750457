"""Offline scoring (API section 4): ``score``, streamed over row chunks.

How the streaming stays exact and cheap:

- Rows are the positions of the logits without the class axis, in C order. Chunks are cut
  along one axis of the row shape (the *lead* axis), so a chunk of a memmap is a view.
- The kernel (csrc/fl_score.c) adds the weighted per-row statistics of a chunk to
  order-independent sums (csrc/fl_rsum.h): a chunk's ``ScoreState`` merges with the others'
  into the same sums whatever the chunks, the thread count or the order of merging, so the
  result is bitwise the same for every ``chunk_rows``, thread count and Dask chunking.
- Pages of a read-only memmap are handed back to the OS after each chunk, so the resident
  memory of scoring a file larger than RAM stays at about one chunk.
- ``roc_auc`` needs every score at once (it sorts them): it keeps one score, one label and one
  weight per row and label, so its memory grows with the number of rows (N, or N x L for
  multilabel). The other metrics use memory independent of N.

The reduction's internal interface, shared by ``score``, ``fit_temperature`` (``_temperature``),
``calibration_curve`` and ``fastlogits.dask`` (and meant for a streaming scorer): ``check`` (a
call's or a chunk's arrays as a ``Problem``), ``spec`` (the options every chunk shares, a ``Spec``), ``partial`` (a chunk's
``ScoreState``, merged with ``ScoreState.merge`` in any order) and ``finish`` (merged state to
the metrics dict).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, cast

import numpy as np

from . import _core, _perclass, _rsum
from ._auc import AucData
from ._input import as_array, as_logits, is_bfloat16, normalize_axis
from ._layout import make_grid, with_axis
from ._pages import PageReleaser, chunk_rows as rows_per_chunk
from ._progress import progress_reporter

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


# --------------------------------------------------------------------------- options and state

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
    ignore_index: int = -100  # multiclass rows with this target count in no metric
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


@dataclass
class ScoreState:
    """The state of a scoring over some rows: order-independent sum states (``sums``: W, the
    metric sums, then per ECE bin the weight, the weighted accuracy and the weighted
    confidence, see fl_score in fastlogits.h), the row count, and what roc_auc needs. The
    state of all rows is the merge of the states of any split of them, in any order."""

    sums: np.ndarray               # (spec.nsums, _rsum.WORDS) int64
    n_rows: int
    auc: Optional[AucData] = None
    cm: Optional[np.ndarray] = None   # unweighted confusion counts (C, C) int64
    cmw: Optional[np.ndarray] = None  # weighted confusion states (C, C, WORDS), once a weighted chunk came
    pc: Optional[np.ndarray] = None   # per-class states (C, spec.npc, WORDS)

    @classmethod
    def empty(cls, s: Spec) -> "ScoreState":
        cm = np.zeros((s.c, s.c), np.int64) if s.per_class & PC_CONFUSION else None
        pc = _rsum.empty((s.c, s.npc)) if s.npc else None
        return cls(_rsum.empty(s.nsums), 0, AucData() if s.want_auc else None, cm, None, pc)

    def copy(self) -> "ScoreState":
        """A state owning its arrays (safe to add rows to in place)."""
        def own(a: Optional[np.ndarray]) -> Optional[np.ndarray]:
            return None if a is None else a.copy()
        auc = None if self.auc is None else self.auc.merge(AucData())
        return ScoreState(self.sums.copy(), self.n_rows, auc, own(self.cm), own(self.cmw), own(self.pc))

    def merge(self, other: "ScoreState") -> "ScoreState":
        auc = None if self.auc is None or other.auc is None else self.auc.merge(other.auc)
        cm = None if self.cm is None or other.cm is None else self.cm + other.cm
        if self.cmw is None or other.cmw is None:
            cmw = self.cmw if other.cmw is None else other.cmw
        else:
            cmw = _rsum.merge(self.cmw, other.cmw)
        pc = None if self.pc is None or other.pc is None else _rsum.merge(self.pc, other.pc)
        return ScoreState(_rsum.merge(self.sums, other.sums), self.n_rows + other.n_rows, auc, cm, cmw, pc)


# --------------------------------------------------------------------------- chunks

def _lead_slice(a: np.ndarray, axis: int, lo: int, hi: int) -> np.ndarray:
    return a[(slice(None),) * axis + (slice(lo, hi),)]


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


def _binary_labels(t: np.ndarray, origin: Sequence[int]) -> np.ndarray:
    """A chunk of a binary or multilabel target as bool, checked to hold only 0 and 1."""
    if t.dtype.kind == "b":
        return t
    bad = ~((t == 0) | (t == 1))
    if bad.any():
        pos = _position(bad, origin)
        raise ValueError(f"target: binary and multilabel targets must be 0 or 1, got {t[bad][0].item()!r} at position {pos}")
    labels: np.ndarray = t != 0
    return labels


def _position(bad: np.ndarray, origin: Sequence[int]) -> Tuple[int, ...]:
    """The first bad position, in the whole target when ``origin`` is the chunk's first index
    along each axis of it."""
    pos = [int(i) for i in np.argwhere(bad)[0]]
    return tuple(i + int(o) for i, o in zip(pos, origin)) if origin else tuple(pos)


def partial_check(p: Problem, s: Spec, origin: Sequence[int] = ()) -> None:
    """Check the targets of ``p`` as :func:`partial` does, without scoring."""
    if p.mode == _SOFTMAX:
        _class_indices(p.t, p.c, origin, s.ignore_index)
    else:
        _binary_labels(p.t, origin)


def partial(p: Problem, s: Spec, origin: Sequence[int] = (), into: Optional[ScoreState] = None) -> ScoreState:
    """The state of the rows of ``p`` (a chunk of them); an error for a bad target names its
    position in the whole target when ``origin`` gives the chunk's first index there. With
    ``into`` (a state of ``s`` owned by the caller) the rows are added to it in place and it
    is returned: the kernel merges its sums only once it has succeeded, and everything is
    checked before, so an error leaves ``into`` as it was."""
    n_rows = p.n_rows
    if p.mode == _SOFTMAX:
        ti = _class_indices(p.t, p.c, origin, s.ignore_index)
        n_rows = p.n_rows - int(np.count_nonzero(ti == s.ignore_index))
        tk = with_axis(ti, p.ax)
    else:
        tb = _binary_labels(p.t, origin)
        tk = tb if p.task == "multilabel" else with_axis(tb, p.ax)
    wc = None if p.w is None else np.require(p.w, np.float64, ["C", "A"])
    state = ScoreState.empty(s) if into is None else into
    if wc is not None and s.per_class & PC_CONFUSION and state.cmw is None:
        state.cmw = _rsum.empty((s.c, s.c))
    if p.x.size:
        ops = [p.x, tk] + ([] if wc is None else [with_axis(wc, p.ax)])
        g = make_grid(ops, p.ax, p.c)
        _core.score(g.specs[0], g.specs[1], None if wc is None else g.specs[2], g.grid, p.mode,
                    s.want_rank, s.k, s.bins, s.temperature, s.sums, state.sums, s.ignore_index,
                    s.per_class, s.auc_bins, state.cm, state.cmw, state.pc)
    state.n_rows += n_rows
    if state.auc is not None:
        state.auc = state.auc.merge(_ovr_data(p, ti, wc, s) if p.mode == _SOFTMAX else AucData.of(p.x, tk, wc, p.ax))
    return state


def _ovr_data(p: Problem, ti: np.ndarray, wc: Optional[np.ndarray], s: Spec) -> AucData:
    """The exact one-vs-rest data of a multiclass chunk: softmax(x / T) of the counted rows,
    their one-hot targets and weights."""
    from ._post import softmax
    x2 = np.moveaxis(p.x, p.ax, -1).reshape(-1, p.c)
    t2 = ti.reshape(-1)
    keep = t2 != s.ignore_index
    x2, t2 = x2[keep], t2[keep]
    z = x2 if s.temperature == 1.0 else np.asarray(x2, np.float64) / s.temperature
    prob = np.asarray(softmax(z, axis=-1, dtype=np.float64), dtype=np.float64)
    onehot = t2[:, None] == np.arange(p.c)[None, :]
    w = [np.ones(int(keep.sum()))] if wc is None else [wc.reshape(-1)[keep].copy()]
    return AucData([prob], [onehot], w)


# --------------------------------------------------------------------------- the pass

def _chunk_lead(p: Problem, chunk_rows: Optional[int]) -> int:
    """Lead-axis indices per chunk: about ``chunk_rows`` rows (default: _pages.CHUNK_BYTES of logits)."""
    lead_len = p.x.shape[p.lead]
    per_lead = max(p.n_rows // lead_len if lead_len else 1, 1)
    if chunk_rows is None:
        chunk_rows = rows_per_chunk(p.c * p.x.itemsize)
    return -(-int(chunk_rows) // per_lead)


def _chunk(p: Problem, lo: int, hi: int) -> Problem:
    """The rows of lead-axis indices [lo, hi) as a problem of their own (views)."""
    t_lead = p.lead if p.task == "multilabel" else 0
    x = _lead_slice(p.x, p.lead, lo, hi)
    w = None if p.w is None else _lead_slice(p.w, 0, lo, hi)
    return Problem(p.task, x, p.ax, _lead_slice(p.t, t_lead, lo, hi), w, x.shape[:p.ax] + x.shape[p.ax + 1:])


def _chunks(p: Problem, chunk_rows: Optional[int], progress: Any
            ) -> Iterator[Tuple[Problem, Tuple[int, ...], int, int]]:
    """The chunks of one streaming pass (at least one, maybe empty): (chunk, its origin in the
    target, lo, hi along the lead axis); each chunk's pages are released once it is done."""
    n, lead_len = p.n_rows, p.x.shape[p.lead]
    t_lead = p.lead if p.task == "multilabel" else 0
    step = _chunk_lead(p, chunk_rows)
    releasers = [PageReleaser(a) for a in (p.x, p.t, p.w) if a is not None]
    update, close = progress_reporter(progress, n)
    try:
        for lo in range(0, max(lead_len, 1), step):
            hi = min(lo + step, lead_len)
            c = _chunk(p, lo, hi)
            yield c, tuple(lo if d == t_lead else 0 for d in range(p.t.ndim)), lo, hi
            for r, a in zip(releasers, (c.x, c.t, c.w)):
                r.release(cast(np.ndarray, a))  # c.w is None only when p.w is, which has no releaser
            update(hi * (n // lead_len) if lead_len else n)
    finally:
        close()


def _pass(p: Problem, s: Spec, chunk_rows: Optional[int], progress: Any) -> ScoreState:
    """One streaming pass over all rows, chunk by chunk, merging the chunks' states."""
    state = ScoreState.empty(s)
    for c, origin, _, _ in _chunks(p, chunk_rows, progress):
        state = state.merge(partial(c, s, origin))
    return state


def _ratio(a: float, b: float) -> float:
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.float64(a) / np.float64(b))


def finish(p: Problem, s: Spec, state: ScoreState) -> Dict[str, Any]:
    """The metrics of ``s.names`` from the merged state of all rows."""
    v = _rsum.value(state.sums)
    out: Dict[str, Any] = {}
    cm_names = [m for m in s.names if m in _CM_METRICS]
    if cm_names:
        cm = _perclass.confusion(state.cm, state.cmw, p.c)
        out.update(_perclass.from_confusion(cm, cm_names))
    for m in s.names:
        if m == "count":
            out[m] = state.n_rows
        elif m in _METRIC_SUM:
            out[m] = _ratio(v[_METRIC_SUM[m]], v[_W])
        elif m == "perplexity":
            with np.errstate(over="ignore"):
                out[m] = float(np.exp(_ratio(v[_NLL], v[_W])))
        elif m == "f1":
            out[m] = _ratio(2.0 * v[_TP], v[_PP] + v[_AP]) if v[_PP] + v[_AP] > 0 else 0.0
        elif m in ("precision", "recall"):
            den = v[_PP] if m == "precision" else v[_AP]
            out[m] = _ratio(v[_TP], den) if den > 0 else 0.0
        elif m == "classwise_ece":
            out[m] = _perclass.classwise_ece(cast(np.ndarray, state.pc), s.bins, v[_W])
        elif m in _RANK_METRICS:
            out[m] = _rank_metric(p, s, state, m)
        elif m == "ece":
            _, correct, conf = np.split(v[_NSUMS:], 3)
            out[m] = _ratio(_rsum.value(_rsum.of(np.abs(correct - conf))), v[_W])
    return {m: out[m] for m in s.names}


def _rank_metric(p: Problem, s: Spec, state: ScoreState, m: str) -> float:
    """roc_auc / average_precision (binary, multilabel macro) and their one-vs-rest forms."""
    name = "roc_auc" if m.startswith("roc_auc") else "average_precision"
    if not s.auc_bins:
        # not None: the state keeps the scores whenever a ranking metric is asked for, exactly
        return cast(AucData, state.auc).metric(p.task, p.c, name)
    pcs = cast(np.ndarray, state.pc)
    off = 3 * s.bins if s.per_class & PC_ECE else 0
    hist = pcs[:, off:off + 2 * (s.auc_bins + 1)]
    vals = _perclass.binned_auc(hist) if name == "roc_auc" else _perclass.binned_ap(hist)
    return float(vals[0]) if p.task == "binary" else _perclass.macro(vals)


# --------------------------------------------------------------------------- public

def score(logits: Any, target: Any, *, task: Optional[str] = None, axis: int = -1, metrics: Any = None,
          k: int = 5, bins: int = 15, sample_weight: Any = None, temperature: float = 1.0,
          chunk_rows: Optional[int] = None, progress: Any = None, ignore_index: int = -100,
          num_classes: Optional[int] = None, per_class: bool = False, auc_bins: Optional[int] = None,
          group: Any = None) -> Dict[str, Any]:
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
        Rows per chunk (default: about 32 MiB of logits; rounded up to whole indices of the
        first axis that is not the class axis). The result is bitwise the same for every
        value: the sums are order-independent (csrc/fl_rsum.h).
    progress : callable or True, optional
        ``progress(rows_done, rows_total)`` after each chunk, or True for a tqdm bar on stderr
        (without tqdm installed, a plain progress line on stderr).
    ignore_index, num_classes, per_class, auc_bins
        As in :class:`fastlogits.Scorer`: multiclass rows whose target is ``ignore_index``
        count in no metric; the per-class block; binned ranking metrics.
    group : array_like of int, optional
        One group value per row (the target's row shape): the result gains
        ``"groups": {value: metrics}`` for every value with a counted row.

    The result is exactly what one :class:`fastlogits.Scorer` fed with the same rows returns
    (``score`` is one Scorer updated with the file's chunks).

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
    float64, order-independent (bitwise the same for every ``chunk_rows``, thread count and
    Dask chunking); a metric over zero total weight is NaN; NaN logits give NaN metrics.

    Examples
    --------
    >>> import numpy as np, fastlogits as fl
    >>> logits = np.array([[2.0, 0.5, -1.0], [0.1, 1.5, 0.3], [0.2, 0.1, 3.0]], np.float32)
    >>> r = fl.score(logits, np.array([0, 2, 2]), k=2)
    >>> r["count"], round(r["accuracy"], 4), round(r["top_k_accuracy"], 4)
    (3, 0.6667, 1.0)
    """
    from ._scorer import Scorer, check_group
    scorer = Scorer(task, num_classes=num_classes, metrics=metrics, k=k, bins=bins, axis=axis,
                    ignore_index=ignore_index, temperature=temperature, per_class=per_class, auc_bins=auc_bins)
    p = check(logits, target, task, axis, sample_weight)
    _check_scalar_args(bins, temperature, chunk_rows)
    g = None if group is None else check_group(group, p.row_shape)
    for c, origin, lo, hi in _chunks(p, chunk_rows, progress):
        scorer._update_problem(c, origin, None if g is None else _lead_slice(g, 0, lo, hi))
    return scorer.compute()
