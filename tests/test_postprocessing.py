"""Parity of the postprocessing functions with the NumPy reference (and PyTorch), over the
shared adversarial generator, under every SIMD path the machine supports.

Oracle: ``reference.exact`` (long double where it is extended, double-double otherwise or
under FASTLOGITS_ORACLE=portable); errors are measured in ULPs of the output dtype against the
unrounded exact value, and the bounds are the README's (4 ULP for float32/float64, 1 ULP for
float16/bfloat16, which are computed in float32 and rounded once).
"""
import functools

import numpy as np
import pytest

import fastlogits as fl
from fastlogits import reference as ref
from arrays import adversarial_arrays, assert_ulp_close, as_dtype

DTYPES = ("float32", "float64", "float16", "bfloat16")

# function name -> (kind, ULP bound for float32/float64; half types are held to 1 ULP)
FUNCS = {
    "sigmoid": ("elementwise", 4),
    "log_sigmoid": ("elementwise", 4),
    "softmax": ("class", 4),
    "log_softmax": ("class", 4),
    "logsumexp": ("reduce", 4),
    "entropy": ("reduce", 4),
}


def _ulp_bound(dtype, bound):
    return 1 if np.dtype(dtype).itemsize == 2 else bound


def _cases(dtypes=DTYPES):
    return list(adversarial_arrays(dtypes=dtypes))


CASES = {d: _cases((d,)) for d in DTYPES}


def _exact(name, x, axis):
    """The exact value of function ``name`` at x (None where a 0-d input must raise)."""
    if FUNCS[name][0] == "elementwise":
        return ref.exact(getattr(ref, name), x)
    if x.ndim == 0:
        return None
    return ref.exact(getattr(ref, name), x, axis)


@functools.lru_cache(maxsize=None)
def _wants(name, dtype):
    """The exact values for every case of CASES[dtype], computed once for all SIMD paths."""
    return [_exact(name, x, axis) for _, x, axis in CASES[dtype]]


def _check_one(name, desc, x, axis, want=None, accuracy=None):
    kind, bound = FUNCS[name]
    fast = getattr(fl, name)
    ctx = {"function": name, "case": desc, "dtype": x.dtype, "shape": x.shape, "axis": axis}
    if kind != "elementwise" and x.ndim == 0:
        with pytest.raises(ValueError):
            fast(x, axis=axis)
        return
    want = _exact(name, x, axis) if want is None else want
    got = fast(x) if kind == "elementwise" else fast(x, axis=axis)
    out_dtype = np.dtype(x.dtype).newbyteorder("=")
    inputs = {"x": x} if kind == "elementwise" else \
        {"row": np.moveaxis(x, axis, -1) if kind == "reduce" else x}
    err = assert_ulp_close(got, want, _ulp_bound(out_dtype, bound), out_dtype, ctx, inputs=inputs,
                           check_dtype=True)
    if accuracy is not None:
        accuracy.record(name, str(out_dtype), err, desc)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(FUNCS))
def test_parity_with_reference(name, dtype, isa, accuracy):
    for (desc, x, axis), want in zip(CASES[dtype], _wants(name, dtype)):
        _check_one(name, f"{isa} {desc}", x, axis, want, accuracy)


@pytest.mark.parametrize("dtype", DTYPES)
def test_predictions_match_reference(dtype, isa):
    for desc, x, axis in CASES[dtype]:
        ctx = f"{desc} axis={axis}"
        if x.ndim == 0:
            with pytest.raises(ValueError):
                fl.predict(x, axis=axis)
            assert fl.predict_binary(x) == ref.predict_binary(x), ctx
            continue
        for t in (0.5, 0.1, 0.97):
            np.testing.assert_array_equal(fl.predict_binary(x, t), ref.predict_binary(x, t), err_msg=ctx)
        if x.shape[axis] == 0:
            with pytest.raises(ValueError):
                fl.predict(x, axis=axis)
            continue
        got = fl.predict(x, axis=axis)
        np.testing.assert_array_equal(got, ref.predict(x, axis=axis), err_msg=ctx)
        assert np.asarray(got).dtype == np.int64
        c = x.shape[axis]
        for k in sorted({1, min(3, c), c}):
            v, i = fl.topk(x, k, axis=axis)
            rv, ri = ref.topk(x, k, axis=axis)
            np.testing.assert_array_equal(i, ri, err_msg=f"topk k={k} {ctx}")
            np.testing.assert_array_equal(v.astype(np.float64), np.asarray(rv).astype(np.float64), err_msg=f"topk k={k} {ctx}")
            assert v.dtype == x.dtype.newbyteorder("=") and i.dtype == np.int64


def _select_rows(rng, shape, values, inf_share, nan_share):
    """float32 rows for predict and topk: randn, or rounded to ties (-0 beside +0), with -inf
    (30%) and +inf (inf_share), with NaN (nan_share), or each row sorted rising or falling"""
    x = rng.standard_normal(shape).astype(np.float32)
    if values == "ties":
        x = np.round(x).astype(np.float32)
        x[x == 0] = np.where(rng.random(int((x == 0).sum())) < 0.5, np.float32(-0.0), np.float32(0.0))
    elif values == "infinities":
        x[rng.random(x.shape) < 0.3] = -np.inf
        x[rng.random(x.shape) < inf_share] = np.inf
    elif values == "nan":
        x[rng.random(x.shape) < nan_share] = np.nan
    elif values in ("rising", "falling"):
        x = np.sort(x, axis=1)
        x = x if values == "rising" else x[:, ::-1].copy()
    return x


@pytest.mark.parametrize("values", ["normal", "ties", "infinities", "nan", "rising", "falling"])
def test_topk_wide_float32_rows(values, isa):
    """Rows past the tiles scan a run of 4 vectors by its max and offer only the elements above
    the worst kept (or NaN) when their vector comes: every k of the list (<= 16) and of the
    heap, ties (-0 beside +0) to the lower index, infinities, NaN, rows rising (every element
    beats the worst kept) and falling, against reference.topk, values bit for bit."""
    rng = np.random.default_rng(len(values) + 7)
    for c in (300, 1000, 4099):
        x = _select_rows(rng, (9, c), values, inf_share=0.05, nan_share=0.01)
        if values == "nan":
            x[0, 500 % c] = np.nan
        for k in (1, 3, 8, 16, 17, 40):
            v, i = fl.topk(x, k)
            rv, ri = ref.topk(x, k)
            ctx = f"topk c={c} k={k} {values}"
            np.testing.assert_array_equal(i, ri, err_msg=ctx)
            np.testing.assert_array_equal(v.view(np.uint32), np.asarray(rv, np.float32).view(np.uint32), err_msg=ctx)


@pytest.mark.parametrize("values", ["normal", "ties", "infinities", "nan"])
def test_topk_small_classes_every_k(values, isa):
    """Few classes (up to 256) and k <= 8 go 16 rows at a time through the SIMD lanes: every k,
    the order of ties (-0 and +0 included), infinities, NaN (those tiles go row by row), partial
    tiles and other layouts, values bit for bit; predict's tiles (up to 96 classes) too."""
    rng = np.random.default_rng(len(values))
    for c in (1, 2, 3, 5, 10, 17, 64, 65, 96, 97, 256, 257):
        x = _select_rows(rng, (37, c), values, inf_share=0.1, nan_share=0.05)
        for k in range(1, min(c, 8) + 1):
            for desc, xx, axis in (("c", x, -1), ("fortran", np.asfortranarray(x), -1),
                                   ("reversed", x[::-1], -1), ("class axis 0", np.ascontiguousarray(x.T), 0)):
                if k == 1:
                    np.testing.assert_array_equal(fl.predict(xx, axis=axis), ref.predict(xx, axis=axis),
                                                  err_msg=f"predict c={c} {values} {desc}")
                v, i = fl.topk(xx, k, axis=axis)
                rv, ri = ref.topk(xx, k, axis=axis)
                ctx = f"topk c={c} k={k} {values} {desc}"
                np.testing.assert_array_equal(i, ri, err_msg=ctx)
                np.testing.assert_array_equal(v.view(np.uint32), np.asarray(rv, np.float32).view(np.uint32), err_msg=ctx)


def test_documented_values():
    assert abs(float(fl.sigmoid(1.2)) - 0.7685247834990175) < 1e-15
    np.testing.assert_allclose(fl.softmax([2.5, 0.3, -1.2]), [0.88064861, 0.09757865, 0.02177274], rtol=1e-7)


@pytest.mark.parametrize("c", [1, 7, 33, 100, 1000])
def test_nan_anywhere_in_a_row(c, isa):
    """A NaN at any position of a row (the max pass's four-vector steps, its single vectors,
    its partial tail) makes the row's softmax family NaN, beside +-inf and large logits too."""
    positions = range(c) if c <= 100 else [0, 1, 63, 64, 500, 991, 992, 999]
    for fill in (0.0, np.inf, -np.inf, 1e30):
        x = np.full((len(positions), c), 2.0, np.float32)
        x[:, c // 2] = fill
        for r, k in enumerate(positions):
            x[r, k] = np.nan
        for f in (fl.logsumexp, fl.entropy, fl.softmax, fl.log_softmax):
            got = f(x, axis=-1)
            assert np.isnan(got).all(), (f.__name__, c, fill, np.argwhere(~np.isnan(got))[:3])
        assert not np.isnan(fl.logsumexp(np.nan_to_num(x, nan=1.0), axis=-1)).any()


def test_special_values_follow_pytorch():
    neg = np.full(3, -np.inf)
    assert fl.logsumexp(neg) == -np.inf
    assert np.isnan(fl.log_softmax(neg)).all() and np.isnan(fl.softmax(neg)).all()
    assert fl.logsumexp([np.inf, 1.0]) == np.inf
    assert fl.logsumexp(np.zeros(0)) == -np.inf
    assert fl.logsumexp(np.zeros((2, 0)), axis=-1).tolist() == [-np.inf, -np.inf]
    assert np.isnan(fl.logsumexp([np.nan, 1.0]))
    assert fl.predict([1.0, np.nan, np.nan, 5.0]) == 1
    assert fl.predict([3.0, 3.0, 1.0]) == 0
    assert fl.predict_binary(np.nan) == False  # noqa: E712
    assert float(fl.log_sigmoid(-1e4)) == -1e4 and float(fl.log_sigmoid(1e4)) == 0.0
    assert float(fl.sigmoid(np.float32(-1e4))) == 0.0 and float(fl.sigmoid(np.inf)) == 1.0


def test_logsumexp_where_max_and_log_sum_cancel():
    """logsumexp near 0 with a max that is not: float32 rows are redone in double, float64 rows
    in double-double, so both keep 4 ULP where the max and log(sum) cancel."""
    rng = np.random.default_rng(11)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((4000, 3)).astype(dtype) - np.float32(np.log(3.0))
        want = ref.exact(ref.logsumexp, x, axis=-1)
        assert_ulp_close(fl.logsumexp(x), want, 4, dtype, f"cancelling logsumexp {np.dtype(dtype)}",
                         inputs={"row": x})
    # exactly log(2) - fl(log 2): the exact oracle must resolve it (long double alone cannot)
    x = np.array([-np.log(2.0), -np.log(2.0)])
    want = ref.exact(ref.logsumexp, x)
    assert_ulp_close(np.float64(2.319046813846299558e-17), want, 0.5, np.float64, "oracle: log 2 pair")
    assert_ulp_close(fl.logsumexp(x), want, 4, np.float64, "log 2 pair")


def test_row_paths_of_the_softmax_family_keep_4_ulp(isa):
    """Rows on each side of every path choice of the float32 row sums: logsumexp's cheaper first
    try (kept only where its error bound is under 3 ULP of the result: sn ln 2 + log T where
    |logsumexp| >= 17/3, the split sum n_eq + rest of peaked rows below that) and its redo, the exact
    reduction of rows whose max is within 64 of zero and the TwoSum rows beyond, rows with a
    logit more than 86 below the max, ties with the max in the last partial vector."""
    rng = np.random.default_rng(19)
    rows = []
    for c in (37, 1000, 4099):
        for centre in (-30.0, -12.0, -6.0, -3.0, -1.0, 0.0, 1.0, 3.0, 6.0, 12.0, 63.9, 64.1, -63.9, -64.1):
            x = rng.standard_normal(c).astype(np.float32) * np.float32(rng.choice([0.1, 1.0, 3.0]))
            x += np.float32(centre - np.log(c))  # logsumexp about `centre`, the max about it too
            rows.append(x)
        far = rng.standard_normal(c).astype(np.float32)
        far[::7] -= np.float32(100.0)  # some logits more than 86 below the max
        rows.append(far)
        tie = rng.standard_normal(c).astype(np.float32)
        tie[-1] = tie[-2] = tie.max() + np.float32(1.0)  # two maxima, the last in the tail
        rows.append(tie)
        for top in (0.5, 2.0, 5.0, 6.0, -4.0):
            peaked = rng.standard_normal(c).astype(np.float32) * np.float32(0.5) - np.float32(22.0 - top)
            peaked[rng.integers(c)] = np.float32(top)  # logsumexp about top, most of it the max's 1
            rows.append(peaked)
    for x in rows:
        what = f"C={x.size}, max {x.max():.3g}"
        for name in ("logsumexp", "softmax", "log_softmax", "entropy"):
            assert_ulp_close(getattr(fl, name)(x), ref.exact(getattr(ref, name), x), 4, np.float32,
                             f"{name} {what}", inputs={"row": x})


def test_long_rows_logsumexp_and_entropy_in_one_read(isa):
    """Float32 rows longer than a block (1024) take logsumexp's first try and the entropy's sums
    in one read, block by block against the running max: a max that rises in a later block (the
    sums so far and the old max's ties rescaled), ties spread over blocks, a peaked row whose
    max comes late (an entropy near 1e-9 after the rescaling), leading blocks of -inf, masked
    blocks, and the rows handed to the two-pass path (a logit in the gap, a max past 64 after
    in-range blocks, a NaN or an infinity in a later block)."""
    rng = np.random.default_rng(23)
    rows = []
    for c in (1025, 2048, 3 * 1024 + 5):
        base = rng.standard_normal(c).astype(np.float32) * np.float32(2.0)
        rising = base.copy()
        rising[:1024] -= np.float32(12.0)
        rising[5] = rising[700] = rising[:1024].max() + np.float32(0.5)   # ties at the first max
        rising[-1] += np.float32(9.0)                                  # the max in the last block
        rows.append(rising)
        ties = base.copy()
        ties[[3, 1500 % c, c - 1]] = base.max() + np.float32(1.0)      # ties in three blocks
        rows.append(ties)
        lead = base.copy()
        lead[:1024] = -np.inf                                          # a first block of -inf
        rows.append(lead)
        masked = base.copy()
        masked[::3] = -np.inf                                          # every block masked
        rows.append(masked)
        gap = base.copy()
        gap[-2] = base.max() - np.float32(95.0)                        # a logit in the gap
        rows.append(gap)
        past = base.copy()
        past[-1] = np.float32(80.0)                                    # a max past 64, late
        rows.append(past)
        low = base - np.float32(70.0)                                  # every max below -64
        rows.append(low)
        peaked = base * np.float32(0.3) - np.float32(25.0)
        peaked[c // 2] = np.float32(1.5)                               # |logsumexp| < 17/3, peaked
        rows.append(peaked)
        late = base * np.float32(0.5)
        late[-3] = np.float32(30.0)                                    # entropy about 1e-9
        rows.append(late)
    for x in rows:
        assert_ulp_close(fl.logsumexp(x), ref.exact(ref.logsumexp, x), 4, np.float32,
                         f"long-row logsumexp C={x.size}, max {x.max():.3g}", inputs={"row": x})
        assert_ulp_close(fl.entropy(x), ref.exact(ref.entropy, x), 4, np.float32,
                         f"long-row entropy C={x.size}, max {x.max():.3g}", inputs={"row": x})
    x = rng.standard_normal((3, 2500)).astype(np.float32)
    x[0, 2400], x[1, 1100], x[2, 2499] = np.nan, np.inf, -np.inf
    got = fl.logsumexp(x, axis=-1)
    assert np.isnan(got[0]) and got[1] == np.inf and np.isfinite(got[2])
    ent = fl.entropy(x, axis=-1)
    assert np.isnan(ent[0]) and np.isnan(ent[1])
    assert_ulp_close(ent[2], ref.exact(ref.entropy, x[2]), 4, np.float32, "long-row entropy, -inf last")
    assert fl.logsumexp(np.full(3000, -np.inf, np.float32)) == -np.inf


def test_peaked_rows_keep_their_tiny_parts():
    """log(sum exp) of a row dominated by one class must keep the tiny rest (log1p)."""
    x = np.array([0.0, -40.0], dtype=np.float32)
    assert_ulp_close(fl.logsumexp(x), ref.exact(ref.logsumexp, x), 4, np.float32, "peaked lse")
    ls = fl.log_softmax(x)
    assert_ulp_close(ls[0], ref.exact(ref.log_softmax, x)[0], 4, np.float32, "peaked log_softmax")
    x64 = np.array([40.0, 0.0])
    assert_ulp_close(fl.entropy(x64), ref.exact(ref.entropy, x64), 4, np.float64, "peaked entropy")


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "sigmoid", "log_sigmoid"])
@pytest.mark.parametrize("out_dtype", ["float32", "float64", "float16", "bfloat16"])
def test_dtype_argument(name, out_dtype):
    """dtype= float64 computes a float32 input in float64: held to float64's 4 ULP."""
    x = np.random.default_rng(1).standard_normal((7, 33)).astype(np.float32)
    got = getattr(fl, name)(x, dtype=as_dtype(out_dtype))
    want = ref.exact(getattr(ref, name), x)
    assert got.dtype == as_dtype(out_dtype)
    assert_ulp_close(got, want, _ulp_bound(out_dtype, 4), as_dtype(out_dtype),
                     {"function": name, "dtype": out_dtype}, inputs={"x": x})


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "sigmoid", "log_sigmoid"])
def test_out_argument_in_place_and_views(name):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 40)) * 5
    fresh = getattr(fl, name)(x)
    assert_ulp_close(fresh, ref.exact(getattr(ref, name), x), 4, np.float64, name)
    y = x.copy()
    res = getattr(fl, name)(y, out=y)  # in place
    assert res is y
    np.testing.assert_array_equal(y, fresh)
    big = np.zeros((12, 80))
    view = big[::2, ::2]
    res = getattr(fl, name)(x, out=view)
    assert res is view
    np.testing.assert_array_equal(view, fresh)
    assert (big[1::2] == 0).all() and (big[:, 1::2] == 0).all()
    # an out that overlaps the input shifted by one row goes through a temporary
    z = np.concatenate([x, np.zeros((1, 40))])
    got = getattr(fl, name)(z[:-1], out=z[1:])
    np.testing.assert_array_equal(got, fresh)


def test_inputs_are_never_modified():
    x = np.random.default_rng(3).standard_normal((9, 17)).astype(np.float32)
    before = x.tobytes()
    for name in FUNCS:
        getattr(fl, name)(x)
    fl.predict(x), fl.topk(x, 3), fl.predict_binary(x)
    assert x.tobytes() == before


def test_pytorch_layout_axis_1_runs_in_place():
    x = np.random.default_rng(4).standard_normal((3, 5, 4, 6))
    for name in ("softmax", "log_softmax", "logsumexp", "entropy"):
        assert_ulp_close(getattr(fl, name)(x, axis=1), ref.exact(getattr(ref, name), x, axis=1), 4, np.float64, name)
    np.testing.assert_array_equal(fl.predict(x, axis=1), np.argmax(x, axis=1))


def test_reductions_shapes_and_scalars():
    x = np.random.default_rng(5).standard_normal((2, 3, 4))
    assert fl.logsumexp(x, axis=1).shape == (2, 4)
    assert fl.logsumexp(x, axis=1, keepdims=True).shape == (2, 1, 4)
    assert isinstance(fl.logsumexp(x[0, 0]), np.float64)
    assert isinstance(fl.entropy(x[0, 0].astype(np.float32)), np.float32)
    assert isinstance(fl.predict(x[0, 0]), np.int64)
    assert isinstance(fl.sigmoid(np.float32(0.5)), np.float32)
    assert isinstance(fl.predict_binary(0.5), np.bool_)
    v, i = fl.topk(x, 2, axis=0)
    assert v.shape == i.shape == (2, 3, 4)


def test_integer_and_bool_logits_become_float64():
    assert fl.softmax([1, 2, 3]).dtype == np.float64
    assert fl.sigmoid(np.array([True, False])).dtype == np.float64


def test_unmergeable_layout_is_handled():
    base = np.random.default_rng(6).standard_normal((4, 6, 5, 8))
    x = base[:, ::2, :, ::3]  # outer dims cannot merge into two groups
    assert_ulp_close(fl.softmax(x, axis=2), ref.exact(ref.softmax, x, axis=2), 4, np.float64, "softmax")
    out = np.empty((4, 3, 5, 3))[:, :, :, :]
    res = fl.log_softmax(x, axis=2, out=np.moveaxis(np.empty((5, 4, 3, 3)), 0, 2))
    assert_ulp_close(res, ref.exact(ref.log_softmax, x, axis=2), 4, np.float64, "log_softmax")
    assert out.shape == (4, 3, 5, 3)


# ---------------------------------------------------------------- errors (API section 1)

@pytest.mark.parametrize("bad, exc", [
    (np.array([1 + 2j, 3j]), TypeError),
    (np.array(["a", "b"]), TypeError),
    (np.array([object(), object()], dtype=object), TypeError),
    (np.zeros(3, dtype=[("a", "f4")]), TypeError),
    (np.zeros(3, dtype=np.longdouble), TypeError),
    ("not numbers", TypeError),
])
def test_bad_dtypes(bad, exc):
    for f in (fl.softmax, fl.sigmoid, fl.logsumexp, fl.predict):
        with pytest.raises(exc, match="x"):
            f(bad)


def test_bad_arguments():
    x = np.zeros((3, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="0-d"):
        fl.softmax(np.float32(1.0))
    with pytest.raises(np.exceptions.AxisError, match="axis"):
        fl.softmax(x, axis=2)
    with pytest.raises(TypeError, match="axis"):
        fl.softmax(x, axis=1.0)
    with pytest.raises(ValueError, match=r"out: expected shape \(3, 4\), got \(4, 3\)"):
        fl.softmax(x, out=np.zeros((4, 3), dtype=np.float32))
    with pytest.raises(TypeError, match="out: expected dtype float64"):
        fl.softmax(x, dtype=np.float64, out=np.zeros((3, 4), dtype=np.float32))
    ro = np.zeros((3, 4), dtype=np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        fl.softmax(x, out=ro)
    with pytest.raises(TypeError, match="out"):
        fl.softmax(x, out=[[0.0] * 4] * 3)
    with pytest.raises(TypeError, match="dtype"):
        fl.softmax(x, dtype=np.int32)
    with pytest.raises(TypeError, match="out"):
        fl.softmax(x, out=np.zeros((3, 4), dtype=np.int32))
    for t in (0.0, 1.0, float("nan"), -0.5, 2.0):
        with pytest.raises(ValueError, match="threshold"):
            fl.predict_binary(x, t)
    with pytest.raises(TypeError, match="threshold"):
        fl.predict_binary(x, "0.5")
    for k in (0, 5, -1):
        with pytest.raises(ValueError, match="k: expected 1 <= k <= 4"):
            fl.topk(x, k)
    with pytest.raises(TypeError, match="k"):
        fl.topk(x, 2.0)
    with pytest.raises(ValueError, match="empty"):
        fl.predict(np.zeros((3, 0)))


class _FakeGpuTensor:
    def __dlpack_device__(self):
        return (2, 0)  # kDLCUDA

    def __dlpack__(self, **kwargs):
        raise AssertionError("must not be exported")


def test_gpu_tensor_is_refused():
    with pytest.raises(TypeError, match="CPU"):
        fl.softmax(_FakeGpuTensor())


# ---------------------------------------------------------------- PyTorch

def test_torch_inputs_read_without_copy():
    torch = pytest.importorskip("torch")
    from fastlogits._input import as_logits

    t = torch.randn(5, 7, requires_grad=True)
    a = as_logits(t)
    assert np.shares_memory(a, t.detach().numpy())
    np.testing.assert_allclose(fl.softmax(t), torch.softmax(t, -1).detach().numpy(), rtol=1e-6)
    tb = torch.randn(5, 7).to(torch.bfloat16)
    got = fl.softmax(tb)
    assert got.dtype == as_dtype("bfloat16")
    want = torch.softmax(tb.float(), -1).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(got.astype(np.float32), want)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_parity_with_pytorch(dtype):
    torch = pytest.importorskip("torch")
    rtol = 1e-5 if dtype == "float32" else 1e-12
    torch_fns = {
        "sigmoid": lambda t, ax: torch.sigmoid(t),
        "log_sigmoid": lambda t, ax: torch.nn.functional.logsigmoid(t),
        "softmax": lambda t, ax: torch.softmax(t, ax),
        "log_softmax": lambda t, ax: torch.log_softmax(t, ax),
        "logsumexp": lambda t, ax: torch.logsumexp(t, ax),
    }
    eps = np.finfo(dtype).eps
    for desc, x, axis in CASES[dtype]:
        if x.ndim == 0 or x.size == 0:
            continue
        t = torch.from_numpy(np.ascontiguousarray(x).astype(x.dtype.newbyteorder("=")))
        # PyTorch's own error is a few eps of the row's magnitude (it does not carry x - max
        # with its rounding error), so the absolute slack scales with the largest finite logit
        # of the row; accuracy proper is checked against the exact reference above.
        xr = np.moveaxis(np.where(np.isfinite(x), np.abs(x), 0).astype(np.float64), axis, -1)
        row_scale = np.max(xr, axis=-1, initial=0.0) + 1.0
        for name, tf in torch_fns.items():
            elementwise = FUNCS[name][0] == "elementwise"
            got = getattr(fl, name)(x) if elementwise else getattr(fl, name)(x, axis=axis)
            want = tf(t, axis).numpy()
            if elementwise:
                atol = 8 * eps
            elif name == "logsumexp":
                atol = 8 * eps * row_scale
            else:
                atol = np.expand_dims(8 * eps * row_scale, axis)
            with np.errstate(invalid="ignore"):  # inf - inf where both are inf
                ok = np.isclose(got, want, rtol=rtol, atol=0, equal_nan=True) | (np.abs(got - want) <= atol)
            assert ok.all(), f"{name} {desc}: worst {got[~ok][:5]} vs {want[~ok][:5]}"
        np.testing.assert_array_equal(fl.predict(x, axis=axis), torch.argmax(t, axis).numpy(), err_msg=desc)


# ---------------------------------------------------------------- properties (hypothesis)

from hypothesis import example, given, settings, strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

_finite = st.floats(-1e4, 1e4, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=9), elements=_finite))
def test_softmax_properties(x):
    p = fl.softmax(x)
    # each probability within 4 float32 ULP (4 * 2**-23 relative at most): so is their sum
    np.testing.assert_allclose(p.astype(np.float64).sum(axis=-1), 1.0, rtol=4 * 2.0**-23)
    assert (p >= 0).all() and (p <= 1).all()
    # the predicted class has the largest probability (rounding may tie it with others)
    at_pred = np.take_along_axis(p, fl.predict(x)[..., None], axis=-1)[..., 0]
    np.testing.assert_array_equal(at_pred, p.max(axis=-1))
    # x + 3 is exact in float64: the shifted log_softmax is the same exact value
    x64 = x.astype(np.float64)
    assert_ulp_close(fl.log_softmax(x64 + 3.0), ref.exact(ref.log_softmax, x64), 4, np.float64, "shifted")
    assert_ulp_close(fl.logsumexp(x64), ref.exact(ref.logsumexp, x64), 4, np.float64, "logsumexp",
                     inputs={"row": x64})


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=2, max_side=12),
                  elements=st.floats(-800, 800, allow_nan=False)))
@example(np.array([710.25195312]))  # log_sigmoid subnormal: 0.45 ULP, failed a relative 4e-16
def test_sigmoid_properties(x):
    s = fl.sigmoid(x)
    np.testing.assert_allclose(s + fl.sigmoid(-x), 1.0, rtol=1e-15, atol=1e-15)
    # 1.8 ULP: at least as strict as a relative 4e-16 for normal results, and measured in the
    # output's units where log_sigmoid(x) = -exp(-x) is subnormal (x in (708, 745))
    assert_ulp_close(fl.log_sigmoid(x), ref.exact(ref.log_sigmoid, x), 1.8, np.float64,
                     context="log_sigmoid", inputs={"x": x})
