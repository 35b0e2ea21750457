"""cross_entropy and cross_entropy_and_grad: parity with the exact oracle and PyTorch, gradients
against finite differences, PyTorch's corner cases, errors, in-place gradients, accuracy of the
reduced loss and thread-count invariance.

Oracle: ``reference.exact`` (see tests/arrays.py for the bounds, docs/accuracy.md for the claims):
- per-row losses within LOSS_ULP (8) ULP of the output dtype, 1 ULP for float16/bfloat16
  (float32: plus the row's spread, as for the gradient below);
- reduced losses (Python floats) within LOSS_ULP + 1 ULP of the compute dtype of the exactly
  summed exact value (plus, for float32, what exponentials below its range lose);
- gradient entries within LOSS_ULP ULP of themselves or of the size of the terms they are the
  difference of (``arrays.ce_grad_scale``: T*p_c - w_c*t_c cancels, so its error is bounded by
  its terms, not by its own size); float32 rows add |x_c - max| ULP (their exponentials are
  taken from the rounded x - max, see csrc/fl_ce.c).
Probability targets next to float32/half logits are rounded to float32 by the kernel (the
compute dtype): the oracle is given them so rounded.
"""
import hashlib
import math

import numpy as np
import pytest

import fastlogits as fl
from fastlogits import _core
from fastlogits import reference as ref

from arrays import (adversarial_arrays, as_dtype, assert_reduced_close, assert_rel_close,
                    assert_ulp_close, ce_grad_scale, ce_grad_ulp, ce_loss_ulp, class_targets, compute_dtype,
                    loss_ulp, prob_targets, reduced_ulp, underflow_slack)

EPS = {"float32": 2.0**-23, "float64": 2.0**-52, "float16": 2.0**-10, "bfloat16": 2.0**-7}

OPTIONS = {
    "plain": {},
    "weight": {"weight": True},
    "sample_weight": {"sample_weight": True, "ignore_index": 1},
    "smooth_weight": {"weight": True, "label_smoothing": 0.3},
    "z_loss": {"z_loss": 1e-2, "label_smoothing": 0.1},
    "all": {"weight": True, "sample_weight": True, "label_smoothing": 0.2, "z_loss": 3e-3},
}
REDUCTIONS = ("mean", "sum", "none")


def _kwargs(opts, x, axis, seed):
    """Concrete keyword arguments for an option set and logits x."""
    rng = np.random.default_rng(seed)
    C = x.shape[axis]
    row_shape = x.shape[:axis % x.ndim] + x.shape[axis % x.ndim + 1:]
    kw = {k: v for k, v in opts.items() if k not in ("weight", "sample_weight")}
    if opts.get("weight"):
        kw["weight"] = rng.uniform(0.5, 2.0, C)
    if opts.get("sample_weight"):
        kw["sample_weight"] = rng.uniform(0.5, 2.0, row_shape)
    return kw


def _targets(kind, x, axis, seed, ignore_index=-100):
    if kind == "index":
        return class_targets(x.shape, axis, seed=seed, ignore_index=ignore_index)
    return prob_targets(x.shape, axis, seed=seed)


def _as_computed(t, x):
    """The target as the kernel uses it: probabilities in the compute dtype."""
    t = np.asarray(t)
    return t.astype(compute_dtype(x.dtype.newbyteorder("="))) if t.dtype.kind == "f" else t


def _underflow_slack(x, axis, t, kw, reduction, bound):
    """What a reduced float32 loss may lose to exponentials below float32's range: each of the
    C classes of a row up to a subnormal, times the row's weights (over the "mean" divisor)."""
    w = np.asarray(kw.get("weight", 1.0), dtype=np.float64)
    s = np.asarray(kw.get("sample_weight", 1.0), dtype=np.float64)
    weight = float(np.max(w, initial=1.0) * np.max(s, initial=1.0))
    slack = underflow_slack(np.max(bound, initial=0.0), x.size, x.dtype.newbyteorder("="), weight)
    if reduction != "mean":
        return slack
    rows = x.size // max(x.shape[axis], 1)
    smin = float(np.min(s)) if s.size else 1.0
    wmin = float(np.min(w)) if w.size else 1.0
    valid = np.sum(np.asarray(t) != kw.get("ignore_index", -100)) if np.asarray(t).dtype.kind in "iu" else rows
    return slack / max(valid * smin * (wmin if np.asarray(t).dtype.kind in "iu" else 1.0), 1e-300)


def _check_against_reference(x, axis, t, kw, reduction, dname, context, accuracy=None):
    loss, grad = fl.cross_entropy_and_grad(x, t, axis=axis, reduction=reduction, **kw)
    loss_only = fl.cross_entropy(x, t, axis=axis, reduction=reduction, **kw)
    want, want_grad = ref.exact(ref.cross_entropy_and_grad, x, _as_computed(t, x), axis=axis,
                                reduction=reduction, **kw)
    out = x.dtype.newbyteorder("=")
    kind = "prob" if np.asarray(t).dtype.kind == "f" else "index"
    rows = {"row": np.moveaxis(x, axis, -1)}
    if reduction == "none":
        assert np.asarray(loss).dtype == out
        err = assert_ulp_close(loss, want, ce_loss_ulp(x, axis, out), out, context, inputs=rows)
        assert_rel_close(loss_only, loss, 0.0, context=context + " loss-only vs fused")
        what = f"cross_entropy {kind} loss"
    else:
        assert isinstance(loss, float) and isinstance(loss_only, float)
        bound = ce_loss_ulp(x, axis, compute_dtype(out))
        err = assert_reduced_close(loss, want, reduced_ulp(bound), out, context,
                                   atol=_underflow_slack(x, axis, t, kw, reduction, bound))
        assert loss_only == loss or (math.isnan(loss) and math.isnan(loss_only)), context
        what = f"cross_entropy {kind} {reduction}"
    assert grad.shape == x.shape and grad.dtype == out  # outputs in native order
    scale = ce_grad_scale(x, _as_computed(t, x), axis=axis, reduction=reduction, **kw)
    gerr = assert_ulp_close(grad, want_grad, ce_grad_ulp(x, axis, out), out, context + " grad",
                            inputs={"x": x}, scale=scale)
    if accuracy is not None:
        accuracy.record(what, out, err, context)
        accuracy.record(f"cross_entropy {kind} grad", out, gerr, context)


# ------------------------------------------------------------------ parity, adversarial arrays


@pytest.mark.parametrize("option", sorted(OPTIONS))
@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("dname", ["float32", "float64"])
def test_parity_adversarial(dname, kind, option, accuracy):
    for i, (desc, x, axis) in enumerate(adversarial_arrays((dname,), seed=3)):
        if x.ndim == 0:
            with pytest.raises(ValueError):
                fl.cross_entropy(x, np.int64(0))
            continue
        kw = _kwargs(OPTIONS[option], x, axis, seed=i)
        t = _targets(kind, x, axis, seed=i, ignore_index=kw.get("ignore_index", -100))
        reduction = REDUCTIONS[i % 3]
        _check_against_reference(x, axis, t, kw, reduction, dname,
                                 f"{desc} {kind} {option} reduction={reduction}", accuracy)


@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("dname", ["float16", "bfloat16"])
def test_parity_half_types(dname, kind, accuracy):
    for i, (desc, x, axis) in enumerate(adversarial_arrays((dname,), seed=5, layouts=False, huge=False)):
        if x.ndim == 0:
            continue
        t = _targets(kind, x, axis, seed=i)
        kw = _kwargs(OPTIONS["all" if i % 2 else "plain"], x, axis, seed=i)
        _check_against_reference(x, axis, t, kw, REDUCTIONS[i % 3], dname, f"{desc} {kind}", accuracy)


@pytest.mark.parametrize("isa", ["scalar", "avx2", "avx512"])
def test_every_simd_path(isa):
    before = _core.isa_name()
    if _core.isa_select(isa) != 0:
        pytest.skip(f"{isa} is not available here")
    try:
        for i, (desc, x, axis) in enumerate(adversarial_arrays(("float32",), seed=9, layouts=False)):
            if x.ndim == 0:
                continue
            for kind in ("index", "prob"):
                t = _targets(kind, x, axis, seed=i)
                kw = _kwargs(OPTIONS["all"], x, axis, seed=i)
                _check_against_reference(x, axis, t, kw, REDUCTIONS[i % 3], "float32", f"{isa} {desc} {kind}")
    finally:
        _core.isa_select(before)


# ------------------------------------------------------------------ PyTorch parity


def _torch_ce(torch, x, t, axis, kw, reduction):
    """PyTorch forward and autograd gradient, with the class axis moved to 1."""
    xt = torch.tensor(np.moveaxis(x, axis, 1) if x.ndim > 1 else x, requires_grad=True)
    if np.asarray(t).dtype.kind == "f":
        tt = torch.tensor(np.moveaxis(t, axis, 1) if t.ndim > 1 else t)
    else:
        tt = torch.tensor(t)
    w = None if kw.get("weight") is None else torch.tensor(kw["weight"], dtype=xt.dtype)
    extra = {} if np.asarray(t).dtype.kind == "f" else {"ignore_index": kw.get("ignore_index", -100)}
    out = torch.nn.functional.cross_entropy(xt, tt, weight=w, reduction=reduction,
                                            label_smoothing=kw.get("label_smoothing", 0.0), **extra)
    out.sum().backward()
    loss = out.item() if reduction != "none" else out.detach().numpy()
    grad = xt.grad.numpy()
    return loss, (np.moveaxis(grad, 1, axis) if x.ndim > 1 else grad)


TORCH_CASES = [
    ((64, 10), -1), ((7, 5, 3, 4), 1), ((5, 6, 9), 1), ((40, 3), 0), ((11,), 0),
]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("dname", ["float32", "float64"])
def test_parity_torch(dname, kind, reduction):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    for j, (shape, axis) in enumerate(TORCH_CASES):
        x = (rng.standard_normal(shape) * 3).astype(dname)
        for k, opts in enumerate([{}, {"weight": True}, {"weight": True, "label_smoothing": 0.25},
                                  {"label_smoothing": 0.1, "ignore_index": 2}]):
            kw = _kwargs(opts, x, axis, seed=k)
            t = _targets(kind, x, axis, seed=10 * j + k, ignore_index=kw.get("ignore_index", -100))
            loss, grad = fl.cross_entropy_and_grad(x, t, axis=axis, reduction=reduction, **kw)
            t_loss, t_grad = _torch_ce(torch, x, t, axis, kw, reduction)
            ctx = f"torch {shape} axis={axis} {kind} {opts} {reduction}"
            rtol = 1e-5 if dname == "float32" else 1e-10
            assert_rel_close(loss, t_loss, rtol, context=ctx)
            # PyTorch's own error (float32 sums, p_y - 1 cancelling) is relative to the row's
            # largest gradient terms: 32 eps of those
            scale = ce_grad_scale(x, t, axis=axis, reduction=reduction, **kw)
            atol = 32 * EPS[dname] * np.max(scale, axis=axis, keepdims=True) if x.ndim > 1 else \
                32 * EPS[dname] * np.max(scale)
            assert_rel_close(grad, t_grad, rtol, atol=atol, context=ctx + " grad")


def test_torch_tensor_inputs():
    torch = pytest.importorskip("torch")
    x = torch.randn(32, 7, dtype=torch.float32, requires_grad=True)
    y = torch.randint(0, 7, (32,))
    loss = fl.cross_entropy(x, y)
    assert_rel_close(loss, torch.nn.functional.cross_entropy(x, y).item(), 1e-5)
    xb = x.detach().to(torch.bfloat16)
    loss_b, grad_b = fl.cross_entropy_and_grad(xb, y, reduction="sum")
    assert grad_b.dtype == as_dtype("bfloat16")
    assert_rel_close(loss_b, torch.nn.functional.cross_entropy(xb.float(), y, reduction="sum").item(), 1e-5)


# ------------------------------------------------------------------ finite differences


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_gradient_finite_differences(option, kind, reduction):
    rng = np.random.default_rng(2)
    shape, axis = (3, 4, 2), 1
    x = rng.standard_normal(shape) * 2
    kw = _kwargs(OPTIONS[option], x, axis, seed=5)
    t = _targets(kind, x, axis, seed=4, ignore_index=kw.get("ignore_index", -100))
    _, grad = fl.cross_entropy_and_grad(x, t, axis=axis, reduction=reduction, **kw)

    def total(v):
        loss = fl.cross_entropy(v, t, axis=axis, reduction=reduction, **kw)
        return float(np.sum(loss))

    h = 1e-6
    fd = np.empty_like(x)
    for idx in np.ndindex(shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        fd[idx] = (total(xp) - total(xm)) / (2 * h)
    assert_rel_close(grad, fd, 1e-6, atol=1e-8, context=f"finite differences {option} {kind} {reduction}")


# ------------------------------------------------------------------ corner cases (PyTorch parity)


@pytest.mark.parametrize("dname", ["float32", "float64"])
def test_all_targets_ignored(dname):
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(dname)
    x[2, 1] = np.nan
    t = np.full(5, -100)
    loss, grad = fl.cross_entropy_and_grad(x, t)
    assert math.isnan(loss)
    assert np.array_equal(grad, np.zeros_like(x))
    assert fl.cross_entropy(x, t, reduction="sum") == 0.0
    assert np.array_equal(fl.cross_entropy(x, t, reduction="none"), np.zeros(5, dtype=dname))
    torch = pytest.importorskip("torch")
    xt = torch.tensor(np.nan_to_num(x), requires_grad=True)  # torch's gradient keeps nan even in ignored rows
    out = torch.nn.functional.cross_entropy(xt, torch.tensor(t))
    out.backward()
    assert math.isnan(out.item()) and not xt.grad.any()


def test_ignored_rows_with_special_logits_contribute_nothing():
    x = np.array([[np.nan, 1.0, 2.0], [np.inf, 0.0, 0.0], [-np.inf] * 3, [0.5, 1.0, 2.0]])
    t = np.array([-100, -100, -100, 2])
    loss, grad = fl.cross_entropy_and_grad(x, t, reduction="none", z_loss=0.1, label_smoothing=0.2)
    assert np.array_equal(loss[:3], [0.0, 0.0, 0.0]) and np.isfinite(loss[3])
    assert np.array_equal(grad[:3], np.zeros((3, 3))) and np.all(np.isfinite(grad[3]))


@pytest.mark.parametrize("kind", ["index", "prob"])
def test_bad_rows_give_nan(kind):
    x = np.array([[np.nan, 1.0, 2.0], [np.inf, 0.0, 0.0], [0.5, 1.0, 2.0]], dtype=np.float32)
    t = np.array([1, 0, 2]) if kind == "index" else np.full((3, 3), 1 / 3)
    loss, grad = fl.cross_entropy_and_grad(x, t, reduction="none")
    assert np.isnan(loss[:2]).all() and np.isfinite(loss[2])
    assert np.isnan(grad[:2]).all() and np.isfinite(grad[2]).all()
    assert math.isnan(fl.cross_entropy(x, t))


def test_weights_with_label_smoothing_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((50, 6))
    t = rng.integers(0, 6, 50)
    t[::7] = -100
    w = rng.uniform(0.1, 3.0, 6)
    for eps in (0.0, 0.1, 1.0):
        loss, grad = fl.cross_entropy_and_grad(x, t, weight=w, label_smoothing=eps)
        t_loss, t_grad = _torch_ce(torch, x, t, -1, {"weight": w, "label_smoothing": eps}, "mean")
        assert_rel_close(loss, t_loss, 1e-12)
        assert_rel_close(grad, t_grad, 1e-10, atol=1e-15)


def test_prob_targets_mean_divides_by_sample_weights():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((8, 5))
    t = prob_targets(x.shape, seed=1)
    w = rng.uniform(0.5, 2, 5)
    s = rng.uniform(0.5, 2, 8)
    bound = reduced_ulp(loss_ulp(np.float64))
    want = ref.exact(ref.cross_entropy, x, t, weight=w, sample_weight=s, reduction="sum") / s.sum()
    assert_reduced_close(fl.cross_entropy(x, t, weight=w, sample_weight=s), want, bound, np.float64, "mean / sum s")
    want = ref.exact(ref.cross_entropy, x, t, weight=w, reduction="sum") / 8
    assert_reduced_close(fl.cross_entropy(x, t, weight=w), want, bound, np.float64, "mean / rows")


@pytest.mark.parametrize("dname", ["float32", "float64"])
def test_zero_probability_on_minus_inf_logit(dname):
    x = np.array([[0.0, -np.inf, 1.0], [-np.inf, -np.inf, 2.0]], dtype=dname)
    t = np.array([[0.5, 0.0, 0.5], [0.0, 0.0, 1.0]], dtype=dname)
    loss, grad = fl.cross_entropy_and_grad(x, t, reduction="none")
    assert np.all(np.isfinite(loss)) and loss[1] == 0.0
    assert grad[0, 1] == 0.0 and np.array_equal(grad[1], [0.0, 0.0, 0.0])
    # a positive probability (here through label smoothing) on a -inf logit costs +inf
    assert fl.cross_entropy(x, t, reduction="none", label_smoothing=0.1)[1] == np.inf


def test_z_loss_terms():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 4))
    t = np.array([0, 1, -100, 3, 2, -100])
    s = rng.uniform(0.5, 2, 6)
    z = 0.05
    with_z = fl.cross_entropy(x, t, sample_weight=s, reduction="none", z_loss=z)
    # the z part is z*s_i*lse_i**2 on the valid rows, added to the plain loss
    lse = ref.exact(ref.logsumexp, x, axis=1)
    valid = t != -100
    want = ref.exact(ref.cross_entropy, x, t, sample_weight=s, reduction="none") + \
        ref.DDArray.from_float(np.where(valid, z * s, 0.0)) * lse * lse
    assert_ulp_close(with_z, want, loss_ulp(np.float64), np.float64, "z_loss per row")
    mean_z = fl.cross_entropy(x, t, sample_weight=s, z_loss=z)
    want = ref.exact(ref.cross_entropy, x, t, sample_weight=s, z_loss=z)
    assert_reduced_close(mean_z, want, reduced_ulp(loss_ulp(np.float64)), np.float64, "z_loss mean")


def test_one_d_logits_and_empty_shapes():
    x = np.array([2.5, 0.3, -1.2])
    assert isinstance(fl.cross_entropy(x, 0, reduction="none"), np.float64)
    assert_rel_close(fl.cross_entropy(x, 0), 0.127097, 1e-5)
    loss, grad = fl.cross_entropy_and_grad(np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    assert math.isnan(loss) and grad.shape == (0, 4)
    assert fl.cross_entropy(np.zeros((3, 0)), np.full(3, -100), reduction="sum") == 0.0
    assert fl.cross_entropy(np.zeros((3, 0)), np.zeros((3, 0)), reduction="sum") == 0.0


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "uint16", "int32", "uint32", "uint64", ">i8", ">i4"])
def test_integer_target_dtypes(dtype):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((20, 9)).astype(np.float32)
    t64 = rng.integers(0, 9, 20)
    expected = fl.cross_entropy_and_grad(x, t64, reduction="none")
    got = fl.cross_entropy_and_grad(x, t64.astype(dtype), reduction="none")
    assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])


# ------------------------------------------------------------------ errors


def test_out_of_range_index_raises_before_writing():
    x = np.random.default_rng(7).standard_normal((3, 4, 5))
    t = np.zeros((3, 5), dtype=np.int64)
    t[1, 2], t[2, 0] = 4, -1
    g = np.full_like(x, 7.0)
    for reduction in REDUCTIONS:
        with pytest.raises(IndexError, match=r"class index 4 at position \(1, 2\)"):
            fl.cross_entropy_and_grad(x, t, axis=1, reduction=reduction, grad_out=g)
        assert np.all(g == 7.0)
        with pytest.raises(IndexError, match=r"class index 4 at position \(1, 2\)"):
            fl.cross_entropy(x, t, axis=1, reduction=reduction)
    t[1, 2] = -100
    with pytest.raises(IndexError, match=r"class index -1 at position \(2, 0\)"):
        fl.cross_entropy(x, t, axis=1)
    with pytest.raises(IndexError, match="18446744073709551615"):
        fl.cross_entropy(x[0], np.array([0, 0, 0, 0, 2**64 - 1], dtype=np.uint64), axis=0)


def test_argument_errors():
    x = np.zeros((4, 3))
    t = np.zeros(4, dtype=np.int64)
    with pytest.raises(ValueError, match=r"\(4,\).*\(5,\)"):
        fl.cross_entropy(x, np.zeros(5, dtype=np.int64))
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(4, 2\)"):
        fl.cross_entropy(x, np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"weight.*\(3,\).*\(4,\)"):
        fl.cross_entropy(x, t, weight=np.ones(4))
    with pytest.raises(ValueError, match=r"sample_weight.*\(4,\).*\(3,\)"):
        fl.cross_entropy(x, t, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match=r"grad_out.*\(4, 3\).*\(3, 4\)"):
        fl.cross_entropy_and_grad(x, t, grad_out=np.zeros((3, 4)))
    with pytest.raises(TypeError, match="grad_out"):
        fl.cross_entropy_and_grad(x, t, grad_out=np.zeros((4, 3), np.float32))
    for eps in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="label_smoothing"):
            fl.cross_entropy(x, t, label_smoothing=eps)
    with pytest.raises(ValueError, match="reduction"):
        fl.cross_entropy(x, t, reduction="avg")
    with pytest.raises(ValueError, match="z_loss"):
        fl.cross_entropy(x, t, z_loss=-1.0)
    with pytest.raises(TypeError, match="bool"):
        fl.cross_entropy(x, t.astype(bool))
    with pytest.raises(TypeError, match="target"):
        fl.cross_entropy(x, t.astype(complex))
    with pytest.raises(TypeError, match="logits"):
        fl.cross_entropy(x.astype(complex), t)
    with pytest.raises(TypeError, match="ignore_index"):
        fl.cross_entropy(x, t, ignore_index=1.5)
    with pytest.raises(ValueError):
        fl.cross_entropy(np.float64(1.0), np.int64(0))


# ------------------------------------------------------------------ in place, read-only inputs


def _layouts(dname):
    rng = np.random.default_rng(8)
    base = rng.standard_normal((6, 5, 4)) * 3
    yield "C axis=-1", base.astype(dname), -1
    yield "C axis=1", base.astype(dname), 1
    yield "F axis=0", np.asfortranarray(base.astype(dname)), 0
    yield "strided axis=-1", base.astype(dname)[:, ::2, :], -1
    yield "reversed axis=1", base.astype(dname)[::-1, :, ::-1], 1


@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("dname", ["float32", "float64", "float16", "bfloat16"])
def test_grad_out_in_place(dname, kind):
    dt = as_dtype(dname)
    for desc, x, axis in _layouts(dt):
        t = _targets(kind, x, axis, seed=1)
        kw = _kwargs(OPTIONS["all"], x, axis, seed=2)
        loss, grad = fl.cross_entropy_and_grad(x, t, axis=axis, **kw)
        buf = x.copy() if desc.startswith("C") else x
        x_in = x.copy()
        if not desc.startswith("C"):
            buf = np.empty_like(x)  # a different layout: fill a view-compatible buffer
            buf[...] = x
            x_in = buf
        loss2, grad2 = fl.cross_entropy_and_grad(x_in, t, axis=axis, grad_out=x_in, **kw)
        assert grad2 is x_in
        assert loss2 == loss
        assert np.array_equal(grad2.astype(np.float64), grad.astype(np.float64), equal_nan=True), desc
        out = np.full_like(x, 3.0)
        _, grad3 = fl.cross_entropy_and_grad(x, t, axis=axis, grad_out=out, **kw)
        assert grad3 is out and np.array_equal(out.astype(np.float64), grad.astype(np.float64))


def test_grad_out_overlapping_the_logits():
    x = np.random.default_rng(9).standard_normal((6, 8))
    t = np.arange(6) % 4
    expected = fl.cross_entropy_and_grad(x[:, :4].copy(), t, reduction="sum")[1]
    buf = x.copy()
    g = buf[:, 2:6]  # overlaps the logits buf[:, :4] without being them
    fl.cross_entropy_and_grad(buf[:, :4], t, reduction="sum", grad_out=g)
    assert np.array_equal(g, expected)


def _digest(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@pytest.mark.parametrize("kind", ["index", "prob"])
def test_read_only_inputs_unchanged(kind):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((30, 7)).astype(np.float32)
    t = _targets(kind, x, -1, seed=3)
    w, s = rng.uniform(0.5, 2, 7), rng.uniform(0.5, 2, 30)
    arrays = [x, t, w, s]
    for a in arrays:
        a.flags.writeable = False
    before = [_digest(a) for a in arrays]
    for reduction in REDUCTIONS:
        fl.cross_entropy_and_grad(x, t, weight=w, sample_weight=s, label_smoothing=0.1, z_loss=0.01,
                                  reduction=reduction)
        fl.cross_entropy(x, t, weight=w, sample_weight=s, reduction=reduction)
    assert [_digest(a) for a in arrays] == before
    with pytest.raises(ValueError, match="read-only"):
        fl.cross_entropy_and_grad(x, t, grad_out=x)


# ------------------------------------------------------------------ accuracy and threads


@pytest.mark.slow
def test_mean_of_ten_million_rows_is_accurate():
    """Ten million float32 rows: the mean within 1 float32 ULP of the exactly summed exact
    value (per-row losses are double inside the kernel, their sums compensated)."""
    n, C, chunk = 10_000_000, 3, 1_000_000
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((n, C), dtype=np.float32) * 4).astype(np.float32)
    t = rng.integers(0, C, n)
    got = fl.cross_entropy(x, t)
    total = ref.DDArray.from_float(np.zeros(()))
    for i in range(0, n, chunk):
        total = total + ref.exact(ref.cross_entropy, x[i:i + chunk], t[i:i + chunk], reduction="sum")
    assert_reduced_close(got, total / n, 1, np.float32, "mean of 1e7 rows")


@pytest.mark.parametrize("kind", ["index", "prob"])
def test_bitwise_identical_for_every_thread_count(kind):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((60_000, 7)).astype(np.float32)
    t = _targets(kind, x, -1, seed=5) if kind == "index" else rng.dirichlet(np.ones(7), 60_000)
    kw = _kwargs(OPTIONS["all"], x, -1, seed=6)
    before = fl.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3, 4):
            fl.set_num_threads(n)
            mean, grad = fl.cross_entropy_and_grad(x, t, **kw)
            none = fl.cross_entropy(x, t, reduction="none", **kw)
            total = fl.cross_entropy(x, t, reduction="sum", **kw)
            results.append((mean, total, grad, none))
    finally:
        fl.set_num_threads(before)
    m0, s0, g0, n0 = results[0]
    for m, s, g, r in results[1:]:
        assert m == m0 and s == s0
        assert np.array_equal(g, g0) and np.array_equal(r, n0)
