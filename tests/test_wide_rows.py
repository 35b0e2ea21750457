"""Rows of a wide spread of logits (randn * 3 up to randn * 60), whose exponentials exp(x - max)
fall in float32's subnormal range or in the "gap" of the exact-reduction sums: the softmax
family and the cross-entropy on every SIMD path against the exact oracle within their ULP bounds
(subnormal softmax outputs included, measured in units of 2^-149), in wide rows and in tiles of
few classes, with masked lanes mixed in; results bitwise the same for every thread count.

The x86 kernels compute the products of subnormal values (the TwoSum correction of the
exponentials, the softmax's scaling) without the microcode assist a plain multiplication takes
on Intel cores (flv_mul1p, flv_mul_tiny in csrc/simd), or, where the CPU takes none (AMD: the
subnormal policy, csrc/fl_dispatch.c), by the plain instructions; and the sigmoids take
exp(-|x|) < 2^-25 directly: the same bits by other routes, which these tests hold.
"""
import ast
import functools
import os
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

import fastlogits as fl
from fastlogits import _core
from fastlogits import reference as ref
from arrays import assert_ulp_close, ce_grad_scale, ce_grad_ulp, ce_loss_ulp
from conftest import ISAS, cpu_vendor

POST = ("softmax", "log_softmax", "logsumexp", "entropy")
SPREADS = (3.0, 10.0, 15.0, 20.0, 30.0, 60.0)


@functools.lru_cache(maxsize=None)
def _rows(c, seed=0):
    """Rows of randn * s for every spread s, a row with its max at 0 (logsumexp near 0), rows
    with masked lanes (-inf) among lanes in the gap and in the subnormal range, and rows whose
    softmax is mostly subnormal."""
    rng = np.random.default_rng(seed + c)
    rows = [rng.standard_normal(c) * s for s in SPREADS]
    peaked = rng.uniform(-103.0, -86.0, c)  # every other exponential subnormal
    peaked[c // 2] = 0.0
    rows.append(peaked)
    masked = rng.standard_normal(c) * 20.0
    masked[rng.random(c) < 0.4] = -np.inf
    masked[rng.random(c) < 0.2] = np.max(masked) - rng.uniform(86.0, 104.0)
    rows.append(masked)
    shifted = rng.uniform(-130.0, 0.0, c) + 40.0  # max beyond the shift path's 64 after scaling
    rows.append(shifted * 1.7)
    return np.array(rows, dtype=np.float32)


def _check(name, x, isa):
    got = getattr(fl, name)(x)
    want = ref.exact(getattr(ref, name), x, -1)
    assert_ulp_close(got, want, 4, np.float32, {"function": name, "isa": isa, "c": x.shape[-1]},
                     inputs={"row": x})


@pytest.mark.parametrize("c", [3, 17, 4099])
@pytest.mark.parametrize("name", POST)
def test_softmax_family_on_wide_rows_keeps_4_ulp(name, c, isa):
    _check(name, _rows(c), isa)


def test_subnormal_softmax_outputs_keep_4_ulp(isa):
    """A row whose softmax is subnormal in most classes: each output within 4 units of 2^-149."""
    x = _rows(4099)[len(SPREADS)][None, :]
    p = fl.softmax(x)
    assert np.count_nonzero((p > 0) & (p < np.finfo(np.float32).tiny)) > 1000
    _check("softmax", x, isa)


@pytest.mark.parametrize("c", [17, 4099])
def test_cross_entropy_on_wide_rows_keeps_its_bounds(c, isa):
    x = _rows(c)
    rng = np.random.default_rng(c)
    y = rng.integers(0, c, x.shape[0])
    y = np.where(np.isfinite(x[np.arange(len(y)), y]), y, np.argmax(x, axis=1))
    loss = fl.cross_entropy(x, y, reduction="none")
    want = ref.exact(ref.cross_entropy, x, y, reduction="none")
    bound = ce_loss_ulp(x, -1, np.float32)
    assert_ulp_close(loss, want, bound, np.float32, f"{isa} c={c}", inputs={"row": x})


@pytest.mark.parametrize("c", [17, 4099])
def test_cross_entropy_gradient_on_wide_rows(c, isa):
    """The gradient of rows of a wide spread within its bound of the exact one; without class
    weights it scales the subnormal exponentials by flv_mul_tiny (fl_ce_f32.h), or, with label
    smoothing, takes the exponentials of alpha * e_k < 2^-100 as 0 (fl_pend.h); with weights of
    1 the fused form: the same bits. 4099 classes: blocks of 1024 summed under a smaller
    running max are rescaled (by flv_mul_tiny too)."""
    x = _rows(c)
    x = x[:, np.argsort(np.random.default_rng(c).random(c))]  # maxima in late blocks too
    rng = np.random.default_rng(c + 1)
    y = rng.integers(0, c, x.shape[0])
    y = np.where(np.isfinite(x[np.arange(len(y)), y]), y, np.argmax(x, axis=1))
    for reduction, ls in (("none", 0.0), ("mean", 0.0), ("sum", 0.1), ("mean", 0.3)):
        kw = dict(reduction=reduction, label_smoothing=ls)
        _, grad = fl.cross_entropy_and_grad(x, y, **kw)
        want = ref.exact(ref.cross_entropy_and_grad, x, y, **kw)[1]
        scale = ce_grad_scale(x, y, **kw)
        assert_ulp_close(grad, want, ce_grad_ulp(x, -1, np.float32), np.float32, f"{isa} c={c} {kw}",
                         inputs={"row": x}, scale=scale)
        _, fused = fl.cross_entropy_and_grad(x, y, weight=np.ones(c), **kw)
        assert grad.tobytes() == fused.tobytes(), (isa, c, kw)


@pytest.mark.parametrize("name", ["sigmoid", "log_sigmoid"])
def test_sigmoids_of_wide_logits_keep_4_ulp(name, isa):
    """randn * 60 and the edges of the tiny-t lanes (|x| near 17.3, where exp(-|x|) = 2^-25,
    and near 87-104, subnormal sigmoids), in vectors mixed with plain lanes."""
    rng = np.random.default_rng(7)
    edges = np.concatenate([np.linspace(a, b, 97) for a, b in ((16.5, 18.5), (86.0, 105.0))])
    x = np.concatenate([rng.standard_normal(1031) * 60, edges, -edges, rng.standard_normal(97)])
    x = rng.permutation(x).astype(np.float32)
    got = getattr(fl, name)(x)
    want = ref.exact(getattr(ref, name), x)
    assert_ulp_close(got, want, 4, np.float32, {"function": name, "isa": isa}, inputs={"x": x})


@pytest.mark.parametrize("name", ["sigmoid", "log_sigmoid"])
def test_sigmoids_take_one_wide_lane_at_any_position_of_a_group(name, isa):
    """Plain rows (randn * 3) with one lane beyond |x| = 17 at each position in turn: the
    elementwise kernels decide the form once for a group of four vectors (csrc/fl_sigmoid.c), so
    a lane in any vector of a group (first lane of the first, last lane of the last), in the
    single vectors after the groups and in the partial tail must send its group to the
    general exponential: the plain group's exponential has no subnormal results (on AVX2 it
    gives a wrong t for |x| > 86; elsewhere a wrong group costs time, not bits). Rows of 149 (AVX-512: two groups, a vector, a tail of 5; AVX2: four
    groups, two vectors, a tail of 5), each row its own span (a strided view)."""
    c = 149
    rng = np.random.default_rng(26)
    base = np.zeros((c, c + 11), np.float32)
    base[:, :c] = rng.standard_normal((c, c)) * 3
    for v in (-95.0, 95.0, -30.0, 20.0, -27.5, 28.5, 103.5, -np.inf, np.inf):
        full = base.copy()
        full[np.arange(c), np.arange(c)] = v
        x = full[:, :c]
        got = getattr(fl, name)(x)
        want = ref.exact(getattr(ref, name), np.ascontiguousarray(x))
        assert_ulp_close(got, want, 4, np.float32, {"function": name, "isa": isa, "v": v},
                         inputs={"x": x})


def _outputs(x, y):
    r = {name: getattr(fl, name)(x) for name in POST}
    r["ce"], r["grad"] = fl.cross_entropy_and_grad(x, y)
    r["ce_none"] = fl.cross_entropy(x, y, reduction="none")
    return r


def test_wide_rows_bitwise_for_every_thread_count_and_x86_path(threads):
    """The same bits for 1, 2 and 3 threads; the softmax family's also on the AVX2 and AVX-512
    paths, which compute the subnormal products by different code (the cross-entropy's float32
    partial sums group the lanes by the vector width)."""
    x = np.concatenate([_rows(4099, seed=s) for s in range(2)])
    y = np.argmax(x, axis=1)
    before = _core.isa_name()
    paths = [i for i in ISAS if i in ("avx2", "avx512")] or [before]
    base = None
    try:
        for isa in paths:
            assert _core.isa_select(isa) == 0
            first = None
            for n in (1, 2, 3):
                fl.set_num_threads(n)
                r = _outputs(x, y)
                base, first = base or r, first or r
                for key in r:
                    assert np.asarray(r[key]).tobytes() == np.asarray(first[key]).tobytes(), (isa, n, key)
                for key in POST:
                    assert r[key].tobytes() == base[key].tobytes(), (isa, n, key)
    finally:
        _core.isa_select(before)


@pytest.fixture
def subnormal_forms():
    """Restore the CPU's default form of the subnormal products after a test that sets one."""
    yield
    _core.set_subnormal_policy(-1)


def test_subnormal_products_give_the_same_bits_plain_or_assist_free(isa, subnormal_forms):
    """Every kernel that multiplies subnormal values, on wide rows (subnormal exponentials and
    softmax outputs, the cross-entropy's scaled gradient, with label smoothing and with class
    weights, rows of few classes in tiles) and on the BCE's wide lanes with soft targets 2^-k
    (its subnormal products of t): the plain instructions give the assist-free forms' bits. The
    sigmoids and the BCE also move their groups' bound for the tiny forms from |x| = 17 to 28
    under the plain policy: randn * 10 puts groups whose largest |x| lies between the two. (On
    the scalar and NEON paths both policies run the same code.)"""
    x = np.concatenate([_rows(4099, seed=5), _rows(4099, seed=6)])
    y = np.argmax(x, axis=1)
    few = _rows(17)
    rng = np.random.default_rng(8)
    xb = (rng.standard_normal((2, 67, 149)) * [[[60.0]], [[10.0]]]).astype(np.float32)
    yb = np.ldexp(1.0, -(rng.integers(0, 150, xb.shape))).astype(np.float32)
    yb[:, ::3] = rng.random((2, 23, 149)) < 0.5
    wb = (rng.random(xb.shape) * 2).astype(np.float32)
    runs = []
    for plain in (0, 1):
        _core.set_subnormal_policy(plain)
        assert _core.subnormal_policy() is bool(plain)
        r = _outputs(x, y)
        r["grad_ls"] = fl.cross_entropy_and_grad(x, y, label_smoothing=0.1)[1]
        r["grad_w"] = fl.cross_entropy_and_grad(x, y, weight=np.linspace(0.5, 2, x.shape[1]))[1]
        r.update({f"few_{name}": getattr(fl, name)(few) for name in POST})
        r["bce"], r["bce_grad"] = fl.bce_with_logits_and_grad(xb, yb, weight=wb, reduction="none")
        r["bce_1"], r["bce_grad_1"] = fl.bce_with_logits_and_grad(xb, yb, reduction="none")
        r["sigmoid"], r["log_sigmoid"] = fl.sigmoid(xb), fl.log_sigmoid(xb)
        runs.append(r)
    sub = np.count_nonzero((runs[0]["softmax"] > 0) & (runs[0]["softmax"] < np.finfo(np.float32).tiny))
    assert sub > 1000, sub
    for key in runs[0]:
        assert np.asarray(runs[0][key]).tobytes() == np.asarray(runs[1][key]).tobytes(), (isa, key)


def _subnormal_policy_in_fresh_process(env_value=None, isa=None):
    """(subnormal_policy, stderr) of a new process, FASTLOGITS_SUBNORMALS set to env_value and
    FASTLOGITS_ISA to isa (None: unset)"""
    env = {k: v for k, v in os.environ.items() if k not in ("FASTLOGITS_SUBNORMALS", "FASTLOGITS_ISA")}
    for key, value in (("FASTLOGITS_SUBNORMALS", env_value), ("FASTLOGITS_ISA", isa)):
        if value is not None:
            env[key] = value
    code = "import fastlogits as fl; from fastlogits import _core; print(repr(_core.subnormal_policy()))"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return ast.literal_eval(r.stdout.strip()), r.stderr


def test_subnormal_products_default_is_the_vendors():
    """Plain on AMD (Zen 4: no assist for subnormal operands), assist-free elsewhere; the
    default holds from the first call whether or not FASTLOGITS_ISA selected a path first."""
    vendor = cpu_vendor()
    default = _core.subnormal_default_policy()
    if vendor is not None:
        assert default is (vendor in ("AuthenticAMD", "HygonGenuine"))
    assert _subnormal_policy_in_fresh_process() == (default, "")
    assert _subnormal_policy_in_fresh_process(isa="scalar") == (default, "")


@pytest.mark.parametrize("value, plain", [("plain", True), (" Assist-Free ", False)])
def test_environment_sets_the_subnormal_products(value, plain):
    assert _subnormal_policy_in_fresh_process(value) == (plain, "")


def test_environment_value_that_is_not_a_form_warns_and_keeps_the_default():
    policy, err = _subnormal_policy_in_fresh_process("ftz")
    assert policy is _core.subnormal_default_policy()
    assert "FASTLOGITS_SUBNORMALS='ftz' is not 'plain' or 'assist-free'" in err


def test_show_config_reports_the_subnormal_products(capsys, subnormal_forms):
    for plain, word in ((1, "plain"), (0, "assist-free")):
        _core.set_subnormal_policy(plain)
        fl.show_config()
        assert f"  subnormal products: {word}" in capsys.readouterr().out.splitlines()
        info = fl.show_config(mode="dicts")["fastlogits"]["subnormal_products"]
        assert info == {"plain": bool(plain), "default": _core.subnormal_default_policy()}


def _round32(q):
    """The float32 nearest the exact rational q, ties to even (no double rounding)."""
    c = np.float32(float(q))
    cands = [np.nextafter(c, np.float32(-np.inf)), c, np.nextafter(c, np.float32(np.inf))]
    best = min(cands, key=lambda v: (abs(Fraction(float(v)) - q), int(np.array(v).view(np.uint32)) & 1))
    return np.float32(best)


def _bce_wide_lane(x, y, w, pw, t, scale, fused):
    """One lane of fl_bce.c's plain form in float32, for |x| > 17.4 (t = exp(-|x|) < 2^-25:
    1 + t rounds to 1, log1p(t) to t), with the loss's multiply-add rounded once from exact
    rationals where the path fuses it (flv_fma; the scalar path rounds the product first): the
    bits the plain form gives, subnormal arithmetic included."""
    f = np.float32
    with np.errstate(all="ignore"):
        yc = f(1) - y
        a0 = pw * y
        a = (w * pw) * y if -abs(a0) < 0 else a0 * f(0)
        b = w * yc if -abs(yc) < 0 else yc * f(0)
        s = a + b
        lin = a * (-x) if x < 0 else b * x
        lin = f(0) if np.isnan(lin) else lin
        st = Fraction(float(s)) * Fraction(float(t)) if fused else Fraction(float(s * t))
        loss = lin if np.isinf(lin) else _round32(st + Fraction(float(lin)))
        sp, sn = (t, f(1)) if x < 0 else (f(1), t)
        grad = (b * sp - a * sn) * f(scale)
    return loss, grad


@pytest.mark.parametrize("weights", [False, True])
def test_bce_takes_one_wide_lane_at_any_position_of_a_group(weights, isa):
    """Plain rows (randn * 3, a few NaNs with payloads) with one wide lane at each position in
    turn (rows of 149: AVX-512 two groups of four vectors, a vector and a tail of 5; AVX2 four
    groups, two vectors and a tail): the wide lane's loss and gradient are those of the plain
    form computed exactly (_bce_wide_lane; subnormal t for |x| in 87.4-104, t = 0 beyond), the
    other lanes those of the same row without the wide lane, bit for bit. The wide lane's soft
    targets 2^-k (k up to 150) put lin = a|x| on both sides of fl_vbce_wide's bound |s| < |lin|
    2^100 (beyond it the group takes the plain form): a bound that let s t count against lin
    would change losses here, as would a wrong override of t's products in the gradient."""
    c = 149
    rng = np.random.default_rng(19)
    x0 = (rng.standard_normal((c, c)) * 3).astype(np.float32)
    nanpay = np.array([0x7FC12345, 0xFFC54321], np.uint32).view(np.float32)
    x0[::7, 3] = nanpay[0]
    x0[1::7, 140] = nanpay[1]
    yb = (rng.random((c, c)) < 0.5).astype(np.float32)
    ys = rng.random((c, c)).astype(np.float32)
    k = np.arange(c) % 64 + 88
    ys[np.arange(c), np.arange(c)] = np.ldexp(1.0, -k).astype(np.float32)
    ys[::5, :] = yb[::5, :]
    w = pw = None
    if weights:
        w = (rng.random((c, c)) * 2).astype(np.float32)
        w[rng.random((c, c)) < 0.1] = 0
        pw = (rng.random(c) * 3).astype(np.float32)
    t_of = {}
    for v in (-95.0, 95.0, -88.0, 100.5, -30.0, 40.0, 20.0, -27.5, -103.9, 120.0, -np.inf, np.inf):
        x = x0.copy()
        x[np.arange(c), np.arange(c)] = v
        if v not in t_of:
            t_of[v] = fl.sigmoid(np.array([-abs(v)], np.float32))[0]  # its tiny form: t itself
        for y in (yb, ys):
            for red in ("none", "mean"):
                loss, grad = fl.bce_with_logits_and_grad(x, y, weight=w, pos_weight=pw, reduction=red)
                loss0, grad0 = fl.bce_with_logits_and_grad(x0, y, weight=w, pos_weight=pw, reduction=red)
                off = ~np.eye(c, dtype=bool)
                assert grad[off].tobytes() == grad0[off].tobytes(), (isa, v, red)
                if red == "none":
                    assert loss[off].tobytes() == loss0[off].tobytes(), (isa, v)
                scale = 1.0 / x.size if red == "mean" else 1.0
                for i in range(c):
                    wi = np.float32(1) if w is None else w[i, i]
                    pi = np.float32(1) if pw is None else pw[i]
                    want_l, want_g = _bce_wide_lane(np.float32(v), y[i, i], wi, pi, t_of[v], scale, isa != "scalar")
                    got = (loss[i, i] if red == "none" else want_l, grad[i, i])
                    assert np.array([got[0], got[1]]).tobytes() == np.array([want_l, want_g]).tobytes(), (
                        isa, v, red, i, float(y[i, i]), float(wi), float(pi), got, (want_l, want_g))
