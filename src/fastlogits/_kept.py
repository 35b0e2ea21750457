"""Scoring passes over the rows whose target is not ``ignore_index`` (calibration_curve and
fit_temperature; API section 7).

Multiclass rows are skipped by the scoring kernel itself (``Spec.ignore_index``): their logits
are never read, so they may be anything, NaN padding included. The kernel's binary (sigmoid)
mode reads a 0/1 label per logit and has no ignore_index, so a binary chunk holding ignored
rows is scored through a copy of its kept rows (one logit each); a chunk without any is scored
in place. Multilabel targets are 0/1 per element and keep every one. Chunks are cut, and their
memmap pages released, by ``score``'s pass (``_score._chunks``), and every chunk is added in
place to one state of order-independent sums, so the result does not depend on the chunking.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from . import _score, _score_check, _score_state
from ._score_check import Problem, Spec
from ._score_state import ScoreState


def kept(c: Problem, ignore_index: int, origin: Sequence[int] = ()) -> Problem:
    """Chunk ``c`` without its binary rows whose label is ``ignore_index``: ``c`` itself unless
    it is binary and holds one, else a 2-D copy of the kept rows, their labels checked (an
    error names the position in the whole target)."""
    if c.task != "binary":
        return c
    keep = np.asarray(c.t != ignore_index)
    if keep.all():
        return c
    t = _score_check._binary_labels(np.where(keep, c.t, 0), origin)
    x = np.moveaxis(c.x, c.ax, -1)[keep]
    w = None if c.w is None else np.asarray(c.w)[keep]
    return Problem(c.task, x, 1, t[keep], w, (x.shape[0],))


def partial(c: Problem, s: Spec, origin: Sequence[int] = (), into: Optional[ScoreState] = None) -> ScoreState:
    """The state of the kept rows of chunk ``c`` (``count`` included: the kept rows), added to
    ``into`` in place when given, as :func:`_score_state.partial`."""
    k = kept(c, s.ignore_index, origin)
    return _score_state.partial(k, s, origin if k is c else (), into)


def run(p: Problem, s: Spec, chunk_rows: Optional[int] = None) -> ScoreState:
    """One streaming pass over the kept rows of ``p`` (``s.ignore_index``), chunk by chunk."""
    state = ScoreState.empty(s)
    for c, origin, _, _ in _score._chunks(p, chunk_rows, None):
        partial(c, s, origin, into=state)
    return state
