"""``fl.Scorer`` (API section 7): the streaming, mergeable, reproducible state of ``score``.

A Scorer holds the merged ``ScoreState`` (``_score_state.py``) of every row it was given: sums in
order-independent states (csrc/fl_rsum.h), exact counts, and for the exact ranking metrics the
kept scores. So ``compute()`` is bitwise the same for every split of the rows into ``update``
calls, every order of ``merge``, every thread count and every Dask chunking. With ``group=``
it keeps one state per group value, and the overall result is the merge of those.

``update`` checks everything (arrays, targets, groups, the configuration) and computes the new
rows' states before it changes anything, so a rejected update leaves the Scorer as it was.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import _rsum, _score_check, _score_finish, _score_state
from ._auc import AucData
from ._input import as_array, is_bfloat16
from ._score_check import Problem, Spec
from ._score_state import ScoreState

_FORMAT = "fastlogits.Scorer"
_VERSION = 2   # 2: the kept flags of the exact ranking metrics' elements (ignore_index); reads 1 too
_READS = (1, 2)


def _check_config(task: Any, num_classes: Any, metrics: Any, k: Any, bins: Any, axis: Any, ignore_index: Any,
                  temperature: Any, per_class: Any, auc_bins: Any) -> Dict[str, Any]:
    """The constructor's arguments, checked and normalised (comparable with ==)."""
    if task is not None and task not in _score_check.TASKS:
        raise ValueError(f"task: expected 'multiclass', 'binary', 'multilabel' or None, got {task!r}")
    if num_classes is not None:
        if isinstance(num_classes, (bool, np.bool_)) or not isinstance(num_classes, (int, np.integer)) \
                or num_classes < 1:
            raise ValueError(f"num_classes: expected None or an int >= 1, got {num_classes!r}")
        if task == "binary":
            raise ValueError("num_classes: the binary task has no class axis; leave num_classes None")
        num_classes = int(num_classes)
    if metrics is not None:
        names = [m.strip() for m in metrics.split(",") if m.strip()] if isinstance(metrics, str) else list(metrics)
        for m in names:
            if m not in _score_check.ALL_METRICS:
                raise ValueError(f"metrics: unknown metric {m!r}; valid names are {', '.join(_score_check.ALL_METRICS)}")
        metrics = tuple(dict.fromkeys(names))
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k: expected an int, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k: expected an int >= 1, got {k!r}")
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis: expected an int, got {type(axis).__name__}")
    nbins, temp = _score_check._check_scalar_args(bins, temperature, None)
    if not isinstance(per_class, (bool, np.bool_)):
        raise TypeError(f"per_class: expected a bool, got {type(per_class).__name__}")
    return {"task": task, "num_classes": num_classes, "metrics": metrics, "k": int(k), "bins": nbins,
            "axis": int(axis), "ignore_index": _score_check.check_ignore_index(ignore_index), "temperature": temp,
            "per_class": bool(per_class), "auc_bins": None if auc_bins is None else _score_check.check_auc_bins(auc_bins)}


def _probe(task: str, c: int) -> Problem:
    """A problem without rows standing for the task and class count (what finish needs)."""
    return Problem(task, np.zeros((0, c), np.float32), 1, np.zeros(0, np.int64), None, (0,))


class Scorer:
    """The streaming state of :func:`fastlogits.score`: feed rows with :meth:`update` (any
    number of times), combine Scorers with :meth:`merge`, read the metrics with
    :meth:`compute`.

    Parameters are those of :func:`fastlogits.score` (``task``, ``metrics``, ``k``, ``bins``,
    ``axis``, ``temperature``), plus:

    num_classes : int, optional
        The length of the class axis (multiclass, multilabel); inferred from the first update
        when None. Every update must then agree (``ValueError``).
    ignore_index : int, default -100
        A target equal to it counts in no metric, as in ``cross_entropy``: a multiclass or
        binary row is left out of every metric (``count`` excludes it); a multilabel element
        (one label of one row) is left out of every metric it feeds (the pooled sums, its
        label's ``roc_auc`` and ``average_precision``), and ``count`` is the number of rows
        with at least one element left. An ignored row or element weighs nothing; its logits
        may hold anything (NaN padding included). Binary and multilabel targets must otherwise
        be 0 or 1 (``ValueError`` naming the value and its position). With language-model
        logits ``(B, T, V)`` (``axis=-1``) or ``(B, V, T)`` (``axis=1``) every position is a row.
    per_class : bool, default False
        Adds the multiclass per-class block: ``confusion_matrix`` (C, C) (rows true class,
        columns predicted, entries summed weight), ``per_class`` (dict of (C,) arrays
        ``precision``, ``recall``, ``f1``, ``support``; 0 where a denominator is 0),
        ``macro_f1`` (over the classes with weight in the targets or the predictions),
        ``weighted_f1``, ``micro_f1``, ``balanced_accuracy`` (macro recall over classes with
        support) and ``classwise_ece`` (mean over the C classes of the ECE of ``p_c`` against
        ``y == c``).
    auc_bins : int, optional
        None: ``roc_auc``, ``average_precision`` and their ``_ovr`` forms are exact (the
        scores are kept: memory grows with the rows). B >= 2: B thresholds ``j/(B-1)`` per
        class, a score positive when ``p >= t_j`` (torchmetrics' ``thresholds=B``), constant
        memory.

    ``task`` and ``num_classes`` are inferred from the first update when None, then fixed.
    ``compute()`` is bitwise the same for every split of the rows into updates, every order
    of merging, every thread count. ``update(..., group=g)`` (an integer array of the row
    shape, on every update or on none) adds ``"groups": {value: metrics}`` to the result.

    Examples
    --------
    >>> import numpy as np, fastlogits as fl
    >>> x = np.array([[2.0, 0.5, -1.0], [0.1, 1.5, 0.3], [0.2, 0.1, 3.0]], np.float32)
    >>> s = fl.Scorer(metrics=["count", "accuracy"])
    >>> s.update(x[:2], [0, 2]); s.update(x[2:], [2])
    >>> s.compute()
    {'count': 3, 'accuracy': 0.6666666666666666}
    """

    def __init__(self, task: Optional[str] = None, *, num_classes: Optional[int] = None, metrics: Any = None,
                 k: int = 5, bins: int = 15, axis: int = -1, ignore_index: int = -100, temperature: float = 1.0,
                 per_class: bool = False, auc_bins: Optional[int] = None):
        self._config = _check_config(task, num_classes, metrics, k, bins, axis, ignore_index, temperature,
                                     per_class, auc_bins)
        self.reset()

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Forget every row and whatever was inferred (task, class count, grouping)."""
        self._task: Optional[str] = self._config["task"]
        self._c: Optional[int] = self._config["num_classes"]
        self._spec: Optional[Spec] = None
        self._state: Optional[ScoreState] = None
        self._groups: Optional[Dict[int, ScoreState]] = None   # None: not grouped (or not known yet)
        self._grouped: Optional[bool] = None

    @property
    def task(self) -> Optional[str]:
        """The task, given or inferred (None before the first update when not given)."""
        return self._task

    @property
    def num_classes(self) -> Optional[int]:
        """The class count, given or inferred (None for binary, or before the first update)."""
        return self._c

    def _make_spec(self, p: Problem) -> Spec:
        cfg = self._config
        return _score_check.spec(p, cfg["metrics"], cfg["k"], cfg["bins"], cfg["temperature"], per_class=cfg["per_class"],
                           auc_bins=cfg["auc_bins"], ignore_index=cfg["ignore_index"])

    # ------------------------------------------------------------------ update

    def update(self, logits: Any, target: Any, *, sample_weight: Any = None, group: Any = None) -> None:
        """Add rows (arguments as in :func:`fastlogits.score`; ``group`` an integer array of
        the target's row shape). A rejected update leaves the Scorer unchanged."""
        p = _score_check.check(logits, target, self._task, self._config["axis"], sample_weight)
        self._update_problem(p, (), group)

    def _update_problem(self, p: Problem, origin: Sequence[int], group: Any) -> None:
        """Add the rows of a checked problem (a chunk: ``origin`` its first index in the
        whole target, for error positions)."""
        c = None if p.task == "binary" else p.c
        if self._c is not None and c is not None and c != self._c:
            raise ValueError(f"logits: expected {self._c} classes (num_classes, or the first update), got {c}")
        if p.task == "binary" and self._config["num_classes"] is not None:
            raise ValueError("num_classes: the binary task has no class axis; leave num_classes None")
        grouped = group is not None
        if self._grouped is not None and grouped != self._grouped:
            raise ValueError("group: give group= on every update or on none "
                             f"(the Scorer's first update was {'grouped' if self._grouped else 'not grouped'})")
        spec = self._spec if self._spec is not None else self._make_spec(p)
        if grouped:
            g = check_group(group, p.row_shape)
            _score_state.partial_check(p, spec, origin)
            new_groups = {key: _score_state.partial(sub, spec) for key, sub in _split(p, g)}
            # every group's rows are scored: nothing can fail from here on
            groups = self._groups if self._groups is not None else {}
            for key, st in new_groups.items():
                if key in groups:
                    groups[key].add(st)
                else:
                    groups[key] = st
            self._groups = groups
        else:
            # in place: partial checks everything first and the kernel merges only on success
            self._state = _score_state.partial(p, spec, origin, into=self._state)
        self._task, self._c, self._spec, self._grouped = p.task, c, spec, grouped

    # ------------------------------------------------------------------ merge

    def merge(self, other: "Scorer") -> "Scorer":
        """Add the rows of ``other`` (same configuration, else ``ValueError``); returns self."""
        if not isinstance(other, Scorer):
            raise TypeError(f"other: expected a fastlogits.Scorer, got {type(other).__name__}")
        if other._config != self._config:
            diff = [key for key in self._config if self._config[key] != other._config[key]]
            raise ValueError(f"other: the Scorers' configurations differ in {', '.join(diff)}")
        for name, a, b in (("task", self._task, other._task), ("num_classes", self._c, other._c),
                           ("grouping", self._grouped, other._grouped)):
            if a is not None and b is not None and a != b and other._spec is not None and self._spec is not None:
                raise ValueError(f"other: the Scorers' {name} differ ({a!r} and {b!r})")
        if other._spec is None:
            return self
        if self._spec is None:
            self._task, self._c, self._spec, self._grouped = other._task, other._c, other._spec, other._grouped
        if other._state is not None:
            if self._state is None:
                self._state = other._state.copy()
            else:
                self._state.add(other._state)
        if other._groups is not None:
            groups = self._groups if self._groups is not None else {}
            for key, st in other._groups.items():
                if key in groups:
                    groups[key].add(st)
                else:
                    groups[key] = st.copy()
            self._groups = groups
        return self

    # ------------------------------------------------------------------ compute

    def _merged(self) -> Optional[ScoreState]:
        """The state of every row (grouped: the merge of the groups' states, in key order)."""
        if self._spec is None:
            return None
        if not self._groups:
            return self._state if self._state is not None else ScoreState.empty(self._spec)
        state = self._state.copy() if self._state is not None else ScoreState.empty(self._spec)
        for key in sorted(self._groups):
            state.add(self._groups[key])
        return state

    def compute(self) -> Dict[str, Any]:
        """The metrics of every row so far (the Scorer is not reset). Before any update:
        ``count`` 0 and NaN metrics (when the task is known)."""
        if self._spec is None:
            return self._empty_result()
        spec, probe = self._spec, _probe(self._task or "multiclass", self._spec.c)
        out = _score_finish.finish(probe, spec, self._merged() or ScoreState.empty(spec))
        if self._grouped:
            out["groups"] = {key: _score_finish.finish(probe, spec, st) for key, st in sorted((self._groups or {}).items())
                             if st.n_rows > 0}
        return out

    def _empty_result(self) -> Dict[str, Any]:
        task = self._task
        if task is None or (task != "binary" and self._c is None):
            return {"count": 0}
        c = 1 if task == "binary" else int(self._c or 1)
        spec = self._make_spec(_probe(task, c))
        return _score_finish.finish(_probe(task, c), spec, ScoreState.empty(spec))

    # ------------------------------------------------------------------ state dict

    def state_dict(self) -> Dict[str, Any]:
        """The Scorer as a dict of Python and NumPy values (picklable; see from_state_dict)."""
        return {
            "format": _FORMAT, "version": _VERSION, "config": dict(self._config),
            "task": self._task, "num_classes": self._c, "grouped": self._grouped,
            "initialised": self._spec is not None,
            "state": None if self._state is None else _encode(self._state, self._spec),
            "groups": None if self._groups is None else {int(key): _encode(st, self._spec)
                                                         for key, st in self._groups.items()},
        }

    @classmethod
    def from_state_dict(cls, d: Dict[str, Any]) -> "Scorer":
        """A Scorer from :meth:`state_dict`'s dict, checked (``ValueError`` if it is not one)."""
        if not isinstance(d, dict) or d.get("format") != _FORMAT:
            raise ValueError("state_dict: expected a dict made by fastlogits.Scorer.state_dict()")
        if d.get("version") not in _READS:
            raise ValueError(f"state_dict: unsupported version {d.get('version')!r} (expected one of {_READS})")
        try:
            cfg = dict(d["config"])
            s = cls(**cfg)
            if d["initialised"]:
                task, c = d["task"], d["num_classes"]
                if task not in _score_check.TASKS:
                    raise ValueError(f"task {task!r}")
                s._task, s._c = task, None if c is None else int(c)
                s._spec = s._make_spec(_probe(task, 1 if c is None else int(c)))
                s._grouped = bool(d["grouped"])
                s._state = None if d["state"] is None else _decode(d["state"], s._spec)
                if d["groups"] is not None:
                    s._groups = {int(key): _decode(v, s._spec) for key, v in d["groups"].items()}
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"state_dict: not a Scorer state ({type(e).__name__}: {e})") from None
        return s

    def __getstate__(self) -> Dict[str, Any]:
        return self.state_dict()

    def __setstate__(self, d: Dict[str, Any]) -> None:
        self.__dict__.update(Scorer.from_state_dict(d).__dict__)

    def __repr__(self) -> str:
        states = ([] if self._state is None else [self._state]) + list((self._groups or {}).values())
        n = sum(st.n_rows for st in states)
        return f"Scorer(task={self._task!r}, num_classes={self._c!r}, rows={n})"


# --------------------------------------------------------------------------- groups

def check_group(group: Any, row_shape: Tuple[int, ...]) -> np.ndarray:
    g = as_array(group, "group")
    if g.dtype.kind not in "iu":
        raise TypeError(f"group: expected an integer array, got dtype {g.dtype}")
    if g.shape != row_shape:
        raise ValueError(f"group: expected shape {row_shape} (the target's rows), got {g.shape}")
    return g


def _split(p: Problem, g: np.ndarray) -> List[Tuple[int, Problem]]:
    """The rows of ``p`` per group value, as problems of rows (C order), gathered once."""
    x2 = np.moveaxis(p.x, p.ax, -1).reshape(-1, p.c)
    t2 = np.moveaxis(p.t, p.ax, -1).reshape(-1, p.c) if p.task == "multilabel" else p.t.reshape(-1)
    w2 = None if p.w is None else p.w.reshape(-1)
    g2 = g.reshape(-1)
    order = np.argsort(g2, kind="stable")
    gs = g2[order]
    starts = np.flatnonzero(np.concatenate(([True], gs[1:] != gs[:-1]))) if gs.size else np.zeros(0, np.int64)
    bounds = list(starts) + [gs.size]
    out = []
    for i, lo in enumerate(starts):
        idx = order[lo:bounds[i + 1]]
        sub = Problem(p.task, x2[idx], 1, t2[idx], None if w2 is None else w2[idx], (idx.size,))
        out.append((int(gs[lo]), sub))
    return out


# --------------------------------------------------------------------------- (de)serialising

def _encode(st: ScoreState, spec: Optional[Spec]) -> Dict[str, Any]:
    st = st.copy()  # a snapshot: the Scorer adds rows to its arrays in place
    if spec is not None:
        st.fold(spec)  # the exact per-class sums into the states: the format has those alone
    d: Dict[str, Any] = {"sums": st.sums, "n_rows": int(st.n_rows), "cm": st.cm, "cmw": st.cmw, "pc": st.pc,
                         "auc": None}
    if st.auc is not None:
        s, y, w, k = st.auc.arrays(spec.c if spec is not None else 1)
        d["auc"] = {"scores": s, "labels": y, "weights": w, "kept": k}
    return d


def _states(a: Any, shape: Tuple[int, ...], name: str) -> np.ndarray:
    arr = _rsum.check(a, name)
    if arr.shape != shape + (_rsum.WORDS,):
        raise ValueError(f"{name}: expected shape {shape + (_rsum.WORDS,)}, got {arr.shape}")
    return arr.copy()


def _decode(d: Dict[str, Any], spec: Spec) -> ScoreState:
    n_rows = d["n_rows"]
    if isinstance(n_rows, bool) or not isinstance(n_rows, (int, np.integer)) or n_rows < 0:
        raise ValueError(f"state_dict: n_rows: expected an int >= 0, got {n_rows!r}")
    st = ScoreState(_states(d["sums"], (spec.nsums,), "state_dict: sums"), int(n_rows))
    empty = ScoreState.empty(spec)
    if (d["cm"] is None) != (empty.cm is None) or (d["pc"] is None) != (empty.pc is None) or \
            (d["auc"] is None) != (empty.auc is None):
        raise ValueError("state_dict: the state's parts do not match its configuration")
    if d["cm"] is not None:
        cm = np.asarray(d["cm"])
        if cm.dtype != np.int64 or cm.shape != (spec.c, spec.c) or (cm < 0).any():
            raise ValueError(f"state_dict: cm: expected ({spec.c}, {spec.c}) int64 counts >= 0")
        st.cm = cm.copy()
    if d["cmw"] is not None:
        st.cmw = _states(d["cmw"], (spec.c, spec.c), "state_dict: cmw")
    if d["pc"] is not None:
        st.pc = _states(d["pc"], (spec.c, spec.npc), "state_dict: pc")
        st.pcn, st.pcf = empty.pcn, empty.pcf
    if d["auc"] is not None:
        st.auc = _decode_auc(d["auc"], spec)
    return st


def _decode_auc(a: Dict[str, Any], spec: Spec) -> AucData:
    s, y, w, k = np.asarray(a["scores"]), np.asarray(a["labels"]), a["weights"], a.get("kept")
    floats = s.dtype.kind == "f" or is_bfloat16(s.dtype)  # the scores are kept in the logits' dtype
    if s.ndim != 2 or s.shape[1] != spec.c or not floats or y.shape != s.shape or y.dtype != bool:
        raise ValueError("state_dict: auc: expected (rows, C) float scores and bool labels")
    if w is not None:
        w = np.asarray(w, dtype=np.float64)
        if w.shape != (s.shape[0],):
            raise ValueError("state_dict: auc: expected one weight per kept row")
    if k is not None:
        k = np.asarray(k)
        if k.shape != s.shape or k.dtype != bool:
            raise ValueError("state_dict: auc: expected (rows, C) bool kept flags")
    return AucData.of_arrays(s, y, w, k)


def nan_to_none(v: Any) -> Any:
    """A result with NaN and +-inf as None and arrays as lists (strict JSON)."""
    if isinstance(v, dict):
        return {str(key): nan_to_none(x) for key, x in v.items()}
    if isinstance(v, np.ndarray):
        return nan_to_none(v.tolist())
    if isinstance(v, (list, tuple)):
        return [nan_to_none(x) for x in v]
    if isinstance(v, (float, np.floating)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v
