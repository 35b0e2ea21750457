"""The state of a scoring (``ScoreState``: order-independent sums, counts and the kept scores
of the exact ranking metrics) and the kernel pass that adds a chunk's rows to it (``partial``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from . import _core, _rsum
from ._auc import AucData
from ._layout import make_grid, with_axis
from ._score_check import (_SOFTMAX, PC_CONFUSION, PC_ECE, Problem, Spec, _binary_labels, _class_indices,
                           kept_elements)


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
    pc: Optional[np.ndarray] = None   # per-class states (C, spec.npc, WORDS) ...
    # ... and the exact sums of the unweighted rows not yet in them (fl_score_opts.pcn, pcf):
    # the kernel adds integers there, cheaper than deposits into pc's states at every call;
    # ``fold`` moves them into pc before pc is read
    pcn: Optional[np.ndarray] = None  # (C, spec.npc) int64
    pcf: Optional[np.ndarray] = None  # (C, spec.bins or 0, 2) uint64: 128-bit sums (low, high)

    @classmethod
    def empty(cls, s: Spec) -> "ScoreState":
        cm = np.zeros((s.c, s.c), np.int64) if s.per_class & PC_CONFUSION else None
        if not s.npc:
            return cls(_rsum.empty(s.nsums), 0, AucData() if s.want_auc else None, cm)
        pcn = np.zeros((s.c, s.npc), np.int64)
        pcf = np.zeros((s.c, s.bins if s.per_class & PC_ECE else 0, 2), np.uint64)
        return cls(_rsum.empty(s.nsums), 0, AucData() if s.want_auc else None, cm, None,
                   _rsum.empty((s.c, s.npc)), pcn, pcf)

    def copy(self) -> "ScoreState":
        """A state owning its arrays (safe to add rows to in place)."""
        def own(a: Optional[np.ndarray]) -> Optional[np.ndarray]:
            return None if a is None else a.copy()
        auc = None if self.auc is None else self.auc.copy()
        return ScoreState(self.sums.copy(), self.n_rows, auc, own(self.cm), own(self.cmw), own(self.pc),
                          own(self.pcn), own(self.pcf))

    def fold(self, s: Spec) -> None:
        """Move the exact per-class sums into the per-class states (in place: the same rows)."""
        if self.pc is not None and self.pcn is not None and self.pcf is not None:
            _core.score_pc_fold(s.per_class, s.bins, s.auc_bins, self.pc, self.pcn, self.pcf)

    def add(self, other: "ScoreState") -> None:
        """Add the rows of ``other`` (a state of the same spec) to this one, in place; ``other``
        is left as it was and shares nothing with this state."""
        if self.auc is not None and other.auc is not None:
            self.auc.merge_from(other.auc)
        if self.cm is not None and other.cm is not None:
            self.cm += other.cm
        if other.cmw is not None:
            self.cmw = other.cmw.copy() if self.cmw is None else _rsum.merge(self.cmw, other.cmw)
        if self.pc is not None and other.pc is not None:
            self.pc = _rsum.merge(self.pc, other.pc)
        if self.pcn is not None and other.pcn is not None and self.pcf is not None and other.pcf is not None:
            self.pcn += other.pcn
            lo = self.pcf[..., 0] + other.pcf[..., 0]   # 128-bit sums: the low words wrap ...
            self.pcf[..., 1] += other.pcf[..., 1] + (lo < other.pcf[..., 0])  # ... and carry
            self.pcf[..., 0] = lo
        self.sums = _rsum.merge(self.sums, other.sums)
        self.n_rows += other.n_rows

    def merge(self, other: "ScoreState") -> "ScoreState":
        """A new state of the rows of both (neither is changed)."""
        merged = self.copy()
        merged.add(other)
        return merged


def partial_check(p: Problem, s: Spec, origin: Sequence[int] = ()) -> None:
    """Check the targets of ``p`` as :func:`partial` does, without scoring."""
    if p.mode == _SOFTMAX:
        _class_indices(p.t, p.c, origin, s.ignore_index)
    else:
        _binary_labels(p.t, origin, s.ignore_index)


def partial(p: Problem, s: Spec, origin: Sequence[int] = (), into: Optional[ScoreState] = None) -> ScoreState:
    """The state of the rows of ``p`` (a chunk of them); an error for a bad target names its
    position in the whole target when ``origin`` gives the chunk's first index there. With
    ``into`` (a state of ``s`` owned by the caller) the rows are added to it in place and it
    is returned: the kernel merges its sums only once it has succeeded, and everything is
    checked before, so an error leaves ``into`` as it was."""
    n_rows = p.n_rows
    keep: Optional[np.ndarray] = None  # binary, multilabel: the elements scored (None: all)
    if p.mode == _SOFTMAX:
        ti = _class_indices(p.t, p.c, origin, s.ignore_index)
        n_rows = p.n_rows - int(np.count_nonzero(ti == s.ignore_index))
        tk = with_axis(ti, p.ax)
    else:
        tb = _binary_labels(p.t, origin, s.ignore_index)
        tk = tb if p.task == "multilabel" else with_axis(tb, p.ax)
        keep = kept_elements(tk)
        if keep is not None:
            # binary: the rows not ignored; multilabel: the rows with an element not ignored
            n_rows = int(np.count_nonzero(keep.any(axis=p.ax)))
    wc = None if p.w is None else np.require(p.w, np.float64, ["C", "A"])
    state = ScoreState.empty(s) if into is None else into
    if wc is not None and s.per_class & PC_CONFUSION and state.cmw is None:
        state.cmw = _rsum.empty((s.c, s.c))
    if p.x.size:
        ops = [p.x, tk] + ([] if wc is None else [with_axis(wc, p.ax)])
        g = make_grid(ops, p.ax, p.c)
        _core.score(g.specs[0], g.specs[1], None if wc is None else g.specs[2], g.grid, p.mode,
                    s.want_rank, s.k, s.bins, s.temperature, s.sums, state.sums, s.ignore_index,
                    s.per_class, s.auc_bins, state.cm, state.cmw, state.pc, state.pcn, state.pcf)
    state.n_rows += n_rows
    if state.auc is not None and p.mode == _SOFTMAX:
        _add_ovr(state.auc, p, ti, wc, s)
    elif state.auc is not None:
        state.auc.add_logits(p.x, tk if keep is None else tk == 1, wc, p.ax, keep)
    return state


def _add_ovr(auc: AucData, p: Problem, ti: np.ndarray, wc: Optional[np.ndarray], s: Spec) -> None:
    """Append the exact one-vs-rest data of a multiclass chunk to ``auc``: softmax(x / T) of the
    counted rows, their one-hot targets and weights."""
    from ._post import softmax
    x2 = np.moveaxis(p.x, p.ax, -1).reshape(-1, p.c)
    t2 = ti.reshape(-1)
    keep = t2 != s.ignore_index
    x2, t2 = x2[keep], t2[keep]
    z = x2 if s.temperature == 1.0 else np.asarray(x2, np.float64) / s.temperature
    prob = np.asarray(softmax(z, axis=-1, dtype=np.float64), dtype=np.float64)
    onehot = t2[:, None] == np.arange(p.c)[None, :]
    auc.add(prob, onehot, None if wc is None else wc.reshape(-1)[keep])
