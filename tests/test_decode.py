"""filter_logits and sample (API section 8) against the NumPy reference, transformers' warpers
and the filtered softmax; the Philox generator against its published known answers; tokens
bitwise the same for every thread count, SIMD path and batch order.

The reference (fastlogits.reference) sorts each row and reads every filter off the sorted row
in float64; the kernels never sort (fl_decode_select.h). Configurations are chosen to reach
every path of the kernels: top-k on the candidate list (k' <= 1024) and through the radix
select (k' > 1024), top-p and min-p resolved on the speculative list (nucleus <= 128) and on
the general path, pure sampling, and float64 rows.
"""
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import fastlogits as fl
from fastlogits import _core
from fastlogits import reference as ref

from arrays import assert_ulp_close, bfloat16
from conftest import ISAS

# Random123's known-answer vectors (kat_vectors): counter, key, then the output, for
# Philox-4x32 with 7 and 10 rounds
KAT = [
    (10, (0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    (10, (0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (10, (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
    (7, (0, 0, 0, 0), (0, 0), (0x5F6FB709, 0x0D893F64, 0x4F121F81, 0x4F730A48)),
    (7, (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0x4DFCCABA, 0x190A87F0, 0xC47362BA, 0xB6B5242A)),
]

# (name, settings): each reaches a different path of the kernels on the rows below
CONFIGS = [
    ("top_k", dict(top_k=50)),
    ("top_k ties of k", dict(top_k=3)),
    ("chain", dict(top_k=50, top_p=0.9, min_p=0.05, temperature=0.7)),
    ("top_p small nucleus", dict(top_p=0.5)),
    ("top_p large nucleus", dict(top_p=0.97)),
    ("min_p", dict(min_p=0.2, temperature=1.5)),
    ("min_p wide", dict(min_p=0.0005)),
    ("top_k large", dict(top_k=1500, top_p=0.95)),
    ("top_k large min_p", dict(top_k=1200, min_p=0.01)),
    ("keep", dict(top_p=0.0, min_tokens_to_keep=4)),
    ("keep min_p", dict(min_p=0.99, min_tokens_to_keep=3)),
    ("keep > 1024", dict(top_p=0.1, min_tokens_to_keep=1100)),
    ("temperature only", dict(temperature=0.8)),
    ("top_p 1 min_p 0", dict(top_p=1.0, min_p=0.0, top_k=10**9)),
]


def _rows(seed=0, n=12, c=3000, dtype=np.float32, scale=3.0):
    """Rows of logits: normal, peaked, flat, with ties, masked (-inf)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((max(n, 6), c)) * scale
    x[1] *= 0.05                                   # nearly flat: huge nuclei
    x[2, :10] += 12                                # peaked
    x[3] = np.round(x[3])                          # many ties
    x[4, rng.random(c) < 0.7] = -np.inf           # masked vocabulary
    x[5, :] = 1.0                                  # all tied
    x[5, 7] = 2.0
    return x[:n].astype(dtype)


# --------------------------------------------------------------------------- Philox

@pytest.mark.parametrize("rounds, ctr, key, want", KAT)
def test_reference_philox_known_answers(rounds, ctr, key, want):
    assert tuple(int(v) for v in ref.philox4x32(np.array(ctr), np.array(key), rounds)) == want


@pytest.mark.parametrize("rounds, ctr, key, want", [k for k in KAT if k[0] == 10])
def test_kernel_philox_known_answers(rounds, ctr, key, want):
    assert _core.philox4x32_10(ctr, key) == want


# --------------------------------------------------------------------------- filter_logits

@pytest.mark.parametrize("name, kw", CONFIGS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_filter_logits_equals_reference(name, kw, dtype, isa):
    x = _rows(dtype=np.dtype(dtype))
    got = fl.filter_logits(x, **kw)
    want = ref.filter_logits(x, **kw)
    assert got.dtype == x.dtype
    mism = np.isfinite(got) != np.isfinite(want)
    assert not mism.any(), f"{name}: kept sets differ at {np.argwhere(mism)[:5].tolist()}"
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_filter_logits_half_precision_in_place_reads(dtype):
    dt = bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    x = _rows(c=2000).astype(dt)
    for _, kw in CONFIGS:
        got = fl.filter_logits(x, **kw)
        assert got.dtype == dt
        # the tempered float32 values rounded back to the logits' dtype
        want = ref.filter_logits(x.astype(np.float32), **kw).astype(dt)
        np.testing.assert_array_equal(got.astype(np.float32), want.astype(np.float32))


def test_filter_logits_semantics_by_hand():
    # top-k keeps every tie of the k-th value
    assert fl.filter_logits([1.0, 3.0, 2.0, 2.0, 0.0], top_k=2).tolist() == [-np.inf, 3.0, 2.0, 2.0, -np.inf]
    # k >= C keeps all; min_tokens_to_keep raises k
    assert np.isfinite(fl.filter_logits([1.0, 3.0, 2.0], top_k=7)).all()
    assert np.isfinite(fl.filter_logits([1.0, 3.0, 2.0], top_k=1, min_tokens_to_keep=2)).sum() == 2
    # top-p: the smallest prefix whose mass reaches p; ties ranked by the lower index
    p = np.log([0.4, 0.2, 0.2, 0.2])
    assert np.isfinite(fl.filter_logits(p, top_p=0.55)).tolist() == [True, True, False, False]
    assert np.isfinite(fl.filter_logits(p, top_p=0.61)).tolist() == [True, True, True, False]
    assert np.isfinite(fl.filter_logits(p, top_p=0.4)).tolist() == [True, False, False, False]
    assert np.isfinite(fl.filter_logits(p[::-1].copy(), top_p=0.61)).tolist() == [True, True, False, True]
    # top_p = 0 keeps min_tokens_to_keep, top_p = 1 keeps everything (even zero mass)
    assert np.isfinite(fl.filter_logits(p, top_p=0.0, min_tokens_to_keep=2)).sum() == 2
    assert np.isfinite(fl.filter_logits([0.0, -200.0], top_p=1.0)).all()
    # min-p: probability >= min_p * the largest
    assert np.isfinite(fl.filter_logits(p, min_p=0.5)).tolist() == [True, True, True, True]
    assert np.isfinite(fl.filter_logits(p, min_p=0.51)).tolist() == [True, False, False, False]
    # kept values are the tempered ones; dropped ones -inf
    assert fl.filter_logits([2.0, 1.0, -3.0], temperature=2.0, top_k=2).tolist() == [1.0, 0.5, -np.inf]


def test_filter_logits_special_rows():
    x = np.array([[np.nan, 1.0, 2.0], [np.inf, 1.0, 2.0], [-np.inf] * 3, [-np.inf, 0.5, -np.inf]], dtype=np.float32)
    got = fl.filter_logits(x, top_p=0.9, top_k=2)
    assert np.isnan(got[0]).all() and np.isnan(got[1]).all()
    assert (got[2] == -np.inf).all()
    assert got[3].tolist() == [-np.inf, 0.5, -np.inf]


def test_filter_logits_per_row_settings_equal_one_call_per_row():
    x = _rows(seed=3, n=6, c=800)
    kw = dict(temperature=np.array([0.5, 1.0, 1.3, 2.0, 0.9, 1.0]), top_k=np.array([1, 5, 800, 50, 2000, 3]),
              top_p=np.array([0.9, 1.0, 0.3, 0.0, 0.8, 0.95]), min_p=np.array([0.0, 0.1, 0.0, 0.5, 0.01, 0.0]),
              min_tokens_to_keep=np.array([1, 2, 1, 3, 1, 1]))
    got = fl.filter_logits(x, **kw)
    for i in range(6):
        one = fl.filter_logits(x[i], **{k: v[i] for k, v in kw.items()})
        np.testing.assert_array_equal(got[i], one)
        np.testing.assert_array_equal(got[i], ref.filter_logits(x[i], **{k: v[i] for k, v in kw.items()}))


def test_filter_logits_layouts_out_and_in_place():
    x = _rows(seed=4, n=5, c=300)
    want = fl.filter_logits(x, top_k=20, top_p=0.8)
    np.testing.assert_array_equal(fl.filter_logits(np.ascontiguousarray(x.T), top_k=20, top_p=0.8, axis=0), want.T)
    np.testing.assert_array_equal(fl.filter_logits(np.asfortranarray(x), top_k=20, top_p=0.8), want)
    out = np.empty((5, 300), dtype=np.float64)
    fl.filter_logits(x, top_k=20, top_p=0.8, out=out)
    np.testing.assert_array_equal(out, want.astype(np.float64))
    y = x.copy()
    assert fl.filter_logits(y, top_k=20, top_p=0.8, out=y) is y
    np.testing.assert_array_equal(y, want)
    z = x.copy()
    fl.filter_logits(z[:, ::-1], top_k=20, top_p=0.8, out=z[:, ::-1])  # in place through a view
    reversed_rows = fl.filter_logits(np.ascontiguousarray(x[:, ::-1]), top_k=20, top_p=0.8)  # ties rank by index
    np.testing.assert_array_equal(z, reversed_rows[:, ::-1])


TRANSFORMER_CONFIGS = [
    dict(temperature=0.7, top_k=50, top_p=0.9, min_p=0.05),
    dict(top_k=10),
    dict(top_p=0.8),
    dict(top_p=0.95, min_tokens_to_keep=5),
    dict(min_p=0.1),
    dict(temperature=1.3, min_p=0.02, min_tokens_to_keep=3),
    dict(top_k=200, top_p=0.5, temperature=0.5),
]


def _transformers_chain(torch, scores, temperature=1.0, top_k=None, top_p=None, min_p=None, min_tokens_to_keep=1):
    from transformers import MinPLogitsWarper, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    chain = [TemperatureLogitsWarper(float(temperature))]
    if top_k is not None:
        chain.append(TopKLogitsWarper(top_k, min_tokens_to_keep=min_tokens_to_keep))
    if top_p is not None:
        chain.append(TopPLogitsWarper(top_p, min_tokens_to_keep=min_tokens_to_keep))
    if min_p is not None:
        chain.append(MinPLogitsWarper(min_p, min_tokens_to_keep=min_tokens_to_keep))
    ids = torch.zeros((scores.shape[0], 1), dtype=torch.long)
    for w in chain:
        scores = w(ids, scores)
    return scores.numpy()


@pytest.mark.parametrize("kw", TRANSFORMER_CONFIGS)
def test_filter_logits_equals_transformers_warpers(kw):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    x = np.delete(_rows(seed=7, n=24, c=4000), [3, 5], axis=0)  # ties: transformers sorts unstably
    got = fl.filter_logits(x, **kw)
    want = _transformers_chain(torch, torch.from_numpy(x.copy()), **kw)
    differ = np.isfinite(got) != np.isfinite(want)
    # a difference is only allowed at an exact boundary: the float32 cumulative sum of
    # transformers against our float64 one
    for r, v in np.argwhere(differ):
        y = x[r].astype(np.float64) / np.float32(kw.get("temperature", 1.0))
        order = np.lexsort((np.arange(y.size), -y))
        p = np.exp(y[order] - y[order][0])
        p /= p.sum()
        pos = int(np.flatnonzero(order == v)[0])
        above = p[:pos].sum()
        near_p = "top_p" in kw and abs(above - kw["top_p"]) < 1e-5
        near_minp = "min_p" in kw and abs(p[pos] / p[0] - kw["min_p"]) < 1e-5
        assert near_p or near_minp, f"row {r} token {v}: {got[r, v]} vs transformers {want[r, v]}"
    both = np.isfinite(got) & np.isfinite(want)
    np.testing.assert_array_equal(got[both], want[both])


def test_decoding_reads_torch_tensors_in_place_and_leaves_inputs_alone():
    """CPU tensors (bfloat16 included, through DLPack) give what their NumPy twins give; no input
    is modified."""
    torch = pytest.importorskip("torch")
    x = _rows(seed=3, n=6, c=500)
    for dt, tdt in ((np.float32, torch.float32), (bfloat16, torch.bfloat16)):
        xn = x.astype(dt)
        xt = torch.from_numpy(x).to(tdt)
        before = xt.clone()
        kw = dict(top_k=40, top_p=0.9, temperature=0.8)
        np.testing.assert_array_equal(fl.filter_logits(xt, **kw).astype(np.float32),
                                      fl.filter_logits(xn, **kw).astype(np.float32))
        np.testing.assert_array_equal(fl.sample(xt, seed=4, **kw), fl.sample(xn, seed=4, **kw))
        tok = np.arange(6) * 7
        for a, b in zip(fl.token_logprobs(xt, torch.from_numpy(tok), top_n=3), fl.token_logprobs(xn, tok, top_n=3)):
            np.testing.assert_array_equal(a, b)
        hist = np.arange(6 * 4).reshape(6, 4)
        np.testing.assert_array_equal(fl.apply_penalties(xt, torch.from_numpy(hist), presence_penalty=0.5).astype(np.float32),
                                      fl.apply_penalties(xn, hist, presence_penalty=0.5).astype(np.float32))
        assert torch.equal(xt, before)


# --------------------------------------------------------------------------- sample

@pytest.mark.parametrize("name, kw", CONFIGS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sample_equals_reference_draws(name, kw, dtype, accuracy):
    """The reference draws with its own Philox and float64 sums: the same tokens (the inverse
    CDF only differs at a draw within rounding of a cumulative boundary). A token's
    log-probability is that of the filtered softmax, against the exact oracle, in ULPs of the
    value or of 1: the row's mass is a float64 sum of exponentials within 1 ULP each, so 2 ULP
    for float32; float64 rows add the sum's own rounding (16 terms a lane, 4 pairwise steps,
    then one addition per block of 256 masses: at most half an ULP each)."""
    x = np.concatenate([_rows(seed=s, dtype=np.dtype(dtype)) for s in range(3)])
    x = x[np.isfinite(x).any(axis=1)]
    got, lp = fl.sample(x, seed=2024, offset=17, return_logprobs=True, **kw)
    want = ref.sample(x, seed=2024, offset=17, **kw)
    np.testing.assert_array_equal(got, want)
    assert lp.dtype == (np.float64 if dtype == "float64" else np.float32)
    exact = ref.exact(ref.token_logprobs, ref.filter_logits(x, **kw), got)
    bound = 2 if dtype == "float32" else 2 + (16 + 4 + math.ceil(x.shape[1] / 256)) / 2
    err = assert_ulp_close(lp, exact, bound, lp.dtype, scale=1.0, context=dict(config=name, dtype=dtype))
    accuracy.record("sample logprobs (of 1)", dtype, err, name)


def test_sample_keys_per_request_and_offsets():
    x = _rows(seed=1, n=8, c=500)
    seeds = np.arange(100, 108, dtype=np.uint64)
    offs = np.arange(8) * 3
    got = fl.sample(x, top_p=0.9, seed=seeds, offset=offs)
    np.testing.assert_array_equal(got, ref.sample(x, top_p=0.9, seed=seeds, offset=offs))
    # a request draws the same token wherever it sits in the batch
    perm = np.array([5, 2, 7, 0, 1, 6, 3, 4])
    np.testing.assert_array_equal(fl.sample(x[perm], top_p=0.9, seed=seeds[perm], offset=offs[perm]), got[perm])
    for i in range(8):
        assert fl.sample(x[i], top_p=0.9, seed=seeds[i:i + 1].reshape(()).item(), offset=int(offs[i])) \
            == ref.sample(x[i:i + 1], top_p=0.9, seed=seeds[i:i + 1], offset=offs[i:i + 1])[0]
    # one int seed: the row index is part of the key
    a = fl.sample(np.tile(x[0], (6, 1)), seed=5)
    assert len(set(a.tolist())) > 1
    # full 64-bit keys
    big = fl.sample(x, seed=2**64 - 1, offset=2**64 - 1)
    np.testing.assert_array_equal(big, ref.sample(x, seed=2**64 - 1, offset=2**64 - 1))


def test_sample_row_keys_follow_the_c_order_of_the_rows_in_every_layout():
    """With one int seed a row's key holds its C-order index over the rows, whatever the class
    axis and the memory layout (the kernels see the rows in their own grid order)."""
    x = _rows(seed=8, n=12, c=300).reshape(3, 4, 300)
    want = fl.sample(x, top_p=0.9, seed=99)
    np.testing.assert_array_equal(want.reshape(-1), ref.sample(x.reshape(12, 300), top_p=0.9, seed=99))
    for layout, axis in [(np.moveaxis(x, -1, 0), 0), (np.moveaxis(x, -1, 1), 1), (np.asfortranarray(x), -1),
                         (np.ascontiguousarray(np.moveaxis(x, -1, 1))[:, ::-1][:, ::-1], 1)]:
        np.testing.assert_array_equal(fl.sample(layout, top_p=0.9, seed=99, axis=axis), want)


def test_sample_greedy_rows_are_predict():
    x = _rows(seed=2, n=6, c=100)
    x[0, 3] = np.nan
    t = np.array([0.0, 0.0, 1.0, 0.0, 0.7, 0.0])
    tok, lp = fl.sample(x, temperature=t, seed=1, return_logprobs=True)
    greedy = t == 0
    np.testing.assert_array_equal(tok[greedy], fl.predict(x)[greedy])
    assert (lp[greedy] == 0).all()
    np.testing.assert_array_equal(tok, ref.sample(x, temperature=t, seed=1))


def test_sample_rejects_rows_without_a_distribution():
    x = np.zeros((3, 4), dtype=np.float32)
    x[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"position \(1,\)"):
        fl.sample(x, seed=0)
    x[1] = -np.inf
    with pytest.raises(ValueError, match=r"position \(1,\)"):
        fl.sample(x, seed=0)
    x[1] = [0, np.inf, 0, 0]
    with pytest.raises(ValueError, match=r"no distribution"):
        fl.sample(x, seed=0, top_k=2)
    assert fl.sample(x, temperature=0.0, seed=0).tolist() == [0, 1, 0]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_sample_half_precision_equals_float32_rows(dtype):
    dt = bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    x = _rows(seed=5, n=12, c=2000).astype(dt)
    for _, kw in CONFIGS:
        np.testing.assert_array_equal(fl.sample(x, seed=9, **kw), fl.sample(x.astype(np.float32), seed=9, **kw))


def test_sample_scalar_row_and_empty_batch():
    tok = fl.sample([1.0, 2.0, 0.5], seed=3)
    assert isinstance(tok, np.int64)
    tok, lp = fl.sample([1.0, 2.0, 0.5], seed=3, return_logprobs=True)
    assert isinstance(lp, np.float64)
    assert fl.sample(np.zeros((0, 5), dtype=np.float32), seed=1).shape == (0,)
    with pytest.raises(ValueError, match="empty"):
        fl.sample(np.zeros((3, 0)), seed=1)


LARGE_CONFIGS = [
    ("top_p", dict(top_p=0.9)),
    ("top_p wide", dict(top_p=0.99, temperature=1.3)),
    ("top_p min_p", dict(top_p=0.95, min_p=0.01, temperature=0.7)),
    ("top_k beyond the list", dict(top_k=2000)),
    ("top_k top_p min_p", dict(top_k=5000, top_p=0.95, min_p=0.002)),
    ("min_p", dict(min_p=0.001)),
]


@pytest.mark.parametrize("name, kw", LARGE_CONFIGS)
def test_large_vocabulary_paths_equal_the_reference_on_every_isa(name, kw):
    """A 128k vocabulary, where top-p nuclei, large top-k and wide min-p sets hold thousands of
    tokens (the candidate paths of fl_decode_row.h): the kept sets and the draws are the
    reference's, and the same on every SIMD path."""
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((3, 128256)) * 3).astype(np.float32)
    x[1] = (x[1] / 3) ** 3                          # heavy tail: a small nucleus far from the bulk
    want_f = ref.filter_logits(x, **kw)
    want_t = ref.sample(x, seed=5, offset=2, **kw)
    before = _core.isa_name()
    try:
        for isa in ISAS:
            assert _core.isa_select(isa) == 0
            got = fl.filter_logits(x, **kw)
            np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want_f), err_msg=f"{name} {isa}")
            np.testing.assert_array_equal(got, want_f, err_msg=f"{name} {isa}")
            np.testing.assert_array_equal(fl.sample(x, seed=5, offset=2, **kw), want_t, err_msg=f"{name} {isa}")
    finally:
        _core.isa_select(before)


# --------------------------------------------------------------------------- determinism

@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_draw_depends_only_on_the_kept_set(dtype):
    """Sampling with filters and sampling the filtered logits unfiltered (the whole row's pass)
    draw the same tokens with the same log-probabilities, bitwise: the kept masses are summed
    in blocks of the row whatever path found the kept set (a candidate list, the candidates
    above a floor, the whole row)."""
    x = np.concatenate([_rows(seed=s, n=12, c=3000, dtype=np.dtype(dtype)) for s in range(2)])
    x = x[np.isfinite(x).any(axis=1)]
    offs = np.arange(x.shape[0])
    for name, kw in CONFIGS + LARGE_CONFIGS:
        t1, lp1 = fl.sample(x, seed=np.full(x.shape[0], 8, np.uint64), offset=offs, return_logprobs=True, **kw)
        t2, lp2 = fl.sample(fl.filter_logits(x, **kw), seed=np.full(x.shape[0], 8, np.uint64), offset=offs,
                            return_logprobs=True)
        np.testing.assert_array_equal(t1, t2, err_msg=name)
        np.testing.assert_array_equal(lp1, lp2, err_msg=name)


def _decode_outputs(x):
    out = []
    for _, kw in CONFIGS:
        out.append(fl.sample(x, seed=77, offset=5, **kw))
        out.append(fl.filter_logits(x, **kw))
    return out


def test_bitwise_the_same_for_every_thread_count_and_isa(threads):
    x = np.concatenate([_rows(seed=s, n=12, c=1500) for s in range(4)])  # several blocks of rows
    fl.set_num_threads(1)
    before = _core.isa_name()
    base = _decode_outputs(x)
    try:
        for isa in ISAS:
            assert _core.isa_select(isa) == 0
            for n in (1, 2, 3):
                fl.set_num_threads(n)
                for a, b in zip(base, _decode_outputs(x)):
                    np.testing.assert_array_equal(a, b, err_msg=f"isa={isa} threads={n}")
    finally:
        _core.isa_select(before)


@pytest.mark.parametrize("isa_name", ISAS)
def test_tokens_under_fastlogits_isa_in_a_child(isa_name):
    """FASTLOGITS_ISA picks the path at import: the tokens of a fresh process are the same."""
    code = (
        "import numpy as np, fastlogits as fl, sys\n"
        "from fastlogits import _core\n"
        "rng = np.random.default_rng(11)\n"
        "x = (rng.standard_normal((40, 3000)) * 3).astype(np.float32)\n"
        "t = [fl.sample(x, seed=1, top_k=50, top_p=0.9, min_p=0.05, temperature=0.7),\n"
        "     fl.sample(x, seed=2, top_p=0.99), fl.sample(x, seed=3)]\n"
        "sys.stdout.write(_core.isa_name() + ' ' + ' '.join(map(str, np.concatenate(t))))\n"
    )
    env = dict(os.environ, FASTLOGITS_ISA=isa_name)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    name, *tokens = out.split()
    assert name == isa_name
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((40, 3000)) * 3).astype(np.float32)
    want = np.concatenate([fl.sample(x, seed=1, top_k=50, top_p=0.9, min_p=0.05, temperature=0.7),
                           fl.sample(x, seed=2, top_p=0.99), fl.sample(x, seed=3)])
    assert [int(t) for t in tokens] == want.tolist()


# --------------------------------------------------------------------------- the distribution

def _chi2_critical(df, z=4.75):
    """Wilson-Hilferty approximation of the chi-square quantile at the normal quantile z
    (z = 4.75: a false alarm once in a million)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def _chi2(counts, probs):
    """Chi-square statistic and degrees of freedom, bins of expected count < 5 pooled."""
    n = counts.sum()
    exp = probs * n
    small = exp < 5
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(exp[~small], exp[small].sum())
    keep = exp > 0
    obs, exp = obs[keep], exp[keep]
    assert counts[probs == 0].sum() == 0, "a token outside the filtered support was drawn"
    return float(((obs - exp) ** 2 / exp).sum()), max(int(keep.sum()) - 1, 1)


def _filtered_probs(row, kw):
    filt = ref.filter_logits(row.astype(np.float64) if row.dtype == np.float64 else row, **kw).astype(np.float64)
    e = np.exp(filt - np.max(filt))
    return e / e.sum()


def _draws(row, n, kw, seed=12345):
    """n draws from one row: the same logits at n offsets (one call)."""
    return fl.sample(np.broadcast_to(row, (n, row.size)), seed=np.full(n, seed, dtype=np.uint64),
                     offset=np.arange(n), **kw)


CHI2_CONFIGS = [
    ("chain", dict(top_k=8, top_p=0.9, min_p=0.05, temperature=0.8), 24),
    ("top_p", dict(top_p=0.7), 40),
    ("min_p", dict(min_p=0.02, temperature=1.4), 40),
    ("pure", dict(), 30),
]


@pytest.mark.parametrize("name, kw, c", CHI2_CONFIGS)
def test_draws_follow_the_filtered_softmax(name, kw, c):
    rng = np.random.default_rng(c)
    row = (rng.standard_normal(c) * 1.5).astype(np.float32)
    probs = _filtered_probs(row, kw)
    counts = np.bincount(_draws(row, 100_000, kw), minlength=c)
    stat, df = _chi2(counts, probs)
    assert stat < _chi2_critical(df), f"{name}: chi2={stat:.1f} df={df}"
    # the test can fail: the unfiltered (or untempered) softmax is told apart
    e = np.exp(row - row.max())
    wrong = e / e.sum()
    if not np.allclose(wrong, probs):
        assert ((counts - wrong * counts.sum()) ** 2 / np.maximum(wrong * counts.sum(), 1e-9)).sum() > _chi2_critical(c)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
@pytest.mark.parametrize("kw", [dict(top_p=0.95), dict(top_k=1500, temperature=1.2), dict(min_p=0.001),
                                dict(top_k=50, top_p=0.9, min_p=0.05)])
def test_draws_follow_the_filtered_softmax_large_vocab(dtype, kw):
    """The general path (nuclei beyond the speculative list, k' beyond the list) on a 3000-token
    row: 100,000 draws, bins pooled where fewer than 5 are expected."""
    dt = bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    rng = np.random.default_rng(3)
    row = (rng.standard_normal(3000) * 0.8).astype(dt)
    probs = _filtered_probs(row.astype(np.float64) if dtype == "float64" else row.astype(np.float32), kw)
    counts = np.bincount(_draws(row, 100_000, kw), minlength=3000)
    stat, df = _chi2(counts, probs)
    assert stat < _chi2_critical(df), f"chi2={stat:.1f} df={df}"


# --------------------------------------------------------------------------- arguments

@pytest.mark.parametrize("kw, exc, msg", [
    (dict(top_k=0), ValueError, "top_k"),
    (dict(top_k=2.5), TypeError, "top_k"),
    (dict(top_p=1.5), ValueError, r"top_p: expected values in \[0, 1\], got 1.5"),
    (dict(top_p=np.nan), ValueError, "top_p"),
    (dict(min_p=-0.1), ValueError, "min_p"),
    (dict(min_tokens_to_keep=0), ValueError, "min_tokens_to_keep"),
    (dict(temperature=-1.0), ValueError, "temperature"),
    (dict(temperature=np.inf), ValueError, "temperature"),
    (dict(temperature=1e-50), ValueError, "float32"),
    (dict(top_p=[0.5, 0.5]), ValueError, r"rows shape \(3,\)"),
    (dict(top_p=np.array([0.5, 2.0, 0.5])), ValueError, r"position \(1,\)"),
    (dict(top_k=True), TypeError, "top_k"),
])
def test_filter_logits_argument_errors(kw, exc, msg):
    with pytest.raises(exc, match=msg):
        fl.filter_logits(np.zeros((3, 5), dtype=np.float32), **kw)


@pytest.mark.parametrize("kw, exc, msg", [
    (dict(seed=-1), ValueError, "seed"),
    (dict(seed=2**64), ValueError, "seed"),
    (dict(seed=1.5), TypeError, "seed"),
    (dict(seed=np.array([1, -2, 3])), ValueError, r"seed: .* position \(1,\)"),
    (dict(seed=np.array([1, 2])), ValueError, "rows shape"),
    (dict(seed=1, offset=-3), ValueError, "offset"),
    (dict(seed=1, return_logprobs=1), TypeError, "return_logprobs"),
    (dict(seed=1, temperature=[0.0, -1.0, 1.0]), ValueError, "temperature"),
])
def test_sample_argument_errors(kw, exc, msg):
    with pytest.raises(exc, match=msg):
        fl.sample(np.zeros((3, 5), dtype=np.float32), **kw)
    with pytest.raises(TypeError):
        fl.sample(np.zeros((3, 5)))  # seed is required


def test_top_p_at_an_exact_boundary_is_the_same_on_every_path():
    """top_p equal to the mass of a prefix, to the last bit: the fast sum of the row's mass cannot
    decide there, and the portable pass does; every path keeps the same tokens."""
    rng = np.random.default_rng(21)
    x = (rng.standard_normal((6, 3000)) * 2).astype(np.float32)
    e = np.exp(x.astype(np.float64) - x.max(axis=1, keepdims=True))
    order = np.argsort(-x, axis=1, kind="stable")
    cum = np.cumsum(np.take_along_axis(e, order, 1), axis=1) / e.sum(axis=1, keepdims=True)
    before = _core.isa_name()
    try:
        for pos in (3, 40, 120, 600, 1800):   # on the speculative list, and beyond it
            p = cum[np.arange(6), pos]
            want = None
            for isa in ISAS:
                assert _core.isa_select(isa) == 0
                got = (fl.filter_logits(x, top_p=p), fl.sample(x, top_p=p, seed=3))
                if want is None:
                    want = got
                    kept = np.isfinite(got[0]).sum(axis=1)
                    assert (np.abs(kept - (pos + 1)) <= 1).all(), kept   # the prefix at the boundary
                np.testing.assert_array_equal(got[0], want[0], err_msg=isa)
                np.testing.assert_array_equal(got[1], want[1], err_msg=isa)
    finally:
        _core.isa_select(before)
