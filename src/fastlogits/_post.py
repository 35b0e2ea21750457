"""Postprocessing: probabilities, log-probabilities and predictions from logits (API section 2)."""
from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import numpy as np

from . import _core
from ._input import as_logits, check_out, float_dtype, normalize_axis, same_memory
from ._layout import fresh, make_grid, with_axis

_SOFTMAX, _LOG_SOFTMAX = 0, 1
_LOGSUMEXP, _ENTROPY = 0, 1
_SIGMOID, _LOG_SIGMOID = 0, 1


def _class_input(x: Any, axis: Any, func: str) -> Tuple[np.ndarray, int]:
    a = as_logits(x, "x")
    if a.ndim == 0:
        raise ValueError(f"{func}: x must have a class axis, got a 0-d array")
    return a, normalize_axis(axis, a.ndim)


def _output(a: np.ndarray, shape: Tuple[int, ...], dtype: Any, out: Optional[np.ndarray]) -> np.ndarray:
    """The array a kernel writes: ``out`` checked, or a fresh one laid out like ``a``."""
    dt = None if dtype is None else float_dtype(dtype)
    if out is not None:
        return check_out(out, shape, dt)
    dt = a.dtype if dt is None else dt
    if shape == a.shape:
        return np.empty_like(a, dtype=dt)
    return np.empty(shape, dtype=dt)


def _run_same_shape(kernel: Any, a: np.ndarray, y: np.ndarray, axis: int, op: int, user_out: bool) -> np.ndarray:
    """Run a kernel whose output has the input's shape; a user's output that overlaps the input
    in any way other than exactly (in place) is computed through a temporary (a fresh output
    overlaps nothing)."""
    if a.size == 0:
        return y
    target = y
    if user_out and np.may_share_memory(a, y) and not same_memory(a, y) and np.shares_memory(a, y):
        target = np.empty_like(y)
    g = make_grid([a, target], axis, a.shape[axis], n_outputs=1)
    y_spec = fresh(g.specs[1]) if target is not y or not user_out else g.specs[1]
    kernel(g.specs[0], y_spec, g.grid, op)
    g.finish()
    if target is not y:
        np.copyto(y, target)
    return y


def _elementwise_axis(a: np.ndarray) -> int:
    """For elementwise work any axis can be the row: take the one with the smallest stride."""
    if a.shape[-1] > 1 and a.flags.c_contiguous:
        return a.ndim - 1  # the common case: the last axis has the smallest stride
    dims = [d for d in range(a.ndim) if a.shape[d] > 1]
    return min(dims, key=lambda d: abs(a.strides[d])) if dims else a.ndim - 1


def _elementwise(x: Any, dtype: Any, out: Optional[np.ndarray], op: int) -> Any:
    a = as_logits(x, "x")
    scalar = a.ndim == 0
    a1 = a.reshape(1) if scalar else a
    if out is not None and scalar:
        raise ValueError("out: not supported for a 0-d input")
    y = _output(a1, a1.shape, dtype, out)
    _run_same_shape(_core.elementwise, a1, y, _elementwise_axis(a1), op, out is not None)
    return y[0] if scalar else y


def sigmoid(x: Any, *, dtype: Any = None, out: Optional[np.ndarray] = None) -> Any:
    """Logistic sigmoid ``1 / (1 + exp(-x))``, elementwise.

    Computed as ``1/(1+t)`` or ``t/(1+t)`` with ``t = exp(-|x|)``, so it never overflows.

    Parameters
    ----------
    x : array_like
        Logits (float16, bfloat16, float32 or float64; integers become float64).
    dtype : dtype, optional
        Output dtype (default: the input's).
    out : ndarray, optional
        Where to write the result (may be ``x`` itself).

    Returns
    -------
    ndarray or NumPy scalar

    Examples
    --------
    >>> import fastlogits as fl
    >>> float(fl.sigmoid(1.2))  # a spam logit of 1.2: 76.85% spam
    0.7685247834990175
    """
    return _elementwise(x, dtype, out, _SIGMOID)


def log_sigmoid(x: Any, *, dtype: Any = None, out: Optional[np.ndarray] = None) -> Any:
    """``log(sigmoid(x))`` computed as ``min(x, 0) - log1p(exp(-|x|))``, elementwise.

    Stable for any magnitude: ``log_sigmoid(-1e4)`` is ``-1e4`` and ``log_sigmoid(1e4)`` is
    ``-0.0``. Parameters as for :func:`sigmoid`.

    Examples
    --------
    >>> import fastlogits as fl
    >>> fl.log_sigmoid([-1000.0, 0.0, 30.0]).round(6).tolist()
    [-1000.0, -0.693147, -0.0]
    """
    return _elementwise(x, dtype, out, _LOG_SIGMOID)


def _softmax_family(x: Any, axis: Any, dtype: Any, out: Optional[np.ndarray], mode: int, func: str) -> np.ndarray:
    a, ax = _class_input(x, axis, func)
    y = _output(a, a.shape, dtype, out)
    return _run_same_shape(_core.softmax, a, y, ax, mode, out is not None)


def softmax(x: Any, axis: int = -1, *, dtype: Any = None, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Softmax along ``axis``: ``exp(x - max) / sum(exp(x - max))``.

    A slice holding ``+inf``, NaN, or only ``-inf`` gives NaN (as in PyTorch).

    Parameters
    ----------
    x : array_like
        Logits with at least one dimension.
    axis : int, default -1
        The class axis; PyTorch's ``(N, C, d1, ...)`` layout is ``axis=1``.
    dtype : dtype, optional
        Output dtype; computation is float32, or float64 when input or output is float64.
    out : ndarray, optional
        Where to write the result; may be ``x`` itself or any strided view.

    Examples
    --------
    >>> import fastlogits as fl
    >>> fl.softmax([2.5, 0.3, -1.2]).round(4).tolist()  # cat, dog, rabbit
    [0.8806, 0.0976, 0.0218]
    """
    return _softmax_family(x, axis, dtype, out, _SOFTMAX, "softmax")


def log_softmax(x: Any, axis: int = -1, *, dtype: Any = None, out: Optional[np.ndarray] = None) -> np.ndarray:
    """``x - logsumexp(x)`` along ``axis``, without forming the softmax.

    Parameters as for :func:`softmax`. A slice of only ``-inf`` gives NaN (as in PyTorch).

    Examples
    --------
    >>> import fastlogits as fl
    >>> fl.log_softmax([2.5, 0.3, -1.2]).round(4).tolist()
    [-0.1271, -2.3271, -3.8271]
    """
    return _softmax_family(x, axis, dtype, out, _LOG_SOFTMAX, "log_softmax")


def _row_reduce(x: Any, axis: Any, keepdims: bool, what: int, func: str) -> Any:
    a, ax = _class_input(x, axis, func)
    shape = a.shape[:ax] + a.shape[ax + 1:]
    res = np.empty(shape, dtype=a.dtype)
    if res.size:
        g = make_grid([a, with_axis(res, ax)], ax, a.shape[ax], n_outputs=1)
        _core.row_reduce(g.specs[0], g.specs[1], g.grid, what)
        g.finish()
    if keepdims:
        return with_axis(res, ax)
    return res[()] if res.ndim == 0 else res


def logsumexp(x: Any, axis: int = -1, *, keepdims: bool = False) -> Any:
    """``log(sum(exp(x)))`` along ``axis``, as ``max + log(sum(exp(x - max)))``.

    An empty class axis or a slice of only ``-inf`` gives ``-inf``; ``+inf`` gives ``+inf``.
    A 1-D input gives a NumPy scalar.

    Examples
    --------
    >>> import fastlogits as fl
    >>> round(float(fl.logsumexp([1000.0, 1000.0])), 6)
    1000.693147
    """
    return _row_reduce(x, axis, keepdims, _LOGSUMEXP, "logsumexp")


def entropy(x: Any, axis: int = -1, *, keepdims: bool = False) -> Any:
    """Shannon entropy in nats of ``softmax(x)`` along ``axis``.

    Computed from max-shifted logits as ``log s - sum(e_i * (x_i - m)) / s`` so that rows of
    ties do not cancel; ``-inf`` logits contribute 0. A slice with NaN, ``+inf`` or only
    ``-inf`` gives NaN; an empty class axis gives 0.

    Examples
    --------
    >>> import fastlogits as fl
    >>> round(float(fl.entropy([0.0, 0.0, 0.0, 0.0])), 6)  # log(4)
    1.386294
    """
    return _row_reduce(x, axis, keepdims, _ENTROPY, "entropy")


def predict(x: Any, axis: int = -1) -> Any:
    """Index of the largest logit along ``axis`` (int64); ties go to the lowest index and NaN
    counts as the largest value.

    Examples
    --------
    >>> import fastlogits as fl
    >>> fl.predict([[2.5, 0.3, -1.2], [0.1, 4.0, 4.0]]).tolist()
    [0, 1]
    """
    a, ax = _class_input(x, axis, "predict")
    if a.shape[ax] == 0:
        raise ValueError(f"predict: the class axis {ax} of x is empty (shape {a.shape})")
    shape = a.shape[:ax] + a.shape[ax + 1:]
    res = np.empty(shape, dtype=np.int64)
    if res.size:
        g = make_grid([a, with_axis(res, ax)], ax, a.shape[ax], n_outputs=1)
        _core.argmax(g.specs[0], g.specs[1], g.grid)
        g.finish()
    return res[()] if res.ndim == 0 else res


def _threshold_logit(threshold: Any) -> float:
    if isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, (int, float, np.integer, np.floating)):
        raise TypeError(f"threshold: expected a number in (0, 1), got {type(threshold).__name__}")
    t = float(threshold)
    if not 0.0 < t < 1.0:
        raise ValueError(f"threshold: expected a number in (0, 1), got {threshold!r}")
    return math.log(t / (1.0 - t))


def predict_binary(x: Any, threshold: float = 0.5) -> Any:
    """``sigmoid(x) > threshold`` decided in logit space, ``x > log(t / (1 - t))``, elementwise.

    No sigmoid is evaluated; NaN logits give False. ``threshold`` must lie in (0, 1).

    Examples
    --------
    >>> import fastlogits as fl
    >>> fl.predict_binary([1.2, -0.3, 3.0], threshold=0.9).tolist()
    [False, False, True]
    """
    t = _threshold_logit(threshold)
    a = as_logits(x, "x")
    scalar = a.ndim == 0
    a1 = a.reshape(1) if scalar else a
    res = np.empty_like(a1, dtype=np.bool_)
    if a1.size:
        ax = _elementwise_axis(a1)
        g = make_grid([a1, res], ax, a1.shape[ax], n_outputs=1)
        _core.threshold(g.specs[0], g.specs[1], g.grid, t)
        g.finish()
    return res[0] if scalar else res


def topk(x: Any, k: int, axis: int = -1) -> Tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest logits along ``axis`` and their indices (int64), sorted by value
    descending; ties go to the lower index and NaN counts as the largest. ``1 <= k <= C``.

    Examples
    --------
    >>> import fastlogits as fl
    >>> values, indices = fl.topk([0.5, 2.0, -1.0, 2.0], 2)
    >>> values.tolist(), indices.tolist()
    ([2.0, 2.0], [1, 3])
    """
    a, ax = _class_input(x, axis, "topk")
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k: expected an int, got {type(k).__name__}")
    c = a.shape[ax]
    if not 1 <= k <= c:
        raise ValueError(f"k: expected 1 <= k <= {c} (the length of axis {ax}), got {k}")
    shape = a.shape[:ax] + (int(k),) + a.shape[ax + 1:]
    values = np.empty(shape, dtype=a.dtype)
    indices = np.empty(shape, dtype=np.int64)
    if values.size:
        g = make_grid([a, values, indices], ax, c, n_outputs=2)
        _core.topk(g.specs[0], g.specs[1], g.specs[2], g.grid, int(k))
        g.finish()
    return values, indices
