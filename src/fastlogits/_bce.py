"""Binary losses on logits, fused with their gradients (API section 3): BCE with logits and
torchvision's sigmoid focal loss.

One C pass reads logits and targets (float, bool or integer targets in their own dtype, never
converted to a float copy), optional ``weight``/``pos_weight`` passed with zero strides along
their broadcast dimensions (never materialised), and writes the per-element loss and/or the
gradient. Reduced losses are float64 sums of fixed per-block partials, so they are bitwise the
same for any thread count.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, List, Optional, Tuple, cast

import numpy as np

from . import _core
from ._input import as_array, as_logits, check_out, is_bfloat16, is_float
from ._layout import make_grid

_REDUCTIONS = ("none", "mean", "sum")
_BCE, _FOCAL = 0, 1
_SIGNED = {1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}


def _check_reduction(reduction: Any) -> str:
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"reduction: expected one of 'none', 'mean', 'sum', got {reduction!r}")
    return reduction


def _as_target(target: Any, shape: Tuple[int, ...]) -> Tuple[np.ndarray, np.ndarray]:
    """(the target as the user gave it, the array the kernel reads). Float targets are read as
    they are; unsigned integers are viewed as the signed type of their size (values 0 and 1
    are the same bits; larger values are rejected either way); nothing is converted."""
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


def _target_error(t: np.ndarray) -> ValueError:
    """The error naming the first (C order) invalid target and its position."""
    if t.dtype.kind in "biu":
        bad = (t != 0) & (t != 1)
        expected = "0 or 1 (integer targets)"
    else:
        with np.errstate(invalid="ignore"):
            bad = ~((t >= 0) & (t <= 1))
        expected = "values in [0, 1] (float targets)"
    pos = np.unravel_index(int(np.argmax(bad)), t.shape) if t.ndim else ()
    value = t[pos] if t.ndim else t[()]
    return ValueError(f"target: expected {expected}, got {value!r} at position {tuple(int(i) for i in pos)}")


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


def _same_memory(a: np.ndarray, b: np.ndarray) -> bool:
    return (
        a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
        and a.strides == b.strides
        and a.dtype == b.dtype
    )


def _grad_target(grad_out: Any, x: np.ndarray, inputs: List[Optional[np.ndarray]]) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """(the array the kernel writes the gradient to, the user's array to copy it into or None).
    ``grad_out`` may be the logits themselves (in place); any other overlap with an input goes
    through a temporary."""
    if grad_out is None:
        return np.empty_like(x), None
    user = check_out(grad_out, x.shape, x.dtype, "grad_out")
    exact_logits = _same_memory(user, x)
    if _overlaps(user, inputs) or (not exact_logits and np.may_share_memory(user, x)):
        return np.empty_like(x), user
    return user, None


def _run(kind: int, logits: Any, target: Any, weight: Any, pos_weight: Any, reduction: Any,
         want_grad: bool, grad_out: Any, alpha: float = -1.0, gamma: float = 0.0) -> Any:
    reduction = _check_reduction(reduction)
    x = as_logits(logits, "logits")
    t_user, t = _as_target(target, x.shape)
    cdt = np.dtype(np.float64) if x.dtype == np.float64 else np.dtype(np.float32)
    w = _as_weight(weight, "weight", x.shape, cdt)
    pw = _as_weight(pos_weight, "pos_weight", x.shape, cdt)
    grad: Optional[np.ndarray] = None
    user_grad: Optional[np.ndarray] = None
    if want_grad:
        grad, user_grad = _grad_target(grad_out, x, [t, w, pw])
    elif grad_out is not None:
        raise TypeError("grad_out: only the *_and_grad functions take it")
    scalar = x.ndim == 0
    if scalar:
        x, t = x.reshape(1), t.reshape(1)
        w = None if w is None else w.reshape(1)
        pw = None if pw is None else pw.reshape(1)
    loss = np.empty_like(x) if reduction == "none" else None
    n = x.size
    total = 0.0
    if n:
        scale = 1.0 / n if reduction == "mean" else 1.0
        g1 = None if grad is None else grad.reshape(x.shape)
        ops = [a for a in (x, t, w, pw, loss, g1) if a is not None]
        n_out = (loss is not None) + (g1 is not None)
        ax = _grid_axis(x)
        gr = make_grid(ops, ax, x.shape[ax], n_outputs=n_out)
        it = iter(gr.specs)
        sx, sy = next(it), next(it)
        sw = next(it) if w is not None else None
        spw = next(it) if pw is not None else None
        sl = next(it) if loss is not None else None
        sg = next(it) if g1 is not None else None
        prevalidate = user_grad is None and grad_out is not None
        try:
            if prevalidate:
                _core.check_binary_target(sy, gr.grid)
            total = _core.bce(sx, sy, sw, spw, sl, sg, gr.grid, kind, alpha, gamma, scale, not prevalidate)
        except _core.BadTargetError:
            raise _target_error(t_user) from None
        gr.finish()
    if user_grad is not None and grad is not None:
        np.copyto(user_grad, grad)
        grad = user_grad
    if loss is not None:  # reduction == "none"
        value: Any = loss[0] if scalar else loss
    elif reduction == "sum":
        value = float(total)
    else:
        value = float(total) / n if n else math.nan
    return (value, grad) if want_grad else value


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
        losses are Python floats accumulated in float64.

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
    return _run(_BCE, logits, target, weight, pos_weight, reduction, False, None)


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
    return cast(Tuple[Any, np.ndarray], _run(_BCE, logits, target, weight, pos_weight, reduction, True, grad_out))


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
    return _run(_FOCAL, logits, target, None, None, reduction, False, None, a, g)


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
    return cast(Tuple[Any, np.ndarray], _run(_FOCAL, logits, target, None, None, reduction, True, grad_out, a, g))
