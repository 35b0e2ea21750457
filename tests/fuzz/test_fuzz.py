"""Hypothesis fuzzing of every kernel against fastlogits.reference.

Random shapes (including empty and length-1 axes), layouts (stepped slices, transposes,
negative strides, big-endian, unaligned), dtypes (float16, bfloat16, float32, float64, ints,
bool), values (ordinary, wide, near the float32 exp limits, +-1e30, +-inf, nan, ties) and axes,
for the postprocessing functions, the three losses with their gradients and options, and score.
Oracles and tolerances are those of the parity tests (tests/test_postprocessing.py,
tests/test_cross_entropy.py, tests/test_bce.py), whose checkers are reused as they are.

Each test runs in two modes:
- ``smoke`` (the default run): SMOKE_EXAMPLES examples derived from the test alone
  (``derandomize=True``), the same on every run; it keeps the harness working;
- ``random`` (marker ``fuzz``, deselected by default): fresh random examples, in rounds of 25,
  for FASTLOGITS_FUZZ_SECONDS (default 60) split evenly over the tests here:

    FASTLOGITS_FUZZ_SECONDS=1800 python -m pytest tests/fuzz -m fuzz -q

A failure prints the shrunk example and a ``@reproduce_failure`` blob; reproduce it as an
ordinary test in tests/test_regressions.py.
"""
import os
import time

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import fastlogits as fl  # noqa: E402
from fastlogits import reference as ref  # noqa: E402

import test_bce as bce_parity  # noqa: E402  (tests/ is on sys.path: tests/conftest.py)
import test_cross_entropy as ce_parity  # noqa: E402
import test_postprocessing as post_parity  # noqa: E402
from arrays import RELAYOUTS, TARGET_KINDS, WEIGHT_SPECS, as_dtype, binary_target_like, relayout, weight_like  # noqa: E402

N_TESTS = 6
BUDGET = float(os.environ.get("FASTLOGITS_FUZZ_SECONDS", "60")) / N_TESTS
SMOKE_EXAMPLES = 30
MODES = [pytest.param("smoke", id="smoke"), pytest.param("random", id="random", marks=pytest.mark.fuzz)]


def _budget(test):
    """A pytest test running ``test`` under hypothesis: a fixed set of derandomized examples
    (mode "smoke"), or rounds of 25 fresh random examples until its share of the time budget
    is spent (mode "random"; hypothesis has no wall-clock limit)."""
    common = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck), print_blob=True)
    smoke = settings(max_examples=SMOKE_EXAMPLES, derandomize=True, **common)(given(st.data())(test))
    fresh = settings(max_examples=25, derandomize=False, **common)(given(st.data())(test))

    @pytest.mark.parametrize("mode", MODES)
    def run(mode):
        if mode == "smoke":
            smoke()
            return
        stop = time.monotonic() + BUDGET
        rounds = 0
        while rounds == 0 or time.monotonic() < stop:
            fresh()
            rounds += 1

    run.__name__ = test.__name__
    run.__doc__ = test.__doc__
    return run


# --------------------------------------------------------------------------- strategies

FLOATS = ("float32", "float64", "float16", "bfloat16")
VALUE_KINDS = ("normal", "wide", "near88", "big", "special", "ties")


def _values(data, n):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    kind = data.draw(st.sampled_from(VALUE_KINDS), label="values")
    if kind == "normal":
        v = rng.standard_normal(n)
    elif kind == "wide":
        v = rng.standard_normal(n) * 40
    elif kind == "near88":
        v = rng.choice([-1.0, 1.0], n) * (88 + rng.uniform(-2, 2, n))
    elif kind == "big":
        v = rng.choice([-1.0, 1.0], n) * 10.0 ** rng.uniform(3, 30, n)
    elif kind == "ties":
        v = rng.integers(-2, 3, n).astype(np.float64)
    else:
        v = rng.choice([-np.inf, np.inf, np.nan, 0.0, -0.0, 1.0, -30.0, 1e4, -1e4], n)
        v = np.where(rng.random(n) < 0.6, rng.standard_normal(n) * 5, v)
    return v


def _cast(v, dtype):
    with np.errstate(over="ignore", invalid="ignore"):
        return v.astype(as_dtype(dtype))


def _layout(data, a):
    """``a`` with equal contents in a random memory layout."""
    kind = data.draw(st.sampled_from(["c", "fortran", "stepped", "reversed", "big-endian", "unaligned",
                                      "transposed-view"]), label="layout")
    if a.ndim == 0:
        return a
    if kind == "fortran":
        return np.asfortranarray(a)
    if kind == "stepped" and a.ndim:
        step = data.draw(st.integers(2, 3), label="step")
        big = np.zeros(tuple(n * step for n in a.shape), a.dtype)
        sl = tuple(slice(None, None, step) for _ in a.shape)
        big[sl] = a
        return big[sl]
    if kind == "reversed" and a.ndim:
        rev = tuple(slice(None, None, -1) for _ in a.shape)
        return np.ascontiguousarray(a[rev])[rev]
    if kind == "big-endian" and a.dtype.kind in "fiu" and a.dtype.itemsize > 1:
        return a.astype(a.dtype.newbyteorder(">"))
    if kind == "unaligned" and a.dtype.itemsize > 1:
        raw = np.empty(a.nbytes + 1, np.uint8)
        u = raw[1:].view(a.dtype).reshape(a.shape)
        u[...] = a
        return u
    if kind == "transposed-view" and a.ndim >= 2:
        return np.ascontiguousarray(a.T).T
    return a


def _logits(data, dtypes=FLOATS, min_dims=1, max_dims=4, min_side=0, max_side=9, big_axis=True):
    ndim = data.draw(st.integers(min_dims, max_dims), label="ndim")
    shape = list(data.draw(st.lists(st.integers(min_side, max_side), min_size=ndim, max_size=ndim), label="shape"))
    axis = data.draw(st.integers(-ndim, ndim - 1), label="axis") if ndim else -1
    if ndim and big_axis and data.draw(st.booleans(), label="long class axis"):
        shape[axis] = data.draw(st.integers(10, 700), label="classes")
        shape = [min(n, 3) if d != axis % ndim else n for d, n in enumerate(shape)]
    dtype = data.draw(st.sampled_from(dtypes), label="dtype")
    v = _values(data, int(np.prod(shape)) if shape else 1).reshape(shape)
    if dtype in ("int32", "int64", "int8", "bool"):
        x = np.clip(np.nan_to_num(v), -100, 100).astype(dtype)
    else:
        x = _cast(v, dtype)
    return _layout(data, x), axis


# --------------------------------------------------------------------------- tests

@_budget
def test_fuzz_postprocessing(data):
    """softmax, log_softmax, logsumexp, entropy, sigmoid, log_sigmoid against the reference."""
    x, axis = _logits(data, dtypes=FLOATS, min_dims=0)
    name = data.draw(st.sampled_from(list(post_parity.FUNCS)), label="function")
    post_parity._check_one(name, "fuzz", x, axis)


@_budget
def test_fuzz_integer_logits(data):
    """Integer and bool logits are float64: the same result as the float64 copy, bitwise."""
    x, axis = _logits(data, dtypes=("int32", "int64", "int8", "bool"))
    x64 = x.astype(np.float64)
    for f in (fl.softmax, fl.log_softmax, fl.logsumexp, fl.entropy):
        np.testing.assert_array_equal(f(x, axis=axis), f(x64, axis=axis))
    np.testing.assert_array_equal(fl.sigmoid(x), fl.sigmoid(x64))


@_budget
def test_fuzz_predictions_and_out(data):
    """predict, topk, predict_binary exactly as the reference; out= (fresh, strided, in place)
    gives the same values as a fresh result."""
    x, axis = _logits(data, dtypes=FLOATS)
    c = x.shape[axis]
    t = data.draw(st.floats(1e-6, 1 - 1e-6), label="threshold")
    np.testing.assert_array_equal(fl.predict_binary(x, t), ref.predict_binary(x, t))
    if c:
        np.testing.assert_array_equal(fl.predict(x, axis=axis), ref.predict(x, axis=axis))
        k = data.draw(st.integers(1, c), label="k")
        v, i = fl.topk(x, k, axis=axis)
        rv, ri = ref.topk(x, k, axis=axis)
        np.testing.assert_array_equal(i, ri)
        np.testing.assert_array_equal(v.astype(np.float64), np.asarray(rv).astype(np.float64))
    name = data.draw(st.sampled_from(["softmax", "log_softmax", "sigmoid", "log_sigmoid"]), label="out function")
    f = getattr(fl, name)
    kw = {} if "sigmoid" in name else {"axis": axis}
    want = f(x, **kw)
    how = data.draw(st.sampled_from(["fresh", "strided", "in place"]), label="out")
    xn = np.array(x, dtype=x.dtype.newbyteorder("="))            # native, aligned, writeable
    if how == "in place" and not (name == "softmax" and xn.dtype == np.float64):
        # (float64 softmax in place: xfail in tests/test_regressions.py)
        f(xn, out=xn, **kw)
        got = xn
    elif how == "strided" and x.ndim:
        buf = np.full(x.shape[:-1] + (2 * x.shape[-1],), 7, xn.dtype)
        got = f(x, out=buf[..., ::-2], **kw)
    else:
        got = f(x, out=np.empty_like(xn), **kw)
    np.testing.assert_array_equal(np.asarray(got, np.float64), np.asarray(want, np.float64))


@_budget
def test_fuzz_cross_entropy(data):
    """cross_entropy(+_and_grad), indices or probabilities, every option, vs the reference."""
    x, axis = _logits(data, dtypes=FLOATS, min_side=1, max_dims=3)
    dname = str(np.dtype(x.dtype).newbyteorder("=")) if x.dtype.kind == "f" else "bfloat16"
    kind = data.draw(st.sampled_from(["index", "prob"]), label="target kind")
    seed = data.draw(st.integers(0, 2**16), label="target seed")
    opts = data.draw(st.sampled_from(list(ce_parity.OPTIONS)), label="options")
    reduction = data.draw(st.sampled_from(ce_parity.REDUCTIONS), label="reduction")
    ignore = ce_parity.OPTIONS[opts].get("ignore_index", -100)
    t = ce_parity._targets(kind, x, axis, seed, ignore_index=ignore)
    if kind == "index":
        t = _layout(data, t.astype(data.draw(st.sampled_from(["int64", "int32", "int16", "uint16"]), label="tdt"))
                    if ignore >= 0 else t)
    kw = ce_parity._kwargs(ce_parity.OPTIONS[opts], x, axis, seed)
    ce_parity._check_against_reference(x, axis, t, kw, reduction, dname, f"fuzz {kind} {opts} {reduction}")


@_budget
def test_fuzz_binary_losses(data):
    """bce_with_logits and sigmoid_focal_loss (+_and_grad) with broadcast weights and every
    target dtype and layout vs the exact oracle."""
    dtype = data.draw(st.sampled_from(["float32", "float64", "float16", "bfloat16"]), label="dtype")
    n = data.draw(st.integers(1, 9), label="rows")
    c = data.draw(st.integers(1, 70), label="cols")
    x = _layout(data, _cast(_values(data, n * c).reshape(n, c), dtype))
    seed = data.draw(st.integers(0, 2**16), label="seed")
    rng = np.random.default_rng(seed)
    tkind = data.draw(st.sampled_from(TARGET_KINDS), label="target")
    y = binary_target_like(tkind, (n, c), seed=seed)
    y = relayout(y, data.draw(st.sampled_from(RELAYOUTS), label="target layout"))
    reduction = data.draw(st.sampled_from(["none", "mean", "sum"]), label="reduction")
    gspec = data.draw(st.sampled_from(bce_parity.GRAD_OUT), label="grad_out")
    if data.draw(st.booleans(), label="focal"):
        alpha = data.draw(st.sampled_from([0.25, -1.0, 0.6]), label="alpha")
        gamma = data.draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.7]), label="gamma")
        bce_parity._check_binary("sigmoid_focal_loss", x, y, {"alpha": alpha, "gamma": gamma}, reduction, gspec,
                                 f"fuzz focal {tkind} alpha={alpha} gamma={gamma} {reduction}")
    else:
        w = weight_like(data.draw(st.sampled_from(WEIGHT_SPECS), label="weight"), (n, c), rng)
        pw = weight_like(data.draw(st.sampled_from(WEIGHT_SPECS), label="pos_weight"), (n, c), rng)
        bce_parity._check_binary("bce_with_logits", x, y, {"weight": w, "pos_weight": pw}, reduction, gspec,
                                 f"fuzz bce {tkind} {reduction}")


@_budget
def test_fuzz_score(data):
    """score: chunk_rows and thread count never change the result (bitwise); counts exact;
    nll equals the mean cross-entropy."""
    x, axis = _logits(data, dtypes=("float32", "float64"), min_dims=2, max_dims=3, min_side=1, big_axis=False)
    c = x.shape[axis]
    seed = data.draw(st.integers(0, 2**16), label="seed")
    t = ce_parity.class_targets(x.shape, axis, seed=seed, ignore_frac=0.0)
    base = fl.score(x, t, axis=axis, task="multiclass", k=min(2, c))
    chunk = data.draw(st.integers(1, 20), label="chunk_rows")
    again = fl.score(x, t, axis=axis, task="multiclass", k=min(2, c), chunk_rows=chunk)
    assert np.array_equal(np.array(list(base.values()), float), np.array(list(again.values()), float), equal_nan=True)
    assert base["count"] == t.size
    nll = fl.cross_entropy(x.astype(np.float64), t, axis=axis)
    if np.isfinite(nll):
        # both within a few ULP of the compute dtype; score adds its block sums' n * 2**-53
        eps = 2.0**-23 if x.dtype.newbyteorder("=") == np.float32 else 2.0**-52
        assert base["nll"] == pytest.approx(nll, rel=32 * eps + t.size * 2.0**-53)
