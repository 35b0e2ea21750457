"""bce_with_logits, sigmoid_focal_loss and their gradients (API section 3).

Oracles: fastlogits.reference evaluated in long double (an almost exact result), PyTorch's
binary_cross_entropy_with_logits (forward and autograd) and torchvision's focal-loss formula
written in torch, central finite differences.

Tolerances (the issue's): float64 1e-6 relative; float32 1e-5 relative or 4 ULP. Two stated
additions, both the rounding error bound of a subtraction that the exact value inherits:
- soft targets: the gradient w*((1-y)*s+ - pw*y*s-) cancels where sigmoid(x) ~ y, so a float32
  kernel is held to 4 eps32 of the size of those terms (absolute), see `_grad_terms`;
- PyTorch computes the loss as (1-y)*x - log_weight*log_sigmoid(x) and the gradient as
  sigmoid(x)*log_weight - pw*y, which cancel for large |x|: PyTorch (in float64) is trusted to
  8 eps64 of the size of its terms (absolute), see `_torch_atol`.
"""
import itertools

import numpy as np
import pytest

import fastlogits as fl
from fastlogits import _core
from fastlogits import reference as R

from arrays import assert_rel_close, bfloat16, ulp_distance

EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)
LD = np.longdouble

# ----------------------------------------------------------------------------- helpers


def _targets(kind, shape, rng):
    hard = rng.random(shape) < 0.4
    if kind == "soft":
        y = np.where(rng.random(shape) < 0.5, rng.random(shape), hard.astype(np.float64))
        return y
    if kind == "bool":
        return hard
    if kind == "float16":
        return hard.astype(np.float16)
    return hard.astype(np.dtype(kind))


def _logits(shape, dtype, rng, scale=6.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def _weight(spec, shape, rng):
    n, c = shape
    shapes = {"none": None, "scalar": (), "C": (c,), "N1": (n, 1), "NC": (n, c), "1C": (1, c)}
    s = shapes[spec]
    if s is None:
        return None
    return (0.25 + 2 * rng.random(s)).astype(np.float64)


def _sig(v):
    return R.sigmoid(np.asarray(v, dtype=LD))


def _grad_terms(x, y, w, pw):
    """|(1-y)*w*s+| + |pw*y*w*s-|: the size of the two terms of the BCE gradient."""
    x = np.asarray(x, dtype=LD)
    y = np.asarray(y, dtype=LD)
    w = 1 if w is None else np.asarray(w, dtype=LD)
    pw = 1 if pw is None else np.asarray(pw, dtype=LD)
    return np.abs(w) * ((1 - y) * _sig(x) + np.abs(pw) * y * _sig(-x))


def _focal_terms(x, y, alpha, gamma):
    """Size of the two terms of the focal gradient, for soft-target cancellation."""
    x = np.asarray(x, dtype=LD)
    y = np.asarray(y, dtype=LD)
    sp, sn = _sig(x), _sig(-x)
    q = sp * (1 - y) + sn * y
    ce = np.asarray(R.bce_with_logits(x, y, reduction="none"), dtype=LD)
    at = alpha * y + (1 - alpha) * (1 - y) if alpha >= 0 else 1
    with np.errstate(all="ignore"):
        mod = q ** gamma
        t2 = np.where(q > 0, gamma * ce * mod * sp * sn / np.where(q > 0, q, 1), 0)
        size = np.abs(at) * (mod * (sp * (1 - y) + y * sn) + np.abs(t2))
    return np.where(np.isfinite(size), size, 0)  # no allowance where the terms are infinite


def assert_loss_close(actual, expected, dtype, atol=0.0, context=""):
    """float64: 1e-6 relative; float32/16/bf16: 1e-5 relative or 4 ULP; plus ``atol``."""
    dtype = np.dtype(dtype)
    a = np.asarray(actual)
    e = np.asarray(expected)
    if dtype == np.float64:
        with np.errstate(over="ignore", under="ignore"):
            e = e.astype(np.float64)  # the exact value rounded (e.g. exp(-1e4) -> 0)
    assert a.shape == e.shape, (a.shape, e.shape, context)
    if isinstance(actual, np.ndarray):
        assert actual.dtype == dtype, (actual.dtype, dtype, context)
    rtol = 1e-6 if dtype == np.float64 else 1e-5
    ok_ulp = ulp_distance(a, e, dtype) <= 4 if dtype != np.float64 else np.zeros(a.shape, bool)
    with np.errstate(invalid="ignore"):
        el = e.astype(LD)
        err = np.abs(a.astype(LD) - el)
        ok_rel = (err <= rtol * np.abs(el) + atol) | (np.isnan(a) & np.isnan(el)) | (a == el)
    bad = ~(ok_ulp | ok_rel)
    if np.any(bad):
        keep = np.where(bad, a, e) if a.ndim else a
        assert_rel_close(keep, e, rtol, atol=np.max(np.broadcast_to(atol, e.shape)[bad]) if np.ndim(atol) else atol,
                         context=context)
        raise AssertionError(f"{context}: {int(bad.sum())} points out of tolerance")


def assert_float_close(actual, expected, context=""):
    """Reduced losses are Python floats accumulated in float64: 1e-6 relative against the
    long double reference whatever the input dtype... of the float64 sum of the elements."""
    assert isinstance(actual, float), type(actual)
    if np.isnan(expected):
        assert np.isnan(actual), context
    else:
        assert actual == pytest.approx(float(expected), rel=1e-6, abs=0), context


# ----------------------------------------------------------------------------- reference parity

TARGET_KINDS = ["float64", "float32", "bool", "int64", "int32", "int8", "uint8", "soft"]
WEIGHTS = ["none", "scalar", "C", "N1", "NC"]
POS_WEIGHTS = ["none", "C", "N1", "1C"]
GRAD_OUT = ["none", "fresh", "inplace"]


def _ref_bce(x, y, w, pw, reduction, want_grad):
    """Long double reference: loss and gradient."""
    xl = np.asarray(x).astype(np.float32).astype(LD) if np.asarray(x).dtype == bfloat16 else np.asarray(x, dtype=LD)
    wl = None if w is None else np.asarray(w, dtype=LD)
    pl = None if pw is None else np.asarray(pw, dtype=LD)
    if want_grad:
        return R.bce_with_logits_and_grad(xl, y, weight=wl, pos_weight=pl, reduction=reduction)
    return R.bce_with_logits(xl, y, weight=wl, pos_weight=pl, reduction=reduction), None


def _weights_as(w, dtype):
    """weights (and float targets) as the kernel uses them, rounded to the compute dtype
    (float32 for float32 logits), for the oracle"""
    if w is None:
        return None
    w = np.asarray(w)
    if w.dtype.kind != "f":
        return w
    cdt = np.float64 if dtype == np.float64 else np.float32
    return w.astype(cdt)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("tkind", TARGET_KINDS)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_bce_matches_reference_every_option(dtype, tkind, reduction):
    rng = np.random.default_rng([len(tkind), len(reduction), len(dtype)])
    shape = (7, 37)  # not a multiple of any vector width
    for wspec, pwspec, gspec in itertools.product(WEIGHTS, POS_WEIGHTS, GRAD_OUT):
        x = _logits(shape, dtype, rng)
        y = _targets(tkind, shape, rng)
        w = _weight(wspec, shape, rng)
        pw = _weight(pwspec, shape, rng)
        ctx = dict(dtype=dtype, target=tkind, weight=wspec, pos_weight=pwspec, reduction=reduction, grad_out=gspec)
        x0, y0 = x.copy(), y.copy()
        w0 = None if w is None else w.copy()
        loss = fl.bce_with_logits(x, y, weight=w, pos_weight=pw, reduction=reduction)
        eloss, eg = _ref_bce(x, _weights_as(y, x.dtype), _weights_as(w, x.dtype), _weights_as(pw, x.dtype), reduction, True)
        if reduction == "none":
            assert_loss_close(loss, eloss, dtype, context=ctx)
        else:
            assert_float_close(loss, eloss, ctx)
        grad_out = {"none": None, "fresh": np.full(shape, 7.0, dtype=dtype), "inplace": x}[gspec]
        l2, g = fl.bce_with_logits_and_grad(x, y, weight=w, pos_weight=pw, reduction=reduction, grad_out=grad_out)
        if grad_out is not None:
            assert g is grad_out
        atol = 0.0
        if tkind == "soft" and dtype == "float32":
            atol = 4 * EPS32 * _grad_terms(x0, _weights_as(y, x.dtype), _weights_as(w, x.dtype), _weights_as(pw, x.dtype))
            atol = atol / (x.size if reduction == "mean" else 1)
        assert_loss_close(g, eg, dtype, atol=atol, context=ctx)
        if reduction == "none":
            assert_loss_close(l2, eloss, dtype, context=ctx)
        else:
            assert l2 == loss  # the same float64 sum, bitwise
        np.testing.assert_array_equal(y, y0)
        if w is not None:
            np.testing.assert_array_equal(w, w0)
        if gspec != "inplace":
            np.testing.assert_array_equal(x, x0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("tkind", ["float64", "bool", "int8", "soft"])
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1.0, 2.0), (0.25, 0.0), (0.6, 1.0), (0.25, 0.5), (0.9, 3.7)])
def test_focal_matches_reference(dtype, tkind, alpha, gamma):
    rng = np.random.default_rng([int(gamma * 10), len(tkind), len(dtype)])
    shape = (5, 53)
    for reduction, gspec in itertools.product(["none", "mean", "sum"], GRAD_OUT):
        x = _logits(shape, dtype, rng)
        y = _targets(tkind, shape, rng)
        x0 = x.copy()
        ctx = dict(dtype=dtype, target=tkind, alpha=alpha, gamma=gamma, reduction=reduction, grad_out=gspec)
        xl = x.astype(LD)
        eloss, eg = R.sigmoid_focal_loss_and_grad(xl, _weights_as(y, x.dtype), alpha=alpha, gamma=gamma, reduction=reduction)
        loss = fl.sigmoid_focal_loss(x, y, alpha=alpha, gamma=gamma, reduction=reduction)
        grad_out = {"none": None, "fresh": np.empty(shape, dtype=dtype), "inplace": x}[gspec]
        l2, g = fl.sigmoid_focal_loss_and_grad(x, y, alpha=alpha, gamma=gamma, reduction=reduction, grad_out=grad_out)
        if reduction == "none":
            assert_loss_close(loss, eloss, dtype, context=ctx)
            assert_loss_close(l2, eloss, dtype, context=ctx)
        else:
            assert_float_close(loss, eloss, ctx)
            assert l2 == loss
        atol = 0.0
        if tkind == "soft" and dtype == "float32":
            atol = 4 * EPS32 * _focal_terms(x0, _weights_as(y, x.dtype), alpha, gamma) / (x.size if reduction == "mean" else 1)
        assert_loss_close(g, eg, dtype, atol=atol, context=ctx)
        if gspec != "inplace":
            np.testing.assert_array_equal(x, x0)


SPECIAL_X = [-np.inf, -1e4, -100.0, -30.0, -17.0, -1.0, -0.0, 0.0, 1e-8, 2.5, 30.0, 100.0, 1e4, np.inf, np.nan]
SPECIAL_Y = [0.0, 1.0, 0.5, 1e-3, 0.999]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_extreme_logits_have_exact_limits(dtype):
    """+-30, +-1e4, +-inf and nan against every target 0, 1 and soft: the reference's limits
    (0 or +inf for the loss, sigmoid(x)*(1+(pw-1)*y) - pw*y times the weight for the grad)."""
    xs, ys = np.meshgrid(np.array(SPECIAL_X), np.array(SPECIAL_Y))
    x = xs.astype(dtype)
    ys = ys.astype(dtype)
    pw = np.array([0.5, 1.0, 3.0])[np.arange(x.size) % 3].reshape(x.shape)
    w = np.array([2.0, 1.0, 0.0, 0.7])[np.arange(x.size) % 4].reshape(x.shape)
    for weight, pos_weight in [(None, None), (w, pw)]:
        el, eg = _ref_bce(x, ys, _weights_as(weight, x.dtype), _weights_as(pos_weight, x.dtype), "none", True)
        loss, g = fl.bce_with_logits_and_grad(x, ys, weight=weight, pos_weight=pos_weight, reduction="none")
        assert_loss_close(loss, el, dtype, context="bce loss at extreme logits")
        atol = 4 * (EPS32 if dtype == "float32" else 0) * _grad_terms(x, ys, weight, pos_weight)
        assert_loss_close(g, eg, dtype, atol=atol, context="bce grad at extreme logits")
        assert np.all(np.isnan(loss) == np.isnan(x)) and np.all(np.isnan(g) == np.isnan(x))
    for gamma in (0.0, 0.5, 2.0, 3.3):
        el, eg = R.sigmoid_focal_loss_and_grad(x.astype(LD), ys, gamma=gamma, reduction="none")
        loss, g = fl.sigmoid_focal_loss_and_grad(x, ys, gamma=gamma, reduction="none")
        assert_loss_close(loss, el, dtype, context=f"focal loss at extreme logits, gamma={gamma}")
        atol = 4 * (EPS32 if dtype == "float32" else 0) * _focal_terms(x, ys, 0.25, gamma)
        assert_loss_close(g, eg, dtype, atol=atol, context=f"focal grad at extreme logits, gamma={gamma}")
    # the exact limits, spelled out
    inf = np.array([np.inf, -np.inf], dtype=dtype)
    loss, g = fl.bce_with_logits_and_grad(inf, [1.0, 1.0], pos_weight=2.0, reduction="none")
    assert loss.tolist() == [0.0, np.inf] and g.tolist() == [0.0, -2.0]
    loss, g = fl.bce_with_logits_and_grad(inf, [0, 0], weight=3.0, reduction="none")
    assert loss.tolist() == [np.inf, 0.0] and g.tolist() == [3.0, 0.0]
    big = np.array([1e4, -1e4], dtype=dtype)
    loss, g = fl.bce_with_logits_and_grad(big, [0.0, 0.0], reduction="none")
    assert loss.tolist() == [1e4, 0.0] and g.tolist() == [1.0, 0.0]


# ----------------------------------------------------------------------------- PyTorch parity


def _torch_atol(x, y, w, pw):
    """8 eps64 times the size of the terms PyTorch subtracts (its own rounding error)."""
    x = np.asarray(x, dtype=np.float64)
    wv = 1.0 if w is None else np.asarray(w, dtype=np.float64)
    pv = 1.0 if pw is None else np.asarray(pw, dtype=np.float64)
    lw = 1 + (pv - 1) * y
    with np.errstate(over="ignore"):
        ls = np.abs(np.minimum(x, 0) - np.log1p(np.exp(-np.abs(x))))
    loss_terms = np.abs(wv) * (np.abs((1 - y) * x) + np.abs(lw) * ls)
    grad_terms = np.abs(wv) * (np.abs(lw) + np.abs(pv * y))
    return 8 * EPS64 * loss_terms, 8 * EPS64 * grad_terms


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("tkind", ["float32", "bool", "soft"])
@pytest.mark.parametrize("wspec,pwspec", [("none", "none"), ("C", "none"), ("none", "C"), ("N1", "C"), ("NC", "N1"), ("scalar", "1C")])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_bce_matches_torch(dtype, tkind, wspec, pwspec, reduction):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng([len(wspec), len(pwspec), len(tkind), len(reduction)])
    shape = (6, 41)
    x = _logits(shape, dtype, rng, scale=8.0)
    x.flat[:8] = [30, -30, 1e4, -1e4, 17, -17, 0, -0.0]
    y = _weights_as(_targets(tkind, shape, rng), x.dtype)
    w = _weight(wspec, shape, rng)
    pw = _weight(pwspec, shape, rng)
    wc, pc = _weights_as(w, x.dtype), _weights_as(pw, x.dtype)
    # PyTorch in float64 on exactly the values the kernel sees
    tx = torch.tensor(x.astype(np.float64), requires_grad=True)
    ty = torch.tensor(np.asarray(y, dtype=np.float64))
    tw = None if wc is None else torch.tensor(wc.astype(np.float64))
    tp = None if pc is None else torch.tensor(pc.astype(np.float64))
    tl = F.binary_cross_entropy_with_logits(tx, ty, weight=tw, pos_weight=tp, reduction=reduction)
    (tl if reduction != "none" else tl.sum()).backward()
    loss, g = fl.bce_with_logits_and_grad(x, y, weight=w, pos_weight=pw, reduction=reduction)
    la, ga = _torch_atol(x, np.asarray(y, dtype=np.float64), wc, pc)
    n = x.size if reduction == "mean" else 1
    ctx = dict(dtype=dtype, target=tkind, weight=wspec, pos_weight=pwspec, reduction=reduction)
    if reduction == "none":
        assert_loss_close(loss, tl.detach().numpy(), dtype, atol=la, context=ctx)
    else:
        assert loss == pytest.approx(tl.item(), rel=1e-6, abs=float(la.sum()) / n)
    ga = ga / n
    if tkind == "soft" and dtype == "float32":
        ga = ga + 4 * EPS32 * _grad_terms(x, y, wc, pc) / n
    assert_loss_close(g, tx.grad.numpy(), dtype, atol=ga, context=ctx)


def test_torch_gives_nan_at_infinite_logits_where_we_give_the_limit():
    torch = pytest.importorskip("torch")
    x = np.array([np.inf, -np.inf, np.inf, -np.inf])
    y = np.array([1.0, 0.0, 0.0, 1.0])
    tx = torch.tensor(x, requires_grad=True)
    tl = torch.nn.functional.binary_cross_entropy_with_logits(tx, torch.tensor(y), reduction="none")
    tl.sum().backward()
    loss, g = fl.bce_with_logits_and_grad(x, y, reduction="none")
    assert np.isnan(tl.detach().numpy()[:2]).all()  # PyTorch: inf - inf
    assert loss.tolist() == [0.0, 0.0, np.inf, np.inf]
    assert g.tolist() == [0.0, 0.0, 1.0, -1.0]


def _torch_focal(torch, x, y, alpha, gamma, reduction):
    """torchvision.ops.sigmoid_focal_loss, verbatim in torch (torchvision is not installed)."""
    F = torch.nn.functional
    p = torch.sigmoid(x)
    ce_loss = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * y + (1 - alpha) * (1 - y)
        loss = alpha_t * loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("tkind", ["float64", "int64", "soft"])
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1.0, 2.0), (0.25, 0.0), (0.7, 1.5)])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_focal_matches_torch(dtype, tkind, alpha, gamma, reduction):
    """|x| <= 12: beyond, PyTorch's 1 - p_t cancels (relative error eps64/(1-p_t))."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng([int(gamma * 10), len(tkind), len(reduction)])
    shape = (4, 67)
    x = np.clip(_logits(shape, dtype, rng), -12, 12)
    x.flat[:4] = [12, -12, 0, 3]
    y = _weights_as(_targets(tkind, shape, rng), x.dtype)
    tx = torch.tensor(x.astype(np.float64), requires_grad=True)
    tl = _torch_focal(torch, tx, torch.tensor(np.asarray(y, dtype=np.float64)), alpha, gamma, reduction)
    (tl if reduction != "none" else tl.sum()).backward()
    loss, g = fl.sigmoid_focal_loss_and_grad(x, y, alpha=alpha, gamma=gamma, reduction=reduction)
    ctx = dict(dtype=dtype, target=tkind, alpha=alpha, gamma=gamma, reduction=reduction)
    n = x.size if reduction == "mean" else 1
    la = 8 * EPS64 * np.abs(x)  # PyTorch's ce = (1-y)*x - log_sigmoid(x) cancels
    if reduction == "none":
        assert_loss_close(loss, tl.detach().numpy(), dtype, atol=la, context=ctx)
    else:
        assert loss == pytest.approx(tl.item(), rel=1e-6)
    ga = 8 * EPS64 * (1 + np.abs(x)) / n
    if tkind == "soft" and dtype == "float32":
        ga = ga + 4 * EPS32 * _focal_terms(x, y, alpha, gamma) / n
    assert_loss_close(g, tx.grad.numpy(), dtype, atol=ga, context=ctx)


# ----------------------------------------------------------------------------- finite differences


@pytest.mark.parametrize("kind", ["bce", "focal"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_gradient_matches_central_differences(kind, reduction):
    rng = np.random.default_rng([len(kind), len(reduction)])
    shape = (3, 29)
    x = rng.uniform(-8, 8, shape)
    y = _targets("soft", shape, rng)
    params = [dict(weight=_weight("C", shape, rng), pos_weight=_weight("N1", shape, rng)), {}] if kind == "bce" \
        else [dict(alpha=0.25, gamma=2.0), dict(alpha=-1, gamma=0.5), dict(alpha=0.8, gamma=1.7), dict(gamma=0.0)]
    f = fl.bce_with_logits if kind == "bce" else fl.sigmoid_focal_loss
    fg = fl.bce_with_logits_and_grad if kind == "bce" else fl.sigmoid_focal_loss_and_grad
    for kw in params:
        _, g = fg(x, y, reduction=reduction, **kw)
        h = 1e-5 * np.maximum(1, np.abs(x))
        lp = f(x + h, y, reduction="none", **kw)
        lm = f(x - h, y, reduction="none", **kw)
        fd = (lp - lm) / (2 * h)  # elementwise losses: each element's own derivative
        if reduction == "mean":
            fd = fd / x.size
        # truncation h^2 * l''' and rounding eps*l/h of the difference quotient
        atol = (1e-9 + 1e-10 * np.abs(lp)) / (x.size if reduction == "mean" else 1)
        assert_rel_close(g, fd, rtol=1e-6, atol=atol, context=dict(kind=kind, reduction=reduction, **{k: str(v)[:20] for k, v in kw.items()}))


# ----------------------------------------------------------------------------- dtypes, layouts, inputs


def test_half_precision_and_torch_inputs():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = _logits((9, 33), np.float32, rng)
    y = _targets("float32", x.shape, rng)
    for dt in (np.float16, bfloat16):
        xh = x.astype(dt)
        loss, g = fl.bce_with_logits_and_grad(xh, y.astype(dt), reduction="none")
        assert loss.dtype == dt and g.dtype == dt
        el, eg = R.bce_with_logits_and_grad(xh.astype(np.float32).astype(LD), y, reduction="none")
        assert_loss_close(loss, el.astype(np.float64), dt, context=f"{dt} loss")
        assert_loss_close(g, eg.astype(np.float64), dt, context=f"{dt} grad")
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.tensor(y).bool()
    loss = fl.bce_with_logits(tx, ty, pos_weight=torch.ones(33) * 2)
    assert isinstance(loss, float)
    assert loss == pytest.approx(R.bce_with_logits(x.astype(LD), y, pos_weight=np.full(33, 2.0)), rel=1e-6)
    lb, gb = fl.bce_with_logits_and_grad(tx.to(torch.bfloat16), ty, reduction="none")
    assert lb.dtype == bfloat16 and gb.dtype == bfloat16


@pytest.mark.parametrize("layout", ["F", "transposed", "strided", "reversed", "3d_axis_weights", "1d", "N1", "0d"])
def test_layouts_and_shapes(layout):
    rng = np.random.default_rng(len(layout))
    base = _logits((12, 10), np.float64, rng)
    w = pw = None
    if layout == "F":
        x = np.asfortranarray(base)
    elif layout == "transposed":
        x = base.T
    elif layout == "strided":
        x = _logits((24, 30), np.float64, rng)[::2, ::3]
    elif layout == "reversed":
        x = base[::-1, ::-1]
    elif layout == "3d_axis_weights":
        x = _logits((4, 5, 6), np.float64, rng)
        w = rng.random((4, 1, 6))
        pw = rng.random((5, 1)) + 0.5
    elif layout == "1d":
        x = _logits((40000,), np.float64, rng)  # one long row, split into pieces
    elif layout == "N1":
        x = _logits((40000, 1), np.float64, rng)
        w = rng.random((40000, 1))
    else:
        x = np.float64(1.5)
    y = _targets("soft", np.shape(x), rng)
    y = np.asfortranarray(y) if np.ndim(y) == 2 else y
    for red in ("none", "sum"):
        loss, g = fl.bce_with_logits_and_grad(x, y, weight=w, pos_weight=pw, reduction=red)
        el, eg = R.bce_with_logits_and_grad(np.asarray(x, dtype=LD), y, weight=w, pos_weight=pw, reduction=red)
        if red == "none":
            assert_loss_close(loss, el, np.float64, context=layout)
            if layout == "0d":
                assert isinstance(loss, np.float64)
        else:
            assert_float_close(loss, el, layout)
        assert g.shape == np.shape(x)
        assert_loss_close(g, eg, np.float64, context=layout)
        fl_loss, fl_g = fl.sigmoid_focal_loss_and_grad(x, y, reduction=red)
        el, eg = R.sigmoid_focal_loss_and_grad(np.asarray(x, dtype=LD), y, reduction=red)
        assert_loss_close(fl_g, eg, np.float64, context=layout)


def test_empty_inputs():
    x = np.zeros((0, 3), np.float32)
    y = np.zeros((0, 3), np.float32)
    assert np.isnan(fl.bce_with_logits(x, y))
    assert fl.bce_with_logits(x, y, reduction="sum") == 0.0
    loss, g = fl.sigmoid_focal_loss_and_grad(x, y, reduction="none")
    assert loss.shape == g.shape == (0, 3) and g.dtype == np.float32


def test_weight_broadcast_is_not_materialised(monkeypatch):
    """pos_weight (C,) and weight (N, 1) reach the kernel with zero strides."""
    seen = []
    real = _core.bce

    def spy(*args):
        seen.append([None if s is None else s[0].strides for s in args[2:4]])
        return real(*args)

    monkeypatch.setattr(_core, "bce", spy)
    x = np.zeros((100, 50), np.float32)
    fl.bce_with_logits(x, np.ones_like(x), weight=np.ones((100, 1), np.float32), pos_weight=np.ones(50, np.float32))
    (wstrides, pwstrides) = seen[0]
    assert 0 in wstrides and 0 in pwstrides


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("bad,pos,msg", [
    (np.array([[0.0, 1.5], [0.2, 0.3]]), "(0, 1)", "1.5"),
    (np.array([[0.0, 1.0], [-0.1, 0.3]]), "(1, 0)", "-0.1"),
    (np.array([[0.0, 1.0], [0.5, np.nan]]), "(1, 1)", "nan"),
    (np.array([[0, 1], [2, 1]]), "(1, 0)", "2"),
    (np.array([[0, -1], [1, 1]], dtype=np.int8), "(0, 1)", "-1"),
    (np.array([[0, 1], [1, 255]], dtype=np.uint8), "(1, 1)", "255"),
    (np.array([[0, 1], [1, 3]], dtype=np.uint64), "(1, 1)", "3"),
    (np.array([[0, 1], [1, 2]], dtype=np.float16), "(1, 1)", "2"),
])
def test_invalid_targets_raise_before_anything_is_written(bad, pos, msg):
    x = np.array([[0.5, -1.0], [2.0, 3.0]], dtype=np.float32)
    x0 = x.copy()
    for f in (fl.bce_with_logits, fl.sigmoid_focal_loss):
        with pytest.raises(ValueError, match="target") as ei:
            f(x, bad)
        assert pos in str(ei.value) and msg in str(ei.value)
    for fg in (fl.bce_with_logits_and_grad, fl.sigmoid_focal_loss_and_grad):
        with pytest.raises(ValueError, match="target"):
            fg(x, bad, grad_out=x)  # in place: nothing may be written
        np.testing.assert_array_equal(x, x0)
        out = np.full_like(x, 7.0)
        with pytest.raises(ValueError, match="target"):
            fg(x, bad, grad_out=out)
        assert (out == 7.0).all()
    with pytest.raises(ValueError, match=r"target.*\(1, 1\)"):
        R.bce_with_logits(x, np.array([[0, 1], [1, 2]]))


def test_argument_errors():
    x = np.zeros((4, 3))
    y = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"target.*\(4, 3\).*\(3, 4\)"):
        fl.bce_with_logits(x, np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"weight.*\(2,\).*\(4, 3\)"):
        fl.bce_with_logits(x, y, weight=np.ones(2))
    with pytest.raises(ValueError, match=r"pos_weight.*\(2, 4, 3\)"):
        fl.bce_with_logits(x, y, pos_weight=np.ones((2, 4, 3)))
    with pytest.raises(ValueError, match="reduction"):
        fl.bce_with_logits(x, y, reduction="avg")
    with pytest.raises(ValueError, match="gamma"):
        fl.sigmoid_focal_loss(x, y, gamma=-1.0)
    with pytest.raises(TypeError, match="target"):
        fl.bce_with_logits(x, y.astype(complex))
    with pytest.raises(TypeError, match="logits"):
        fl.bce_with_logits(x.astype(complex), y)
    with pytest.raises(ValueError, match="grad_out"):
        fl.bce_with_logits_and_grad(x, y, grad_out=np.zeros((3, 4)))
    with pytest.raises(TypeError, match="grad_out"):
        fl.sigmoid_focal_loss_and_grad(x, y, grad_out=np.zeros((4, 3), np.float32))


def test_grad_out_overlapping_an_input_goes_through_a_temporary():
    rng = np.random.default_rng(3)
    buf = rng.random((2, 8, 5))
    x = buf[0]
    w = buf[1]
    _, eg = R.bce_with_logits_and_grad(x.astype(LD), np.ones_like(x), weight=w.copy(), reduction="none")
    _, g = fl.bce_with_logits_and_grad(x, np.ones_like(x), weight=w, reduction="none", grad_out=buf[1])
    assert_loss_close(g, eg, np.float64, context="grad_out over the weight")


# ----------------------------------------------------------------------------- threads and SIMD paths


def test_bitwise_identical_for_any_thread_count():
    rng = np.random.default_rng(11)
    x = _logits((301, 997), np.float32, rng)  # many blocks, ragged
    y = _targets("soft", x.shape, rng).astype(np.float32)
    pw = rng.random(997) + 0.5
    x1 = _logits((300001,), np.float64, rng)  # one long row
    y1 = _targets("bool", x1.shape, rng)
    before = fl.get_num_threads()
    results = []
    try:
        for n in (1, 2, 4):
            fl.set_num_threads(n)
            results.append((
                fl.bce_with_logits_and_grad(x, y, pos_weight=pw, reduction="mean"),
                fl.sigmoid_focal_loss_and_grad(x, y, reduction="sum"),
                fl.bce_with_logits_and_grad(x1, y1, reduction="sum"),
                fl.sigmoid_focal_loss(x1, y1, gamma=1.3, reduction="mean"),
            ))
    finally:
        fl.set_num_threads(before)
    first = results[0]
    for other in results[1:]:
        for a, b in zip(first, other):
            if isinstance(a, tuple):
                assert a[0] == b[0] and a[1].tobytes() == b[1].tobytes()
            else:
                assert a == b


@pytest.mark.parametrize("isa", ["scalar", "avx2", "avx512", "neon"])
def test_every_simd_path(isa):
    current = _core.isa_name()
    if _core.isa_select(isa) != 0:
        pytest.skip(f"{isa} is not available here")
    try:
        rng = np.random.default_rng(2)
        x = _logits((5, 45), np.float32, rng)
        x.flat[:6] = [np.inf, -np.inf, np.nan, 1e4, -30, 30]
        y = _targets("soft", x.shape, rng).astype(np.float32)
        for gamma in (0.0, 2.0, 2.5):
            l, g = fl.sigmoid_focal_loss_and_grad(x, y, gamma=gamma, reduction="none")
            el, eg = R.sigmoid_focal_loss_and_grad(x.astype(LD), y, gamma=gamma, reduction="none")
            assert_loss_close(l, el, np.float32, context=isa)
            assert_loss_close(g, eg, np.float32, atol=4 * EPS32 * _focal_terms(x, y, 0.25, gamma), context=isa)
        l, g = fl.bce_with_logits_and_grad(x, y, pos_weight=np.arange(1, 46) / 9, reduction="none")
        el, eg = R.bce_with_logits_and_grad(x.astype(LD), y, pos_weight=(np.arange(1, 46) / 9).astype(np.float32), reduction="none")
        assert_loss_close(l, el, np.float32, context=isa)
    finally:
        _core.isa_select(current)
