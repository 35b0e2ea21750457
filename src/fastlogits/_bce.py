"""Binary losses on logits, fused with their gradients (API section 3): BCE with logits and
torchvision's sigmoid focal loss.

One C pass reads logits and targets (float, bool or integer targets in their own dtype, never
converted to a float copy), optional ``weight``/``pos_weight`` passed with zero strides along
their broadcast dimensions (never materialised), and writes the per-element loss and/or the
gradient.

Reduced losses are order-independent float64 sums (csrc/fl_rsum.h) of the rows' losses: the
losses of a row of the last axis are added in a fixed order (a function of the row's length)
and the row sums deposited; the elements of a 1-D array (or of a last axis of length 1) are
rows of one element each. So the sum is bitwise the same for any thread count and any split of
the rows (Dask chunks, whose states merge the same way), and for any memory layout.

The reduction's internal interface, shared by the in-memory functions and ``fastlogits.dask``:
``check`` (one call's or one chunk's arguments as a ``Problem``), ``partial`` (a chunk's
``BceState``, merged with ``BceState.merge`` in any order), ``finish`` (merged states to the
reduced loss) and ``losses`` (``reduction="none"``).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple, cast

import numpy as np

from . import _core, _rsum
from ._input import as_array, as_logits, check_out, is_bfloat16, is_float, same_memory
from ._layout import make_grid

_REDUCTIONS = ("none", "mean", "sum")
BCE, FOCAL = 0, 1  # kernel kinds (fl_bce_opts.kind)
_SIGNED = {1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}
# targets the kernel reads as they are (native byte order, aligned): the common case's look-up
_READY_TARGETS = frozenset(np.dtype(t) for t in (np.float32, np.float64, np.float16, np.bool_, np.int8, np.int16,
                                                  np.int32, np.int64))


def _check_reduction(reduction: Any) -> str:
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"reduction: expected one of 'none', 'mean', 'sum', got {reduction!r}")
    return reduction


def _as_target(target: Any, shape: Tuple[int, ...]) -> Tuple[np.ndarray, np.ndarray]:
    """(the target as the user gave it, the array the kernel reads). Float targets are read as
    they are; unsigned integers are viewed as the signed type of their size (values 0 and 1
    are the same bits; larger values are rejected either way); nothing is converted."""
    if type(target) is np.ndarray and target.dtype in _READY_TARGETS and target.flags.aligned \
            and target.shape == shape:
        return target, target  # what the general path below returns for it, with fewer look-ups
    t = as_array(target, "target")
    dt = t.dtype
    if dt.kind == "b":
        kernel_view = t
    elif dt.kind in "iu" and dt.itemsize in _SIGNED:
        kernel_view = t.view(np.dtype(_SIGNED[dt.itemsize]).newbyteorder(dt.byteorder))
    elif is_float(dt):
        kernel_view = t
    else:
        raise TypeError(
            f"target: expected a float (float16, bfloat16, float32, float64), bool or integer "
            f"array of 0/1 values, got dtype {dt}"
        )
    if t.shape != shape:
        raise ValueError(f"target: expected the logits' shape {shape}, got shape {t.shape}")
    if not kernel_view.dtype.isnative:
        kernel_view = kernel_view.astype(kernel_view.dtype.newbyteorder("="))
    if not kernel_view.flags.aligned:
        kernel_view = kernel_view.copy()
    return t, kernel_view


def _target_error(t: np.ndarray, origin: Sequence[int] = ()) -> ValueError:
    """The error naming the first (C order) invalid target and its position (offset by
    ``origin``, the chunk's first index along each axis of the whole target)."""
    if t.dtype.kind in "biu":
        bad = (t != 0) & (t != 1)
        expected = "0 or 1 (integer targets)"
    else:
        with np.errstate(invalid="ignore"):
            bad = ~((t >= 0) & (t <= 1))
        expected = "values in [0, 1] (float targets)"
    pos = np.unravel_index(int(np.argmax(bad)), t.shape) if t.ndim else ()
    value = t[pos] if t.ndim else t[()]
    # the plain number (2, 1.5, nan), not the NumPy scalar's repr (np.int64(2))
    shown = float(value) if is_bfloat16(t.dtype) else value.item()
    where = tuple(int(i) + int(o) for i, o in zip(pos, origin)) if origin else tuple(int(i) for i in pos)
    return ValueError(f"target: expected {expected}, got {shown!r} at position {where}")


def _as_weight(weight: Any, name: str, shape: Tuple[int, ...], dtype: np.dtype) -> Optional[np.ndarray]:
    """A weight in the compute dtype, broadcast (zero strides, no copy) to the logits' shape."""
    if weight is None:
        return None
    w = as_array(weight, name)
    if w.dtype.kind not in "biuf" and not is_bfloat16(w.dtype):
        raise TypeError(f"{name}: expected a real array, got dtype {w.dtype}")
    try:
        ok = np.broadcast_shapes(w.shape, shape) == shape
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{name}: shape {w.shape} does not broadcast to the logits' shape {shape}")
    w = np.asarray(w, dtype=dtype)  # a copy only when the dtype differs
    if not w.flags.aligned:
        w = w.copy()
    return np.broadcast_to(w, shape)


def _grid_axis(x: np.ndarray) -> int:
    """The axis the kernel walks: the non-trivial axis of smallest logits stride (the last axis
    of a C-contiguous array); length-1 axes are skipped so (N, 1) logits form long rows."""
    dims = [d for d in range(x.ndim) if x.shape[d] > 1]
    if not dims:
        return x.ndim - 1
    return min(reversed(dims), key=lambda d: abs(x.strides[d]))


def _overlaps(a: np.ndarray, others: List[Optional[np.ndarray]]) -> bool:
    return any(o is not None and np.may_share_memory(a, o) for o in others)


def _grad_target(grad_out: Any, x: np.ndarray, inputs: List[Optional[np.ndarray]]) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """(the array the kernel writes the gradient to, the user's array to copy it into or None).
    ``grad_out`` may be the logits themselves (in place); any other overlap with an input goes
    through a temporary."""
    if grad_out is None:
        return np.empty_like(x), None
    user = check_out(grad_out, x.shape, x.dtype, "grad_out")
    exact_logits = same_memory(user, x)
    if _overlaps(user, inputs) or (not exact_logits and np.may_share_memory(user, x)):
        return np.empty_like(x), user
    return user, None


@dataclass
class Problem:
    """Checked arguments of one call (or of one chunk of it), as the kernel reads them."""

    kind: int
    x: np.ndarray                 # logits (a 0-d input as shape (1,))
    t_user: np.ndarray            # the target as given (for error messages)
    t: np.ndarray                 # the target as the kernel reads it
    w: Optional[np.ndarray]       # weight, broadcast to x (zero strides)
    pw: Optional[np.ndarray]      # pos_weight, likewise
    reduction: str
    alpha: float
    gamma: float
    scalar: bool                  # the logits were 0-d

    @property
    def per_element(self) -> bool:
        """Rows of one element: a 1-D input or a last axis of length 1."""
        return self.x.ndim <= 1 or self.x.shape[-1] == 1


@dataclass
class BceState:
    """The sum of the losses of some elements (an order-independent sum state) and their
    count; the state of all rows is the merge of the states of any split of them."""

    sum: np.ndarray   # (_rsum.WORDS,) int64
    n: int

    @classmethod
    def empty(cls) -> "BceState":
        return cls(_rsum.empty(), 0)

    def merge(self, other: "BceState") -> "BceState":
        return BceState(_rsum.merge(self.sum, other.sum), self.n + other.n)


def check(kind: int, logits: Any, target: Any, weight: Any, pos_weight: Any, reduction: Any,
          alpha: float = -1.0, gamma: float = 0.0) -> Problem:
    """The arguments checked and laid out as the kernel reads them (the arrays may be
    stand-ins of the right shapes and dtypes, to check a call's arguments)."""
    reduction = _check_reduction(reduction)
    x = as_logits(logits, "logits")
    t_user, t = _as_target(target, x.shape)
    cdt = np.dtype(np.float64) if x.dtype == np.float64 else np.dtype(np.float32)
    w = _as_weight(weight, "weight", x.shape, cdt)
    pw = _as_weight(pos_weight, "pos_weight", x.shape, cdt)
    scalar = x.ndim == 0
    if scalar:
        x, t = x.reshape(1), t.reshape(1)
        w = None if w is None else w.reshape(1)
        pw = None if pw is None else pw.reshape(1)
    return Problem(kind, x, t_user, t, w, pw, reduction, alpha, gamma, scalar)


def _kernel(p: Problem, loss: Optional[np.ndarray], grad: Optional[np.ndarray], total: Optional[np.ndarray],
            check_first: bool, origin: Sequence[int] = ()) -> None:
    """One kernel call over p's elements (none: nothing to do). ``check_first`` validates every
    target before anything is written (for an in-place gradient); an invalid target raises the
    error naming its position (offset by ``origin``)."""
    x = p.x
    if not x.size:
        return
    scale = 1.0 / x.size if p.reduction == "mean" else 1.0
    g1 = None if grad is None else grad.reshape(x.shape)
    ops = [a for a in (x, p.t, p.w, p.pw, loss, g1) if a is not None]
    n_out = (loss is not None) + (g1 is not None)
    # rows of the last axis (fixed-order sums); rows of one element in the grid's longest runs
    per_element = p.per_element
    ax = _grid_axis(x) if per_element else x.ndim - 1
    gr = make_grid(ops, ax, x.shape[ax], n_outputs=n_out)
    it = iter(gr.specs)
    sx, sy = next(it), next(it)
    sw = next(it) if p.w is not None else None
    spw = next(it) if p.pw is not None else None
    sl = next(it) if loss is not None else None
    sg = next(it) if g1 is not None else None
    try:
        if check_first:
            _core.check_binary_target(sy, gr.grid)
        _core.bce(sx, sy, sw, spw, sl, sg, gr.grid, p.kind, p.alpha, p.gamma, scale, not check_first,
                  total, per_element)
    except _core.BadTargetError:
        raise _target_error(p.t_user, origin) from None
    gr.finish()


def partial(p: Problem, origin: Sequence[int] = ()) -> BceState:
    """The state of p's elements (a chunk); a ValueError for an invalid target names its
    position in the whole target when ``origin`` gives the chunk's first index there."""
    total = _rsum.empty()
    _kernel(p, None, None, total, False, origin)
    return BceState(total, int(p.x.size))


def finish(p: Problem, state: BceState) -> float:
    """The reduced loss of ``p.reduction`` ("sum" or "mean") from the merged state."""
    total = float(_rsum.value(state.sum))
    if p.reduction == "sum":
        return total
    return total / state.n if state.n else math.nan


def losses(p: Problem, origin: Sequence[int] = ()) -> Any:
    """The per-element losses (``reduction="none"``), errors positioned as in :func:`partial`."""
    loss = np.empty_like(p.x)
    _kernel(p, loss, None, None, False, origin)
    return loss[0] if p.scalar else loss


def _run(p: Problem, want_grad: bool, grad_out: Any) -> Any:
    if not want_grad:
        if grad_out is not None:
            raise TypeError("grad_out: only the *_and_grad functions take it")
        return losses(p) if p.reduction == "none" else finish(p, partial(p))
    grad, user_grad = _grad_target(grad_out, p.x.reshape(p.t_user.shape) if p.scalar else p.x,
                                   [p.t, p.w, p.pw])
    loss = np.empty_like(p.x) if p.reduction == "none" else None
    total = None if loss is not None else _rsum.empty()
    _kernel(p, loss, grad, total, user_grad is None and grad_out is not None)
    if user_grad is not None:
        np.copyto(user_grad, grad)
        grad = user_grad
    if loss is not None:
        value: Any = loss[0] if p.scalar else loss
    else:
        value = finish(p, BceState(cast(np.ndarray, total), int(p.x.size)))
    return value, grad


def bce_with_logits(logits: Any, target: Any, *, weight: Any = None, pos_weight: Any = None,
                    reduction: str = "mean") -> Any:
    """Binary cross-entropy with logits, PyTorch's ``binary_cross_entropy_with_logits``.

    ``l = -weight * (pos_weight*y*log_sigmoid(x) + (1-y)*log_sigmoid(-x))`` elementwise,
    computed as ``a*max(-x, 0) + b*max(x, 0) + (a+b)*log1p(exp(-|x|))`` with ``a = w*pw*y``,
    ``b = w*(1-y)``: no overflow for any logit. At ``x = +-inf`` the loss is its limit (0, or
    ``+inf`` when the target pulls the other way) where PyTorch gives nan; nan logits give nan.

    Parameters
    ----------
    logits : array_like
        Logits of any shape (float16, bfloat16, float32 or float64; integers become float64).
    target : array_like
        The logits' shape; floats in [0, 1] (soft targets), bool, or integers 0/1. Read in its
        own dtype (no float copy). Anything else (including nan) raises ``ValueError`` naming
        the first offending value and its position.
    weight, pos_weight : array_like, optional
        Broadcast against the logits as in PyTorch (``pos_weight`` of shape ``(C,)`` weights the
        last axis; ``(N, 1)`` or per-element shapes work too) without being materialised. They
        are used in the compute dtype (float32, float64 for float64 logits).
    reduction : {"mean", "sum", "none"}
        ``"mean"`` divides the sum by the number of elements (nan for no elements). Reduced
        losses are Python floats: order-independent float64 sums of the rows' losses (each row
        of the last axis added in a fixed order; the elements of a 1-D array one by one), the
        same bitwise for every thread count, memory layout and Dask chunking.

    Returns
    -------
    float, ndarray or NumPy scalar
        The loss; ``"none"`` gives an array of the logits' shape and dtype.

    Examples
    --------
    >>> import fastlogits as fl
    >>> round(fl.bce_with_logits([2.0, -1.0, 0.5], [1, 0, 1]), 6)
    0.304756
    >>> fl.bce_with_logits([[0.0, 3.0]], [[1.0, 0.0]], pos_weight=[2.0, 1.0], reduction="none").round(4).tolist()
    [[1.3863, 3.0486]]
    """
    return _run(check(BCE, logits, target, weight, pos_weight, reduction), False, None)


def bce_with_logits_and_grad(logits: Any, target: Any, *, weight: Any = None, pos_weight: Any = None,
                             reduction: str = "mean", grad_out: Optional[np.ndarray] = None) -> Tuple[Any, np.ndarray]:
    """``(bce_with_logits(...), d loss / d logits)`` in one pass.

    ``grad = weight * (sigmoid(x)*(1 + (pos_weight-1)*y) - pos_weight*y)``, evaluated as
    ``w*(1-y)*sigmoid(x) - w*pw*y*sigmoid(-x)`` (no cancellation for 0/1 targets, exact at
    ``x = +-inf``), divided by the number of elements under ``"mean"``; for ``"none"`` it is
    the gradient of the sum of the per-element losses.

    Parameters
    ----------
    logits, target, weight, pos_weight, reduction
        As for :func:`bce_with_logits`.
    grad_out : ndarray, optional
        Preallocated gradient of the logits' shape and dtype; may be the logits array itself
        (in-place gradient). Targets are validated before anything is written to it.

    Returns
    -------
    (loss, grad)

    Examples
    --------
    >>> import fastlogits as fl
    >>> loss, grad = fl.bce_with_logits_and_grad([2.0, -1.0], [1, 0], reduction="sum")
    >>> round(loss, 6), grad.round(6).tolist()
    (0.44019, [-0.119203, 0.268941])
    """
    return cast(Tuple[Any, np.ndarray], _run(check(BCE, logits, target, weight, pos_weight, reduction), True, grad_out))


def _focal_params(alpha: Any, gamma: Any) -> Tuple[float, float]:
    for name, v in (("alpha", alpha), ("gamma", gamma)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
            raise TypeError(f"{name}: expected a real number, got {type(v).__name__}")
    a, g = float(alpha), float(gamma)
    if math.isnan(a):
        raise ValueError(f"alpha: expected a real number (< 0 disables alpha-balancing), got {alpha!r}")
    if not (g >= 0.0 and math.isfinite(g)):
        raise ValueError(f"gamma: expected a finite number >= 0, got {gamma!r}")
    return a, g


def sigmoid_focal_loss(logits: Any, target: Any, *, alpha: float = 0.25, gamma: float = 2.0,
                       reduction: str = "mean") -> Any:
    """Sigmoid focal loss with torchvision's semantics (``torchvision.ops.sigmoid_focal_loss``).

    With ``p = sigmoid(x)``, ``ce = bce_with_logits(x, y, reduction="none")`` and
    ``p_t = p*y + (1-p)*(1-y)``: ``l = ce * (1-p_t)**gamma``, times
    ``alpha*y + (1-alpha)*(1-y)`` when ``alpha >= 0`` (``alpha < 0`` disables it). ``1 - p_t`` is
    computed as ``sigmoid(x)*(1-y) + sigmoid(-x)*y``, without cancellation near ``p_t = 1``;
    ``gamma = 0`` gives the (alpha-weighted) BCE. Limits at ``x = +-inf`` are exact.

    Parameters
    ----------
    logits, target
        As for :func:`bce_with_logits`.
    alpha : float, default 0.25
        Weight of the positives (``1 - alpha`` for the negatives); negative to disable.
    gamma : float, default 2.0
        Focusing exponent, ``>= 0``.
    reduction : {"mean", "sum", "none"}
        Default ``"mean"`` (torchvision's default is ``"none"``; this follows the API contract).

    Returns
    -------
    float, ndarray or NumPy scalar

    Examples
    --------
    >>> import fastlogits as fl
    >>> round(fl.sigmoid_focal_loss([2.0, -1.0, 0.5], [1, 0, 1]), 6)
    0.011446
    """
    a, g = _focal_params(alpha, gamma)
    return _run(check(FOCAL, logits, target, None, None, reduction, a, g), False, None)


def sigmoid_focal_loss_and_grad(logits: Any, target: Any, *, alpha: float = 0.25, gamma: float = 2.0,
                                reduction: str = "mean", grad_out: Optional[np.ndarray] = None) -> Tuple[Any, np.ndarray]:
    """``(sigmoid_focal_loss(...), d loss / d logits)`` in one pass.

    With ``q = 1 - p_t``, ``s+ = sigmoid(x)``, ``s- = sigmoid(-x)`` and ``a_t`` the alpha
    factor: ``grad = a_t * (q**gamma * (s+ - y) + gamma * ce * q**(gamma-1) * s+*s- * (1-2y))``
    (divided by the number of elements under ``"mean"``); the second term is taken as its limit
    0 at ``x = +-inf``.

    Parameters
    ----------
    logits, target, alpha, gamma, reduction
        As for :func:`sigmoid_focal_loss`.
    grad_out : ndarray, optional
        As for :func:`bce_with_logits_and_grad` (may be the logits themselves).

    Returns
    -------
    (loss, grad)

    Examples
    --------
    >>> import fastlogits as fl
    >>> loss, grad = fl.sigmoid_focal_loss_and_grad([2.0, -1.0], [1, 0], reduction="sum")
    >>> round(loss, 6), grad.round(6).tolist()
    (0.017444, [-0.001218, 0.039436])
    """
    a, g = _focal_params(alpha, gamma)
    return cast(Tuple[Any, np.ndarray], _run(check(FOCAL, logits, target, None, None, reduction, a, g), True, grad_out))
