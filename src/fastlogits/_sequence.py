"""Per-sequence scores of a language model (API section 7): ``sequence_scores``.

For lm-eval style log-likelihood and multiple-choice requests: each sequence's summed
log-probability of its tokens, their number, and whether greedy decoding would have produced
every one of them. One C kernel (csrc/fl_seq.c) reads each scored row of logits once, with the
cross-entropy's online logsumexp; no (B, T, V) temporary is made. This module checks the
arguments and lays the operands on the kernel's row grid (sequence x position).

The internal interface, shared with ``fastlogits.dask``: ``check`` (a ``Problem``),
``partial`` (the ``SeqState`` of some positions of some sequences: order-independent sums,
merged in any order) and ``finish`` (a state to the result dict).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Sequence, Tuple

import numpy as np

from . import _core, _rsum
from ._input import as_array, as_logits, dtype_code, int64_value, normalize_axis, positive_value

_INT64_MAX = np.iinfo(np.int64).max
_NATIVE_INDEX = (np.dtype(np.int64), np.dtype(np.int32))


@dataclass
class SeqState:
    """The per-sequence sums of some rows: sum states of the log-probabilities (B, WORDS),
    token counts (B,) and the greedy flags (B,). The state of all rows is the merge of the
    states of any split of them, in any order, bitwise."""

    logprob: np.ndarray
    count: np.ndarray
    greedy: np.ndarray

    @classmethod
    def empty(cls, n: int) -> "SeqState":
        return cls(_rsum.empty(n), np.zeros(n, np.int64), np.ones(n, np.bool_))

    def merge_at(self, other: "SeqState", start: int) -> None:
        """Merge ``other`` (the sequences ``start``, ``start + 1``, ...) into this state, in place."""
        end = start + other.count.shape[0]
        self.logprob[start:end] = _rsum.merge(self.logprob[start:end], other.logprob)
        self.count[start:end] += other.count
        self.greedy[start:end] &= other.greedy


@dataclass
class Problem:
    """Checked arguments of one call (or of one block of its rows)."""

    x: np.ndarray          # (B, T, V) logits, the class axis at ``axis``
    axis: int
    tokens: np.ndarray     # int64/int32 of the logits' shape without ``axis``
    ignore_index: int
    temperature: float


def _tokens(tokens: Any, shape: Tuple[int, ...], x_shape: Tuple[int, ...], axis: int) -> np.ndarray:
    """Token ids the kernel reads directly: int64 or int32 (other integer dtypes become int64;
    uint64 values beyond int64 are out of range whatever V is)."""
    t = as_array(tokens, "tokens")
    if t.dtype.kind not in "iu":
        raise TypeError(f"tokens: expected integer token ids, got dtype {t.dtype}")
    if t.shape != shape:
        raise ValueError(
            f"tokens: expected the logits' shape {x_shape} without axis {axis}, i.e. {shape}; got shape {t.shape}"
        )
    dt = t.dtype
    if dt.newbyteorder("=") in _NATIVE_INDEX:
        return t if dt.isnative and t.flags.aligned else t.astype(dt.newbyteorder("="))
    if dt == np.uint64 and t.size and t.max() > _INT64_MAX:
        pos = tuple(int(i) for i in np.argwhere(t > _INT64_MAX)[0])
        raise IndexError(f"tokens: token {int(t[pos])} at position {pos} is out of range")
    return t.astype(np.int64)


def check(logits: Any, tokens: Any, axis: Any, ignore_index: Any, temperature: Any) -> Problem:
    """The arguments of sequence_scores checked and converted as the kernel reads them."""
    ignore, temp = int64_value(ignore_index, "ignore_index"), positive_value(temperature, "temperature")
    x = as_logits(logits, "logits")
    if x.ndim != 3:
        raise ValueError(
            f"logits: expected a 3-d array (batch, positions, vocabulary) or its axis=1 layout "
            f"(batch, vocabulary, positions), got shape {x.shape}; for one sequence pass logits[None]"
        )
    ax = normalize_axis(axis, x.ndim)
    row_shape = x.shape[:ax] + x.shape[ax + 1:]
    return Problem(x, ax, _tokens(tokens, row_shape, x.shape, ax), ignore, temp)


def _in_elements(a: np.ndarray) -> np.ndarray:
    """``a`` with strides that are whole elements (a copy in the rare layouts where not)."""
    return a if all(s % a.itemsize == 0 for s in a.strides) else np.ascontiguousarray(a)


def _spec(a: np.ndarray, axes: Sequence[int], class_axis: int) -> Tuple[np.ndarray, int, int, int, int]:
    """The kernel's view of ``a``: sequences along axes[0], positions along axes[1]."""
    isz = a.itemsize
    sc = a.strides[class_axis] // isz if class_axis >= 0 else 0
    return (a, dtype_code(a.dtype), a.strides[axes[0]] // isz, a.strides[axes[1]] // isz, sc)


def _raise_bad_token(p: Problem, flat_row: int, origin: Sequence[int]) -> None:
    local = tuple(int(i) for i in np.unravel_index(flat_row, p.tokens.shape))
    pos = tuple(i + int(o) for i, o in zip(local, origin)) if origin else local
    raise IndexError(
        f"tokens: token {int(p.tokens[local])} at position {pos} is out of range "
        f"[0, {p.x.shape[p.axis]}) and is not ignore_index={p.ignore_index}"
    )


def partial(p: Problem, origin: Sequence[int] = ()) -> SeqState:
    """The state of the rows of ``p`` (its sequences, a block of them in Dask); an IndexError
    names the position of a bad token in the whole ``tokens`` when ``origin`` gives the
    block's first index there."""
    x, t = _in_elements(p.x), _in_elements(p.tokens)
    outer = [d for d in range(3) if d != p.axis]
    n_seq, n_pos, n_cls = x.shape[outer[0]], x.shape[outer[1]], x.shape[p.axis]
    state = SeqState.empty(n_seq)
    if n_seq == 0 or n_pos == 0:
        return state
    greedy = state.greedy.view(np.uint8)
    bad = _core.sequence_scores(_spec(x, outer, p.axis), _spec(t, (0, 1), -1), (n_seq, n_pos, n_cls),
                                p.ignore_index, p.temperature, state.logprob, state.count, greedy)
    if bad >= 0:
        _raise_bad_token(p, bad, origin)
    return state


def finish(state: SeqState) -> Dict[str, np.ndarray]:
    """The result dict of a merged state."""
    return {"logprob": np.asarray(_rsum.value(state.logprob), np.float64).reshape(state.count.shape),
            "count": state.count, "greedy": state.greedy}


def sequence_scores(logits: Any, tokens: Any, *, axis: int = -1, ignore_index: int = -100,
                    temperature: float = 1.0) -> Dict[str, np.ndarray]:
    """Per-sequence log-likelihood, token count and greedy flag, in one pass over the logits.

    For lm-eval style requests (log-likelihood of a continuation, multiple choice): with
    ``logits`` of shape ``(B, T, V)`` and ``tokens`` of shape ``(B, T)``, already aligned
    (position ``t`` scores ``tokens[:, t]``; shift by one yourself for next-token logits),

    * ``logprob[b] = sum_t log_softmax(logits[b, t] / temperature)[tokens[b, t]]`` over the
      positions whose token is not ``ignore_index`` (prompt and padding positions);
    * ``count[b]``: the number of those positions;
    * ``greedy[b]``: every such token is the argmax of its row (NaN largest, ties to the lowest
      index, as :func:`predict`), i.e. greedy decoding reproduces the continuation.

    A sequence with no scored token has ``logprob`` 0.0, ``count`` 0 and ``greedy`` True. A row
    holding NaN or ``+inf``, or only ``-inf``, has no defined softmax: its sequence's ``logprob``
    is NaN (as :func:`cross_entropy`). The sums are order-independent (csrc/fl_rsum.h): the
    result is bitwise the same for every thread count and every Dask chunking.

    Parameters
    ----------
    logits : array_like, 3-d
        float16, bfloat16, float32 or float64 (integers become float64), any strides.
    tokens : array_like of int
        The logits' shape without ``axis``.
    axis : int, default -1
        The vocabulary axis: ``-1`` for ``(B, T, V)``, ``1`` for ``(B, V, T)``; the other two
        axes are, in order, the sequence and the position.
    ignore_index : int, default -100
        Token value of positions that are not scored.
    temperature : float > 0, default 1.0
        The rows are ``log_softmax(logits / temperature)``; ``greedy`` does not depend on it.

    Returns
    -------
    dict
        ``logprob`` (B,) float64, ``count`` (B,) int64, ``greedy`` (B,) bool.

    Raises
    ------
    IndexError
        A token outside ``[0, V)`` that is not ``ignore_index``; the message names its first
        position (C order of ``tokens``) and value.
    ValueError, TypeError
        Logits that are not 3-d, tokens of the wrong shape or dtype, a bad ``temperature``.

    Examples
    --------
    >>> import numpy as np, fastlogits as fl
    >>> logits = np.log(np.array([[[0.5, 0.25, 0.25], [0.1, 0.1, 0.8], [0.2, 0.6, 0.2]]]))
    >>> r = fl.sequence_scores(logits, np.array([[-100, 2, 1]]))
    >>> round(float(r["logprob"][0]), 6), int(r["count"][0]), bool(r["greedy"][0])
    (-0.733969, 2, True)
    """
    p = check(logits, tokens, axis, ignore_index, temperature)
    return finish(partial(p))
