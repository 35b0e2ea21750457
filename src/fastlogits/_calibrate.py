"""Temperature scaling (API section 4): ``fit_temperature``, the temperature that minimises the
NLL of ``logits / T``, found by Brent's method on the derivative of the NLL in ``1/T``. Each
evaluation of the derivative is one streaming pass of the scoring kernel (``_score.run_pass``
with ``_score.slope_spec``), whose order-independent sums make it bitwise reproducible."""
from __future__ import annotations

import math
from typing import Any

from . import _score
from ._brent import brent

# Temperatures are searched in [1/_T_RANGE, _T_RANGE], to |log T - log T*| <= _LOG_T_TOL.
_T_RANGE = 1e6
_LOG_T_TOL = 1e-8


def fit_temperature(logits: Any, target: Any, *, axis: int = -1, sample_weight: Any = None) -> float:
    """The temperature T > 0 minimising the (sample-weighted) NLL of ``logits / T``.

    The task is inferred as in :func:`score`. The NLL is convex in ``1/T``; its derivative in
    ``1/T`` is ``T * sum_i s_i (E_p[z_i] - z_{i,y})`` (``z = logits/T``; binary: ``(p - y) z``),
    which the scoring kernel returns from one streaming pass. Its root is bracketed in
    ``log T`` starting from T = 1 and refined with Brent's method to
    ``|log T - log T*| <= 1e-8`` (a relative tolerance of 1e-8 on T, down to the rounding noise
    of the float32 arithmetic for float32 logits). Each evaluation is one pass over the data,
    typically 10 to 20 in all. The search is limited to ``[1e-6, 1e6]``: ``1e6`` is returned
    when no finite T improves on T -> inf (uninformative logits), ``1e-6`` for separable data.
    NaN logits give NaN.

    Examples
    --------
    >>> import numpy as np, fastlogits as fl
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(20000, 5)) * 3
    >>> y = (rng.random(20000)[:, None] < np.cumsum(fl.softmax(z), axis=1)).argmax(axis=1)
    >>> round(fl.fit_temperature(z * 2.0, y), 1)  # logits twice too sharp
    2.0
    """
    p = _score.check(logits, target, None, axis, sample_weight)

    def derivative(u: float) -> float:
        """The derivative of the NLL in 1/T, at T = exp(-u)."""
        t = math.exp(-u)
        return _slope(t, _score.run_pass(p, _score.slope_spec(t), None, None))

    u_max = math.log(_T_RANGE)
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
            return 1.0 / _T_RANGE if direction > 0 else _T_RANGE
        a, fa = b, fb
        step *= 2.0
    return math.exp(-brent(derivative, a, b, fa, fb, _LOG_T_TOL))


def _slope(temperature: float, state: _score.ScoreState) -> float:
    """fit_temperature's finisher: the derivative of the NLL in 1/T from the merged state."""
    return temperature * _score.gap_total(state)

