"""Rows read in place against rows gathered first.

A row of logits whose classes are contiguous is read where it is, in its own dtype: float16
and bfloat16 vectors are widened to float32 in registers as they are loaded (csrc/fl_rowio.h,
fl_xrow), so a half-precision row is never copied to a float32 row. Any other layout (a class
stride other than 1) is first gathered into a float32 scratch row. Both must feed the same
arithmetic, so every output is compared bitwise between the two layouts of the same values,
for rows that take each branch of the kernels: several 1024-element blocks whose running max
rises (the cross-entropy's rescaling), tails shorter than a vector, -inf entries, rows of
all -inf, NaN and +inf rows, and peaked rows (the logsumexp's and entropy's redo paths)."""
import numpy as np
import pytest

import fastlogits as fl
from arrays import as_dtype

DTYPES = ["float16", "bfloat16", "float32"]
CLASSES = [70, 1000, 2500]  # above the rows-in-lanes limit; one block, three blocks with a tail


def _logits(n, c, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c)) * 3
    x[1] = np.sort(x[1])                    # each block raises the running max
    x[2, ::3] = -np.inf
    x[3] = -np.inf
    x[4, c // 2] = np.nan
    x[5, 0] = np.inf
    x[6] *= 40                              # peaked: the float32 sums' redo paths
    x[7] = 0.0                              # ties everywhere
    x[8, c - 1] = x[8].max() + 30           # the max in the tail
    return x.astype(as_dtype(dtype))


def _gathered(x):
    """the same values with a class stride other than 1"""
    g = np.asfortranarray(x)
    assert g.strides[1] != g.itemsize
    return g


def _stepped(x):
    """the same values with no axis of unit stride (elementwise kernels may walk a Fortran
    array in memory order, which would read it in place)"""
    g = np.empty((x.shape[0], 2 * x.shape[1]), x.dtype)[:, ::2]
    g[...] = x
    return g


def _same(got, want, what):
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype, what
    g = got.astype(np.float64) if got.dtype.kind != "i" else got
    w = want.astype(np.float64) if want.dtype.kind != "i" else want
    bad = ~((g == w) | (np.isnan(g) & np.isnan(w)))
    if bad.any():
        idx = np.argwhere(bad)[:5]
        pytest.fail("%s: %d elements differ between the in-place and gathered rows, first at %s: %s vs %s"
                    % (what, bad.sum(), idx.tolist(), g[tuple(idx.T)], w[tuple(idx.T)]))


POST = {
    "softmax": lambda x: fl.softmax(x),
    "log_softmax": lambda x: fl.log_softmax(x),
    "logsumexp": lambda x: fl.logsumexp(x),
    "entropy": lambda x: fl.entropy(x),
    "predict": lambda x: fl.predict(x),
    "sigmoid": lambda x: fl.sigmoid(x),
    "log_sigmoid": lambda x: fl.log_sigmoid(x),
}


@pytest.mark.parametrize("op", sorted(POST))
@pytest.mark.parametrize("c", CLASSES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_postprocessing_in_place_rows_equal_gathered_rows(dtype, c, op):
    x = _logits(12, c, dtype, seed=c)
    _same(POST[op](x), POST[op](_gathered(x)), "%s %s C=%d" % (op, dtype, c))
    _same(POST[op](x), POST[op](_stepped(x)), "%s %s C=%d" % (op, dtype, c))


def test_softmax_in_place_half_row_equals_gathered_row_with_out():
    """a half-precision output written over its own input (out=x) reads each row before it is written"""
    x = _logits(12, 2500, "float16", seed=1)
    want = fl.log_softmax(_gathered(x))
    got = x.copy()
    fl.log_softmax(got, out=got)
    _same(got, want, "log_softmax in place")


CE_OPTIONS = [
    {},
    {"label_smoothing": 0.1, "ignore_index": 3},
    {"weight": "classes", "z_loss": 1e-3},
]


@pytest.mark.parametrize("options", CE_OPTIONS, ids=["plain", "smoothing", "weight_zloss"])
@pytest.mark.parametrize("c", CLASSES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_in_place_rows_equal_gathered_rows(dtype, c, options):
    x = _logits(12, c, dtype, seed=c + 1)
    rng = np.random.default_rng(c)
    t = rng.integers(0, c, x.shape[0])
    t[8] = c - 1
    kw = dict(options)
    if kw.get("weight") == "classes":
        kw["weight"] = 0.5 + rng.random(c)
    loss, grad = fl.cross_entropy_and_grad(x, t, reduction="none", **kw)
    loss_g, grad_g = fl.cross_entropy_and_grad(_gathered(x), t, reduction="none", **kw)
    _same(loss, loss_g, "loss")
    _same(grad, grad_g, "gradient")
    _same(fl.cross_entropy(x, t, reduction="none", **kw), loss_g, "loss without gradient")


@pytest.mark.parametrize("c", CLASSES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_probabilities_in_place_rows_equal_gathered_rows(dtype, c):
    x = _logits(12, c, dtype, seed=c + 2)
    p = np.random.default_rng(c).random((12, c))
    p /= p.sum(axis=1, keepdims=True)
    p = p.astype(x.dtype)
    loss, grad = fl.cross_entropy_and_grad(x, p, reduction="none", label_smoothing=0.05)
    loss_g, grad_g = fl.cross_entropy_and_grad(_gathered(x), p, reduction="none", label_smoothing=0.05)
    _same(loss, loss_g, "loss")
    _same(grad, grad_g, "gradient")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_cross_entropy_half_gradient_in_place(dtype):
    """grad_out=logits: the half-precision row is read in place while its gradient is built"""
    x = _logits(12, 2500, dtype, seed=5)
    t = np.arange(12) * 200
    want_loss, want = fl.cross_entropy_and_grad(_gathered(x), t, reduction="none")
    got = x.copy()
    loss, _ = fl.cross_entropy_and_grad(got, t, reduction="none", grad_out=got)
    _same(loss, want_loss, "loss")
    _same(got, want, "gradient")


BCE_CASES = {
    "bce": lambda x, y, **kw: fl.bce_with_logits_and_grad(x, y, reduction="none", **kw),
    "bce_weighted": lambda x, y, **kw: fl.bce_with_logits_and_grad(
        x, y, reduction="none", weight=np.float32(0.7), pos_weight=np.linspace(0.5, 2.0, x.shape[1]), **kw),
    "focal": lambda x, y, **kw: fl.sigmoid_focal_loss_and_grad(x, y, reduction="none", **kw),
    "bce_sum": lambda x, y, **kw: fl.bce_with_logits_and_grad(x, y, reduction="sum", **kw),
}


@pytest.mark.parametrize("case", sorted(BCE_CASES))
@pytest.mark.parametrize("c", [70, 2500])
@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_losses_in_place_rows_equal_gathered_rows(dtype, c, case):
    x = _logits(12, c, dtype, seed=c + 3)
    y = (np.random.default_rng(c).random((12, c)) < 0.3).astype(x.dtype)
    loss, grad = BCE_CASES[case](x, y)
    loss_g, grad_g = BCE_CASES[case](_stepped(x), y)
    _same(loss, loss_g, "loss")
    _same(grad, grad_g, "gradient")
    if case == "bce":
        got = x.copy()
        BCE_CASES[case](got, y, grad_out=got)
        _same(got, grad_g, "gradient in place")


@pytest.mark.parametrize("temperature", [1.0, 1.7])
@pytest.mark.parametrize("c", [70, 2500])
@pytest.mark.parametrize("dtype", DTYPES)
def test_score_in_place_rows_equal_gathered_rows(dtype, c, temperature):
    x = _logits(12, c, dtype, seed=c + 4)[8:]  # rows without NaN or inf: finite metrics
    x = np.concatenate([x, _logits(12, c, dtype, seed=c + 5)[[0, 1, 6, 7]]])
    t = np.random.default_rng(c).integers(0, c, x.shape[0])
    got = fl.score(x, t, temperature=temperature)
    want = fl.score(_gathered(x), t, temperature=temperature)
    assert got.keys() == want.keys()
    for name in got:
        _same(got[name], want[name], name)
