"""Temperature scaling (API sections 4 and 7): ``fit_temperature``.

The NLL of ``logits / T`` is convex in ``1/T``; its derivative in ``1/T`` is
``T * sum_i s_i (E_p[z_i] - z_{i,y})`` (``z = logits / T``; binary ``(p - y) z``), one of the
scoring kernel's sums (csrc/fl_score.c): each evaluation is one streaming pass over the rows
whose target is not ``ignore_index`` (``_score.run``). ``search`` brackets the root in ``log T`` from
T = 1 and refines it with Brent's method; ``fastlogits.dask`` runs the same search with a
derivative computed on the Dask scheduler.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable

from . import _rsum, _score, _score_check
from ._brent import brent
from ._input import int64_value
from ._score_check import Spec
from ._score_state import ScoreState

# Temperatures are searched in [1/T_RANGE, T_RANGE], to |log T - log T*| <= _LOG_T_TOL.
T_RANGE = 1e6
_LOG_T_TOL = 1e-8


def slope_spec(temperature: float, ignore_index: int) -> Spec:
    """fit_temperature's sums: the weight and the gap E_p[z] - z_y at one temperature, over the
    rows whose target is not ``ignore_index``."""
    return Spec((), 1, 1, temperature, False, False, (1 << _score_check._W) | (1 << _score_check._GAP), ignore_index)


def slope(temperature: float, state: ScoreState) -> float:
    """The derivative of the NLL in 1/T from the merged state of a pass at ``temperature``."""
    return temperature * float(_rsum.value(state.sums[_score_check._GAP]))


def _on_bound(t: float) -> float:
    """``t`` (a search bound), with the RuntimeWarning that says why the search ended there."""
    if t < 1.0:
        why = ("the NLL keeps decreasing as T -> 0: the data are separable (every scored row is "
               "predicted correctly, so sharper is always better)")
    else:
        why = ("the NLL keeps decreasing as T -> inf: the logits carry no usable information "
               "(e.g. every prediction is wrong, or the logits are constant)")
    warnings.warn(f"fit_temperature: {why}; returning the search bound T = {t:g}", RuntimeWarning, stacklevel=4)
    return t


def search(derivative: Callable[[float], float]) -> float:
    """The T whose ``derivative(u)`` (of the NLL in 1/T at T = exp(-u), increasing in u) is 0,
    in [1/T_RANGE, T_RANGE]; a bound with a RuntimeWarning when the root lies beyond it."""
    u_max = math.log(T_RANGE)
    f0 = derivative(0.0)
    if math.isnan(f0):
        return float("nan")
    if f0 == 0.0:
        return 1.0
    a, fa = 0.0, f0
    direction = 1.0 if f0 < 0 else -1.0  # f increases with u = log(1/T)
    step = 1.0
    while True:
        b = direction * min(step, u_max)
        fb = derivative(b)
        if math.isnan(fb):
            return float("nan")
        if (fb > 0 and direction > 0) or (fb < 0 and direction < 0):
            break
        if abs(b) >= u_max:
            return _on_bound(1.0 / T_RANGE if direction > 0 else T_RANGE)
        a, fa = b, fb
        step *= 2.0
    return math.exp(-brent(derivative, a, b, fa, fb, _LOG_T_TOL))


def fit_temperature(logits: Any, target: Any, *, axis: int = -1, sample_weight: Any = None,
                    ignore_index: int = -100) -> float:
    """The temperature T > 0 minimising the (sample-weighted) NLL of ``logits / T``.

    The task is inferred as in :func:`score`. The NLL is convex in ``1/T``; its derivative in
    ``1/T`` is ``T * sum_i s_i (E_p[z_i] - z_{i,y})`` (``z = logits/T``; binary: ``(p - y) z``),
    which the scoring kernel returns from one streaming pass. Its root is bracketed in
    ``log T`` starting from T = 1 and refined with Brent's method to
    ``|log T - log T*| <= 1e-8`` (a relative tolerance of 1e-8 on T, down to the rounding noise
    of the float32 arithmetic for float32 logits). Each evaluation is one pass over the data,
    typically 10 to 20 in all. Targets equal to ``ignore_index`` are left out, as in
    :func:`score` (multiclass and binary rows, multilabel elements; language-model padding).

    The search is limited to ``[1e-6, 1e6]``: when the minimum lies beyond a bound, that bound
    is returned with a ``RuntimeWarning`` (``1e-6`` for separable data, where sharper is always
    better; ``1e6`` when no finite T improves on T -> inf, e.g. every prediction wrong). NaN
    logits give NaN.

    Examples
    --------
    >>> import numpy as np, fastlogits as fl
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(20000, 5)) * 3
    >>> y = (rng.random(20000)[:, None] < np.cumsum(fl.softmax(z), axis=1)).argmax(axis=1)
    >>> round(fl.fit_temperature(z * 2.0, y), 1)  # logits twice too sharp
    2.0
    """
    p = _score_check.check(logits, target, None, axis, sample_weight)
    ignore = int64_value(ignore_index, "ignore_index")

    def derivative(u: float) -> float:
        t = math.exp(-u)
        return slope(t, _score.run(p, slope_spec(t, ignore)))

    return search(derivative)
