"""Bad input, every public function and CLI command (issue 8): each row of the matrix gets the
documented exception, naming the argument, or a documented result; nothing crashes.

Rows: wrong dtypes (complex, object, strings, structured, datetime, long double), wrong and
mismatched shapes, 0-d and empty arrays, class indices out of range (negative, C, huge, uint64,
ignore_index variants), float targets outside [0, 1], NaN/inf in every argument, unusual
layouts (stepped, negative stride, Fortran, broadcast, big-endian, unaligned, read-only),
out=/grad_out= misuse and aliasing, k/axis/threshold out of range, bad files for the CLI
(truncated, corrupt, pickled object arrays that must never be unpickled, missing).

The last test, marked ``slow``, runs kernels on more than 2**31 elements (64-bit indexing). It
runs by default (about 80 s and 5 GiB resident at most on the 2-core CI machine, within its
budget); deselect it with ``-m "not slow"`` on a small machine.
"""
import contextlib
import io
import os
import subprocess

import numpy as np
import pytest

import fastlogits as fl
from fastlogits import cli

from arrays import bfloat16

RNG = np.random.default_rng(8)
X = RNG.standard_normal((6, 5))                 # float64 logits, 6 rows, C = 5
YI = np.array([0, 4, 2, 1, 3, 0])               # class indices
YP = fl.softmax(RNG.standard_normal((6, 5)))    # class probabilities
YB = (RNG.random((6, 5)) < 0.5).astype(np.float64)  # binary targets


def _index_target(x):
    """Valid class indices for logits of x's shape (class axis last; anything for junk x)."""
    try:
        shape = np.shape(x)
    except ValueError:
        return YI
    if len(shape) == 0:
        return np.int64(0)
    return np.arange(int(np.prod(shape[:-1]))).reshape(shape[:-1]) % max(shape[-1], 1)


def _binary_target(x):
    try:
        np.shape(x)
    except ValueError:
        return YB
    return (np.arange(np.size(x)).reshape(np.shape(x)) % 2).astype(np.float64)


# name -> (call with logits x, the name the error message uses for the logits)
FUNCS = {
    "sigmoid": (lambda x: fl.sigmoid(x), "x"),
    "log_sigmoid": (lambda x: fl.log_sigmoid(x), "x"),
    "softmax": (lambda x: fl.softmax(x), "x"),
    "log_softmax": (lambda x: fl.log_softmax(x), "x"),
    "logsumexp": (lambda x: fl.logsumexp(x), "x"),
    "entropy": (lambda x: fl.entropy(x), "x"),
    "predict": (lambda x: fl.predict(x), "x"),
    "predict_binary": (lambda x: fl.predict_binary(x), "x"),
    "topk": (lambda x: fl.topk(x, 2), "x"),
    "cross_entropy": (lambda x: fl.cross_entropy(x, _index_target(x), reduction="none"), "logits"),
    "cross_entropy_and_grad": (lambda x: fl.cross_entropy_and_grad(x, _index_target(x), reduction="none"), "logits"),
    "bce_with_logits": (lambda x: fl.bce_with_logits(x, _binary_target(x), reduction="none"), "logits"),
    "bce_with_logits_and_grad": (lambda x: fl.bce_with_logits_and_grad(x, _binary_target(x), reduction="none"), "logits"),
    "sigmoid_focal_loss": (lambda x: fl.sigmoid_focal_loss(x, _binary_target(x), reduction="none"), "logits"),
    "sigmoid_focal_loss_and_grad": (lambda x: fl.sigmoid_focal_loss_and_grad(x, _binary_target(x), reduction="none"), "logits"),
    "score": (lambda x: fl.score(x, _index_target(x)), "logits"),
    "fit_temperature": (lambda x: fl.fit_temperature(x, _index_target(x)), "logits"),
}
CLASS_FUNCS = ["softmax", "log_softmax", "logsumexp", "entropy", "predict", "topk", "cross_entropy",
               "cross_entropy_and_grad", "score", "fit_temperature"]
ELEMENTWISE = ["sigmoid", "log_sigmoid", "predict_binary", "bce_with_logits", "bce_with_logits_and_grad",
               "sigmoid_focal_loss", "sigmoid_focal_loss_and_grad"]
LOSSES_WITH_TARGET = ["cross_entropy", "cross_entropy_and_grad", "bce_with_logits", "bce_with_logits_and_grad",
                      "sigmoid_focal_loss", "sigmoid_focal_loss_and_grad", "score", "fit_temperature"]


def _as_tuple(r):
    return r if isinstance(r, tuple) else (r,)


def assert_same_result(a, b, context=""):
    """Bitwise equality of two results (arrays, scalars, floats, dicts, tuples); nan == nan."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), context
        for k in a:
            assert_same_result(a[k], b[k], f"{context}[{k}]")
        return
    for u, v in zip(_as_tuple(a), _as_tuple(b)):
        u, v = np.asarray(u), np.asarray(v)
        assert u.shape == v.shape and u.dtype == v.dtype, (context, u.shape, v.shape, u.dtype, v.dtype)
        if u.dtype.kind == "f" or u.dtype == bfloat16:
            np.testing.assert_array_equal(u.astype(np.float64), v.astype(np.float64), err_msg=context)
        else:
            np.testing.assert_array_equal(u, v, err_msg=context)


# ------------------------------------------------------------------------------ dtypes

BAD_DTYPES = {
    "complex": X.astype(np.complex128),
    "object": X.astype(object),
    "strings": np.full((6, 5), "1.0"),
    "bytes": np.full((6, 5), b"1.0"),
    "structured": np.zeros((6, 5), dtype=[("a", "f4"), ("b", "f4")]),
    "datetime": np.zeros((6, 5), dtype="M8[s]"),
    "timedelta": np.zeros((6, 5), dtype="m8[s]"),
    "longdouble": X.astype(np.longdouble),
    "void": np.zeros((6, 5), dtype="V4"),
}


@pytest.mark.parametrize("kind", list(BAD_DTYPES))
@pytest.mark.parametrize("name", list(FUNCS))
def test_bad_logits_dtype_raises_type_error(name, kind):
    call, arg = FUNCS[name]
    with pytest.raises(TypeError, match=rf"\b{arg}\b"):
        call(BAD_DTYPES[kind])


@pytest.mark.parametrize("name", list(FUNCS))
def test_non_array_logits_raise_type_error(name):
    call, arg = FUNCS[name]
    for bad in (None, "abc", {}, [[1.0, 2.0], [3.0]], object()):
        with pytest.raises(TypeError, match=rf"\b{arg}\b"):
            call(bad)


@pytest.mark.parametrize("kind", ["complex", "object", "strings", "structured", "datetime"])
@pytest.mark.parametrize("name", LOSSES_WITH_TARGET)
def test_bad_target_dtype_raises_type_error(name, kind):
    bad = BAD_DTYPES[kind]
    if name.startswith(("cross_entropy", "score", "fit_temperature")):
        bad = bad[:, 0]  # the index-target shape, so the dtype is what is wrong
    call = getattr(fl, name)
    with pytest.raises(TypeError, match="target"):
        call(X, bad)


@pytest.mark.parametrize("name", ["cross_entropy", "cross_entropy_and_grad", "score", "fit_temperature"])
def test_bool_class_targets_raise_type_error(name):
    with pytest.raises(TypeError, match="target"):
        getattr(fl, name)(X, YI > 1)


@pytest.mark.parametrize("arg", ["weight", "sample_weight"])
def test_bad_weight_dtypes_in_cross_entropy(arg):
    good = {"weight": np.ones(5), "sample_weight": np.ones(6)}[arg]
    for bad in (good.astype(complex), good.astype(str), good.astype(object)):
        with pytest.raises(TypeError, match=arg):
            fl.cross_entropy(X, YI, **{arg: bad})


@pytest.mark.parametrize("arg", ["weight", "pos_weight"])
def test_bad_weight_dtypes_in_bce(arg):
    for bad in (1j, np.ones(5, complex), np.ones(5).astype(str), np.array([None] * 5)):
        with pytest.raises(TypeError, match=arg):
            fl.bce_with_logits(X, YB, **{arg: bad})


@pytest.mark.parametrize("name", ["score", "fit_temperature"])
def test_bad_sample_weight_dtype_in_scoring(name):
    with pytest.raises(TypeError, match="sample_weight"):
        getattr(fl, name)(X, YI, sample_weight=np.ones(6, complex))


@pytest.mark.parametrize("name", ["sigmoid", "softmax", "log_softmax", "log_sigmoid"])
def test_bad_output_dtype_argument(name):
    for bad in (np.int32, np.complex64, np.longdouble, "banana", object):
        with pytest.raises(TypeError, match="dtype"):
            getattr(fl, name)(X, dtype=bad)


@pytest.mark.parametrize("name", list(FUNCS))
def test_integer_and_bool_logits_are_float64(name):
    """Documented: integer and bool logits are converted to float64, as NumPy does."""
    call, _ = FUNCS[name]
    xi = np.arange(30).reshape(6, 5) % 7 - 3
    assert_same_result(call(xi), call(xi.astype(np.float64)), name)
    assert_same_result(call(xi.astype(np.uint8)), call(xi.astype(np.uint8).astype(np.float64)), name)
    assert_same_result(call(xi > 0), call((xi > 0).astype(np.float64)), name)


# ------------------------------------------------------------------------------ shapes

@pytest.mark.parametrize("name", CLASS_FUNCS)
def test_zero_d_logits_raise_value_error_for_class_functions(name):
    call, arg = FUNCS[name]
    with pytest.raises(ValueError, match=arg):
        call(np.float64(1.0))


@pytest.mark.parametrize("name", ["sigmoid", "log_sigmoid", "predict_binary"])
def test_zero_d_logits_give_a_scalar_for_elementwise_functions(name):
    r = getattr(fl, name)(np.float32(1.5))
    assert isinstance(r, np.generic) and np.ndim(r) == 0
    assert r == getattr(fl, name)(np.array([1.5], np.float32))[0]


@pytest.mark.parametrize("name", ["bce_with_logits", "sigmoid_focal_loss"])
def test_zero_d_binary_losses(name):
    loss = getattr(fl, name)(np.float64(0.3), 1.0, reduction="none")
    assert np.ndim(loss) == 0
    assert loss == getattr(fl, name)(np.array([0.3]), [1.0], reduction="none")[0]
    l2, g = getattr(fl, name + "_and_grad")(np.float64(0.3), 1.0, reduction="mean")
    assert isinstance(l2, float) and np.ndim(g) == 0 and g.dtype == np.float64


EMPTY_ROWS = np.zeros((0, 5))
EMPTY_CLASSES = np.zeros((4, 0))


@pytest.mark.parametrize("name", ["sigmoid", "log_sigmoid", "softmax", "log_softmax", "predict_binary"])
def test_empty_arrays_same_shape_outputs(name):
    for x in (EMPTY_ROWS, EMPTY_CLASSES, np.zeros(0, np.float32)):
        r = getattr(fl, name)(x)
        assert r.shape == x.shape


def test_empty_arrays_reductions():
    assert fl.logsumexp(EMPTY_ROWS).shape == (0,)
    assert fl.entropy(EMPTY_ROWS).shape == (0,)
    assert fl.predict(EMPTY_ROWS).shape == (0,)
    v, i = fl.topk(EMPTY_ROWS, 3)
    assert v.shape == i.shape == (0, 3)
    # documented: an empty class axis gives logsumexp = -inf and entropy 0
    np.testing.assert_array_equal(fl.logsumexp(EMPTY_CLASSES), np.full(4, -np.inf))
    np.testing.assert_array_equal(fl.entropy(EMPTY_CLASSES), np.zeros(4))
    assert fl.logsumexp(np.zeros(0)) == -np.inf
    with pytest.raises(ValueError, match="empty"):
        fl.predict(EMPTY_CLASSES)
    with pytest.raises(ValueError, match="k"):
        fl.topk(EMPTY_CLASSES, 1)


def test_empty_losses_follow_pytorch():
    assert np.isnan(fl.cross_entropy(EMPTY_ROWS, np.zeros(0, np.int64)))
    assert fl.cross_entropy(EMPTY_ROWS, np.zeros(0, np.int64), reduction="sum") == 0.0
    loss, g = fl.cross_entropy_and_grad(EMPTY_ROWS, np.zeros((0, 5)), reduction="none")
    assert loss.shape == (0,) and g.shape == (0, 5)
    assert np.isnan(fl.bce_with_logits(EMPTY_ROWS, EMPTY_ROWS))
    assert fl.sigmoid_focal_loss(EMPTY_ROWS, EMPTY_ROWS, reduction="sum") == 0.0
    # an empty class axis: every index is out of range unless ignored
    with pytest.raises(IndexError, match="target"):
        fl.cross_entropy(EMPTY_CLASSES, np.zeros(4, np.int64))
    assert np.isnan(fl.cross_entropy(EMPTY_CLASSES, np.full(4, -100)))
    loss, g = fl.cross_entropy_and_grad(EMPTY_CLASSES, np.zeros((4, 0)), label_smoothing=0.5, reduction="sum")
    assert loss == 0.0 and g.shape == (4, 0)


def test_empty_scoring():
    r = fl.score(EMPTY_ROWS, np.zeros(0, np.int64))
    assert r["count"] == 0 and np.isnan(r["nll"])
    assert fl.fit_temperature(EMPTY_ROWS, np.zeros(0, np.int64)) == 1.0


@pytest.mark.parametrize("name", ["cross_entropy", "cross_entropy_and_grad"])
def test_cross_entropy_mismatched_shapes(name):
    f = getattr(fl, name)
    for bad in (YI[:5], YI.reshape(2, 3), YP[:, :4], YP.T):
        with pytest.raises(ValueError, match=r"target.*\(6, 5\)"):
            f(X, bad)
    with pytest.raises(ValueError, match="weight"):
        f(X, YI, weight=np.ones(4))
    with pytest.raises(ValueError, match="weight"):
        f(X, YI, weight=np.ones((1, 5)))
    with pytest.raises(ValueError, match="sample_weight"):
        f(X, YI, sample_weight=np.ones(5))
    with pytest.raises(ValueError, match="sample_weight"):
        f(X, YI, sample_weight=np.ones((6, 1)))
    with pytest.raises(ValueError, match="target"):
        f(X, YI, axis=0)  # with axis 0 the row shape is (5,)


@pytest.mark.parametrize("name", ["bce_with_logits", "bce_with_logits_and_grad", "sigmoid_focal_loss",
                                  "sigmoid_focal_loss_and_grad"])
def test_binary_losses_mismatched_shapes(name):
    f = getattr(fl, name)
    for bad in (YB[:5], YB.T, YB[:, :1], YB.reshape(-1)):
        with pytest.raises(ValueError, match="target"):
            f(X, bad)
    if name.startswith("bce"):
        for arg in ("weight", "pos_weight"):
            for bad in (np.ones(4), np.ones((6, 5, 1)), np.ones((5, 6))):
                with pytest.raises(ValueError, match=arg):
                    f(X, YB, **{arg: bad})


@pytest.mark.parametrize("name", ["score", "fit_temperature"])
def test_scoring_mismatched_shapes(name):
    f = getattr(fl, name)
    with pytest.raises(ValueError, match="target"):
        f(X, YI[:5])
    with pytest.raises(ValueError, match="sample_weight"):
        f(X, YI, sample_weight=np.ones(5))
    with pytest.raises(ValueError, match="target"):
        fl.score(X, YI, task="multilabel")


def test_grad_out_and_out_of_the_wrong_shape():
    with pytest.raises(ValueError, match="out"):
        fl.softmax(X, out=np.empty((5, 6)))
    with pytest.raises(ValueError, match="out"):
        fl.sigmoid(X, out=np.empty(30))
    with pytest.raises(ValueError, match="grad_out"):
        fl.cross_entropy_and_grad(X, YI, grad_out=np.empty((6, 4)))
    with pytest.raises(ValueError, match="grad_out"):
        fl.bce_with_logits_and_grad(X, YB, grad_out=np.empty((5, 6)))


# ------------------------------------------------------------------------------ class indices

BAD_INDICES = {
    "negative": -1,
    "C": 5,
    "huge": 2**62,
    "int64 min": np.iinfo(np.int64).min,
    "-101": -101,
}


@pytest.mark.parametrize("kind", list(BAD_INDICES))
@pytest.mark.parametrize("name", ["cross_entropy", "cross_entropy_and_grad"])
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint64, np.int8])
def test_class_index_out_of_range_raises_index_error(name, kind, dtype):
    value = BAD_INDICES[kind]
    if np.iinfo(dtype).min > value or np.iinfo(dtype).max < value:
        pytest.skip("not representable")
    t = YI.astype(dtype)
    t[3] = value
    for reduction in ("mean", "sum", "none"):
        with pytest.raises(IndexError, match=rf"target: class index {value} at position \(3,\)"):
            getattr(fl, name)(X, t, reduction=reduction)


def test_class_index_errors_name_the_first_position_in_c_order():
    x = RNG.standard_normal((2, 5, 3))   # axis=1: row shape (2, 3)
    t = np.zeros((2, 3), np.int64)
    t[1, 0] = 7
    t[0, 2] = -3
    with pytest.raises(IndexError, match=r"class index -3 at position \(0, 2\)"):
        fl.cross_entropy(x, t, axis=1)
    grad = np.full_like(x, 42.0)
    with pytest.raises(IndexError):
        fl.cross_entropy_and_grad(x, t, axis=1, grad_out=grad, reduction="sum")
    assert np.all(grad == 42.0)  # checked before anything is written


def test_uint64_beyond_int64_is_out_of_range():
    t = YI.astype(np.uint64)
    t[2] = np.iinfo(np.uint64).max
    with pytest.raises(IndexError, match="target"):
        fl.cross_entropy(X, t)


def test_ignore_index_variants():
    base = fl.cross_entropy(X[:5], YI[:5], reduction="sum")
    for ignore in (-1, 5, 2**62, -(2**63), 255):
        t = YI.copy()
        t[5] = ignore
        assert fl.cross_entropy(X, t, ignore_index=ignore, reduction="sum") == pytest.approx(base, rel=1e-15)
        loss, g = fl.cross_entropy_and_grad(X, t, ignore_index=ignore, reduction="none")
        assert loss[5] == 0.0 and np.all(g[5] == 0.0)
    # an ignore_index inside [0, C) ignores that class's rows
    assert fl.cross_entropy(X, YI, ignore_index=0, reduction="sum") == pytest.approx(
        fl.cross_entropy(X[YI != 0], YI[YI != 0], reduction="sum"), rel=1e-15)
    # int8 targets compare with ignore_index as integers
    t8 = YI.astype(np.int8)
    t8[5] = -1
    assert fl.cross_entropy(X, t8, ignore_index=-1, reduction="sum") == pytest.approx(base, rel=1e-15)
    with pytest.raises(IndexError, match="-1"):
        fl.cross_entropy(X, t8)  # -1 is not the default ignore_index
    for bad in (2**64, -(2**63) - 1):
        with pytest.raises(ValueError, match="ignore_index"):
            fl.cross_entropy(X, YI, ignore_index=bad)
    for bad in (1.0, "x", None, True):
        with pytest.raises(TypeError, match="ignore_index"):
            fl.cross_entropy(X, YI, ignore_index=bad)


@pytest.mark.parametrize("value", [-1, 5, 10**6])
def test_score_class_index_out_of_range(value):
    t = YI.copy()
    t[4] = value
    with pytest.raises(IndexError, match=rf"target: class index {value} at position \(4,\)"):
        fl.score(X, t)
    with pytest.raises(IndexError, match="target"):
        fl.fit_temperature(X, t)


def test_score_fractional_class_index():
    t = YI.astype(np.float64)
    t[1] = 1.5
    with pytest.raises(ValueError, match="target"):
        fl.score(X, t)


# ------------------------------------------------------------------------------ binary targets

@pytest.mark.parametrize("name", ["bce_with_logits", "bce_with_logits_and_grad", "sigmoid_focal_loss",
                                  "sigmoid_focal_loss_and_grad"])
@pytest.mark.parametrize("bad", [-0.5, 1.5, np.nan, np.inf, -np.inf, -1e-30, 1 + 2**-52])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, bfloat16])
def test_float_targets_outside_unit_interval(name, bad, dtype):
    t = YB.astype(dtype)
    with np.errstate(over="ignore"):
        t[2, 3] = bad
    if t[2, 3] in (0.0, 1.0):
        pytest.skip("rounds into [0, 1] in this dtype")
    grad = np.full_like(X, 42.0)
    kw = {"grad_out": grad} if name.endswith("_grad") else {}
    with pytest.raises(ValueError, match=r"target.*\(2, 3\)"):
        getattr(fl, name)(X, t, **kw)
    assert np.all(grad == 42.0)  # validated before anything is written


@pytest.mark.parametrize("name", ["bce_with_logits", "sigmoid_focal_loss_and_grad"])
@pytest.mark.parametrize("dtype", [np.int64, np.int8, np.uint8, np.uint64])
def test_integer_targets_other_than_0_1(name, dtype):
    t = YB.astype(dtype)
    t[4, 1] = 2 if dtype != np.int8 else -1
    with pytest.raises(ValueError, match=r"target.*\(4, 1\)"):
        getattr(fl, name)(X, t)


@pytest.mark.parametrize("task,t", [("binary", np.array([0, 2, 1, 0, 1, 1])),
                                    ("binary", np.array([0, np.nan, 1, 0, 1, 1])),
                                    ("multilabel", np.where(YB > 0, 0.5, 0.0))])
def test_score_binary_targets_must_be_0_or_1(task, t):
    x = X[:, 0] if task == "binary" else X
    with pytest.raises(ValueError, match="target"):
        fl.score(x, t, task=task)


def test_probability_targets_are_not_range_checked_in_cross_entropy():
    """Documented result: class-probability targets enter the formula as given (PyTorch does
    not check them either); nan in them gives a nan loss."""
    t = YP.copy()
    t[0, 0] = -1.0
    r = fl.cross_entropy(X, t, reduction="none")
    assert np.isfinite(r).all()
    t[1, 1] = np.nan
    r = fl.cross_entropy(X, t, reduction="none")
    assert np.isnan(r[1]) and np.isfinite(np.delete(r, 1)).all()


# ------------------------------------------------------------------------------ nan / inf in arguments

def test_nan_in_logits_is_data():
    x = X.copy()
    x[2, 3] = np.nan
    for name in ("softmax", "log_softmax"):
        r = getattr(fl, name)(x)
        assert np.isnan(r[2]).all() and np.isfinite(np.delete(r, 2, axis=0)).all()
    for name in ("logsumexp", "entropy"):
        r = getattr(fl, name)(x)
        assert np.isnan(r[2]) and np.isfinite(np.delete(r, 2)).all()
    assert fl.predict(x)[2] == 3
    assert fl.topk(x, 1)[1][2, 0] == 3
    assert not fl.predict_binary(x)[2, 3]
    assert np.isnan(fl.sigmoid(x)[2, 3]) and np.isnan(fl.log_sigmoid(x)[2, 3])
    loss, g = fl.cross_entropy_and_grad(x, YI, reduction="none")
    assert np.isnan(loss[2]) and np.isnan(g[2]).all() and np.isfinite(np.delete(loss, 2)).all()
    for f in (fl.bce_with_logits_and_grad, fl.sigmoid_focal_loss_and_grad):
        loss, g = f(x, YB, reduction="none")
        assert np.isnan(loss[2, 3]) and np.isnan(g[2, 3]) and np.isfinite(loss).sum() == 29
    r = fl.score(x, YI)
    assert r["count"] == 6 and np.isnan(r["nll"])


def test_inf_in_logits_follows_the_contract():
    x = X.copy()
    x[1, 2] = np.inf
    x[3] = -np.inf
    assert fl.logsumexp(x)[1] == np.inf and fl.logsumexp(x)[3] == -np.inf
    assert np.isnan(fl.log_softmax(x)[3]).all()
    loss = fl.cross_entropy(x, YI, reduction="none")
    assert np.isnan(loss[1]) and np.isnan(loss[3])
    loss, g = fl.bce_with_logits_and_grad(np.array([np.inf, -np.inf]), [1.0, 1.0], reduction="none")
    assert loss.tolist() == [0.0, np.inf] and g.tolist() == [0.0, -1.0]


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, -0.5, 1.5])
def test_label_smoothing_out_of_range(value):
    for f in (fl.cross_entropy, fl.cross_entropy_and_grad):
        with pytest.raises(ValueError, match="label_smoothing"):
            f(X, YI, label_smoothing=value)


@pytest.mark.parametrize("value", [np.nan, np.inf, -1.0])
def test_z_loss_out_of_range(value):
    for f in (fl.cross_entropy, fl.cross_entropy_and_grad):
        with pytest.raises(ValueError, match="z_loss"):
            f(X, YI, z_loss=value)


def test_non_numeric_scalar_options():
    with pytest.raises(TypeError, match="label_smoothing"):
        fl.cross_entropy(X, YI, label_smoothing="0.1")
    with pytest.raises(TypeError, match="z_loss"):
        fl.cross_entropy(X, YI, z_loss=None)
    with pytest.raises(TypeError, match="alpha"):
        fl.sigmoid_focal_loss(X, YB, alpha="0.25")
    with pytest.raises(TypeError, match="gamma"):
        fl.sigmoid_focal_loss(X, YB, gamma=[2.0])
    with pytest.raises(TypeError, match="temperature"):
        fl.score(X, YI, temperature="hot")
    for f in (fl.cross_entropy, fl.bce_with_logits, fl.sigmoid_focal_loss):
        with pytest.raises(ValueError, match="reduction"):
            f(X, YI if f is fl.cross_entropy else YB, reduction="avg")


@pytest.mark.parametrize("name", ["sigmoid_focal_loss", "sigmoid_focal_loss_and_grad"])
def test_focal_parameters(name):
    f = getattr(fl, name)
    with pytest.raises(ValueError, match="alpha"):
        f(X, YB, alpha=np.nan)
    for bad in (np.nan, np.inf, -0.5):
        with pytest.raises(ValueError, match="gamma"):
            f(X, YB, gamma=bad)
    # documented: alpha < 0 disables the balancing; an infinite alpha is a (nan) weight, not an error
    assert np.isfinite(f(X, YB, alpha=-np.inf)[0] if name.endswith("grad") else f(X, YB, alpha=-np.inf))


@pytest.mark.parametrize("arg", ["weight", "sample_weight"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_inf_weights_in_cross_entropy_propagate(arg, value):
    """Documented result: weights are data; a nan or inf weight gives a nan loss where it is used,
    never an exception or a crash."""
    w = np.ones(5) if arg == "weight" else np.ones(6)
    w[0] = value
    loss = fl.cross_entropy(X, YI, reduction="none", **{arg: w})
    assert not np.isfinite(loss[0])
    assert np.isfinite(loss[1:4]).all()
    assert np.isnan(fl.cross_entropy(X, YI, **{arg: w}))


@pytest.mark.parametrize("arg", ["weight", "pos_weight"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_inf_weights_in_bce_propagate(arg, value):
    w = np.ones(5)
    w[1] = value
    loss, g = fl.bce_with_logits_and_grad(X, YB, reduction="none", **{arg: w})
    assert np.isfinite(np.delete(loss, 1, axis=1)).all()
    assert np.isfinite(np.delete(g, 1, axis=1)).all()
    if value != value:
        assert np.isnan(g[:, 1]).all()


@pytest.mark.parametrize("value", [np.nan, np.inf, 0.0, -1.0])
def test_temperature_out_of_range(value):
    with pytest.raises(ValueError, match="temperature"):
        fl.score(X, YI, temperature=value)


def test_nan_in_scoring_arguments():
    w = np.ones(6)
    w[2] = np.nan
    r = fl.score(X, YI, sample_weight=w)
    assert r["count"] == 6 and np.isnan(r["nll"])
    assert np.isnan(fl.fit_temperature(X, YI, sample_weight=w))
    x = X.copy()
    x[0, 0] = np.nan
    assert np.isnan(fl.fit_temperature(x, YI))


@pytest.mark.parametrize("value", [0, 1, 0.0, 1.0, np.nan, -0.1, 1.1, np.inf, np.float32(np.nan)])
def test_threshold_out_of_range(value):
    with pytest.raises(ValueError, match="threshold"):
        fl.predict_binary(X, value)


def test_threshold_of_wrong_type():
    for bad in ("0.5", None, True, [0.5], 0.5j):
        with pytest.raises(TypeError, match="threshold"):
            fl.predict_binary(X, bad)


def test_threshold_extremes_inside_the_interval():
    tiny = np.nextafter(0.0, 1.0)
    assert fl.predict_binary(np.array([-744.0, -746.0]), tiny).tolist() == [True, False]
    assert fl.predict_binary(np.array([36.0, 37.0, np.inf]), np.nextafter(1.0, 0.0)).tolist() == [False, True, True]


# ------------------------------------------------------------------------------ k and axis

@pytest.mark.parametrize("k", [0, -1, 6, 2**63, 2**70])
def test_topk_k_out_of_range(k):
    with pytest.raises(ValueError, match="k"):
        fl.topk(X, k)


def test_topk_k_of_wrong_type():
    for k in (1.0, "2", None, True, np.float64(2)):
        with pytest.raises(TypeError, match="k"):
            fl.topk(X, k)


def test_score_k_out_of_range():
    with pytest.raises(ValueError, match="k"):
        fl.score(X, YI, k=6, metrics="top_k_accuracy")
    with pytest.raises(ValueError, match="k"):
        fl.score(X, YI, k=0, metrics=["top_k_accuracy"])
    with pytest.raises(TypeError, match="k"):
        fl.score(X, YI, k=2.0)
    # documented: with metrics=None a k beyond the class count just leaves top_k_accuracy out
    assert "top_k_accuracy" not in fl.score(X, YI, k=6)


AXIS_FUNCS = ["softmax", "log_softmax", "logsumexp", "entropy", "predict", "topk", "cross_entropy",
              "cross_entropy_and_grad", "score", "fit_temperature"]


def _call_with_axis(name, axis):
    f = getattr(fl, name)
    if name == "topk":
        return f(X, 1, axis=axis)
    if name in ("cross_entropy", "cross_entropy_and_grad", "score", "fit_temperature"):
        return f(X, YI, axis=axis)
    return f(X, axis=axis)


@pytest.mark.parametrize("axis", [2, -3, 2**63, -(2**70)])
@pytest.mark.parametrize("name", AXIS_FUNCS)
def test_axis_out_of_range(name, axis):
    with pytest.raises(np.exceptions.AxisError, match="axis"):
        _call_with_axis(name, axis)


@pytest.mark.parametrize("axis", [1.0, "1", None, True, (0, 1)])
@pytest.mark.parametrize("name", AXIS_FUNCS)
def test_axis_of_wrong_type(name, axis):
    with pytest.raises(TypeError, match="axis"):
        _call_with_axis(name, axis)


def test_other_scoring_arguments():
    with pytest.raises(ValueError, match="task"):
        fl.score(X, YI, task="regression")
    with pytest.raises(ValueError, match="metrics"):
        fl.score(X, YI, metrics="nll,f1")
    with pytest.raises(ValueError, match="metrics"):
        fl.score(X, YI, metrics="roc_auc")  # not a multiclass metric
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="bins"):
            fl.score(X, YI, bins=bad)
        with pytest.raises(ValueError, match="chunk_rows"):
            fl.score(X, YI, chunk_rows=bad)
    with pytest.raises(TypeError, match="progress"):
        fl.score(X, YI, progress=3)


# ------------------------------------------------------------------------------ layouts

def _layouts(x):
    """(description, array equal to x, possibly a view with unusual strides/flags)."""
    big = np.empty((x.shape[0] * 2, x.shape[1] * 3), x.dtype)
    big[::2, ::3] = x
    rev = np.ascontiguousarray(x[::-1, ::-1])[::-1, ::-1]
    raw = np.empty(x.nbytes + 1, np.uint8)
    unaligned = raw[1:].view(x.dtype).reshape(x.shape)
    unaligned[...] = x
    ro = x.copy()
    ro.flags.writeable = False
    yield "stepped", big[::2, ::3]
    yield "negative strides", rev
    yield "fortran", np.asfortranarray(x)
    yield "big-endian", x.astype(x.dtype.newbyteorder(">"))
    yield "unaligned", unaligned
    yield "read-only", ro
    yield "matrix subclass", x.view(np.matrix) if x.ndim == 2 else x


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
@pytest.mark.parametrize("name", list(FUNCS))
def test_unusual_layouts_give_the_same_result(name, dtype):
    call, _ = FUNCS[name]
    x = X.astype(dtype)
    want = call(x)
    for desc, v in _layouts(x):
        assert_same_result(call(v), want, f"{name} {dtype} {desc}")
    assert_same_result(call(x.tolist()), call(x.astype(np.float64)), f"{name} list")


def test_zero_stride_logits():
    row = np.array([0.5, -1.0, 2.0, 3.0])
    x = np.broadcast_to(row, (6, 4))
    assert_same_result(fl.softmax(x), fl.softmax(np.ascontiguousarray(x)))
    col = np.broadcast_to(np.float32(1.25), (3, 7))   # zero stride along the class axis
    np.testing.assert_allclose(fl.logsumexp(col), np.float32(1.25 + np.log(7)), rtol=2e-7)
    assert fl.predict(col).tolist() == [0, 0, 0]
    l1 = fl.cross_entropy(x, np.array([3, 2, 1, 0, 3, 3]), reduction="none")
    l2 = fl.cross_entropy(np.ascontiguousarray(x), np.array([3, 2, 1, 0, 3, 3]), reduction="none")
    assert_same_result(l1, l2)


@pytest.mark.parametrize("name", ["cross_entropy", "bce_with_logits", "sigmoid_focal_loss"])
def test_targets_and_weights_in_unusual_layouts(name):
    f = getattr(fl, name + "_and_grad")
    if name == "cross_entropy":
        targets = [YI, YP]
        kw = {"weight": np.linspace(0.5, 2, 5), "sample_weight": np.linspace(1, 2, 6)}
    else:
        targets = [YB, YB.astype(np.int8), YB > 0]
        kw = {"weight": np.linspace(0.5, 2, 5), "pos_weight": np.linspace(1, 3, 5)} if name == "bce_with_logits" else {}
    for t in targets:
        want = f(X, t, reduction="none", **kw)
        for desc, tv in _layouts(t if t.ndim == 2 else t[:, None]):
            if desc == "matrix subclass":
                continue
            tv = tv if t.ndim == 2 else tv[:, 0]
            kv = {k: next(v for d, v in _layouts(w[None, :]) if d == desc)[0] for k, w in kw.items()}
            assert_same_result(f(X, tv, reduction="none", **kv), want, f"{name} target {t.dtype} {desc}")


# ------------------------------------------------------------------------------ out= and grad_out=

@pytest.mark.parametrize("name", ["sigmoid", "log_sigmoid", "softmax", "log_softmax"])
def test_out_misuse(name):
    f = getattr(fl, name)
    ro = np.empty_like(X)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out.*read-only"):
        f(X, out=ro)
    with pytest.raises(TypeError, match="out"):
        f(X, out=np.empty((6, 5), np.int64))
    with pytest.raises(TypeError, match="out"):
        f(X, out=np.empty((6, 5), np.float32), dtype=np.float64)
    with pytest.raises(TypeError, match="out"):
        f(X, out=[[0.0] * 5] * 6)
    with pytest.raises(ValueError, match="out"):
        f(X, out=np.empty((6, 5), ">f8"))
    raw = np.empty(X.nbytes + 1, np.uint8)
    with pytest.raises(ValueError, match="out"):
        f(X, out=raw[1:].view(np.float64).reshape(6, 5))


@pytest.mark.parametrize("name", ["sigmoid", "log_sigmoid", "softmax", "log_softmax"])
def test_out_overlapping_the_input(name):
    """Documented: out may be the input (in place) or any view; a partial overlap is computed
    through a temporary, so the result is that of the untouched input."""
    f = getattr(fl, name)
    want = f(X[:, :4])
    buf = np.zeros((6, 6))
    buf[:, :4] = X[:, :4]
    r = f(buf[:, :4], out=buf[:, 1:5])       # shifted by one element
    assert r.base is buf or r is not None
    assert_same_result(buf[:, 1:5], want, "shifted overlap")
    buf2 = X[:, :4].copy()
    f(buf2, out=buf2[::-1, ::-1])             # reversed over itself
    assert_same_result(buf2[::-1, ::-1], want, "reversed overlap")
    buf3 = X[:, :4].astype(np.float32)
    f(buf3, out=buf3)                         # exactly in place (float64: test_regressions.py)
    assert_same_result(buf3, f(X[:, :4].astype(np.float32)), "in place")
    x32 = X[:, :4].astype(np.float32)
    mixed = np.zeros((6, 4), np.float64)
    f(x32, out=mixed, dtype=np.float64)
    assert_same_result(mixed, f(x32, dtype=np.float64))


GRAD_FUNCS = {
    "cross_entropy_and_grad": lambda **kw: fl.cross_entropy_and_grad(kw.pop("x", X), kw.pop("t", YP), **kw),
    "bce_with_logits_and_grad": lambda **kw: fl.bce_with_logits_and_grad(kw.pop("x", X), kw.pop("t", YB), **kw),
    "sigmoid_focal_loss_and_grad": lambda **kw: fl.sigmoid_focal_loss_and_grad(kw.pop("x", X), kw.pop("t", YB), **kw),
}


@pytest.mark.parametrize("name", list(GRAD_FUNCS))
def test_grad_out_misuse(name):
    call = GRAD_FUNCS[name]
    ro = np.empty_like(X)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="grad_out"):
        call(grad_out=ro)
    with pytest.raises(TypeError, match="grad_out"):
        call(grad_out=np.empty((6, 5), np.float32))   # must have the logits' dtype
    with pytest.raises(TypeError, match="grad_out"):
        call(grad_out=np.empty((6, 5), np.int64))
    with pytest.raises(TypeError, match="grad_out"):
        call(grad_out=X.tolist())
    with pytest.raises((TypeError, ValueError), match="grad_out"):
        call(grad_out=np.empty((6, 5), ">f8"))


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("name", list(GRAD_FUNCS))
def test_grad_out_aliasing_target_or_logits(name, reduction):
    """grad_out may be the logits (in place); overlapping the target or a shifted view of the
    logits goes through a temporary: the result is that of the untouched inputs."""
    call = GRAD_FUNCS[name]
    want_loss, want_grad = call(reduction=reduction)
    t = (YP if name.startswith("cross") else YB).copy()
    loss, g = call(t=t, grad_out=t, reduction=reduction)        # grad_out IS the target
    assert g is t
    assert_same_result((loss, g), (want_loss, want_grad), f"{name} grad_out=target")
    x = X.copy()
    loss, g = call(x=x, grad_out=x, reduction=reduction)        # in place
    assert_same_result((loss, g), (want_loss, want_grad), f"{name} in place")
    buf = np.zeros((6, 6))
    buf[:, :5] = X
    loss, g = call(x=buf[:, :5], grad_out=buf[:, 1:], reduction=reduction)   # shifted overlap
    assert_same_result((loss, g), (want_loss, want_grad), f"{name} shifted overlap")
    if name.startswith("cross"):
        ti = YI.astype(np.float64).reshape(6, 1).repeat(5, axis=1)    # indices in float memory
        w = np.linspace(0.5, 2, 5)
        want = fl.cross_entropy_and_grad(X, YI, weight=w, reduction=reduction)
        wbuf = np.zeros((6, 5))
        wbuf[0] = w
        assert_same_result(fl.cross_entropy_and_grad(X, YI, weight=wbuf[0], grad_out=wbuf, reduction=reduction),
                           want, "grad_out overlapping weight")
        del ti


def test_grad_out_only_on_and_grad_functions():
    for f in (fl.cross_entropy, fl.bce_with_logits, fl.sigmoid_focal_loss):
        with pytest.raises(TypeError):
            f(X, YI if f is fl.cross_entropy else YB, grad_out=np.empty_like(X))


# ------------------------------------------------------------------------------ torch inputs

def test_torch_tensor_not_on_cpu_is_a_type_error():
    torch = pytest.importorskip("torch")
    meta = torch.empty((2, 3), device="meta")
    with pytest.raises(TypeError, match="x: expected an array in CPU memory"):
        fl.softmax(meta)


# ------------------------------------------------------------------------------ files and CLI


class _Evil:
    """Unpickling this creates a file: the proof that a file was unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("badfiles")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 4)).astype(np.float32)
    y = np.arange(40) % 4
    marker = d / "UNPICKLED"
    p = {"dir": d, "marker": marker}

    def path(name):
        p[name] = str(d / name)
        return p[name]

    np.save(path("ok.npy"), x)
    np.save(path("y.npy"), y)
    np.save(path("y_bad.npy"), np.where(y == 3, 9, y))
    good = open(p["ok.npy"], "rb").read()
    open(path("truncated.npy"), "wb").write(good[: len(good) // 2])
    open(path("truncated_header.npy"), "wb").write(good[:20])
    open(path("empty.npy"), "wb").write(b"")
    open(path("garbage.npy"), "wb").write(b"not an npy file at all" * 10)
    open(path("bad_descr.npy"), "wb").write(good.replace(b"'<f4'", b"'zz9'"))
    open(path("bad_shape.npy"), "wb").write(good.replace(b"(40, 4)", b"(-4, 4)"))
    evil = np.array([_Evil(str(marker)), 1.0], dtype=object)
    np.save(path("pickled.npy"), evil, allow_pickle=True)
    np.savez(path("pickled.npz"), logits=evil)
    np.savez_compressed(path("pickled_compressed.npz"), logits=evil)
    np.savez(path("ok.npz"), logits=x, y=y)
    np.savez_compressed(path("okc.npz"), logits=x, y=y)
    z = open(p["ok.npz"], "rb").read()
    open(path("truncated.npz"), "wb").write(z[: len(z) // 2])
    zc = bytearray(open(p["okc.npz"], "rb").read())
    mid = len(zc) // 3
    zc[mid:mid + 40] = bytes(b ^ 0xFF for b in zc[mid:mid + 40])
    open(path("corrupt_compressed.npz"), "wb").write(bytes(zc))
    np.save(path("complex.npy"), x.astype(np.complex64))
    np.save(path("strings.npy"), np.array(["a", "b"]))
    np.save(path("structured.npy"), np.zeros(3, dtype=[("a", "f4")]))
    np.save(path("scalar.npy"), np.float32(1.0))
    path("missing.npy")
    return p


def _cli(*args):
    """``cli.main`` in this process, as the console script runs it: the exit status and the two
    streams (``tests/test_cli.py`` runs the real script in subprocesses; here a process a case
    would only add its start-up time)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = cli.main([str(a) for a in args])
        except SystemExit as exc:  # argparse's usage errors
            status = exc.code
    return subprocess.CompletedProcess(args, status, out.getvalue(), err.getvalue())


def _assert_one_line_error(r, *words):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastlogits: error:"), r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


BAD_FILES = ["truncated.npy", "truncated_header.npy", "empty.npy", "garbage.npy", "bad_descr.npy",
             "bad_shape.npy", "pickled.npy", "pickled.npz", "pickled_compressed.npz", "truncated.npz",
             "corrupt_compressed.npz", "complex.npy", "strings.npy", "structured.npy", "missing.npy"]


@pytest.mark.parametrize("name", BAD_FILES)
def test_cli_score_bad_logits_file(files, name):
    r = _cli("score", files[name], "--target", files["y.npy"], "--key", "logits")
    _assert_one_line_error(r, name)
    assert not files["marker"].exists(), "a pickled object array was unpickled"


@pytest.mark.parametrize("name", ["truncated.npy", "pickled.npy", "missing.npy", "empty.npy"])
def test_cli_score_bad_target_file(files, name):
    r = _cli("score", files["ok.npy"], "--target", files[name])
    _assert_one_line_error(r, name)
    assert not files["marker"].exists()


@pytest.mark.parametrize("name", BAD_FILES)
def test_cli_predict_bad_logits_file_leaves_nothing(files, name, tmp_path):
    out = tmp_path / "pred.npy"
    r = _cli("predict", files[name], "--out", out, "--key", "logits")
    _assert_one_line_error(r, name)
    assert list(tmp_path.iterdir()) == []      # nothing half-written, no temporary left
    assert not files["marker"].exists()


def test_pickled_payload_is_never_executed_by_the_library(files):
    from fastlogits._files import FileError, open_array

    for name in ("pickled.npy", "pickled.npz", "pickled_compressed.npz"):
        with pytest.raises(FileError):
            open_array(files[name])
    assert not files["marker"].exists()


@pytest.mark.parametrize("args,words", [
    (["score", "{ok.npy}", "--target", "{y_bad.npy}"], ["target", "9"]),
    (["score", "{scalar.npy}", "--target", "{y.npy}"], ["logits"]),
    (["score", "{ok.npy}", "--target", "{y.npy}", "--axis", "5"], ["axis"]),
    (["score", "{ok.npy}", "--target", "{y.npy}", "--k", "9", "--metrics", "top_k_accuracy"], ["k"]),
    (["score", "{ok.npy}", "--target", "{y.npy}", "--k", "0"], ["--k"]),
    (["score", "{ok.npy}", "--target", "{y.npy}", "--temperature", "nan"], ["temperature"]),
    (["score", "{ok.npy}", "--target", "{y.npy}", "--temperature", "0"], ["temperature"]),
    (["score", "{ok.npy}", "--target", "{y.npy}", "--metrics", "f1"], ["metrics"]),
    (["score", "{ok.npy}", "--target", "{y.npy}", "--task", "nope"], ["--task"]),
    (["score", "{ok.npy}", "--target", "{y.npy}", "--threads", "0"], ["--threads"]),
    (["score", "{ok.npy}"], ["target"]),
    (["score", "{ok.npz}", "--target", "{ok.npz}", "--key", "nope", "--target-key", "y"], ["nope"]),
    (["score", "{dir}", "--target", "{y.npy}"], ["directory"]),
    (["predict", "{ok.npy}", "--out", "{dir}/o.npy", "--threshold", "1"], ["--threshold"]),
    (["predict", "{ok.npy}", "--out", "{dir}/o.npy", "--threshold", "0"], ["--threshold"]),
    (["predict", "{ok.npy}", "--out", "{dir}/o.npy", "--threshold", "nan"], ["--threshold"]),
    (["predict", "{ok.npy}", "--out", "{dir}/o.npy", "--topk", "9"], ["--topk"]),
    (["predict", "{ok.npy}", "--out", "{dir}/o.npy", "--topk", "-1"], ["--topk"]),
    (["predict", "{ok.npy}", "--out", "{dir}/o.npy", "--axis", "3"], ["--axis"]),
    (["predict", "{ok.npy}", "--out", "{dir}/nonexistent/o.npy"], ["does not exist"]),
    (["predict", "{ok.npy}", "--out", "{dir}/o.txt"], ["unsupported"]),
    (["predict", "{ok.npy}"], ["--out"]),
    (["predict", "{ok.npy}", "--out", "{dir}/o.npy", "--proba", "--topk", "2"], ["not allowed"]),
    (["info", "extra"], ["extra"]),
    (["nonsense"], ["nonsense"]),
])
def test_cli_bad_arguments(files, args, words):
    def fill(a):
        for k, v in files.items():
            a = a.replace("{" + k + "}", str(v))
        return a

    r = _cli(*[fill(a) for a in args])
    _assert_one_line_error(r, *words)
    assert not os.path.exists(os.path.join(files["dir"], "o.npy"))


def test_cli_info_runs(files):
    r = _cli("info")
    assert r.returncode == 0 and fl.__version__ in r.stdout


# ------------------------------------------------------------------------------ 64-bit indexing

BIG = 2**31 + 64


@pytest.mark.slow
def test_more_than_2_to_31_elements():
    """64-bit indexing, in two parts, about 5 GiB resident at most:

    - one float32 row of 2**31 + 64 classes (8 GiB of untouched zero pages, read in place, so
      nearly no resident memory): logsumexp and predict, the answer beyond index 2**31;
    - the same layout in float16 viewed as (2**25 + 1, 64) rows (N*C > 2**31, the last row
      starts beyond 2**31): predict, topk, logsumexp, cross_entropy (none/mean, and the
      gradient in place), sigmoid and predict_binary (outputs written everywhere), score.

    Not here: whole-row work on one row of 2**31 elements in float16/bfloat16 or topk/entropy/
    softmax of such a row, which need a float or double scratch row of 8-16 GiB (see the
    kernels' per-row scratch in csrc/fl_postdrv.h)."""
    one = np.zeros(BIG, np.float32)
    one[BIG - 3], one[BIG - 1] = 7.0, 5.0
    exact = np.log(np.float64(BIG - 2) + np.exp(7.0) + np.exp(5.0))
    np.testing.assert_allclose(float(fl.logsumexp(one)), exact, rtol=1e-6)
    assert fl.predict(one) == BIG - 3
    del one

    x = np.zeros(BIG, np.float16)            # untouched pages stay the shared zero page
    x[BIG - 3], x[BIG - 1] = 7.0, 5.0
    rows = x.reshape(BIG // 64, 64)
    n = rows.shape[0]
    last_lse = np.log(62 + np.exp(7.0) + np.exp(5.0))
    pred = fl.predict(rows)
    assert pred[-1] == 61 and pred[0] == 0 and pred.sum() == 61
    v, i = fl.topk(rows, 2)
    assert i[-1].tolist() == [61, 63] and v[-1].tolist() == [7.0, 5.0] and i[-2].tolist() == [0, 1]
    lse = fl.logsumexp(rows)
    assert lse[0] == np.float16(np.log(64)) and lse[-1] == np.float16(last_lse)

    t = np.zeros(n, np.int64)
    t[-1] = 61
    loss = fl.cross_entropy(rows, t, reduction="none")
    assert loss[0] == np.float16(np.log(64)) and loss[-1] == np.float16(last_lse - 7.0)
    mean = fl.cross_entropy(rows, t)
    np.testing.assert_allclose(mean, (np.log(64) * (n - 1) + last_lse - 7.0) / n, rtol=1e-6)  # float32 rows
    r = fl.score(rows, t, metrics="count,accuracy")
    assert r["count"] == n and r["accuracy"] == 1.0      # ties predict class 0, the targets
    del loss, lse, pred

    y = fl.sigmoid(rows)                     # a 4 GiB output written everywhere
    assert y[0, 0] == 0.5 and y[-1, 61] == np.float16(1 / (1 + np.exp(-7.0))) and y[-1, 0] == 0.5
    del y
    b = fl.predict_binary(rows, 0.999)       # logit 6.9: only the 7.0
    assert b[-1, 61] and b.sum() == 1
    del b

    loss, g = fl.cross_entropy_and_grad(rows, t, reduction="sum", grad_out=rows)    # in place
    assert g is rows and np.isfinite(loss)
    p = np.exp(np.array([7.0, 0.0, 5.0]) - last_lse)
    np.testing.assert_allclose(g[-1, [61, 62, 63]].astype(np.float64), [p[0] - 1, p[1], p[2]], rtol=2**-9, atol=2**-14)
    np.testing.assert_allclose(g[0, :2].astype(np.float64), [1 / 64 - 1, 1 / 64], rtol=2**-10)
