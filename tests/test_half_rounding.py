"""float64 results written as float16 or bfloat16 are rounded once, to nearest even.

A float64 computation narrowed through float32 rounds twice: a value just below the half-way
point between two halves rounds (in float32) onto that point, then (ties to even) up. The
kernels now narrow float64 straight to the half format; every result here must equal the
correctly rounded float64 result of the same kernel, bitwise.
"""
import ml_dtypes
import numpy as np
import pytest

import fastlogits as fl

F16 = np.dtype(np.float16)
BF16 = np.dtype(ml_dtypes.bfloat16)
# (significand bits after the point, smallest normal exponent, largest finite value)
FORMATS = {F16: (10, -14, 65504.0), BF16: (7, -126, float(np.finfo(BF16).max))}


def round_once(y, dt):
    """float64 y correctly rounded to dt (ties to even): rint of y scaled by its quantum is
    exact in float64, so this is an independent reference (checked against NumPy's own
    correctly rounded float64 -> float16 cast below)."""
    mant, emin, top = FORMATS[dt]
    y = np.asarray(y, np.float64)
    finite = np.isfinite(y) & (y != 0)
    _, e = np.frexp(np.where(finite, y, 1.0))  # y = f * 2**e, 0.5 <= |f| < 1
    q = np.ldexp(1.0, np.maximum(e - 1, emin) - mant)
    r = np.where(finite, np.rint(y / q) * q, y)
    r = np.where(np.abs(r) > top, np.copysign(np.inf, y), r)
    return r.astype(dt)  # exact: r is a value of dt


def near_ties(dt, n_per_binade=40, seed=0):
    """Values just below and just above half-way points of dt, in every normal binade up to 16,
    among the subnormals, and just below 1; relative offsets of 2**-35, far above a float64
    kernel's error and far below float32's spacing."""
    mant, emin, _ = FORMATS[dt]
    rng = np.random.default_rng(seed)
    # (start of the range, spacing of dt there): the subnormals, then each binade
    ranges = [(0.0, 2.0 ** (emin - mant))] + [(2.0**e, 2.0 ** (e - mant)) for e in range(emin, 4)]
    mids = [base + (rng.integers(0, 2**mant, n_per_binade) + 0.5) * q for base, q in ranges]
    mids.append(1 - (np.arange(1, 40) + 0.5) * 2.0 ** -(mant + 1))  # half-way points below 1
    v = np.concatenate(mids)
    return np.concatenate([v * (1 - 2.0**-35), v * (1 + 2.0**-35)])


def test_reference_rounds_like_numpy():
    v = near_ties(F16)
    v = np.concatenate([v, -v, np.random.default_rng(1).standard_normal(10000) * 100])
    np.testing.assert_array_equal(round_once(v, F16).view(np.uint16), v.astype(F16).view(np.uint16))


def test_the_issue_example():
    x = np.array([np.log((1 - 2.0**-12 - 2.0**-40) / (2.0**-12 + 2.0**-40))])
    assert fl.sigmoid(x, dtype=np.float16)[0] == np.float16(1 - 2.0**-11)  # 0.9995, not 1.0
    xb = np.array([np.log((1 - 2.0**-9 - 2.0**-40) / (2.0**-9 + 2.0**-40))])
    assert fl.sigmoid(xb, dtype=BF16)[0] == (1 - 2.0**-8)


def _logits(dt, log):
    """Logits whose sigmoid (log=False) or log_sigmoid (log=True) lies just off half-way points
    of dt: x = logit(p) for probabilities p near ties, x = t - log(-expm1(t)) for log values t."""
    v = near_ties(dt)
    if log:
        t = -v[v < 700]
        return t - np.log(-np.expm1(t))
    p = v[v < 1]
    return np.log(p) - np.log1p(-p)


def _assert_rounded_once(got, y64, dt, what):
    want = round_once(y64, dt)
    g, w = got.view(np.uint16).ravel(), want.view(np.uint16).ravel()
    bad = np.flatnonzero(g != w)
    assert bad.size == 0, (f"{what}: {bad.size} of {g.size} differ from the correctly rounded value; "
                           f"first at {bad[0]}: float64 {y64.ravel()[bad[0]]!r} gave {got.ravel()[bad[0]]!r}, "
                           f"want {want.ravel()[bad[0]]!r}")


def _double_rounding_would_differ(y64, dt):
    """How many of y64 the former float64 -> float32 -> half narrowing got wrong (so the test
    can fail on that code)."""
    return int(np.count_nonzero(round_once(y64, dt).view(np.uint16)
                                != round_once(y64.astype(np.float32).astype(np.float64), dt).view(np.uint16)))


@pytest.mark.parametrize("dt", [F16, BF16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("func", [fl.sigmoid, fl.log_sigmoid], ids=["sigmoid", "log_sigmoid"])
def test_sigmoid_and_log_sigmoid(dt, func):
    x = _logits(dt, log=func is fl.log_sigmoid)
    y64 = func(x)
    assert _double_rounding_would_differ(y64, dt) > 10
    _assert_rounded_once(func(x, dtype=dt), y64, dt, func.__name__)
    out = np.empty((x.size, 2), dt)[:, 1]  # strided: written through the scratch row
    func(x, out=out)
    _assert_rounded_once(out, y64, dt, func.__name__ + " out=")


@pytest.mark.parametrize("dt", [F16, BF16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("func", [fl.softmax, fl.log_softmax], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("layout", ["rows", "strided_out", "axis0"])
def test_softmax_and_log_softmax(dt, func, layout):
    """Rows [0, d]: softmax gives [sigmoid(-d), sigmoid(d)] and log_softmax the log_sigmoids, so
    values just off half-way points reach these kernels too, in every output layout."""
    d = _logits(dt, log=func is fl.log_softmax)
    x = np.stack([np.zeros_like(d), d], axis=1)
    axis = -1
    if layout == "axis0":
        x, axis = np.ascontiguousarray(x.T), 0
    y64 = func(x, axis=axis)
    assert _double_rounding_would_differ(y64, dt) > 10
    if layout == "strided_out":
        got = func(x, axis=axis, out=np.empty((x.shape[0], 2 * x.shape[1]), dt)[:, ::2])
    else:
        got = func(x, axis=axis, dtype=dt)
    _assert_rounded_once(got, y64, dt, f"{func.__name__} ({layout})")


@pytest.mark.parametrize("dt", [F16, BF16], ids=["float16", "bfloat16"])
def test_overflow_threshold_and_special_values(dt):
    """log_sigmoid(x) is x itself (exactly, in float64) for x <= -50, so it carries values
    straight to the narrowing: just inside the overflow threshold stays the largest finite
    value (rounding through float32 made it inf), at and beyond it is inf; nan stays nan."""
    mant, _, top = FORMATS[dt]
    half_ulp = 2.0 ** (np.floor(np.log2(top)) - mant - 1)
    x = -np.array([top, top + half_ulp * (1 - 2.0**-30), top + half_ulp, 1e300, 60.0, np.inf])
    y64 = fl.log_sigmoid(x)
    np.testing.assert_array_equal(y64, x)
    got = fl.log_sigmoid(x, dtype=dt)
    _assert_rounded_once(got, y64, dt, "log_sigmoid at the overflow threshold")
    assert got[1] == -top and got[2] == -np.inf
    got = fl.sigmoid(np.array([np.nan, np.inf, -np.inf]), dtype=dt)
    assert np.isnan(got[0]) and got[1] == 1 and got[2] == 0
