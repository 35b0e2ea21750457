"""Cross-entropy with logits, fused with its gradient (API section 3, PyTorch semantics).

One C kernel (csrc/fl_ce.c) computes per row the logsumexp, the loss and, when asked, the
gradient, reading each row once and writing the gradient once; no N x C temporary (log-softmax
or one-hot) is ever made. This module checks the arguments, lays the operands on the kernel's
row grid (any class axis, any strides) and turns the kernel's sums into the reduced loss.

The reduction's internal interface, shared by the in-memory functions and ``fastlogits.dask``:
``check`` (the arguments of one call, or of one chunk of rows, checked: a ``Problem``),
``partial`` (a chunk's ``CeState``: order-independent sums, merged with ``CeState.merge`` in any
order) and ``finish`` (merged states to the reduced loss); ``losses`` gives the per-row losses.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core, _rsum
from ._input import as_array, as_logits, check_out, is_bfloat16, is_float, normalize_axis, same_memory
from ._layout import FreshSpec, Spec, fresh, make_grid, with_axis

_REDUCTIONS = ("none", "mean", "sum")
_INT64_MAX = np.iinfo(np.int64).max
_NATIVE_INDEX = (np.dtype(np.int64), np.dtype(np.int32))
_READY_INDEX = frozenset(_NATIVE_INDEX)  # read as they are when aligned (one look-up)


@dataclass
class CeState:
    """The sums of a cross-entropy over some rows: order-independent sum states (``sums``:
    ce, z, d1, d2, see fl_ce_result in fastlogits.h) and the count of valid rows. The state of
    all rows is the merge of the states of any split of them, in any order, bitwise."""

    sums: np.ndarray   # (4, _rsum.WORDS) int64
    n_valid: int

    @classmethod
    def empty(cls) -> "CeState":
        return cls(_rsum.empty(4), 0)

    def merge(self, other: "CeState") -> "CeState":
        return CeState(_rsum.merge(self.sums, other.sums), self.n_valid + other.n_valid)


@dataclass
class Problem:
    """Checked arguments of one call (or of one chunk of its rows)."""

    x: np.ndarray                 # logits
    axis: int
    target: np.ndarray            # int64/int32 indices (row shape) or float probabilities
    index: bool                   # class-index targets
    weight: Optional[np.ndarray]  # (C,) contiguous float64
    sample_weight: Optional[np.ndarray]  # row shape, float64
    ignore_index: int
    reduction: str
    label_smoothing: float
    z_loss: float

    @property
    def row_shape(self) -> Tuple[int, ...]:
        return self.x.shape[: self.axis] + self.x.shape[self.axis + 1 :]


def _real(value: Any, name: str) -> float:
    if type(value) is float:  # the common case, as the checks below take it
        return value
    if isinstance(value, (bool, np.bool_, str, bytes)):  # float("0.1") would accept text
        raise TypeError(f"{name}: expected a real number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__} {value!r}") from None


def _check_options(reduction: Any, label_smoothing: Any, z_loss: Any, ignore_index: Any) -> Tuple[float, float, int]:
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"reduction: expected 'none', 'mean' or 'sum', got {reduction!r}")
    eps = _real(label_smoothing, "label_smoothing")
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing: expected a value in [0, 1], got {label_smoothing!r}")
    z = _real(z_loss, "z_loss")
    if not 0.0 <= z < math.inf:
        raise ValueError(f"z_loss: expected a finite value >= 0, got {z_loss!r}")
    ignore = ignore_index
    if type(ignore) is not int:  # the common case skips the type checks (not bool: exact type)
        if isinstance(ignore_index, (bool, np.bool_)) or not isinstance(ignore_index, (int, np.integer)):
            raise TypeError(f"ignore_index: expected an int, got {type(ignore_index).__name__} {ignore_index!r}")
        ignore = int(ignore_index)
    if not -_INT64_MAX - 1 <= ignore <= _INT64_MAX:
        raise ValueError(f"ignore_index: expected an int64 value, got {ignore_index!r}")
    return eps, z, ignore


def _index_target(t: np.ndarray, row_shape: Tuple[int, ...], x_shape: Tuple[int, ...], axis: int) -> np.ndarray:
    """Class indices the kernel reads directly: int64 or int32 (other integer dtypes become
    int64; uint64 values beyond int64 are out of range whatever C is)."""
    if t.shape != row_shape:
        raise ValueError(
            f"target: class indices must have the logits' shape {x_shape} without axis {axis}, "
            f"i.e. {row_shape}; got shape {t.shape}"
        )
    dt = t.dtype
    if dt in _READY_INDEX and t.flags.aligned:
        return t
    if dt.newbyteorder("=") in _NATIVE_INDEX:
        if not dt.isnative or not t.flags.aligned:
            t = t.astype(dt.newbyteorder("="))
        return t
    if dt == np.uint64 and t.size and t.max() > _INT64_MAX:
        pos = tuple(int(i) for i in np.argwhere(t > _INT64_MAX)[0])
        raise IndexError(f"target: class index {int(t[pos])} at position {pos} is out of range")
    return t.astype(np.int64)


def _prob_target(t: np.ndarray, x_shape: Tuple[int, ...]) -> np.ndarray:
    if t.shape != x_shape:
        raise ValueError(f"target: class probabilities must have the logits' shape {x_shape}, got shape {t.shape}")
    dt = t.dtype
    if is_float(dt) and dt.isnative and t.flags.aligned:
        return t
    return t.astype(np.float64)


def _target(target: Any, x: np.ndarray, axis: int) -> Tuple[np.ndarray, bool]:
    t = as_array(target, "target")
    kind = t.dtype.kind
    row_shape = x.shape[:axis] + x.shape[axis + 1 :]
    if kind == "b":
        raise TypeError(
            "target: bool targets are not accepted by cross_entropy; pass integer class indices "
            "or floating class probabilities"
        )
    if kind in "iu":
        return _index_target(t, row_shape, x.shape, axis), True
    if kind == "f" or is_bfloat16(t.dtype):
        return _prob_target(t, x.shape), False
    raise TypeError(f"target: expected integer class indices or floating probabilities, got dtype {t.dtype}")


def _float64_operand(obj: Any, shape: Tuple[int, ...], name: str, what: str) -> np.ndarray:
    a = as_array(obj, name)
    if not (a.dtype.kind in "iuf" or is_bfloat16(a.dtype)):
        raise TypeError(f"{name}: expected real numbers, got dtype {a.dtype}")
    if a.shape != shape:
        raise ValueError(f"{name}: expected shape {shape} ({what}), got shape {a.shape}")
    return np.require(a, np.float64, ["A"])  # the kernel reads aligned doubles


def check(logits: Any, target: Any, axis: int, weight: Any, sample_weight: Any, ignore_index: int,
          reduction: str, label_smoothing: float, z_loss: float) -> Problem:
    """The arguments of cross_entropy checked and converted as the kernel reads them (the
    arrays may be stand-ins of the right shapes and dtypes, to check a call's arguments)."""
    eps, z, ignore = _check_options(reduction, label_smoothing, z_loss, ignore_index)
    x = as_logits(logits, "logits")
    if x.ndim == 0:
        raise ValueError("logits: expected an array with a class axis, got a 0-d array")
    ax = normalize_axis(axis, x.ndim)
    t, index = _target(target, x, ax)
    n_classes = x.shape[ax]
    w = None
    if weight is not None:
        w = np.ascontiguousarray(_float64_operand(weight, (n_classes,), "weight", "one weight per class"))
    s = None
    if sample_weight is not None:
        row_shape = x.shape[:ax] + x.shape[ax + 1 :]
        s = _float64_operand(sample_weight, row_shape, "sample_weight", "the target's row shape")
    return Problem(x, ax, t, index, w, s, ignore, reduction, eps, z)


def _div(a: float, b: float) -> float:
    """a / b in IEEE arithmetic (0/0 = nan, 1/0 = inf, 1/-0 = -inf), as NumPy divides."""
    a, b = float(a), float(b)
    try:
        return a / b
    except ZeroDivisionError:
        if a == 0 or a != a:
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)


def _raise_bad_index(p: Problem, flat_row: int, origin: Sequence[int]) -> None:
    """IndexError for the class index of row ``flat_row``; ``origin`` (the chunk's first index
    along each axis of the whole target) makes the message name its position there."""
    local = tuple(int(i) for i in np.unravel_index(flat_row, p.target.shape))
    pos = tuple(i + int(o) for i, o in zip(local, origin)) if origin else local
    n_classes = p.x.shape[p.axis]
    raise IndexError(
        f"target: class index {int(p.target[local])} at position {pos} is out of range [0, {n_classes}) "
        f"and is not ignore_index={p.ignore_index}"
    )


class _Run:
    """The operands of a kernel call laid on one row grid."""

    def __init__(self, p: Problem, loss: Optional[np.ndarray], grad: Optional[np.ndarray], grad_fresh: bool = False):
        ax = p.axis
        t = with_axis(p.target, ax) if p.index else p.target
        inputs = [p.x, t]
        if p.sample_weight is not None:
            inputs.append(with_axis(p.sample_weight, ax))
        outputs = []
        if loss is not None:
            outputs.append(with_axis(loss, ax))
        if grad is not None:
            outputs.append(grad)
        self.p = p
        self.layout = make_grid(inputs + outputs, ax, p.x.shape[ax], n_outputs=len(outputs))
        specs = self.layout.specs
        self.x, self.t = specs[0], specs[1]
        self.s = specs[2] if p.sample_weight is not None else None
        rest = specs[len(inputs):]
        self.loss = rest.pop(0) if loss is not None else None
        grad_spec = rest.pop(0) if grad is not None else None
        self.grad: Optional[Union[Spec, FreshSpec]] = (
            fresh(grad_spec) if grad_spec is not None and grad_fresh else grad_spec)

    def call(self, with_outputs: bool, scale_ce: float = 1.0, scale_z: float = 1.0,
             origin: Sequence[int] = ()) -> CeState:
        """The kernel over the rows; ``with_outputs`` False only checks the class indices and
        sums the denominators (no logit is read)."""
        p = self.p
        sums, n_valid, first_bad = _core.cross_entropy(
            self.x, self.t, self.s,
            self.loss if with_outputs else None, self.grad if with_outputs else None,
            self.layout.grid, p.weight, p.ignore_index, p.label_smoothing, p.z_loss,
            scale_ce, scale_z, not with_outputs,
        )
        if first_bad >= 0:
            _raise_bad_index(p, first_bad, origin)
        if with_outputs:
            self.layout.finish()
        return CeState(sums, n_valid)


def partial(p: Problem, origin: Sequence[int] = ()) -> CeState:
    """The state of the rows of ``p`` (a chunk); an IndexError names the position of a bad
    class index in the whole target when ``origin`` gives the chunk's first index there."""
    return _Run(p, None, None).call(True, origin=origin)


def finish(p: Problem, state: CeState) -> float:
    """The reduced loss of ``p.reduction`` from the merged state of all rows."""
    ce, z, d1, d2 = _rsum.value(state.sums).tolist()  # floats (unpacking the array raises inside)
    if p.reduction == "sum":
        return float(ce + z)
    if state.n_valid == 0 or (not p.index and p.x.shape[p.axis] == 0):
        # no valid row; or probability targets over no classes, where PyTorch's mean divides
        # numel / C = 0 / 0
        return math.nan
    loss = _div(ce, d1)
    if p.z_loss > 0:
        loss += _div(z, d2)
    return loss


def losses(p: Problem, origin: Sequence[int] = ()) -> Any:
    """The per-row losses (``reduction="none"``), errors positioned as in :func:`partial`."""
    loss = _loss_array(p)
    _Run(p, loss, None).call(True, origin=origin)
    return _unwrap(loss)


def _grad_scales(p: Problem, run: _Run) -> Tuple[float, float]:
    """Factors of the cross-entropy and z-loss parts of the gradient: 1/D1 and 1/D2 under
    "mean" (which needs the denominators before any gradient row is written), else 1."""
    if p.reduction != "mean":
        return 1.0, 1.0
    _, _, d1, d2 = _rsum.value(run.call(False).sums).tolist()
    return _div(1.0, d1), _div(1.0, d2)


def _grad_target(p: Problem, grad_out: Optional[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """(the array returned as the gradient, the array the kernel writes). They differ when
    grad_out overlaps an input other than exactly the logits (in place)."""
    if grad_out is None:
        g = np.empty_like(p.x)
        return g, g
    g = check_out(grad_out, p.x.shape, p.x.dtype, "grad_out")
    in_place = same_memory(g, p.x)  # g has the logits' dtype (checked)
    others = [a for a in (p.target, p.sample_weight, p.weight) if a is not None]
    if any(np.shares_memory(g, a) for a in others) or (not in_place and np.shares_memory(g, p.x)):
        return g, np.empty_like(g)
    return g, g


def _loss_array(p: Problem) -> np.ndarray:
    return np.empty(p.row_shape, dtype=p.x.dtype)


def _unwrap(loss: np.ndarray) -> Any:
    return loss[()] if loss.ndim == 0 else loss


def cross_entropy(logits: Any, target: Any, *, axis: int = -1, weight: Any = None, sample_weight: Any = None,
                  ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0,
                  z_loss: float = 0.0) -> Any:
    """Cross-entropy between ``logits`` and class indices or class probabilities.

    PyTorch's ``torch.nn.functional.cross_entropy`` semantics, with the class axis given by
    ``axis``. With ``lse_i = logsumexp(logits_i)``, ``logp_ic = x_ic - lse_i``, class weights
    ``w`` (default 1), sample weights ``s`` (default 1), ``eps = label_smoothing`` and ``V``
    the rows whose target is not ``ignore_index``:

    * integer ``target`` (class indices, the logits' shape without ``axis``):
      ``l_i = s_i * (-(1-eps)*w[y_i]*logp_iy - (eps/C)*sum_c w_c*logp_ic)``, 0 for ignored rows;
      ``"mean"`` divides by ``sum_{i in V} s_i*w[y_i]``; if ``V`` is empty it is nan (and
      ``"sum"`` is 0.0).
    * floating ``target`` (class probabilities, the logits' shape): ``t' = (1-eps)*t + eps/C``,
      ``l_i = -s_i * sum_c w_c*t'_ic*logp_ic`` with ``0 * log 0 = 0`` (a zero probability on a
      ``-inf`` logit adds 0); ``"mean"`` divides by ``sum_i s_i``; ``ignore_index`` is unused.
    * ``z_loss`` adds ``z_loss * s_i * lse_i**2`` to each non-ignored row; under ``"mean"`` that
      part is divided by ``sum_{i in V} s_i``.

    A non-ignored row holding nan or ``+inf``, or only ``-inf`` (no defined softmax), gives nan.

    Parameters
    ----------
    logits : array_like
        Scores, float16, bfloat16, float32 or float64 (integers become float64); PyTorch's
        ``(N, C, d1, ..., dk)`` layout is ``axis=1``.
    target : array_like
        Class indices (any integer dtype; bool raises ``TypeError``) or class probabilities.
    axis : int, default -1
        The class axis.
    weight : array_like of shape (C,), optional
        Class weights.
    sample_weight : array_like, optional
        Per-row weights, of the target's row shape (the logits' shape without ``axis``).
    ignore_index : int, default -100
        Class index whose rows contribute neither loss nor gradient.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"none"`` returns the per-row losses (the row shape, the logits' dtype; a NumPy
        scalar for 1-D logits); ``"mean"``/``"sum"`` return a Python float: the rows' values
        are summed in order-independent float64 sums (csrc/fl_rsum.h), so the result is
        bitwise the same for every thread count and every split of the rows (Dask chunks).
    label_smoothing : float in [0, 1], default 0
    z_loss : float >= 0, default 0

    Returns
    -------
    float or ndarray

    Raises
    ------
    IndexError
        A class index outside ``[0, C)`` that is not ``ignore_index``; the message names its
        first position (C order of ``target``) and value.
    ValueError
        Wrong shapes of ``target``/``weight``/``sample_weight``, ``label_smoothing`` outside
        [0, 1], an unknown ``reduction``.
    TypeError
        Bool, complex or non-numeric targets.

    Examples
    --------
    >>> import numpy as np, fastlogits as fl
    >>> logits = np.array([[2.5, 0.3, -1.2], [0.1, 0.2, 3.0]])
    >>> round(fl.cross_entropy(logits, np.array([0, 2])), 6)
    0.118349
    >>> fl.cross_entropy(logits, np.array([0, -100]), reduction="none").round(6).tolist()
    [0.127097, 0.0]
    """
    p = check(logits, target, axis, weight, sample_weight, ignore_index, reduction, label_smoothing, z_loss)
    return losses(p) if p.reduction == "none" else finish(p, partial(p))


def cross_entropy_and_grad(logits: Any, target: Any, *, axis: int = -1, weight: Any = None,
                           sample_weight: Any = None, ignore_index: int = -100, reduction: str = "mean",
                           label_smoothing: float = 0.0, z_loss: float = 0.0,
                           grad_out: Optional[np.ndarray] = None) -> Tuple[Any, np.ndarray]:
    """Cross-entropy and its gradient with respect to ``logits``, in one pass over the logits.

    Arguments and the loss as in :func:`cross_entropy`. The gradient is that of the returned
    loss (for ``reduction="none"``, of the sum of the per-row losses), of the logits' shape
    and dtype:

    * class indices: ``s_i*((1-eps)*w[y_i]*(p_ic - [c == y_i]) + (eps/C)*(W*p_ic - w_c))``
      with ``p = softmax(logits)`` and ``W = sum_c w_c``;
    * probabilities: ``s_i*(T_i*p_ic - w_c*t'_ic)`` with ``T_i = sum_c w_c*t'_ic``;
    * plus ``2*z_loss*s_i*lse_i*p_ic``; under ``"mean"`` each part is divided like the loss.

    Ignored rows have a zero gradient; if every row is ignored under ``"mean"`` the loss is nan
    and the gradient all zeros (PyTorch). Class indices are checked before anything is written.

    Parameters
    ----------
    grad_out : ndarray, optional
        Where to write the gradient: an array of the logits' shape and dtype, which may be the
        logits array itself (in-place gradient, saving memory).

    Returns
    -------
    (loss, grad) : (float or ndarray, ndarray)

    Examples
    --------
    >>> import numpy as np, fastlogits as fl
    >>> logits = np.array([[2.5, 0.3, -1.2]])
    >>> loss, grad = fl.cross_entropy_and_grad(logits, np.array([0]))
    >>> round(loss, 6), grad.round(4).tolist()
    (0.127097, [[-0.1194, 0.0976, 0.0218]])
    """
    p = check(logits, target, axis, weight, sample_weight, ignore_index, reduction, label_smoothing, z_loss)
    loss = _loss_array(p) if reduction == "none" else None
    grad, written = _grad_target(p, grad_out)
    run = _Run(p, loss, written, grad_fresh=grad_out is None or written is not grad)
    scale_ce, scale_z = _grad_scales(p, run)
    if p.index and p.reduction != "mean":
        run.call(False)  # validate the class indices before the gradient is written
    state = run.call(True, scale_ce, scale_z)
    if written is not grad:
        np.copyto(grad, written)
    return (_unwrap(loss) if loss is not None else finish(p, state)), grad
