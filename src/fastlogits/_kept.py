"""Scoring passes over the rows whose target is not ``ignore_index`` (calibration_curve and
fit_temperature; API section 7).

A chunk whose target holds ``ignore_index`` is scored through a copy of its kept rows (the
other rows are never read, so their logits may be anything, NaN padding included); a chunk
without ignored rows is scored in place. The targets are checked before the rows are
dropped, so an error names the bad target's position in the whole array. Chunks are cut and
their memmap pages released as in ``score``'s pass (``_score``), so the memory stays at about
one chunk, and the states merge into the same order-independent sums whatever the chunking.
"""
from __future__ import annotations

from typing import Optional, Sequence, cast

import numpy as np

from . import _score, _score_check, _score_state
from ._pages import PageReleaser
from ._score_check import Problem, Spec
from ._score_state import ScoreState

# targets that hold one value per row (multilabel targets are 0/1 per element)
_ROW_TASKS = ("multiclass", "binary")


def kept(c: Problem, ignore_index: int, origin: Sequence[int] = ()) -> Problem:
    """The rows of chunk ``c`` whose target is not ``ignore_index`` (``c`` itself when none is
    ignored, else a 2-D copy of the kept rows), their targets checked."""
    if c.task not in _ROW_TASKS:
        return c
    keep = np.asarray(c.t != ignore_index)
    if keep.all():
        return c
    filled = np.where(keep, c.t, 0)
    if c.task == "multiclass":
        t = _score_check._class_indices(filled, c.c, origin)
    else:
        t = _score_check._binary_labels(filled, origin)
    x = np.moveaxis(c.x, c.ax, -1)[keep]
    w = None if c.w is None else np.asarray(c.w)[keep]
    return Problem(c.task, x, 1, t[keep], w, (x.shape[0],))


def partial(c: Problem, s: Spec, ignore_index: int, origin: Sequence[int] = ()) -> ScoreState:
    """The state of the kept rows of chunk ``c`` (``count`` included: the kept rows)."""
    k = kept(c, ignore_index, origin)
    return _score_state.partial(k, s, origin if k is c else ())


def run(p: Problem, s: Spec, ignore_index: int, chunk_rows: Optional[int] = None) -> ScoreState:
    """One streaming pass over the kept rows of ``p``, chunk by chunk."""
    state = ScoreState.empty(s)
    lead_len = p.x.shape[p.lead]
    t_lead = p.lead if p.task == "multilabel" else 0
    step = _score._chunk_lead(p, chunk_rows)
    releasers = [PageReleaser(a) for a in (p.x, p.t, p.w) if a is not None]
    for lo in range(0, lead_len, step):
        c = _score._chunk(p, lo, min(lo + step, lead_len))
        origin = tuple(lo if d == t_lead else 0 for d in range(p.t.ndim))
        state = state.merge(partial(c, s, ignore_index, origin))
        for r, a in zip(releasers, (c.x, c.t, c.w)):
            r.release(cast(np.ndarray, a))
    return state
