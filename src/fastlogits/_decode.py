"""Decoding: token log-probabilities, filtering, sampling and penalties (API section 8).

The kernels (csrc/fl_decode.c, fl_logprobs.c, fl_penalties.c) read each row of logits once,
in place for float16/bfloat16, and find top-k/top-p/min-p thresholds without sorting the
vocabulary. This module checks the arguments, lays every per-row setting and output on the
kernels' row grid and turns their reports into errors.
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

import numpy as np

from . import _core
from ._decode_args import (
    index_array,
    int_setting,
    optional_top,
    real_setting,
    temperature_setting,
    u64_setting,
)
from ._input import as_array, as_logits, check_out, dtype_code, normalize_axis
from ._layout import Grid, Spec, make_grid, with_axis

_Settings = Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _logits(logits: Any, axis: Any, func: str) -> Tuple[np.ndarray, int, Tuple[int, ...]]:
    x = as_logits(logits, "logits")
    if x.ndim == 0:
        raise ValueError(f"{func}: logits must have a class axis, got a 0-d array")
    ax = normalize_axis(axis, x.ndim)
    return x, ax, x.shape[:ax] + x.shape[ax + 1:]


def _nonempty(x: np.ndarray, ax: int, func: str) -> None:
    if x.shape[ax] == 0:
        raise ValueError(f"{func}: the class axis {ax} of logits is empty (shape {x.shape})")


def _settings(x: np.ndarray, ax: int, rows: Tuple[int, ...], temperature: Any, top_k: Any, top_p: Any,
              min_p: Any, min_tokens_to_keep: Any, greedy: bool) -> _Settings:
    c = x.shape[ax]
    return (
        temperature_setting(temperature, rows, x.dtype, greedy),
        optional_top(top_k, rows, c),
        real_setting(1.0 if top_p is None else top_p, "top_p", rows, 0.0, 1.0),
        real_setting(0.0 if min_p is None else min_p, "min_p", rows, 0.0, 1.0),
        int_setting(min_tokens_to_keep, "min_tokens_to_keep", rows, 1),
    )


def _lay(inputs: List[np.ndarray], ax: int, n_classes: int, settings: Tuple[np.ndarray, ...],
         outputs: List[np.ndarray]) -> Tuple[Grid, List[Spec]]:
    """The inputs (logits first), the settings and the outputs on the kernels' row grid: the
    grid and the specs, in this order. A 0-d setting (one value for every row) is read with
    zero strides; the others have the rows shape and join the grid."""
    per_row = [a for a in settings if a.ndim]
    n_in = len(inputs) + len(per_row)
    g = make_grid(inputs + [with_axis(a, ax) for a in per_row] + outputs, ax, n_classes, n_outputs=len(outputs))
    laid = iter(g.specs[len(inputs):n_in])
    specs = [next(laid) if a.ndim else (a, dtype_code(a.dtype), 0, 0, 0) for a in settings]
    return g, g.specs[:len(inputs)] + specs + g.specs[n_in:]


def _scalar_or(a: np.ndarray) -> Any:
    return a[()] if a.ndim == 0 else a


def token_logprobs(logits: Any, tokens: Any, *, axis: int = -1, top_n: int = 0,
                   temperature: Any = 1.0) -> Any:
    """Log-probabilities of chosen tokens, ``log_softmax(logits / temperature)`` at ``tokens``.

    One pass over each row from memory (its max, the rank of the token, the top-n candidates)
    and one over the cached row (its sum of exponentials): the value is the one
    :func:`log_softmax` gives for that element, without the ``(rows, C)`` output. The division
    by the temperature is carried out in float32 (float64 for float64 logits).

    Parameters
    ----------
    logits : array_like
        Logits (float16, bfloat16, float32, float64; integers become float64).
    tokens : array_like of int
        One token id per row: the logits' shape without ``axis``.
    axis : int, default -1
        The class (vocabulary) axis.
    top_n : int, default 0
        With ``top_n > 0`` the ``top_n`` most likely tokens of each row are returned too (as
        OpenAI-style ``logprobs`` responses carry). ``top_n`` at most the number of classes.
    temperature : float or array_like, default 1.0
        ``> 0``; one value, or one per row.

    Returns
    -------
    logprob : ndarray or NumPy scalar
        float64 for float64 logits, float32 otherwise (never rounded to half precision).
    rank, top_logprobs, top_tokens : ndarray
        Only with ``top_n > 0``, as the tuple ``(logprob, rank, top_logprobs, top_tokens)``:
        ``rank`` (int64) is 1 + the number of classes whose tempered logit is strictly greater
        than the token's (every tied maximum has rank 1; NaN compares false);
        ``top_logprobs``/``top_tokens`` have ``top_n`` entries per row on a last axis, sorted
        as :func:`topk` sorts (descending, ties to the lower index, NaN first).

    Raises
    ------
    IndexError
        A token outside ``[0, C)``, naming the first such row.

    Notes
    -----
    A row holding NaN or ``+inf``, or only ``-inf``, has no softmax: its log-probabilities are
    NaN, as :func:`log_softmax` gives.

    Examples
    --------
    >>> import fastlogits as fl
    >>> logits = [[2.0, 1.0, 0.1], [0.5, 2.5, 2.5]]
    >>> fl.token_logprobs(logits, [0, 1]).round(4).tolist()
    [-0.417, -0.7586]
    >>> lp, rank, top_lp, top_tok = fl.token_logprobs(logits, [2, 2], top_n=2)
    >>> rank.tolist(), top_tok.tolist()
    ([3, 1], [[0, 1], [1, 2]])
    """
    x, ax, rows = _logits(logits, axis, "token_logprobs")
    c = x.shape[ax]
    if isinstance(top_n, (bool, np.bool_)) or not isinstance(top_n, (int, np.integer)):
        raise TypeError(f"top_n: expected an int, got {type(top_n).__name__}")
    if not 0 <= top_n <= c:
        raise ValueError(f"top_n: expected 0 <= top_n <= {c} (the number of classes), got {top_n}")
    n = int(top_n)
    tok = index_array(tokens, "tokens", rows, "one token per row: the logits' shape without axis")
    temp = temperature_setting(temperature, rows, x.dtype, greedy=False)
    out_dtype = np.float64 if x.dtype == np.float64 else np.float32
    logprob = np.empty(rows, dtype=out_dtype)
    rank = np.empty(rows, dtype=np.int64) if n else None
    top_lp = np.empty(rows + (n,), dtype=out_dtype)
    top_tok = np.empty(rows + (n,), dtype=np.int64)
    if logprob.size:
        outputs = [with_axis(logprob, ax)]
        if rank is not None:
            outputs += [with_axis(rank, ax), np.moveaxis(top_lp, -1, ax), np.moveaxis(top_tok, -1, ax)]
        g, s = _lay([x], ax, c, (tok, temp), outputs)
        bad = _core.token_logprobs(s[0], s[1], s[2], s[3], s[4] if n else None, s[5] if n else None,
                                   s[6] if n else None, g.grid, n)
        if bad >= 0:
            pos = tuple(int(i) for i in np.unravel_index(bad, rows))
            raise IndexError(f"tokens: token id {int(tok[pos])} at position {pos} is out of range [0, {c})")
        g.finish()
    if rank is None:
        return _scalar_or(logprob)
    return _scalar_or(logprob), _scalar_or(rank), top_lp, top_tok


def filter_logits(logits: Any, *, temperature: Any = 1.0, top_k: Any = None, top_p: Any = None,
                  min_p: Any = None, min_tokens_to_keep: Any = 1, axis: int = -1,
                  out: Optional[np.ndarray] = None) -> np.ndarray:
    """Temperature, top-k, top-p and min-p, in this order (that of ``transformers``' warpers).

    Temperature divides (``x / T``, in float32 for all but float64 logits, as PyTorch does);
    top-k keeps every logit ``>=`` the k-th largest, so ties at the boundary are kept; top-p
    keeps the smallest prefix of the tokens, sorted descending with ties to the lower index,
    whose softmax mass reaches ``top_p``; min-p drops the tokens whose probability is below
    ``min_p`` times the largest. Every step keeps at least ``min_tokens_to_keep`` tokens (the
    highest). Dropped logits become ``-inf``, kept ones are the tempered values. No sort of the
    vocabulary: the thresholds come from a selection (see ``docs/decoding.md``).

    Parameters
    ----------
    logits : array_like
        Logits (float16, bfloat16, float32, float64; integers become float64).
    temperature : float or array_like, default 1.0
        ``> 0``.
    top_k : int or array_like of int, optional
        ``>= 1``; None is off; ``k >= C`` keeps all.
    top_p : float or array_like, optional
        In ``[0, 1]``; None and 1 keep all.
    min_p : float or array_like, optional
        In ``[0, 1]``; None and 0 keep all.
    min_tokens_to_keep : int or array_like of int, default 1
        ``>= 1``.
    axis : int, default -1
        The class axis.
    out : ndarray, optional
        Where to write (the logits' shape, any float dtype; may be ``logits`` itself).

    Every setting is a scalar or an array of the rows shape (one value per request).

    Returns
    -------
    ndarray
        In the logits' dtype (or ``out``).

    Notes
    -----
    A row holding NaN or ``+inf`` has no softmax (:func:`softmax` gives NaN there): it comes
    back as NaN. A row of only ``-inf`` comes back unchanged. Results equal ``transformers``'
    ``TemperatureLogitsWarper``, ``TopKLogitsWarper``, ``TopPLogitsWarper`` and
    ``MinPLogitsWarper`` chained, up to the float32 rounding of a cumulative sum at an exact
    boundary, and except for ties at a top-p or min-p boundary (``transformers`` sorts
    unstably; here the lower index ranks first).

    Examples
    --------
    >>> import fastlogits as fl
    >>> fl.filter_logits([3.0, 1.0, 2.0, 1.0, -1.0], top_k=3).tolist()
    [3.0, 1.0, 2.0, 1.0, -inf]
    >>> fl.filter_logits([3.0, 1.0, 2.0, 0.5], top_p=0.8, temperature=2.0).tolist()
    [1.5, 0.5, 1.0, -inf]
    """
    x, ax, rows = _logits(logits, axis, "filter_logits")
    settings = _settings(x, ax, rows, temperature, top_k, top_p, min_p, min_tokens_to_keep, greedy=False)
    y = check_out(out, x.shape, None) if out is not None else np.empty_like(x)
    if x.size == 0:
        return y
    target = y
    if np.may_share_memory(x, y) and not (x.__array_interface__["data"][0] == y.__array_interface__["data"][0]
                                          and x.strides == y.strides and x.dtype == y.dtype):
        target = np.empty_like(y)
    g, s = _lay([x], ax, x.shape[ax], settings, [target])
    _core.filter_logits(s[0], (s[1], s[2], s[3], s[4], s[5]), s[6], g.grid)
    g.finish()
    if target is not y:
        np.copyto(y, target)
    return y


def sample(logits: Any, *, temperature: Any = 1.0, top_k: Any = None, top_p: Any = None, min_p: Any = None,
           min_tokens_to_keep: Any = 1, seed: Any, offset: Any = 0, axis: int = -1,
           return_logprobs: bool = False) -> Any:
    """One token per row drawn from ``softmax(filter_logits(logits, ...))``.

    The randomness is Philox-4x32-10, a counter-based generator, keyed per row: with an int
    ``seed`` the key of row ``r`` (its C-order index over the rows) is ``(seed, offset, r)``;
    with an integer array ``seed`` of the rows shape (a seed per request) it is
    ``(seed[r], offset[r])``, so a request draws the same token wherever it sits in the batch.
    The same keys give the same tokens, bitwise, for any thread count and SIMD path. A draw is
    the inverse CDF of one uniform over the kept probability mass (in index order), so the
    distribution is exactly the filtered softmax.

    Parameters
    ----------
    logits : array_like
        Logits (float16, bfloat16, float32, float64; integers become float64).
    temperature, top_k, top_p, min_p, min_tokens_to_keep
        As in :func:`filter_logits`; ``temperature=0`` is greedy (:func:`predict`), also for
        single rows of a temperature array.
    seed : int or array_like of int
        In ``[0, 2**64)``. Required.
    offset : int or array_like of int, default 0
        In ``[0, 2**64)``: the decode step, say; one per row when requests are at different
        steps.
    axis : int, default -1
        The class axis.
    return_logprobs : bool, default False
        Also return the log-probability of each drawn token under the filtered distribution
        (0.0 for greedy rows): float64 for float64 logits, float32 otherwise.

    Returns
    -------
    tokens : ndarray of int64 (NumPy scalar for 1-D logits)
        Or ``(tokens, logprobs)``.

    Raises
    ------
    ValueError
        A row with a temperature > 0 and no softmax to draw from (a NaN, a ``+inf``, or only
        ``-inf``), naming the first such row.

    Examples
    --------
    >>> import fastlogits as fl
    >>> logits = [[2.0, 1.0, 0.5, -1.0], [0.0, 3.0, 2.9, 1.0]]
    >>> fl.sample(logits, top_k=2, seed=1234).tolist()
    [1, 1]
    >>> tokens, logprobs = fl.sample(logits, top_p=0.8, seed=1234, offset=3, return_logprobs=True)
    >>> tokens.tolist(), logprobs.round(4).tolist()
    ([0, 2], [-0.3133, -0.7444])
    >>> [int(fl.sample(logits[1], top_k=2, seed=7, offset=step)) for step in range(6)]  # a request's steps
    [2, 2, 1, 1, 2, 1]
    >>> fl.sample(logits, temperature=0.0, seed=0).tolist()  # greedy
    [0, 1]
    """
    x, ax, rows = _logits(logits, axis, "sample")
    _nonempty(x, ax, "sample")
    if not isinstance(return_logprobs, (bool, np.bool_)):
        raise TypeError(f"return_logprobs: expected a bool, got {type(return_logprobs).__name__}")
    settings = _settings(x, ax, rows, temperature, top_k, top_p, min_p, min_tokens_to_keep, greedy=True)
    seeds, per_request = u64_setting(seed, "seed", rows)
    offsets, _ = u64_setting(offset, "offset", rows)
    tokens = np.empty(rows, dtype=np.int64)
    logprobs = np.empty(rows, dtype=np.float64 if x.dtype == np.float64 else np.float32)
    if tokens.size:
        outputs = [with_axis(tokens, ax)] + ([with_axis(logprobs, ax)] if return_logprobs else [])
        g, s = _lay([x], ax, x.shape[ax], settings + (seeds, offsets), outputs)
        # the counter's stream: 0 for a seed per request, else the row's C-order index (the
        # kernel's row order: no stream operand)
        stream = (np.array(0, dtype=np.int64), dtype_code(np.dtype(np.int64)), 0, 0, 0) if per_request else None
        bad = _core.sample(s[0], (s[1], s[2], s[3], s[4], s[5]), (s[6], s[7], stream), s[8],
                           s[9] if return_logprobs else None, g.grid)
        if bad >= 0:
            pos = tuple(int(i) for i in np.unravel_index(bad, rows))
            raise ValueError(f"logits: the row at position {pos} has no distribution to sample from (it holds "
                             f"NaN or +inf, or only -inf); pass temperature=0 there for predict's choice")
        g.finish()
    if return_logprobs:
        return _scalar_or(tokens), _scalar_or(logprobs)
    return _scalar_or(tokens)


def apply_penalties(logits: Any, prev_tokens: Any, *, repetition_penalty: Any = 1.0, presence_penalty: Any = 0.0,
                    frequency_penalty: Any = 0.0, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Repetition, presence and frequency penalties (vLLM/OpenAI semantics) from a history.

    For each row, with ``n_v`` the occurrences of token ``v`` in that row of ``prev_tokens``:
    every ``v`` with ``n_v > 0`` gets ``x_v / r`` if ``x_v > 0`` else ``x_v * r``
    (``repetition_penalty`` r, as ``transformers``' ``RepetitionPenaltyLogitsProcessor``), then
    ``x_v - (frequency_penalty * n_v + presence_penalty)``, computed in float64 and rounded
    once to the logits' dtype. The class (vocabulary) axis is the last one. No ``(rows, V)``
    count array is made: a row costs O(L).

    Parameters
    ----------
    logits : array_like
        ``(rows..., V)``.
    prev_tokens : array_like of int
        ``(rows..., L)``: the history (prompt and output tokens, or output only, as the
        serving semantics want); negative entries are padding and ignored.
    repetition_penalty : float or array_like, default 1.0
        ``> 0``, one value or one per row.
    presence_penalty, frequency_penalty : float or array_like, default 0.0
        Finite, one value or one per row.
    out : ndarray, optional
        Where to write (the logits' shape and dtype; may be ``logits`` itself for an update in
        place).

    Returns
    -------
    ndarray

    Raises
    ------
    IndexError
        A token id ``>= V`` in ``prev_tokens``, naming the first one (nothing is modified).

    Examples
    --------
    >>> import fastlogits as fl
    >>> fl.apply_penalties([[2.0, -1.0, 0.5, 3.0]], [[0, 1, 1, -1]], repetition_penalty=2.0,
    ...                    frequency_penalty=0.5).tolist()
    [[0.5, -3.0, 0.5, 3.0]]
    """
    x, _, rows = _logits(logits, -1, "apply_penalties")
    prev = as_array(prev_tokens, "prev_tokens")
    if prev.ndim != x.ndim or prev.shape[:-1] != rows:
        raise ValueError(f"prev_tokens: expected shape {rows + ('L',)} (the logits' rows and a history of L "
                         f"tokens), got shape {prev.shape}")
    prev = index_array(prev, "prev_tokens", prev.shape, "the logits' rows and a history of L tokens")
    rep = real_setting(repetition_penalty, "repetition_penalty", rows, 0.0, np.inf, lo_open=True,
                       what="finite penalties")
    if not np.isfinite(rep).all():
        raise ValueError("repetition_penalty: expected finite values, got inf")
    pres = _finite_setting(presence_penalty, "presence_penalty", rows)
    freq = _finite_setting(frequency_penalty, "frequency_penalty", rows)
    if out is None:
        y = np.array(x, copy=True)
    else:
        y = check_out(out, x.shape, x.dtype)
        if y is not x:
            np.copyto(y, x)
    length = prev.shape[-1]
    if y.size == 0 or length == 0 or prev.size == 0:
        return y
    # the kernel updates y in place; a layout the grid cannot take is updated through a copy
    g, s = _lay([y, prev], y.ndim - 1, y.shape[-1], (rep, pres, freq), [])
    bad = _core.apply_penalties(s[0], s[1], (s[2], s[3], s[4]), g.grid, length)
    if bad >= 0:
        pos = tuple(int(i) for i in np.unravel_index(bad, prev.shape))
        raise IndexError(f"prev_tokens: token id {int(prev[pos])} at position {pos} is out of range for "
                         f"{x.shape[-1]} classes")
    if s[0][0] is not y:
        np.copyto(y, s[0][0])
    return y


def _finite_setting(value: Any, name: str, rows: Tuple[int, ...]) -> np.ndarray:
    a = real_setting(value, name, rows, -np.inf, np.inf, what="finite values")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: expected finite values, got {value!r}")
    return a
