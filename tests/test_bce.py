"""bce_with_logits, sigmoid_focal_loss and their gradients (API section 3).

Inputs: the shared adversarial generator (tests/arrays.py: shapes, layouts, byte orders,
strides, +-inf, nan, +-1e30, ties), with every target dtype (float, bool, integer, soft targets
strictly inside (0, 1)) and target layout, and weights broadcast in every way PyTorch allows.

Oracles: ``reference.exact`` (errors in ULPs, bounds in tests/arrays.py as docs/accuracy.md
states them), PyTorch's binary_cross_entropy_with_logits (forward and autograd) and
torchvision's focal-loss formula written in torch, central finite differences.
- losses within LOSS_ULP (8) ULP of the output dtype, 1 ULP for float16/bfloat16; the focal
  loss within LOSS_ULP + 2*gamma, plus |gamma*log(1-p_t)| for float64 with gamma not in
  {0, 1, 2} (q**gamma is exp(gamma*log q) there);
- gradients the same, in ULPs of themselves or of the size of their two terms (they cancel
  for soft targets where sigmoid(x) ~ y: ``arrays.bce_grad_scale``, ``arrays.focal_grad_scale``);
- reduced losses (float64 sums) within the elements' bound + 1 ULP of the compute dtype.
Weights and float targets are used in the compute dtype (float32 next to float32/half logits):
the oracle is given them so rounded.
PyTorch computes the loss as (1-y)*x - log_weight*log_sigmoid(x) and the gradient as
sigmoid(x)*log_weight - pw*y, which cancel for large |x|: PyTorch (in float64) is trusted to
8 eps64 of the size of its terms (absolute), see `_torch_atol`.
"""
import numpy as np
import pytest

import fastlogits as fl
from fastlogits import _core
from fastlogits import reference as R

from arrays import (LOSS_ULP, RELAYOUTS, TARGET_KINDS, WEIGHT_SPECS, adversarial_arrays,
                    assert_reduced_close, assert_rel_close, assert_ulp_close, bce_grad_scale, bfloat16,
                    binary_target_like, compute_dtype, focal_grad_scale, focal_ulp, loss_ulp, reduced_ulp,
                    relayout, underflow_slack, weight_like)

EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)
GRAD_OUT = ("none", "fresh", "inplace")
FOCAL_PARAMS = [(0.25, 2.0), (-1.0, 2.0), (0.25, 0.0), (0.6, 1.0), (0.25, 0.5), (0.9, 3.7)]

# ----------------------------------------------------------------------------- helpers


def _logits(shape, dtype, rng, scale=6.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def _as_computed(a, dtype):
    """A weight or float target as the kernel uses it: in the compute dtype."""
    if a is None:
        return None
    a = np.asarray(a)
    return a.astype(compute_dtype(dtype)) if a.dtype.kind == "f" or a.dtype == bfloat16 else a


def _native(x):
    return np.dtype(x.dtype).newbyteorder("=")


def _grad_out(spec, x):
    """None, a fresh buffer, or the logits themselves (in place, when they can take it)."""
    if spec == "fresh":
        return np.full(x.shape, 7.0, dtype=_native(x))
    if spec == "inplace" and x.dtype.isnative and x.flags.writeable and x.flags.aligned and x.ndim:
        return x
    return None


def _check_loss(loss, want, bounds, x, reduction, weight, context):
    """The loss against the exact value: per element in ULPs of the logits' dtype, reduced in
    ULPs of the compute dtype (``bounds``: the per-element bounds in both; plus what elements
    below the compute dtype's normal range may lose, each up to ``weight`` times a subnormal);
    returns the error."""
    bound_out, bound_compute = bounds
    if reduction == "none":
        assert np.shape(loss) == x.shape and np.asarray(loss).dtype == _native(x), context
        return assert_ulp_close(loss, want, bound_out, _native(x), context, inputs={"x": x})
    assert isinstance(loss, float), (type(loss), context)
    n = x.size if reduction == "sum" else 1
    slack = underflow_slack(np.max(bound_compute, initial=0.0), n, _native(x), weight)
    return assert_reduced_close(loss, want, reduced_ulp(bound_compute), _native(x), context, atol=slack)


def _weight_scale(kw):
    """The largest factor weights put on an element's loss (1 without weights)."""
    if "gamma" in kw:
        return max(1.0, abs(kw["alpha"]), abs(1 - kw["alpha"]))
    scale = 1.0
    for v in (kw.get("weight"), kw.get("pos_weight")):
        if v is not None and np.size(v):
            scale *= max(1.0, float(np.max(np.abs(np.asarray(v, dtype=np.float64)))))
    return scale


def _check_binary(name, x, y, kw, reduction, gspec, context, accuracy=None):
    """fl.<name> and fl.<name>_and_grad against the exact oracle; inputs unchanged unless the
    gradient is written in place."""
    f, fg = getattr(fl, name), getattr(fl, name + "_and_grad")
    dt = _native(x)
    focal = name == "sigmoid_focal_loss"
    x0, y0 = x.copy(), np.array(y, copy=True)
    y_c = _as_computed(y, dt)
    kw_c = dict(kw) if focal else {k: _as_computed(v, dt) for k, v in kw.items()}
    want, want_grad = R.exact(getattr(R, name + "_and_grad"), x, y_c, reduction=reduction, **kw_c)
    # bounds and scales from the logits before an in-place gradient overwrites them
    if focal:
        bounds = (focal_ulp(x, y_c, kw["gamma"], dt), focal_ulp(x, y_c, kw["gamma"], compute_dtype(dt)))
        scale = focal_grad_scale(x, y_c, reduction=reduction, **kw)
    else:
        bounds = (loss_ulp(dt), loss_ulp(compute_dtype(dt)))
        scale = bce_grad_scale(x, y_c, reduction=reduction, **kw_c)
    loss = f(x, y, reduction=reduction, **kw)
    err = _check_loss(loss, want, bounds, x, reduction, _weight_scale(kw), context)
    grad_out = _grad_out(gspec, x)
    loss2, g = fg(x, y, reduction=reduction, grad_out=grad_out, **kw)
    if grad_out is not None:
        assert g is grad_out, context
    assert g.shape == x.shape and g.dtype == dt, context
    gerr = assert_ulp_close(g, want_grad, bounds[0], dt, f"{context} grad", inputs={"x": x0}, scale=scale)
    if reduction == "none":
        assert np.array_equal(np.asarray(loss2), np.asarray(loss), equal_nan=True), context
    else:
        assert loss2 == loss or (np.isnan(loss) and np.isnan(loss2)), context  # the same float64 sum
    np.testing.assert_array_equal(np.asarray(y), y0)
    if grad_out is not x:
        np.testing.assert_array_equal(x, x0)
    if accuracy is not None:
        what = "focal" if focal else "bce"
        accuracy.record(f"{what} {'loss' if reduction == 'none' else reduction}", dt, err, context)
        accuracy.record(f"{what} grad", dt, gerr, context)


def _binary_cases(dtype, seed, **kw):
    """The generator's arrays with, for case i, a target kind, target layout, weights and a
    grad_out form taken in turn (every combination appears across the cases)."""
    rng = np.random.default_rng(seed)
    for i, (desc, x, _) in enumerate(adversarial_arrays((dtype,), seed=seed, **kw)):
        tkind = TARGET_KINDS[i % len(TARGET_KINDS)]
        tlayout = RELAYOUTS[(i // 2) % len(RELAYOUTS)]
        y = relayout(binary_target_like(tkind, x.shape, seed=i), tlayout)
        w = weight_like(WEIGHT_SPECS[i % len(WEIGHT_SPECS)], x.shape, rng)
        pw = weight_like(WEIGHT_SPECS[(i // 3) % len(WEIGHT_SPECS)], x.shape, rng)
        yield i, f"{desc} target={tkind}/{tlayout}", x, y, w, pw, GRAD_OUT[i % len(GRAD_OUT)]


# ----------------------------------------------------------------------------- exact oracle parity


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_bce_matches_reference(dtype, reduction, accuracy):
    for i, desc, x, y, w, pw, gspec in _binary_cases(dtype, seed=21):
        kw = {"weight": w, "pos_weight": pw}
        _check_binary("bce_with_logits", x, y, kw, reduction, gspec,
                      f"{desc} weight={np.shape(w) if w is not None else None} "
                      f"pos_weight={np.shape(pw) if pw is not None else None} grad_out={gspec}", accuracy)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("alpha,gamma", FOCAL_PARAMS)
def test_focal_matches_reference(dtype, alpha, gamma, accuracy):
    for i, desc, x, y, _, _, gspec in _binary_cases(dtype, seed=22, huge=dtype == "float64"):
        reduction = ("none", "mean", "sum")[i % 3]
        _check_binary("sigmoid_focal_loss", x, y, {"alpha": alpha, "gamma": gamma}, reduction, gspec,
                      f"{desc} alpha={alpha} gamma={gamma} {reduction} grad_out={gspec}", accuracy)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_types_match_reference(dtype, accuracy):
    for i, desc, x, y, w, pw, gspec in _binary_cases(dtype, seed=23, layouts=False, huge=False):
        reduction = ("none", "mean", "sum")[i % 3]
        _check_binary("bce_with_logits", x, y, {"weight": w, "pos_weight": pw}, reduction, gspec,
                      f"{desc} {reduction}", accuracy)
        alpha, gamma = FOCAL_PARAMS[i % len(FOCAL_PARAMS)]
        _check_binary("sigmoid_focal_loss", x, y, {"alpha": alpha, "gamma": gamma}, reduction, gspec,
                      f"{desc} alpha={alpha} gamma={gamma} {reduction}", accuracy)


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
        _check_binary("bce_with_logits", x, ys, {"weight": weight, "pos_weight": pos_weight}, "none", "none",
                      "bce at extreme logits")
        loss, g = fl.bce_with_logits_and_grad(x, ys, weight=weight, pos_weight=pos_weight, reduction="none")
        assert np.all(np.isnan(loss) == np.isnan(x)) and np.all(np.isnan(g) == np.isnan(x))
    for gamma in (0.0, 0.5, 2.0, 3.3):
        _check_binary("sigmoid_focal_loss", x, ys, {"alpha": 0.25, "gamma": gamma}, "none", "none",
                      f"focal at extreme logits, gamma={gamma}")
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
@pytest.mark.parametrize("wspec,pwspec", [("none", "none"), ("last", "none"), ("none", "last"), ("rows", "last"),
                                          ("full", "rows"), ("scalar", "leading1")])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_bce_matches_torch(dtype, tkind, wspec, pwspec, reduction):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng([len(wspec), len(pwspec), len(tkind), len(reduction)])
    shape = (6, 41)
    x = _logits(shape, dtype, rng, scale=8.0)
    x.flat[:8] = [30, -30, 1e4, -1e4, 17, -17, 0, -0.0]
    y = _as_computed(binary_target_like(tkind, shape, seed=len(wspec)), x.dtype)
    w = weight_like(wspec, shape, rng)
    pw = weight_like(pwspec, shape, rng)
    wc, pc = _as_computed(w, x.dtype), _as_computed(pw, x.dtype)
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
    rtol = _torch_rtol(dtype)
    if reduction == "none":
        assert_rel_close(loss, tl.detach().numpy(), rtol, atol=la, context=ctx)
    else:
        assert_rel_close(loss, tl.item(), rtol, atol=float(la.sum()) / n, context=ctx)
    # ours: LOSS_ULP of the size of the two gradient terms (they cancel for soft targets)
    ga = ga / n + _ulp_size(dtype) * bce_grad_scale(x, y, wc, pc, reduction)
    assert_rel_close(g, tx.grad.numpy(), rtol, atol=ga, context=ctx)


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


def _ulp_size(dtype):
    """LOSS_ULP float32 or float64 ULPs, relative (an ULP is at most 2 eps relative)."""
    return LOSS_ULP * 2 * (EPS32 if np.dtype(dtype) == np.float32 else EPS64)


def _torch_rtol(dtype):
    """Ours within LOSS_ULP ULP, PyTorch (float64) within a few eps64 of its own terms."""
    return _ulp_size(dtype) + 8 * EPS64


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
    y = _as_computed(binary_target_like(tkind, shape, seed=len(tkind)), x.dtype)
    tx = torch.tensor(x.astype(np.float64), requires_grad=True)
    tl = _torch_focal(torch, tx, torch.tensor(np.asarray(y, dtype=np.float64)), alpha, gamma, reduction)
    (tl if reduction != "none" else tl.sum()).backward()
    loss, g = fl.sigmoid_focal_loss_and_grad(x, y, alpha=alpha, gamma=gamma, reduction=reduction)
    ctx = dict(dtype=dtype, target=tkind, alpha=alpha, gamma=gamma, reduction=reduction)
    n = x.size if reduction == "mean" else 1
    la = 8 * EPS64 * np.abs(x)  # PyTorch's ce = (1-y)*x - log_sigmoid(x) cancels
    rtol = _torch_rtol(dtype) * (1 + gamma)
    if reduction == "none":
        assert_rel_close(loss, tl.detach().numpy(), rtol, atol=la, context=ctx)
    else:
        assert_rel_close(loss, tl.item(), rtol, context=ctx)
    ga = 8 * EPS64 * (1 + np.abs(x)) / n + _ulp_size(dtype) * (1 + gamma) * focal_grad_scale(x, y, alpha, gamma, reduction)
    assert_rel_close(g, tx.grad.numpy(), rtol, atol=ga, context=ctx)


# ----------------------------------------------------------------------------- finite differences


@pytest.mark.parametrize("kind", ["bce", "focal"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_gradient_matches_central_differences(kind, reduction):
    rng = np.random.default_rng([len(kind), len(reduction)])
    shape = (3, 29)
    x = rng.uniform(-8, 8, shape)
    y = binary_target_like("soft", shape, seed=len(kind))
    params = [dict(weight=weight_like("last", shape, rng), pos_weight=weight_like("rows", shape, rng)), {}] if kind == "bce" \
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


def test_torch_tensor_inputs():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = _logits((9, 33), np.float32, rng)
    y = binary_target_like("float32", x.shape, seed=5)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.tensor(y).bool()
    loss = fl.bce_with_logits(tx, ty, pos_weight=torch.ones(33) * 2)
    assert isinstance(loss, float)
    want = R.exact(R.bce_with_logits, x, y, pos_weight=np.full(33, 2.0))
    assert_reduced_close(loss, want, reduced_ulp(loss_ulp(np.float32)), np.float32, "torch tensors")
    lb, gb = fl.bce_with_logits_and_grad(tx.to(torch.bfloat16), ty, reduction="none")
    assert lb.dtype == bfloat16 and gb.dtype == bfloat16


@pytest.mark.parametrize("layout", ["transposed", "3d_axis_weights", "1d", "N1", "0d"])
def test_layouts_and_shapes(layout):
    """Shapes beyond the generator's: weights broadcast over a middle axis, one long row split
    into pieces, a column, a 0-d logit."""
    rng = np.random.default_rng(len(layout))
    w = pw = None
    if layout == "transposed":
        x = _logits((12, 10), np.float64, rng).T
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
    y = relayout(binary_target_like("soft", np.shape(x), seed=1), "F")
    x = np.asarray(x) if np.ndim(x) else x
    for red in ("none", "sum"):
        _check_binary("bce_with_logits", np.asarray(x), y, {"weight": w, "pos_weight": pw}, red, "none", layout)
        _check_binary("sigmoid_focal_loss", np.asarray(x), y, {"alpha": 0.25, "gamma": 2.0}, red, "none", layout)
    if layout == "0d":
        assert isinstance(fl.bce_with_logits(x, y, reduction="none"), np.float64)


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


# A weight broadcast along the classes (stride 0) is read as one value a row and filled
# (fl_gather_f32, fl_row_in_f64): the bits of the same weights materialised, every ISA, float32
# and float64 logits, half-precision weights too.
@pytest.mark.parametrize("xdtype", ["float32", "float64"])
@pytest.mark.parametrize("wdtype", ["float32", "float16", "float64"])
def test_broadcast_weight_keeps_the_bits_of_the_materialised_one(xdtype, wdtype, isa):
    rng = np.random.default_rng(41)
    n, c = 9, 1031
    x = (rng.standard_normal((n, c)) * 4).astype(xdtype)
    y = (rng.random((n, c)) < 0.4).astype(np.float32)
    w = (rng.random((n, 1)) * 2).astype(wdtype)
    w[3, 0] = 0.0
    full = np.ascontiguousarray(np.broadcast_to(w, (n, c)))
    for reduction in ("none", "sum"):
        got = fl.bce_with_logits_and_grad(x, y, weight=w, reduction=reduction)
        want = fl.bce_with_logits_and_grad(x, y, weight=full, reduction=reduction)
        for u, v in zip(got, want):
            assert np.asarray(u).tobytes() == np.asarray(v).tobytes(), (isa, xdtype, wdtype, reduction)


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


@pytest.mark.parametrize("dtype, value, shown", [
    (np.int64, 2, "2"), (np.uint8, 255, "255"), (np.float32, 1.5, "1.5"), (np.float64, np.nan, "nan"),
    (np.float16, -0.5, "-0.5"), ("bfloat16", 3.0, "3.0"),
])
def test_a_bad_target_is_shown_as_a_plain_number(dtype, value, shown):
    """Regression: the message showed the NumPy scalar's repr (``got np.int64(2)``)."""
    if dtype == "bfloat16":
        dtype = pytest.importorskip("ml_dtypes").bfloat16
    y = np.zeros((2, 3), dtype=dtype)
    y[1, 2] = value
    for f in (fl.bce_with_logits, fl.sigmoid_focal_loss):
        with pytest.raises(ValueError) as ei:
            f(np.zeros((2, 3), np.float32), y)
        assert str(ei.value).endswith(f", got {shown} at position (1, 2)"), str(ei.value)


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
    y = np.ones_like(x)
    want = R.exact(R.bce_with_logits_and_grad, x, y, weight=w.copy(), reduction="none")[1]
    _, g = fl.bce_with_logits_and_grad(x, y, weight=w, reduction="none", grad_out=buf[1])
    assert_ulp_close(g, want, loss_ulp(np.float64), np.float64, "grad_out over the weight")


# ----------------------------------------------------------------------------- threads and SIMD paths


def test_bitwise_identical_for_any_thread_count():
    rng = np.random.default_rng(11)
    x = _logits((301, 997), np.float32, rng)  # many blocks, ragged
    y = binary_target_like("soft", x.shape, seed=11).astype(np.float32)
    pw = rng.random(997) + 0.5
    x1 = _logits((300001,), np.float64, rng)  # one long row
    y1 = binary_target_like("bool", x1.shape, seed=12)
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


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_simd_path(dtype, isa):
    """The generator's arrays (one layout each) through every SIMD path this CPU has."""
    for i, desc, x, y, w, pw, gspec in _binary_cases(dtype, seed=24, layouts=False, huge=False):
        reduction = ("none", "mean", "sum")[i % 3]
        _check_binary("bce_with_logits", x, y, {"weight": w, "pos_weight": pw}, reduction, gspec, f"{isa} {desc}")
        alpha, gamma = FOCAL_PARAMS[i % len(FOCAL_PARAMS)]
        _check_binary("sigmoid_focal_loss", x, y, {"alpha": alpha, "gamma": gamma}, reduction, gspec,
                      f"{isa} {desc} alpha={alpha} gamma={gamma}")


# Rows of up to 256 elements whose arrays lie back to back are computed in runs of many rows
# (fl_bce.c, fl_bce_runs); each row's float64 sum must keep the bits of its own piece. Most
# logits lie in [18, 36] with target 1, whose losses (2^-52 to 2^-26) beside the others' (about
# 1) make a row's sum round differently in another order; the exact sum state of the row sums
# (_bce.partial) shows any such difference, which the float32 total would mostly round away.
# The padded copy (rows not back to back) takes one piece a row.
@pytest.mark.parametrize("c", [1, 2, 3, 9, 17, 33, 67, 256])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_short_rows_in_runs_keep_the_bits_of_one_piece_a_row(c, dtype, isa):
    from fastlogits import _bce

    rng = np.random.default_rng(c)
    n = 2100  # runs of FL_BCE_RUN elements, and a shorter last one
    tiny = rng.random((n, c)) < 0.7
    x = np.where(tiny, rng.uniform(18, 36, (n, c)), rng.standard_normal((n, c))).astype(np.float32)
    x = x.astype(bfloat16 if dtype == "bfloat16" else dtype)
    y = np.where(tiny, 1.0, rng.random((n, c)) < 0.5).astype(np.float32)
    w = rng.random((n, c)).astype(np.float32) + 0.5
    pad = np.zeros((n, c + 3), dtype=x.dtype)
    pad[:, :c] = x
    xp = pad[:, :c]
    assert not xp.flags.c_contiguous
    for kind, kw in ((_bce.BCE, {}), (_bce.BCE, {"weight": w}), (_bce.FOCAL, {"alpha": 0.25, "gamma": 1.5})):
        opts = {"weight": kw.get("weight"), "pos_weight": None, "reduction": "sum"}
        focal = {k: kw[k] for k in ("alpha", "gamma") if k in kw}
        runs = _bce.partial(_bce.check(kind, x, y, **opts, **focal))
        rows = _bce.partial(_bce.check(kind, xp, y, **opts, **focal))
        assert runs.sum.tobytes() == rows.sum.tobytes(), (isa, dtype, c, kind, list(kw))
    for kw in ({}, {"weight": w}):
        for u, v in zip(fl.bce_with_logits_and_grad(x, y, reduction="none", **kw),
                        fl.bce_with_logits_and_grad(xp, y, reduction="none", **kw)):
            assert u.tobytes() == v.tobytes(), (isa, dtype, c, list(kw))


# Without weight and pos_weight the kernel takes the coefficients as y and 1 - y (fl_vbce_coefs,
# fl_vconst.unweighted): the general form's values for unit weights, which this checks bit for
# bit, losses, gradients and the exact sum state, on logits around the plain/wide boundary
# (|x| = 17), the subnormal exponentials, +-0, +-inf and NaN, with hard, soft and signed-zero
# targets.
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_no_weights_keep_the_bits_of_unit_weights(dtype, isa):
    from fastlogits import _bce

    rng = np.random.default_rng(31)
    n, c = 67, 130
    pool = np.array([0.0, -0.0, 16.99, -16.99, 17.0, -17.0, 17.01, 88.0, -88.0, 104.0, np.inf, -np.inf, np.nan],
                    np.float32)
    x = (rng.standard_normal((n, c)) * 3).astype(np.float32)
    pick = rng.random((n, c)) < 0.1
    x[pick] = rng.choice(pool, int(pick.sum()))
    x[:, :64] = np.clip(x[:, :64] * 8, -30, 30)  # whole plain and wide groups
    x = x.astype(bfloat16 if dtype == "bfloat16" else dtype)
    y = np.where(rng.random((n, c)) < 0.5, (rng.random((n, c)) < 0.5).astype(np.float32),
                 rng.random((n, c)).astype(np.float32))
    y[:, ::11] = -0.0
    ones = np.ones(c, np.float32)
    finite = np.where(np.isnan(x), x.dtype.type(1), x)  # the sums without a NaN to hide in
    for xs, reduction in ((x, "none"), (finite, "sum")):
        plain = fl.bce_with_logits_and_grad(xs, y, reduction=reduction)
        unit = fl.bce_with_logits_and_grad(xs, y, weight=ones, pos_weight=ones, reduction=reduction)
        for u, v in zip(plain, unit):
            assert np.asarray(u).tobytes() == np.asarray(v).tobytes(), (isa, dtype, reduction)
    a = _bce.partial(_bce.check(_bce.BCE, finite, y, weight=None, pos_weight=None, reduction="sum"))
    b = _bce.partial(_bce.check(_bce.BCE, finite, y, weight=ones, pos_weight=ones, reduction="sum"))
    assert a.sum.tobytes() == b.sum.tobytes(), (isa, dtype)
