"""sequence_scores: parity with the exact oracle (reference.exact) and with PyTorch's
log_softmax + gather, the greedy flag on ties and special rows, layouts, dtypes, every SIMD
path, thread counts, Dask chunkings, errors.

Tolerance of ``logprob``: a row's log-probability is held to the cross-entropy loss's bound
(relative 1e-5 for the float32 compute type, used by float32, float16 and bfloat16 logits,
whose values are exact in float32; 1e-12 for float64), so a sequence's sum is within that
relative bound of the sum of its rows' absolute values. ``count`` and ``greedy`` are exact.
"""
import numpy as np
import pytest

import fastlogits as fl
from fastlogits import _core
from fastlogits import reference as ref

from arrays import as_dtype, assert_rel_close

RTOL = {"float32": 1e-5, "float16": 1e-5, "bfloat16": 1e-5, "float64": 1e-12}


def _as_float(x):
    """float16 and bfloat16 logits as float32 (exactly) for the oracle."""
    x = np.asarray(x)
    return x.astype(np.float32) if x.dtype.kind == "V" or x.dtype == np.float16 else x


def _exact(x):
    return _as_float(x).astype(np.longdouble)


def _row_scale(x, tokens, axis, ignore_index, temperature):
    """Per sequence, the sum of the scored rows' |log-probability| (long double)."""
    v = np.moveaxis(_exact(x), axis, -1) / np.longdouble(temperature)
    tok = np.asarray(tokens)
    scored = tok != ignore_index
    with np.errstate(invalid="ignore", over="ignore"):
        lp = np.take_along_axis(ref.log_softmax(v, axis=-1), np.where(scored, tok, 0)[..., None], -1)[..., 0]
    return np.sum(np.where(scored, np.abs(lp), 0), axis=1)


def _check(x, tokens, *, axis=-1, ignore_index=-100, temperature=1.0, dname="float32", context=""):
    r = fl.sequence_scores(x, tokens, axis=axis, ignore_index=ignore_index, temperature=temperature)
    e = ref.exact(ref.sequence_scores, _as_float(x), tokens, axis=axis, ignore_index=ignore_index,
                  temperature=temperature)
    assert r["logprob"].dtype == np.float64 and r["count"].dtype == np.int64 and r["greedy"].dtype == np.bool_
    scale = _row_scale(x, tokens, axis, ignore_index, temperature)
    with np.errstate(invalid="ignore"):
        atol = np.where(np.isfinite(scale), scale, 0) * RTOL[dname] + 1e-300
    assert_rel_close(r["logprob"], e["logprob"].astype(np.float64), 0.0, atol=atol, context=context)
    np.testing.assert_array_equal(r["count"], e["count"], err_msg=context)
    np.testing.assert_array_equal(r["greedy"], e["greedy"], err_msg=context)
    return r


def _logits(rng, shape, dname, spread=4.0):
    return (rng.standard_normal(shape) * spread).astype(as_dtype(dname))


def _tokens(rng, B, T, V, ignore_frac=0.2, ignore_index=-100):
    t = rng.integers(0, V, (B, T))
    return np.where(rng.random((B, T)) < ignore_frac, ignore_index, t)


@pytest.mark.parametrize("dname", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("temperature", [1.0, 0.7, 2.5])
def test_parity_with_reference(dname, temperature):
    rng = np.random.default_rng([1, len(dname), int(temperature * 10)])
    for B, T, V in [(3, 7, 5), (2, 9, 1), (4, 5, 1500), (2, 3, 5000), (1, 1, 70000)]:
        x = _logits(rng, (B, T, V), dname)
        t = _tokens(rng, B, T, V)
        # greedy sequences: some rows take their argmax as the token
        t[0] = np.where(t[0] >= 0, np.argmax(x[0].astype(np.float32), axis=-1), t[0])
        _check(x, t, temperature=temperature, dname=dname, context=f"{dname} {B}x{T}x{V} T={temperature}")


@pytest.mark.parametrize("dname", ["float32", "float64", "bfloat16"])
def test_layouts(dname):
    """axis=1 (B, V, T), any axis, Fortran order, strided and reversed views, int32 tokens."""
    rng = np.random.default_rng(2)
    B, T, V = 3, 6, 2100
    x = _logits(rng, (B, T, V), dname)
    t = _tokens(rng, B, T, V)
    base = _check(x, t, dname=dname, context="C order")
    cases = {
        "axis=1": (np.ascontiguousarray(np.moveaxis(x, 2, 1)), 1),
        "axis=0": (np.ascontiguousarray(np.moveaxis(x, 2, 0)), 0),
        "axis=1 view": (np.moveaxis(x, 2, 1), 1),
        "fortran": (np.asfortranarray(x), -1),
    }
    for name, (xv, ax) in cases.items():
        r = _check(xv, t, axis=ax, dname=dname, context=name)
        # the same rows through the same arithmetic: bitwise the C-order result
        np.testing.assert_array_equal(r["logprob"], base["logprob"], err_msg=name)
    big = _logits(rng, (2 * B, 2 * T, V + 3), dname)
    view = big[::-2, 1::2, 3:]
    _check(view, t, dname=dname, context="strided, reversed")
    _check(x, t.astype(np.int32), dname=dname, context="int32 tokens")
    _check(x, np.where(t < 0, 2**31 + 5, t).astype(np.uint64), ignore_index=2**31 + 5, dname=dname,
           context="uint64 tokens, large ignore_index")


def test_greedy_ties_and_special_rows():
    """The argmax in predict's order: ties to the lowest index (also -0.0 against +0.0, and
    ties across the kernel's 1024-element blocks), NaN largest; rows without a softmax give a
    nan log-probability."""
    V = 3000
    rows, toks = [], []

    def add(row, tok):
        rows.append(np.asarray(row, np.float32))
        toks.append(tok)

    base = np.linspace(-5, 0, V).astype(np.float32)
    r = base.copy(); r[100] = r[2500] = 9.0
    add(r, 100); add(r, 2500)                                   # tie across blocks
    r = base.copy(); r[10] = r[11] = 9.0
    add(r, 10); add(r, 11)                                      # tie in a block
    r = np.full(V, -1.0, np.float32); r[5] = -0.0; r[7] = 0.0
    add(r, 7); add(r, 5)                                        # -0.0 == +0.0
    r = base.copy(); r[2000] = np.nan
    add(r, 2000); add(r, V - 1)                                 # nan after the first block
    r = base.copy(); r[50] = r[60] = np.nan
    add(r, 60); add(r, 50)
    r = base.copy(); r[1500] = np.inf
    add(r, 1500); add(r, 0)
    r = np.full(V, -np.inf, np.float32)
    add(r, 0); add(r, 3)                                        # only -inf
    r = base.copy(); r[0] = -np.inf
    add(r, 0); add(r, V - 1)                                    # a -inf token, the max
    x = np.stack(rows)[:, None, :]
    t = np.array(toks)[:, None]
    for dname in ("float32", "float64", "bfloat16", "float16"):
        xd = x.astype(as_dtype(dname))
        r = _check(xd, t, dname=dname, context=dname)
        want = [True, False, True, False, False, True, True, False, False, True, True, False, True, False,
                False, True]
        assert r["greedy"].tolist() == want, dname
        assert np.isnan(r["logprob"][6:14]).all() and r["logprob"][14] == -np.inf
    # the same rows under a temperature: ties that rounding could make do not count
    _check(x, t, temperature=3.0, context="tempered")
    # shifts (x - m) / T that round to 0: a tie of the tempered row, not of the logits
    close = np.array([[[1.0, np.nextafter(np.float32(1.0), np.float32(2.0))]]] * 2, np.float32)
    r = fl.sequence_scores(close, np.array([[0], [1]]), temperature=1e300)
    assert r["greedy"].tolist() == [False, True]
    np.testing.assert_allclose(r["logprob"], [np.log(0.5)] * 2, rtol=1e-7)


def test_sequences_without_scored_tokens():
    x = np.zeros((3, 4, 5), np.float32)
    t = np.full((3, 4), -100)
    t[1, 2] = 3
    r = fl.sequence_scores(x, t)
    assert r["logprob"][0] == 0.0 and r["logprob"][2] == 0.0 and not np.signbit(r["logprob"][0])
    np.testing.assert_allclose(r["logprob"][1], -np.log(5.0), rtol=1e-7)
    assert r["count"].tolist() == [0, 1, 0] and r["greedy"].tolist() == [True, False, True]  # ties: class 0
    for shape in [(0, 4, 5), (3, 0, 5)]:
        r = fl.sequence_scores(np.zeros(shape, np.float32), np.zeros(shape[:2], np.int64))
        assert r["logprob"].shape == r["count"].shape == r["greedy"].shape == (shape[0],)
        assert (r["logprob"] == 0).all() and (r["count"] == 0).all() and r["greedy"].all()
    r = fl.sequence_scores(np.zeros((2, 3, 0), np.float32), np.full((2, 3), -100))
    assert r["count"].tolist() == [0, 0]


def test_errors():
    x = np.zeros((2, 3, 4), np.float32)
    t = np.zeros((2, 3), np.int64)
    t[1, 2] = 4
    with pytest.raises(IndexError, match=r"tokens: token 4 at position \(1, 2\) is out of range \[0, 4\)"):
        fl.sequence_scores(x, t)
    t[1, 2] = -1
    with pytest.raises(IndexError, match=r"token -1 at position \(1, 2\)"):
        fl.sequence_scores(x, t)
    assert fl.sequence_scores(x, t, ignore_index=-1)["count"].tolist() == [3, 2]
    with pytest.raises(IndexError, match=r"position \(0, 0\)"):
        fl.sequence_scores(x, np.array([[2**63 + 1, 0, 0], [0, 0, 0]], np.uint64))
    with pytest.raises(ValueError, match="logits: expected a 3-d array"):
        fl.sequence_scores(x[0], t[0])
    with pytest.raises(ValueError, match=r"tokens: expected the logits' shape \(2, 3, 4\) without axis 2"):
        fl.sequence_scores(x, t.T)
    with pytest.raises(TypeError, match="tokens: expected integer token ids"):
        fl.sequence_scores(x, t.astype(np.float32))
    with pytest.raises(TypeError, match="tokens: expected integer token ids"):
        fl.sequence_scores(x, t > 0)
    for bad in (0.0, -1.0, np.inf, np.nan):
        with pytest.raises(ValueError, match="temperature"):
            fl.sequence_scores(x, np.zeros((2, 3), np.int64), temperature=bad)
    with pytest.raises(TypeError, match="temperature"):
        fl.sequence_scores(x, np.zeros((2, 3), np.int64), temperature="2")
    with pytest.raises(TypeError, match="ignore_index"):
        fl.sequence_scores(x, np.zeros((2, 3), np.int64), ignore_index=1.0)
    with pytest.raises(np.exceptions.AxisError):
        fl.sequence_scores(x, np.zeros((2, 3), np.int64), axis=3)
    with pytest.raises(TypeError, match="logits"):
        fl.sequence_scores(x.astype(np.complex64), np.zeros((2, 3), np.int64))


def test_inputs_not_modified_and_read_only():
    rng = np.random.default_rng(3)
    x = _logits(rng, (2, 5, 300), "float32")
    t = _tokens(rng, 2, 5, 300)
    x0, t0 = x.copy(), t.copy()
    x.flags.writeable = False
    t.flags.writeable = False
    fl.sequence_scores(x, t, temperature=1.3)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(t, t0)


def test_every_isa_and_thread_count_bitwise():
    """Every SIMD path agrees with the reference, and a path's result is the same bitwise for
    every thread count (the per-sequence sums are order-independent; the stripes of rows cut
    sequences at different places)."""
    rng = np.random.default_rng(4)
    B, T, V = 5, 13, 1100
    x = _logits(rng, (B, T, V), "float32")
    t = _tokens(rng, B, T, V)
    before, threads = _core.isa_name(), fl.get_num_threads()
    try:
        for isa in ("scalar", "avx2", "avx512", "neon"):
            if _core.isa_select(isa) != 0:
                continue
            for dname in ("float32", "bfloat16", "float64"):
                xd = x.astype(as_dtype(dname))
                base = _check(xd, t, dname=dname, context=f"{isa} {dname}")
                for n in (1, 2, 3, 7):
                    fl.set_num_threads(n)
                    r = fl.sequence_scores(xd, t)
                    assert r["logprob"].tobytes() == base["logprob"].tobytes(), (isa, dname, n)
                fl.set_num_threads(threads)
    finally:
        _core.isa_select(before)
        fl.set_num_threads(threads)


def test_matches_torch_log_softmax_gather():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    B, T, V = 3, 8, 2000
    x = torch.from_numpy(rng.standard_normal((B, T, V)).astype(np.float32) * 3)
    labels = torch.from_numpy(_tokens(rng, B, T, V))
    lp = torch.log_softmax(x.double(), dim=-1)
    mask = labels != -100
    picked = lp.gather(-1, labels.clamp(min=0)[..., None])[..., 0] * mask
    greedy = ((lp.argmax(-1) == labels) | ~mask).all(-1)
    r = fl.sequence_scores(x, labels)
    assert_rel_close(r["logprob"], picked.sum(1).numpy(), 1e-6)
    np.testing.assert_array_equal(r["count"], mask.sum(1).numpy())
    np.testing.assert_array_equal(r["greedy"], greedy.numpy())
    # bfloat16 tensors are read in place through DLPack; PyTorch's (B, V, T) layout is axis=1
    xb = x.to(torch.bfloat16)
    lpb = torch.log_softmax(xb.double(), dim=-1)
    want = (lpb.gather(-1, labels.clamp(min=0)[..., None])[..., 0] * mask).sum(1).numpy()
    assert_rel_close(fl.sequence_scores(xb, labels)["logprob"], want, 1e-5)
    assert_rel_close(fl.sequence_scores(xb.transpose(1, 2), labels, axis=1)["logprob"], want, 1e-5)
    # a grad-tracking tensor is read, not modified
    xg = x.clone().requires_grad_(True)
    assert_rel_close(fl.sequence_scores(xg, labels)["logprob"], picked.sum(1).numpy(), 1e-6)


def test_dask_any_chunking_bitwise():
    da = pytest.importorskip("dask.array")
    import fastlogits.dask as fld

    rng = np.random.default_rng(6)
    B, T, V = 5, 11, 700
    x = _logits(rng, (B, T, V), "float32")
    t = _tokens(rng, B, T, V)
    want = fl.sequence_scores(x, t, temperature=1.5)
    for chunks in [(1, 1, V), (2, 4, V), (5, 11, V), (3, 2, V)]:
        r = fld.sequence_scores(da.from_array(x, chunks=chunks), da.from_array(t, chunks=chunks[:2]),
                                temperature=1.5)
        assert r["logprob"].tobytes() == want["logprob"].tobytes(), chunks
        np.testing.assert_array_equal(r["count"], want["count"])
        np.testing.assert_array_equal(r["greedy"], want["greedy"])
    xt = np.ascontiguousarray(np.moveaxis(x, 2, 1))
    r = fld.sequence_scores(da.from_array(xt, chunks=(2, V, 3)), t, axis=1, temperature=1.5)
    assert r["logprob"].tobytes() == want["logprob"].tobytes()
    bad = t.copy()
    bad[3, 7] = V
    with pytest.raises(IndexError, match=r"position \(3, 7\)"):
        fld.sequence_scores(da.from_array(x, chunks=(2, 3, V)), bad)
    with pytest.raises(ValueError, match="single chunk"):
        fld.sequence_scores(da.from_array(x, chunks=(2, 3, 100)), t)
