"""The NumPy reference (src/fastlogits/reference.py) against PyTorch, SciPy, scikit-learn
and finite differences.

The reference is loaded by file path so these tests need neither an installed nor a
built fastlogits.  Places where the API deliberately differs from PyTorch have their
own tests of the API's value (``test_api_differs_*``).
"""

import importlib.util
import math
import os
import sys

import numpy as np
import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
import arrays as A  # noqa: E402


def _reference_path():
    """reference.py of the source tree, or of the installed package when the tests run
    outside the source tree (wheel and sdist checks); loaded by path either way, so this
    also checks that it stands alone."""
    src = os.path.join(_HERE, os.pardir, "src", "fastlogits", "reference.py")
    if os.path.exists(src):
        return src
    package_dir = importlib.util.find_spec("fastlogits").submodule_search_locations[0]
    return os.path.join(package_dir, "reference.py")


_spec = importlib.util.spec_from_file_location("fastlogits_reference", _reference_path())
R = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(R)

inf, nan = np.inf, np.nan

RTOL = {np.dtype(np.float32): 2e-6, np.dtype(np.float64): 1e-12}


def _torch():
    return pytest.importorskip("torch")


def _t(a, requires_grad=False):
    torch = _torch()
    return torch.tensor(np.array(a, dtype=np.float64, order="C"), dtype=torch.float64,
                        requires_grad=requires_grad)


def _np(t):
    return t.detach().numpy()


def _cases(**kw):
    return list(A.adversarial_arrays(**kw))


CASES = _cases(dtypes=("float32", "float64"), huge=True)


def test_module_is_standalone():
    src = open(_spec.origin).read()
    assert "import fastlogits" not in src and "from fastlogits" not in src
    assert "from ." not in src
    assert R.__doc__ and len(R.__doc__) > 200
    for name in ("sigmoid", "log_sigmoid", "softmax", "log_softmax", "logsumexp", "entropy",
                 "predict", "predict_binary", "topk", "cross_entropy",
                 "cross_entropy_and_grad", "bce_with_logits", "bce_with_logits_and_grad",
                 "sigmoid_focal_loss", "sigmoid_focal_loss_and_grad", "score",
                 "fit_temperature"):
        assert callable(getattr(R, name)) and getattr(R, name).__doc__


# --------------------------------------------------------------------------- section 2

def test_doc_values():
    assert round(float(R.sigmoid(1.2)), 6) == 0.768525
    # NOTE: API.md quotes [0.8808, 0.0976, 0.0216]; the exact softmax (and PyTorch's)
    # is [0.88065, 0.09758, 0.02177] -> [0.8806, 0.0976, 0.0218] rounded to 4 places.
    np.testing.assert_allclose(R.softmax([2.5, 0.3, -1.2]), [0.8806, 0.0976, 0.0218],
                               atol=5e-5)
    assert isinstance(R.sigmoid(1.2), np.floating)
    assert isinstance(R.logsumexp(np.ones(3)), np.floating)
    assert R.predict(np.array([1.0, 3.0])).dtype == np.int64
    assert R.softmax(np.ones(3, np.float32)).dtype == np.float32
    assert R.softmax(np.ones(3, np.float32), dtype=np.float64).dtype == np.float64
    assert R.softmax(np.arange(3)).dtype == np.float64          # ints -> float64


@pytest.mark.parametrize("fname", ["sigmoid", "log_sigmoid"])
def test_elementwise_vs_torch(fname):
    torch = _torch()
    tf = {"sigmoid": torch.sigmoid, "log_sigmoid": torch.nn.functional.logsigmoid}[fname]
    f = getattr(R, fname)
    for desc, a, ax in CASES:
        got = f(a)
        exp = _np(tf(_t(a))).astype(a.dtype.newbyteorder("="))
        assert np.asarray(got).dtype == a.dtype.newbyteorder("=")
        A.assert_rel_close(got, exp, RTOL[got.dtype.newbyteorder("=")], 1e-300,
                           {"function": fname, "case": desc}, inputs={"x": a})


@pytest.mark.parametrize("fname", ["softmax", "log_softmax", "logsumexp"])
def test_softmax_family_vs_torch(fname):
    torch = _torch()
    f = getattr(R, fname)
    for desc, a, ax in CASES:
        if a.ndim == 0:
            with pytest.raises(ValueError):
                f(a, ax)
            continue
        got = f(a, ax)
        t = _t(a)
        if fname == "softmax":
            e = torch.softmax(t, ax)
        elif fname == "log_softmax":
            e = torch.log_softmax(t, ax)
        else:
            e = torch.logsumexp(t, ax)
        exp = _np(e).astype(a.dtype.newbyteorder("="))
        # log_softmax: torch's log(s) for s close to 1 (a dominant class) has an absolute
        # error of a few eps * C; the reference uses log1p(sum of the others)
        atol = 1e-300 if fname != "log_softmax" else 64 * np.finfo(a.dtype).eps
        A.assert_rel_close(got, exp, RTOL[a.dtype.newbyteorder("=")] * 4, atol,
                           {"function": fname, "case": desc, "axis": ax})
        if a.ndim == 1 and fname == "logsumexp":
            assert isinstance(got, np.floating)


def test_softmax_special_values():
    x = np.array([[-inf, -inf], [inf, 1.0], [nan, 1.0], [-inf, 1.0], [inf, inf]])
    np.testing.assert_array_equal(R.logsumexp(x), [-inf, inf, nan, 1.0, inf])
    sm = R.softmax(x)
    assert np.isnan(sm[:3]).all() and np.isnan(sm[4]).all()
    np.testing.assert_array_equal(sm[3], [0.0, 1.0])
    ls = R.log_softmax(x)
    assert np.isnan(ls[:3]).all()
    np.testing.assert_array_equal(ls[3], [-inf, 0.0])
    np.testing.assert_array_equal(R.logsumexp(np.zeros((3, 0))), [-inf] * 3)
    assert R.softmax(np.zeros((3, 0))).shape == (3, 0)
    for f in (R.softmax, R.log_softmax, R.logsumexp, R.entropy, R.predict):
        with pytest.raises(ValueError):
            f(np.float64(1.0))
    assert R.logsumexp(np.ones((2, 3)), keepdims=True).shape == (2, 1)
    assert R.logsumexp(np.ones((2, 3)), axis=0, keepdims=True).shape == (1, 3)


def test_entropy():
    scipy_stats = pytest.importorskip("scipy.stats")
    for desc, a, ax in CASES:
        if a.ndim == 0 or a.shape[ax] == 0:
            continue
        rows = np.moveaxis(a.astype(np.float64), ax, -1).reshape(-1, a.shape[ax])
        got = np.asarray(R.entropy(a, ax), dtype=np.float64).reshape(-1)
        finite = np.isfinite(np.max(rows, axis=1))
        assert np.isnan(got[~finite]).all(), desc
        if finite.any():
            want = scipy_stats.entropy(R.softmax(rows[finite]), axis=1)
            A.assert_rel_close(got[finite], want, 1e-5, atol=1e-5, context=f"entropy {desc}")
    # ties: exactly log C, and 0 log 0 = 0 for masked classes
    assert abs(R.entropy(np.full(1000, 7.0)) - math.log(1000)) < 1e-12
    assert R.entropy([0.0, -inf]) == 0.0
    assert R.entropy(np.zeros((2, 0))).tolist() == [0.0, 0.0]
    assert np.isnan(R.entropy([-inf, -inf])) and np.isnan(R.entropy([inf, 0.0]))


def test_predict_topk():
    torch = _torch()
    for desc, a, ax in CASES:
        if a.ndim == 0 or a.shape[ax] == 0:
            continue
        pred = R.predict(a, ax)
        np.testing.assert_array_equal(pred, np.argmax(a, axis=ax), err_msg=desc)
        C = a.shape[ax]
        for k in sorted({1, min(3, C), C}):
            vals, idx = R.topk(a, k, ax)
            assert idx.dtype == np.int64 and vals.dtype == a.dtype.newbyteorder("=")
            tv, _ = torch.topk(_t(a), k, dim=ax)
            np.testing.assert_array_equal(vals, _np(tv).astype(vals.dtype), err_msg=desc)
            np.testing.assert_array_equal(np.take_along_axis(a, idx, ax), vals, err_msg=desc)
            # ties to the lower index: among equal values the indices ascend
            vm, im = np.moveaxis(vals, ax, -1), np.moveaxis(idx, ax, -1)
            same = (vm[..., 1:] == vm[..., :-1]) | (np.isnan(vm[..., 1:]) & np.isnan(vm[..., :-1]))
            assert np.all(~same | (im[..., 1:] > im[..., :-1])), desc
    vals, idx = R.topk(np.array([1.0, nan, 3.0, 3.0, -0.0, 0.0]), 6)
    assert idx.tolist() == [1, 2, 3, 0, 4, 5]
    assert R.predict([[1.0, 3.0, 3.0], [nan, 1.0, nan], [-inf, -inf, -inf]]).tolist() == [1, 0, 0]
    for k in (0, 4):
        with pytest.raises(ValueError):
            R.topk(np.ones(3), k)


def test_predict_binary():
    x = np.array([-inf, -1.0, 0.0, 1e-300, 1.0, inf, nan])
    assert R.predict_binary(x).tolist() == [False, False, False, True, True, True, False]
    t = 0.9
    tl = math.log(t / (1 - t))
    xs = np.array([np.nextafter(tl, -inf), tl, np.nextafter(tl, inf)])
    assert R.predict_binary(xs, t).tolist() == [False, False, True]
    assert R.predict_binary(np.float32(3.0), 0.9) is np.True_
    for bad in (0.0, 1.0, -0.1, 1.5, nan):
        with pytest.raises(ValueError):
            R.predict_binary(x, bad)


def test_longdouble_and_low_precision_dtypes():
    x = np.array([[1.0, 2.0, 3.0]], dtype=np.longdouble) / 3
    assert R.softmax(x).dtype == np.longdouble
    A.assert_ulp_close(R.softmax(x.astype(np.float64)), R.softmax(x), 4, np.float64, "long double in")
    lse = R.logsumexp(x)
    assert lse.dtype == np.longdouble
    # the long double input is taken exactly by the exact oracle too
    A.assert_ulp_close(lse.astype(np.float64), R.exact(R.logsumexp, x), 0.5, np.float64, "exact, long double in")
    bf = A.as_dtype("bfloat16")
    for dt in (np.float16, bf):
        a = np.array([[0.5, -2.0, 3.0]]).astype(dt)
        got = R.softmax(a)
        assert got.dtype == dt
        A.assert_ulp_close(got, R.exact(R.softmax, a), 0.5, dt, {"function": "softmax", "dtype": str(dt)})
        np.testing.assert_array_equal(R.exact(R.softmax, a).astype(dt), got)


def test_big_endian_and_views():
    a = np.random.default_rng(0).standard_normal((4, 5))
    for v in (a.astype(">f8"), a[::-1, ::2], np.asfortranarray(a)):
        np.testing.assert_array_equal(R.softmax(v), R.softmax(np.ascontiguousarray(v, "=f8")))
    x = a.copy()
    R.softmax(x, out=x)
    np.testing.assert_allclose(x, R.softmax(a))


# --------------------------------------------------------------------------- cross-entropy

def _torch_ce(x, y, *, axis, weight, sample_weight, ignore_index, reduction, ls, z,
              prob):
    """PyTorch evaluation of the API's cross-entropy (torch has no sample_weight /
    z_loss: they are added by hand from the "none" output)."""
    torch = _torch()
    F = torch.nn.functional
    xt = _t(x, requires_grad=True)
    xm = xt.movedim(axis, 1) if xt.ndim > 1 else xt
    wt = None if weight is None else _t(weight)
    if prob:
        yt = _t(y).movedim(axis, 1) if xt.ndim > 1 else _t(y)
        per = F.cross_entropy(xm, yt, weight=wt, reduction="none", label_smoothing=ls)
        valid = torch.ones_like(per, dtype=torch.bool)
    else:
        yt = torch.tensor(y)
        per = F.cross_entropy(xm, yt, weight=wt, ignore_index=ignore_index, reduction="none",
                              label_smoothing=ls)
        valid = yt != ignore_index
    s = torch.ones_like(per) if sample_weight is None else _t(sample_weight)
    lse = torch.logsumexp(xm, dim=1 if xt.ndim > 1 else 0)
    zt = torch.where(valid, z * lse ** 2, torch.zeros_like(lse))
    ce_i = s * per
    if reduction == "none":
        loss = ce_i + s * zt
        total = loss.sum()
    elif reduction == "sum":
        loss = total = ce_i.sum() + (s * zt).sum()
    else:
        if prob:
            d1 = d2 = s.sum()
        else:
            yc = torch.where(valid, yt, torch.zeros_like(yt))
            wy = torch.ones_like(per) if wt is None else wt[yc]
            d1 = torch.where(valid, s * wy, torch.zeros_like(s)).sum()
            d2 = torch.where(valid, s, torch.zeros_like(s)).sum()
        loss = total = ce_i.sum() / d1 + (s * zt).sum() / d2
    total.backward()
    return _np(loss) if reduction == "none" else float(loss.detach()), _np(xt.grad)


CE_SHAPES = [((7, 5), -1), ((7, 5), 0), ((3, 4, 6), 1), ((2, 3, 4, 5), -3), ((5,), 0)]


@pytest.mark.parametrize("shape,axis", CE_SHAPES)
@pytest.mark.parametrize("prob", [False, True])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("opts", [
    {},
    {"ls": 0.1},
    {"weight": True},
    {"weight": True, "ls": 0.25},
    {"sample_weight": True},
    {"weight": True, "sample_weight": True, "ls": 0.3, "z": 1e-2},
    {"z": 1e-3},
    {"ls": 1.0, "weight": True},
    {"ignore_index": 2},
])
def test_cross_entropy_vs_torch(shape, axis, prob, reduction, opts):
    rng = np.random.default_rng(abs(hash((shape, axis, prob, reduction, str(opts)))) % 2 ** 32)
    x = rng.standard_normal(shape) * 3
    ax = axis % len(shape)
    C = shape[ax]
    rshape = shape[:ax] + shape[ax + 1:]
    ignore_index = opts.get("ignore_index", -100)
    if prob:
        y = A.prob_targets(shape, axis, seed=int(rng.integers(1000)))
    else:
        y = A.class_targets(shape, axis, seed=int(rng.integers(1000)), ignore_index=ignore_index,
                            ignore_frac=0.2)
    weight = rng.uniform(0.2, 2.0, C) if opts.get("weight") else None
    sw = rng.uniform(0.0, 3.0, rshape) if opts.get("sample_weight") else None
    ls = opts.get("ls", 0.0)
    z = opts.get("z", 0.0)
    kw = dict(axis=axis, weight=weight, sample_weight=sw, ignore_index=ignore_index,
              reduction=reduction, label_smoothing=ls, z_loss=z)
    loss, grad = R.cross_entropy_and_grad(x, y, **kw)
    loss2 = R.cross_entropy(x, y, **kw)
    tl, tg = _torch_ce(x, y, axis=axis, weight=weight, sample_weight=sw,
                       ignore_index=ignore_index, reduction=reduction, ls=ls, z=z, prob=prob)
    ctx = {"shape": shape, "axis": axis, "prob": prob, "reduction": reduction, **opts}
    if reduction == "none":
        assert isinstance(loss, (np.ndarray, np.floating)) and np.shape(loss) == rshape
        assert np.asarray(loss).dtype == np.float64
    else:
        assert type(loss) is float
    A.assert_rel_close(loss, tl, 1e-10, 1e-13, ctx)
    A.assert_rel_close(loss2, loss, 0, 0, ctx)
    assert grad.shape == x.shape and grad.dtype == x.dtype
    A.assert_rel_close(grad, tg, 1e-9, 1e-13, ctx)


def test_cross_entropy_float32_and_grad_out():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    y = np.array([0, 3, 1, -100, 2, 2])
    loss, g = R.cross_entropy_and_grad(x, y, reduction="none")
    assert loss.dtype == np.float32 and g.dtype == np.float32
    exp, eg = R.cross_entropy_and_grad(x.astype(np.float64), y, reduction="none")
    A.assert_ulp_close(loss, exp, 0.5, np.float32, "ce float32")
    buf = np.empty_like(x)
    _, g2 = R.cross_entropy_and_grad(x, y, grad_out=buf)
    assert g2 is buf
    xc = x.copy()
    _, g3 = R.cross_entropy_and_grad(xc, y, grad_out=xc)
    assert g3 is xc
    np.testing.assert_array_equal(xc, buf)
    with pytest.raises(ValueError):
        R.cross_entropy_and_grad(x, y, grad_out=np.empty((6, 4)))


def test_cross_entropy_special_values():
    torch = _torch()
    F = torch.nn.functional
    # every row ignored: mean nan, sum 0, gradient zeros (PyTorch parity)
    x = np.random.default_rng(0).standard_normal((3, 4))
    y = np.full(3, -100)
    loss, g = R.cross_entropy_and_grad(x, y)
    tl = F.cross_entropy(_t(x), torch.tensor(y))
    assert math.isnan(loss) and math.isnan(float(tl))
    np.testing.assert_array_equal(g, 0)
    assert R.cross_entropy(x, y, reduction="sum") == 0.0
    # ignored rows are 0 whatever their logits hold
    x2 = np.array([[nan, 1.0], [inf, 0.0], [0.5, -0.5]])
    l2, g2 = R.cross_entropy_and_grad(x2, np.array([-100, -100, 1]), reduction="none")
    assert l2[:2].tolist() == [0.0, 0.0] and np.all(g2[:2] == 0) and np.isfinite(l2[2])
    # rows with +inf or nan give nan
    l3, g3 = R.cross_entropy_and_grad(x2, np.array([0, 0, 1]), reduction="none")
    assert np.isnan(l3[:2]).all() and np.isnan(g3[:2]).all()
    # -inf (masked) logits on non-target classes are fine; on the target: +inf loss
    x4 = np.array([[0.0, -inf, 1.0]])
    l4, g4 = R.cross_entropy_and_grad(x4, np.array([2]), reduction="none")
    tl4 = F.cross_entropy(_t(x4), torch.tensor([2]), reduction="none")
    np.testing.assert_allclose(l4, _np(tl4))
    assert g4[0, 1] == 0
    assert R.cross_entropy(x4, np.array([1]), reduction="none")[0] == inf
    # bool targets, out-of-range indices, bad arguments
    with pytest.raises(TypeError):
        R.cross_entropy(x, np.ones(3, dtype=bool))
    with pytest.raises(IndexError, match=r"\(1,\).*|5"):
        R.cross_entropy(x, np.array([0, 5, -3]))
    with pytest.raises(IndexError) as ei:
        R.cross_entropy(np.zeros((2, 3, 4)), np.array([[0, 1, 2], [9, -1, 0]]), axis=-1)
    assert "(1, 0)" in str(ei.value) and "9" in str(ei.value)
    with pytest.raises(ValueError):
        R.cross_entropy(x, np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError):
        R.cross_entropy(x, np.zeros((3, 5)))
    for bad in ({"reduction": "avg"}, {"label_smoothing": -0.1}, {"label_smoothing": 1.5},
                {"weight": np.ones(3)}, {"sample_weight": np.ones(4)}):
        with pytest.raises(ValueError):
            R.cross_entropy(x, np.zeros(3, dtype=np.int64), **bad)


def test_api_differs_ce_zero_prob_on_masked_logit():
    """API: a target probability of 0 on a -inf logit contributes 0 (0*log0 = 0);
    PyTorch gives nan."""
    torch = _torch()
    x = np.array([[0.0, -inf, 1.0], [2.0, 1.0, -inf]])
    t = np.array([[0.3, 0.0, 0.7], [1.0, 0.0, 0.0]])
    loss, g = R.cross_entropy_and_grad(x, t, reduction="none")
    exp = [-(0.3 * (0 - np.logaddexp(0, 1)) + 0.7 * (1 - np.logaddexp(0, 1))),
           -(2.0 - np.logaddexp(2, 1))]
    np.testing.assert_allclose(loss, exp, rtol=1e-14)
    assert np.all(np.isfinite(g)) and g[0, 1] == 0 and g[1, 2] == 0
    tl = torch.nn.functional.cross_entropy(_t(x), _t(t), reduction="none")
    assert torch.isnan(tl).all()            # PyTorch's value differs
    # with label smoothing the smoothed target is positive: the loss is +inf
    assert R.cross_entropy(x, t, reduction="none", label_smoothing=0.1)[0] == inf


# --------------------------------------------------------------------------- BCE

@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("wshape,pwshape", [(None, None), ((4,), None), (None, (4,)),
                                            ((3, 1), (4,)), ((), (1,)), ((3, 4), (3, 4))])
@pytest.mark.parametrize("tkind", ["float", "bool", "int", "soft"])
def test_bce_vs_torch(reduction, wshape, pwshape, tkind):
    torch = _torch()
    F = torch.nn.functional
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4)) * 4
    x[0, 0] = 40.0
    x[1, 1] = -40.0
    y = A.binary_targets((3, 4), seed=1, kind="float" if tkind == "soft" else tkind,
                         soft=tkind == "soft")
    w = None if wshape is None else rng.uniform(0.1, 2, wshape)
    pw = None if pwshape is None else rng.uniform(0.1, 3, pwshape)
    loss, g = R.bce_with_logits_and_grad(x, y, weight=w, pos_weight=pw, reduction=reduction)
    xt = _t(x, requires_grad=True)
    tl = F.binary_cross_entropy_with_logits(
        xt, _t(y), weight=None if w is None else _t(w),
        pos_weight=None if pw is None else _t(pw), reduction=reduction)
    tl.sum().backward()
    ctx = {"reduction": reduction, "w": wshape, "pw": pwshape, "target": tkind}
    # atol: torch's (1-y)*x + log1p(exp(-|x|)) + max(-x, 0) cancels to 0 where the
    # exact loss is ~4e-18 (x = -40, y = 0); the reference keeps it.
    A.assert_rel_close(loss, _np(tl) if reduction == "none" else float(tl.detach()), 1e-12, 1e-15, ctx)
    A.assert_rel_close(g, _np(xt.grad), 1e-12, 1e-300, ctx)
    assert R.bce_with_logits(x, y, weight=w, pos_weight=pw, reduction=reduction) == \
        pytest.approx(loss) if reduction != "none" else True


def test_api_differs_bce_infinite_logits():
    """API: at x = +-inf the BCE loss and gradient are their limits; PyTorch gives nan."""
    torch = _torch()
    x = np.array([inf, inf, -inf, -inf, nan])
    y = np.array([1.0, 0.0, 0.0, 1.0, 1.0])
    pw = 3.0
    loss, g = R.bce_with_logits_and_grad(x, y, pos_weight=np.array([pw]), reduction="none")
    np.testing.assert_array_equal(loss, [0.0, inf, 0.0, inf, nan])
    # grad = sigmoid(x)*(1+(pw-1)*y) - pw*y
    np.testing.assert_array_equal(g, [1 * (1 + 2) - 3, 1.0, 0.0, -3.0, nan])
    tl = torch.nn.functional.binary_cross_entropy_with_logits(
        _t(x), _t(y), pos_weight=_t([pw]), reduction="none")
    assert torch.isnan(tl[:2]).any()        # PyTorch's value differs
    # weight 0 at an infinite logit: 0 (the loss is 0 for every finite x)
    assert R.bce_with_logits(np.array([inf]), np.array([0.0]), weight=np.array([0.0]),
                             reduction="sum") == 0.0
    # float32 extremes without overflow
    l32 = R.bce_with_logits(np.array([-1e30, 1e30], np.float32), np.array([1, 0]),
                            reduction="none")
    assert l32.dtype == np.float32 and np.allclose(l32, 1e30)


def test_bce_errors():
    with pytest.raises(ValueError):
        R.bce_with_logits(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError):
        R.bce_with_logits(np.zeros((2, 3)), np.zeros((2, 3)), pos_weight=np.ones(2))
    with pytest.raises(ValueError):
        R.bce_with_logits(np.zeros(3), np.zeros(3), reduction="max")


# --------------------------------------------------------------------------- focal

def _torchvision_focal(xt, yt, alpha, gamma, reduction):
    """torchvision.ops.sigmoid_focal_loss, written out."""
    torch = _torch()
    F = torch.nn.functional
    p = torch.sigmoid(xt)
    ce = F.binary_cross_entropy_with_logits(xt, yt, reduction="none")
    p_t = p * yt + (1 - p) * (1 - yt)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * yt + (1 - alpha) * (1 - yt)
        loss = alpha_t * loss
    if reduction == "mean":
        loss = loss.mean()
    elif reduction == "sum":
        loss = loss.sum()
    return loss


@pytest.mark.parametrize("alpha", [0.25, -1.0, 0.9])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 3.5])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_focal_vs_torchvision(alpha, gamma, reduction):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((5, 6)) * 3
    y = A.binary_targets((5, 6), seed=2, soft=True)
    loss, g = R.sigmoid_focal_loss_and_grad(x, y, alpha=alpha, gamma=gamma, reduction=reduction)
    xt = _t(x, requires_grad=True)
    tl = _torchvision_focal(xt, _t(y), alpha, gamma, reduction)
    tl.sum().backward()
    ctx = {"alpha": alpha, "gamma": gamma, "reduction": reduction}
    A.assert_rel_close(loss, _np(tl) if reduction == "none" else float(tl.detach()), 1e-10, 1e-300, ctx)
    A.assert_rel_close(g, _np(xt.grad), 1e-9, 1e-15, ctx)
    assert R.sigmoid_focal_loss(x, y, alpha=alpha, gamma=gamma) == \
        pytest.approx(float(_torchvision_focal(_t(x), _t(y), alpha, gamma, "mean")), rel=1e-10)


def test_focal_limits():
    x = np.array([inf, inf, -inf, -inf, 800.0, -800.0, nan])
    y = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    loss, g = R.sigmoid_focal_loss_and_grad(x, y, reduction="none", alpha=-1)
    np.testing.assert_array_equal(loss[[0, 2, 4, 5]], 0.0)
    assert loss[1] == inf and loss[3] == inf and np.isnan(loss[6])
    np.testing.assert_array_equal(g[:6], [0.0, 1.0, 0.0, -1.0, 0.0, 0.0])
    assert np.isnan(g[6])


# --------------------------------------------------------------------------- finite differences

def _fd_check(fun, x, h=1e-6, rtol=1e-6, atol=1e-8, ctx=""):
    """Compare fun's analytical gradient with central differences of sum(loss)."""
    _, g = fun(x)
    num = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        num[idx] = (np.sum(fun(xp)[0]) - np.sum(fun(xm)[0])) / (2 * h)
    A.assert_rel_close(g, num, rtol, atol, ctx)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_gradients_finite_differences(reduction):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 3, 5))
    yi = A.class_targets(x.shape, 1, seed=3, ignore_frac=0.2)
    yp = A.prob_targets(x.shape, 1, seed=3)
    w = rng.uniform(0.5, 2, 3)
    s = rng.uniform(0.5, 2, (4, 5))
    kw = dict(axis=1, weight=w, sample_weight=s, reduction=reduction, label_smoothing=0.2,
              z_loss=0.05)
    _fd_check(lambda v: R.cross_entropy_and_grad(v, yi, **kw), x, ctx="ce index")
    _fd_check(lambda v: R.cross_entropy_and_grad(v, yp, **kw), x, ctx="ce prob")
    xb = rng.standard_normal((4, 6)) * 2
    yb = A.binary_targets((4, 6), seed=4, soft=True)
    _fd_check(lambda v: R.bce_with_logits_and_grad(v, yb, weight=rng.uniform(0.5, 2, 6) * 0 + 1.5,
                                                   pos_weight=np.linspace(0.5, 3, 6),
                                                   reduction=reduction), xb, ctx="bce")
    for gamma in (0.5, 2.0):
        _fd_check(lambda v: R.sigmoid_focal_loss_and_grad(v, yb, gamma=gamma, reduction=reduction),
                  xb, ctx=f"focal gamma={gamma}")


# --------------------------------------------------------------------------- scoring

def _multiclass_data(n=300, C=6, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    x = rng.standard_normal((n, C)) * 2
    x[np.arange(n), y] += rng.uniform(0, 3, n)
    return x, y


@pytest.mark.parametrize("weighted", [False, True])
def test_score_multiclass_vs_sklearn(weighted):
    metrics = pytest.importorskip("sklearn.metrics")
    x, y = _multiclass_data()
    s = np.random.default_rng(1).uniform(0.1, 3, len(y)) if weighted else None
    for T in (1.0, 1.7):
        res = R.score(x, y, sample_weight=s, temperature=T, k=3)
        assert set(res) == {"count", "nll", "accuracy", "top_k_accuracy", "ece", "brier",
                            "mean_entropy"}
        p = R.softmax(x / T)
        labels = np.arange(x.shape[1])
        assert res["count"] == len(y)
        assert res["nll"] == pytest.approx(metrics.log_loss(y, p, sample_weight=s, labels=labels),
                                           rel=1e-10)
        assert res["accuracy"] == pytest.approx(
            metrics.accuracy_score(y, p.argmax(1), sample_weight=s), rel=1e-12)
        assert res["top_k_accuracy"] == pytest.approx(
            metrics.top_k_accuracy_score(y, p, k=3, sample_weight=s, labels=labels), rel=1e-12)
        onehot = np.eye(x.shape[1])[y]
        brier = np.average(((p - onehot) ** 2).sum(1), weights=s)
        assert res["brier"] == pytest.approx(brier, rel=1e-12)
        ent = np.average([-(q * np.log(q)).sum() for q in p], weights=s)
        assert res["mean_entropy"] == pytest.approx(ent, rel=1e-10)
        assert res["nll"] == pytest.approx(R.cross_entropy(x / T, y, sample_weight=s), rel=1e-12)
        # ECE from its definition with explicit bin loops
        conf, correct = p.max(1), (p.argmax(1) == y)
        w = np.ones(len(y)) if s is None else s
        ece = 0.0
        for b in range(15):
            lo, hi = b / 15, (b + 1) / 15
            m = (conf >= lo) & ((conf < hi) if b < 14 else (conf <= hi))
            if m.any():
                ece += w[m].sum() / w.sum() * abs(np.average(correct[m], weights=w[m])
                                                  - np.average(conf[m], weights=w[m]))
        assert res["ece"] == pytest.approx(ece, rel=1e-10, abs=1e-15)
    assert R.score(x, y, k=100)["top_k_accuracy"] == 1.0
    sub = R.score(x, y, metrics=["nll", "accuracy"])
    assert set(sub) == {"nll", "accuracy"}
    with pytest.raises(ValueError):
        R.score(x, y, metrics=["roc_auc"])
    with pytest.raises(ValueError):
        R.score(x, y, metrics=["nope"])


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("layout", ["1d", "n1", "bool", "int"])
def test_score_binary_vs_sklearn(weighted, layout):
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(2)
    n = 400
    y = (rng.random(n) < 0.35).astype(np.int64)
    x = rng.standard_normal(n) + 1.2 * y
    x[:40] = np.round(x[:40])                 # ties for roc_auc
    s = rng.uniform(0.1, 3, n) if weighted else None
    xx = x[:, None] if layout == "n1" else x
    yy = y.astype(bool) if layout == "bool" else (y.astype(float) if layout == "1d" else y)
    res = R.score(xx, yy, sample_weight=s)
    assert set(res) == {"count", "nll", "accuracy", "ece", "brier", "mean_entropy", "roc_auc"}
    p = 1 / (1 + np.exp(-x))
    assert res["count"] == n
    assert res["nll"] == pytest.approx(metrics.log_loss(y, p, sample_weight=s), rel=1e-10)
    assert res["accuracy"] == pytest.approx(
        metrics.accuracy_score(y, x > 0, sample_weight=s), rel=1e-12)
    assert res["brier"] == pytest.approx(metrics.brier_score_loss(y, p, sample_weight=s),
                                         rel=1e-10)
    assert res["roc_auc"] == pytest.approx(metrics.roc_auc_score(y, x, sample_weight=s),
                                           rel=1e-12)
    ent = np.average(-(p * np.log(p) + (1 - p) * np.log1p(-p)), weights=s)
    assert res["mean_entropy"] == pytest.approx(ent, rel=1e-9)
    assert 0 <= res["ece"] <= 1


def test_score_multilabel_vs_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(4)
    n, L = 200, 5
    y = (rng.random((n, L)) < 0.3).astype(np.float64)
    y[:, 4] = 0                                  # a label with one class only
    x = rng.standard_normal((n, L)) + y
    s = rng.uniform(0.1, 2, n)
    res = R.score(x, y, sample_weight=s)
    assert res["count"] == n
    auc = np.mean([metrics.roc_auc_score(y[:, j], x[:, j], sample_weight=s) for j in range(4)])
    assert res["roc_auc"] == pytest.approx(auc, rel=1e-12)
    p = 1 / (1 + np.exp(-x))
    se = np.repeat(s, L)
    assert res["nll"] == pytest.approx(
        metrics.log_loss(y.reshape(-1), p.reshape(-1), sample_weight=se), rel=1e-10)
    assert res["accuracy"] == pytest.approx(
        metrics.accuracy_score(y.reshape(-1), (x > 0).reshape(-1), sample_weight=se))
    assert res["brier"] == pytest.approx(
        metrics.brier_score_loss(y.reshape(-1), p.reshape(-1), sample_weight=se), rel=1e-10)


def test_score_task_inference_and_errors():
    x, y = _multiclass_data(50, 4)
    assert "top_k_accuracy" in R.score(x, y)
    assert "roc_auc" in R.score(x, (y[:, None] == np.arange(4)).astype(float))
    assert "roc_auc" in R.score(x[:, :1], (y == 0).astype(float))
    # axis=1 with (N, C, d) layout = per-position multiclass
    x3 = np.random.default_rng(0).standard_normal((6, 3, 4))
    y3 = np.random.default_rng(1).integers(0, 3, (6, 4))
    r3 = R.score(x3, y3, axis=1)
    r2 = R.score(np.moveaxis(x3, 1, -1).reshape(-1, 3), y3.reshape(-1))
    assert r3["count"] == 24 and r3["nll"] == pytest.approx(r2["nll"], rel=1e-14)
    with pytest.raises(IndexError):
        R.score(x, y + 4)
    with pytest.raises(ValueError):
        R.score(x, y, temperature=0.0)
    with pytest.raises(ValueError):
        R.score(np.zeros(4), np.array([0, 1, 2, 1]))
    res = R.score(np.zeros((0, 3)), np.zeros(0, np.int64))
    assert res["count"] == 0 and math.isnan(res["nll"])


def test_fit_temperature_vs_scipy():
    optimize = pytest.importorskip("scipy.optimize")
    x, y = _multiclass_data(500, 5, seed=7)
    x = x * 2.5                                   # over-confident
    T = R.fit_temperature(x, y)
    res = optimize.minimize_scalar(lambda t: R.cross_entropy(x / t, y), bounds=(0.05, 20),
                                   method="bounded", options={"xatol": 1e-10})
    assert T == pytest.approx(res.x, rel=1e-5)
    assert R.cross_entropy(x / T, y) <= res.fun + 1e-12
    s = np.random.default_rng(0).uniform(0.1, 2, len(y))
    Tw = R.fit_temperature(x, y, sample_weight=s)
    resw = optimize.minimize_scalar(lambda t: R.cross_entropy(x / t, y, sample_weight=s),
                                    bounds=(0.05, 20), method="bounded",
                                    options={"xatol": 1e-10})
    assert Tw == pytest.approx(resw.x, rel=1e-5)
    # binary
    rng = np.random.default_rng(8)
    yb = (rng.random(300) < 0.5).astype(float)
    xb = (rng.standard_normal(300) + 2 * yb - 1) * 4
    Tb = R.fit_temperature(xb, yb)
    resb = optimize.minimize_scalar(lambda t: R.bce_with_logits(xb / t, yb), bounds=(0.05, 50),
                                    method="bounded", options={"xatol": 1e-10})
    assert Tb == pytest.approx(resb.x, rel=1e-5)


# --------------------------------------------------------------------------- arrays.py

def test_generator_is_deterministic_and_covers_features():
    a1 = [(d, a.dtype.str, a.shape, a.strides, ax, a.tobytes()) for d, a, ax in
          A.adversarial_arrays(seed=5)]
    a2 = [(d, a.dtype.str, a.shape, a.strides, ax, a.tobytes()) for d, a, ax in
          A.adversarial_arrays(seed=5)]
    assert a1 == a2
    cases = list(A.adversarial_arrays(dtypes=("float32",), ndim_max=4))
    arrs = [a for _, a, _ in cases]
    assert any(a.ndim == 0 for a in arrs)
    assert any(a.ndim == 1 for a in arrs)
    assert any(a.size == 0 and a.ndim == 2 and a.shape[0] == 0 for a in arrs)
    assert any(a.ndim >= 2 and a.shape[ax] == 0 for _, a, ax in cases)
    assert any(a.ndim >= 2 and a.shape[ax] == 1 for _, a, ax in cases)
    assert any(a.ndim == 4 for a in arrs)
    assert any(ax < 0 for _, a, ax in cases) and any(ax > 0 for _, a, ax in cases)
    assert {ax % a.ndim for _, a, ax in cases if a.ndim == 4} == {0, 1, 2, 3}
    assert any(a.flags.f_contiguous and not a.flags.c_contiguous for a in arrs)
    assert any(any(s < 0 for s in a.strides) for a in arrs)
    assert any(a.dtype.byteorder == ">" for a in arrs)
    assert any(not a.flags.aligned for a in arrs)
    assert any(not a.flags.writeable for a in arrs)
    assert any(not a.flags.c_contiguous and not a.flags.f_contiguous for a in arrs)
    with np.errstate(invalid="ignore"):
        allv = np.concatenate([a.astype(np.float64).ravel() for a in arrs])
    assert np.isnan(allv).any() and (allv == inf).any() and (allv == -inf).any()
    fin = allv[np.isfinite(allv)]
    for lo, hi in ((87, 90), (9e3, 2e4), (5e29, 2e30)):
        assert ((np.abs(fin) > lo) & (np.abs(fin) < hi)).any()
    assert any(a.ndim >= 1 and a.size and a.shape[ax] >= 5000 for _, a, ax in cases)

    def rows(a, ax):
        return np.moveaxis(a, ax, -1).reshape(-1, a.shape[ax])

    assert any(np.all(rows(a, ax) == -inf, axis=1).any() for _, a, ax in cases
               if a.ndim >= 2 and a.size)
    assert any(np.all(rows(a, ax) == rows(a, ax)[:, :1], axis=1).any() for _, a, ax in cases
               if a.ndim >= 2 and a.size and a.shape[ax] > 2)
    for dt in ("float16", "bfloat16", "longdouble"):
        assert sum(1 for _ in A.adversarial_arrays(dtypes=(dt,))) > 50


def test_target_helpers():
    y = A.class_targets((20, 7), -1, seed=1, ignore_index=-5)
    assert y.shape == (20,) and y.dtype == np.int64 and (y == -5).any()
    assert np.all((y == -5) | ((y >= 0) & (y < 7)))
    y3 = A.class_targets((4, 3, 6), 1, seed=1)
    assert y3.shape == (4, 6) and y3[y3 != -100].max() < 3
    assert (A.class_targets((4, 0), -1) == -100).all()
    t = A.prob_targets((30, 5), -1, seed=2)
    np.testing.assert_allclose(t.sum(-1), 1)
    assert (t == 0).any() and (t == 1).any()
    t1 = A.prob_targets((5, 4, 3), 1)
    np.testing.assert_allclose(t1.sum(1), 1)
    for kind, dt in (("bool", np.bool_), ("int", np.int64), ("float", np.float64)):
        b = A.binary_targets((10, 10), kind=kind)
        assert b.dtype == dt and set(np.unique(b.astype(float))) == {0.0, 1.0}
    soft = A.binary_targets((50,), soft=True)
    assert (soft == 0).any() and (soft == 1).any() and ((soft > 0) & (soft < 1)).any()


def test_ulp_helpers():
    bf = A.as_dtype("bfloat16")
    half_up = R.DDArray.from_float(np.float64(1.0)) + 2.0 ** -24
    assert A.ulp_distance(np.float32(1.0), half_up, np.float32) == 0.5
    # double-double resolution: 2**-80 above 1 is 2**-28 float64 ULP away
    tiny_up = R.DDArray.from_float(np.float64(1.0)) + 2.0 ** -80
    assert A.ulp_distance(np.float64(1.0), tiny_up, np.float64) == 2.0 ** -28
    # subnormal expected values: ULPs of 2**-1074
    assert A.ulp_distance(np.float64(5e-324), R.DDArray.from_float(np.float64(1e-323)), np.float64) == 1
    assert A.ulp_distance(np.float64(0.0), np.float64(0.0), np.float64) == 0
    assert A.ulp_distance(np.float64(5e-324), np.float64(0.0), np.float64) == 1
    # a scale: the unit is the ULP of the larger of the value and the scale
    assert A.ulp_distance(np.float64(2.0 ** -60), np.float64(0.0), np.float64, scale=1.0) == 2.0 ** -8
    assert A.ulp_distance(np.array([1.0078125], bf), np.array([1.0]), bf)[0] == 1
    assert A.ulp_distance(np.array([1.0009765625], np.float16), np.array([1.0]), np.float16)[0] == 1
    assert A.ulp_distance(np.float64(nan), np.float64(nan), np.float64) == 0
    assert A.ulp_distance(np.float64(inf), np.float64(inf), np.float64) == 0
    assert A.ulp_distance(np.float64(-inf), np.float64(inf), np.float64) == inf
    assert A.ulp_distance(np.float64(nan), np.float64(1.0), np.float64) == inf
    assert A.ulp_distance(np.float32(inf), np.float64(1e300), np.float32) == 0
    A.assert_ulp_close(np.float32([1, 2]), np.float64([1, 2]), 0, np.float32, "ok")
    with pytest.raises(AssertionError) as ei:
        A.assert_ulp_close(np.float32([1, 2, nan]), np.float64([1, 2.5, 3]), 4, np.float32,
                           {"function": "f", "dtype": "float32", "axis": -1},
                           inputs={"x": np.float32([7, 8, 9])})
    msg = str(ei.value)
    assert "function=f" in msg and "index=(2,)" in msg and "x=" in msg and "2 of 3" in msg
    with pytest.raises(AssertionError, match="dtype mismatch"):
        A.assert_ulp_close(np.float64([1]), np.float64([1]), 0, np.float32, "c")
    with pytest.raises(AssertionError, match="shape mismatch"):
        A.assert_ulp_close(np.float32([1]), np.float64([1, 2]), 0, np.float32, "c")
    A.assert_rel_close([1.0, nan, inf], [1.0 + 1e-13, nan, inf], 1e-12, 0, "ok")
    with pytest.raises(AssertionError, match="relative"):
        A.assert_rel_close([1.0, 2.0], [1.0, 2.1], 1e-3, 0, "ctx")


# --------------------------------------------------------------------------- the exact oracle
#
# reference.exact has two backends: long double where it is extended (x86) and double-double
# everywhere (the only one on macOS arm64 and Windows). On the adversarial generator they must
# agree to ORACLE_TOL float64 ULP of the result (for gradients, of the size of the terms they
# are the difference of, where long double cannot resolve the cancellation): then either of
# them measures the kernels' errors to that precision, and the portable one is proven here.

ORACLE_TOL = 0.01
_POST = ["sigmoid", "log_sigmoid", "softmax", "log_softmax", "logsumexp", "entropy"]


def _need_extended():
    if int(np.finfo(np.longdouble).nmant) < 63:
        pytest.skip("np.longdouble is not extended precision here: nothing to compare with")


def _both(f, *args, **kwargs):
    with R.use_backend("extended"):
        ext = R.exact(f, *args, **kwargs)
    with R.use_backend("portable"):
        port = R.exact(f, *args, **kwargs)
    return ext, port


class _Worst:
    """The largest disagreement seen, with its case, for the report."""

    def __init__(self, what):
        self.what, self.err, self.case = what, 0.0, None

    def check(self, ext, port, case, scale=None):
        err = A.assert_ulp_close(ext, port, ORACLE_TOL, np.float64, f"{self.what}: {case}",
                                 check_dtype=False, scale=scale)
        if err > self.err:
            self.err, self.case = err, case

    def report(self):
        print(f"\n{self.what}: extended vs portable oracle, worst {self.err:.2e} float64 ULP ({self.case})")


def _oracle_cases(full):
    """The generator's values (the layouts hold the same values: left out); ``full``: float32
    values too, and the huge rows."""
    dtypes = ("float64", "float32") if full else ("float64",)
    return list(A.adversarial_arrays(dtypes=dtypes, layouts=False, huge=full))


def _check_postprocessing(fname, full):
    f = getattr(R, fname)
    worst = _Worst(fname)
    for desc, a, ax in _oracle_cases(full):
        if fname in ("sigmoid", "log_sigmoid"):
            ext, port = _both(f, a)
        elif a.ndim == 0:
            continue
        else:
            ext, port = _both(f, a, ax)
        worst.check(ext, port, desc)
    worst.report()


CE_ORACLE_OPTIONS = [{}, {"label_smoothing": 0.2, "z_loss": 3e-3},
                     {"weight": True, "sample_weight": True, "label_smoothing": 1.0}]


def _check_losses(family, full):
    worst_loss, worst_grad = _Worst(f"{family} loss"), _Worst(f"{family} grad")
    for i, (desc, x, ax) in enumerate(_oracle_cases(full)):
        if x.ndim == 0:
            continue
        rng = np.random.default_rng(i)
        reduction = ("none", "sum", "mean")[i % 3]
        if family.startswith("cross_entropy"):
            opts = dict(CE_ORACLE_OPTIONS[i % len(CE_ORACLE_OPTIONS)])
            rows = x.shape[:ax % x.ndim] + x.shape[ax % x.ndim + 1:]
            if opts.pop("weight", False):
                opts["weight"] = rng.uniform(0.5, 2.0, x.shape[ax])
            if opts.pop("sample_weight", False):
                opts["sample_weight"] = rng.uniform(0.5, 2.0, rows)
            t = A.class_targets(x.shape, ax, seed=i) if family.endswith("index") else \
                A.prob_targets(x.shape, ax, seed=i)
            kw = dict(axis=ax, reduction=reduction, **opts)
            (el, eg), (pl, pg) = _both(R.cross_entropy_and_grad, x, t, **kw)
            scale = A.ce_grad_scale(x, t, **kw)
        elif family == "bce":
            y = A.binary_targets(x.shape, seed=i, soft=i % 2 == 0)
            kw = dict(reduction=reduction)
            if i % 4 < 2:
                kw.update(weight=rng.uniform(0.5, 2.0, x.shape[-1:]), pos_weight=rng.uniform(0.5, 3.0, x.shape[-1:]))
            (el, eg), (pl, pg) = _both(R.bce_with_logits_and_grad, x, y, **kw)
            scale = A.bce_grad_scale(x, y, **kw)
        else:
            y = A.binary_targets(x.shape, seed=i, soft=i % 2 == 0)
            kw = dict(reduction=reduction, alpha=(0.25, -1.0, 0.6)[i % 3], gamma=(2.0, 0.5, 3.7, 0.0)[i % 4])
            (el, eg), (pl, pg) = _both(R.sigmoid_focal_loss_and_grad, x, y, **kw)
            scale = A.focal_grad_scale(x, y, **kw)
        case = f"{desc} " + " ".join(f"{k}={v}" for k, v in kw.items() if np.ndim(v) == 0)
        worst_loss.check(el, pl, case)
        worst_grad.check(eg, pg, case, scale=scale)
    worst_loss.report()
    worst_grad.report()


_LOSS_FAMILIES = ["cross_entropy index", "cross_entropy prob", "bce", "focal"]


@pytest.mark.parametrize("fname", _POST)
def test_portable_oracle_matches_extended(fname):
    _need_extended()
    _check_postprocessing(fname, full=False)


@pytest.mark.parametrize("family", _LOSS_FAMILIES)
def test_portable_oracle_matches_extended_losses(family):
    _need_extended()
    _check_losses(family, full=False)


@pytest.mark.slow
@pytest.mark.parametrize("what", _POST + _LOSS_FAMILIES)
def test_portable_oracle_matches_extended_huge_rows(what):
    """The same on the whole generator (rows of 5000 and 70000 classes, 3000-row arrays)."""
    _need_extended()
    if what in _POST:
        _check_postprocessing(what, full=True)
    else:
        _check_losses(what, full=True)


def test_exact_results_and_backend_switch(monkeypatch):
    x = np.array([[2.5, 0.3, -1.2], [40.0, 0.0, -np.inf]])
    for name in ("extended", "portable") if int(np.finfo(np.longdouble).nmant) >= 63 else ("portable",):
        with R.use_backend(name):
            assert R.backend() == name
            e = R.exact(R.softmax, x)
            assert isinstance(e, R.DDArray) and e.shape == x.shape
            A.assert_ulp_close(R.softmax(x), e, 4, np.float64, "plain softmax vs exact")
            loss, grad = R.exact(R.cross_entropy_and_grad, x, np.array([0, 1]))
            assert loss.shape == () and grad.shape == x.shape
            assert float(loss.astype(np.float64)) == pytest.approx(R.cross_entropy(x, np.array([0, 1])), rel=1e-15)
    monkeypatch.setenv("FASTLOGITS_ORACLE", "portable")
    assert R.backend() == "portable"
    monkeypatch.setenv("FASTLOGITS_ORACLE", "banana")
    with pytest.raises(ValueError, match="FASTLOGITS_ORACLE"):
        R.backend()
    with pytest.raises(ValueError, match="name"):
        with R.use_backend("quad"):
            pass
    monkeypatch.delenv("FASTLOGITS_ORACLE")
    assert R.backend() == ("extended" if int(np.finfo(np.longdouble).nmant) >= 63 else "portable")
    # the plain evaluation is untouched by exact(): float64 arithmetic, float64 results
    assert R.softmax(x).dtype == np.float64


def test_double_double_arithmetic():
    """DDArray's exp, log, log1p, division and sums to about 2**-100 relative, subnormal
    results rounded once; against mpmath when it is installed, else against identities."""
    D = R.DDArray.from_float
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-1, 1, 200), rng.uniform(-745, 709, 200), [0.0, -0.0, 1e-300, 700.5]])
    pos = np.concatenate([10.0 ** rng.uniform(-300, 300, 200), 1 + rng.standard_normal(50) * 1e-9, [0.5, 1.0, 2.0]])
    try:
        import mpmath
    except ImportError:
        mpmath = None
    if mpmath is not None:
        mpmath.mp.prec = 200

        def rel_err(d, i, want):
            got = mpmath.ldexp(mpmath.mpf(float(d.hi.flat[i])) + mpmath.mpf(float(d.lo.flat[i])), int(d.ex.flat[i]))
            return abs(got - want) / abs(want) if want != 0 else abs(got)

        for fn, args, ref_fn in (("exp", x, mpmath.exp), ("log", pos, mpmath.log),
                                 ("log1p", np.concatenate([pos, x[x > -1]]), mpmath.log1p)):
            d = getattr(D(args), fn)()
            worst = max(rel_err(d, i, ref_fn(mpmath.mpf(float(v)))) for i, v in enumerate(args))
            assert worst < 2.0 ** -100, (fn, float(worst))
    # identities that hold to double-double accuracy whatever the platform
    e = D(x[x < 700]).exp()
    back = e.log()
    diff = back - D(x[x < 700])
    assert np.all(np.abs(diff.approx()) <= 2.0 ** -95 * np.maximum(1, np.abs(x[x < 700])))
    q = D(pos) / D(pos[::-1])
    one = (q * D(pos[::-1]) - D(pos)) / D(pos)
    assert np.all(np.abs(one.approx()) <= 2.0 ** -100)
    # exp(-745.1) is subnormal: rounded once from the exact value, ties to even
    sub = D(np.array([-745.1, -744.0, -708.5, -1e4, 1e4])).exp().astype(np.float64)
    np.testing.assert_array_equal(sub, [5e-324, np.exp(-744.0), np.exp(-708.5), 0.0, np.inf])
    # pairwise sums keep the tiny terms
    s = D(np.array([1.0, 1e-30, -1.0, 1e-40])).sum_last()
    assert float(s.astype(np.float64)) == 1e-30 + 1e-40
    specials = D(np.array([np.inf, -np.inf, np.nan, 0.0]))
    np.testing.assert_array_equal(specials.exp().astype(np.float64), [np.inf, 0.0, np.nan, 1.0])
    np.testing.assert_array_equal(specials.log().astype(np.float64), [np.inf, np.nan, np.nan, -np.inf])
