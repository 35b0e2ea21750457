"""Brent's root finder (R. P. Brent, "Algorithms for Minimization without Derivatives", 1973,
chapter 4): bisection safeguarding secant and inverse quadratic steps, for fit_temperature."""
from __future__ import annotations

import math
from typing import Callable


def brent(f: Callable[[float], float], a: float, b: float, fa: float, fb: float, tol: float) -> float:
    """Root of f in [a, b] (fa, fb of opposite signs) by Brent's method, to |x - x*| <= tol."""
    if fb == 0.0:
        return b
    c, fc = a, fa
    d = e = b - a
    for _ in range(200):
        if (fb > 0) == (fc > 0):
            c, fc = a, fa
            d = e = b - a
        if abs(fc) < abs(fb):
            a, b, c = b, c, b
            fa, fb, fc = fb, fc, fb
        tol1 = 2.0 * 2.2e-16 * abs(b) + 0.5 * tol
        xm = 0.5 * (c - b)
        if abs(xm) <= tol1 or fb == 0.0:
            return b
        if abs(e) >= tol1 and abs(fa) > abs(fb):
            s = fb / fa
            if a == c:
                pp, q = 2.0 * xm * s, 1.0 - s
            else:
                q, r = fa / fc, fb / fc
                pp = s * (2.0 * xm * q * (q - r) - (b - a) * (r - 1.0))
                q = (q - 1.0) * (r - 1.0) * (s - 1.0)
            if pp > 0:
                q = -q
            pp = abs(pp)
            if 2.0 * pp < min(3.0 * xm * q - abs(tol1 * q), abs(e * q)):
                e, d = d, pp / q
            else:
                d = e = xm
        else:
            d = e = xm
        a, fa = b, fb
        b += d if abs(d) > tol1 else math.copysign(tol1, xm)
        fb = f(b)
    return b
