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
- ``roc_auc`` needs every score at once (it sorts them): it keeps one score and one label per
  row and label (and a weight per row once a weighted row came), so its memory grows with the
  number of rows (N, or N x L for multilabel), in buffers that grow in place (``_auc``). The
  other metrics use memory independent of N.

The reduction's internal interface, shared by ``score``, the ``Scorer`` (``_scorer``),
``fit_temperature`` (``_temperature``), ``calibration_curve`` and ``fastlogits.dask``, lives in
three rooms: ``_score_check`` (``check``: a call's or a chunk's arrays as a ``Problem``;
``spec``: the options every chunk shares, a ``Spec``), ``_score_state`` (``partial``: a chunk's
rows added to a ``ScoreState``, merged with ``ScoreState.merge`` in any order) and
``_score_finish`` (``finish``: the merged state to the metrics dict). This module cuts the
chunks of a streaming pass (``run``: one pass into one state, for ``fit_temperature`` and
``calibration_curve``) and holds the public ``score``.

The targets equal to ``ignore_index`` count nowhere: the kernel skips a multiclass row whose
class index is it (its logits are not read, NaN padding included) and a binary or multilabel
element marked ignored by the target check (``_score_check._binary_labels``); the row count
and the exact ranking metrics' kept scores leave them out too.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, Optional, Tuple, cast

import numpy as np

from ._pages import PageReleaser, chunk_rows as rows_per_chunk
from ._progress import progress_reporter
from ._score_check import Problem, Spec, _check_scalar_args, check
from ._score_state import ScoreState, partial


def _lead_slice(a: np.ndarray, axis: int, lo: int, hi: int) -> np.ndarray:
    return a[(slice(None),) * axis + (slice(lo, hi),)]


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


def run(p: Problem, s: Spec, chunk_rows: Optional[int] = None) -> ScoreState:
    """One streaming pass over the rows of ``p``, chunk by chunk, into one state of ``s``."""
    state = ScoreState.empty(s)
    for c, origin, _, _ in _chunks(p, chunk_rows, None):
        partial(c, s, origin, into=state)
    return state


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
        one per logit of a length-1 or absent class axis; multilabel: the logits' shape); any
        of them may be ``ignore_index`` instead.
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
        (``count`` stays the number of rows); an ignored row or element weighs nothing.
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
        As in :class:`fastlogits.Scorer`: a target equal to ``ignore_index`` counts in no
        metric (a multiclass or binary row; a multilabel element); the per-class block;
        binned ranking metrics.
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
