"""token_logprobs and apply_penalties (API section 8) against the exact oracle
(fastlogits.reference under ``exact``), the NumPy reference and transformers'
RepetitionPenaltyLogitsProcessor."""
import numpy as np
import pytest

import fastlogits as fl
from fastlogits import reference as ref

from arrays import assert_ulp_close, bfloat16, ce_loss_ulp, compute_dtype


def _exact_logprobs(x, tokens, temperature=1.0, top_n=0):
    """The exact log_softmax of the tempered logits (x / T rounded as the kernels divide) at
    the tokens: unrounded DDArray values (with top_n, the whole tuple)."""
    return ref.exact(ref.token_logprobs, x, tokens, temperature=temperature, top_n=top_n)


def _logprob_ulp(x, temperature=1.0):
    """The bound of a token's log-probability, per row: token_logprobs(x, t) is
    -cross_entropy(x / T, t) computed with the cross-entropy's sums, so it carries the
    cross-entropy's per-row bound (ce_loss_ulp: 8 ULP, plus the row's spread for float32) on
    the tempered rows, in ULPs of the float32 (float64) result."""
    cdt = compute_dtype(x.dtype)
    t = np.asarray(temperature, dtype=cdt)
    y = np.asarray(x, dtype=cdt) / (t[..., None] if t.ndim else t)
    return ce_loss_ulp(y, -1, cdt)


def _logits(seed=0, n=16, c=5000, scale=3.0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c)) * scale
    x[0, 17 % c] += 20      # a confident row: log p of its argmax close to 0
    x[1] *= 0.01            # nearly uniform
    x[2, :] = np.round(x[2])  # ties
    return x.astype(np.float32)


# --------------------------------------------------------------------------- token_logprobs

@pytest.mark.parametrize("c", [3, 64, 5000, 70000])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logprobs_against_the_exact_oracle(c, temperature, isa, accuracy):
    x = _logits(c=c)
    tok = np.random.default_rng(c).integers(0, c, x.shape[0])
    tok[0] = 17 % c
    got = fl.token_logprobs(x, tok, temperature=temperature)
    ctx = dict(c=c, temperature=temperature, isa=isa)
    err = assert_ulp_close(got, _exact_logprobs(x, tok, temperature), _logprob_ulp(x, temperature), np.float32,
                           context=ctx)
    accuracy.record("token_logprobs", "float32", err, str(ctx))


def test_token_logprobs_adversarial_rows_stay_within_the_sum_bound(accuracy):
    rng = np.random.default_rng(5)
    x = np.full((4, 20000), -16.3, dtype=np.float32)    # many equal terms: rounding in one direction
    x[:, 0] = 0.0
    x[1] += rng.standard_normal(20000).astype(np.float32) * 1e-3
    x[2, 1:] = -9.7
    x[3, 1:] = np.float32(-30.0)
    tok = np.zeros(4, dtype=np.int64)
    err = assert_ulp_close(fl.token_logprobs(x, tok), _exact_logprobs(x, tok), _logprob_ulp(x), np.float32)
    accuracy.record("token_logprobs", "float32", err, "adversarial rows")


def test_token_logprobs_dtypes_and_scalars(accuracy):
    x = _logits(c=300)
    tok = np.arange(16) * 7
    for dt in (np.float16, bfloat16):
        h = x.astype(dt)
        got = fl.token_logprobs(h, tok, temperature=0.8)
        assert got.dtype == np.float32   # never rounded to half precision
        err = assert_ulp_close(got, _exact_logprobs(h, tok, 0.8), _logprob_ulp(h, 0.8), np.float32)
        accuracy.record("token_logprobs", np.dtype(dt).name, err, "300 classes, T=0.8")
    d = fl.token_logprobs(x.astype(np.float64), tok, temperature=0.8)
    assert d.dtype == np.float64
    err = assert_ulp_close(d, _exact_logprobs(x.astype(np.float64), tok, 0.8), _logprob_ulp(x.astype(np.float64)),
                           np.float64)
    accuracy.record("token_logprobs", "float64", err, "300 classes, T=0.8")
    one = fl.token_logprobs(x[3], 5)
    assert isinstance(one, np.float32) and one == fl.token_logprobs(x[3:4], [5])[0]
    # per-row temperatures
    t = np.linspace(0.5, 2.0, 16)
    got = fl.token_logprobs(x, tok, temperature=t)
    for i in range(16):
        assert got[i] == fl.token_logprobs(x[i], int(tok[i]), temperature=float(t[i]))


def test_token_logprobs_rank_and_top_n():
    x = np.array([[0.5, 2.0, 2.0, -1.0, 2.0], [1.0, 0.0, 3.0, 3.0, np.nan], [4.0, 3.0, 2.0, 1.0, 0.0]],
                 dtype=np.float32)
    lp, rank, top_lp, top_tok = fl.token_logprobs(x, [4, 0, 3], top_n=3)
    assert rank.tolist() == [1, 3, 4]               # every tied max has rank 1; NaN compares false
    assert top_tok.tolist() == [[1, 2, 4], [4, 2, 3], [0, 1, 2]]  # topk's order: NaN first, ties by index
    want = _exact_logprobs(x, [4, 0, 3], top_n=3)
    np.testing.assert_array_equal(rank, want[1])
    np.testing.assert_array_equal(top_tok, want[3])
    assert np.isnan(lp[1]) and np.isnan(top_lp[1]).all()
    assert_ulp_close(lp, want[0], _logprob_ulp(x), np.float32)                 # NaN where the oracle has NaN
    assert_ulp_close(top_lp, want[2], _logprob_ulp(x)[:, None], np.float32)


@pytest.mark.parametrize("c, n", [(5000, 5), (5000, 1), (70000, 20), (300, 300), (3000, 1500)])
def test_token_logprobs_top_n_against_the_exact_oracle(c, n, accuracy):
    x = _logits(seed=c + n, n=6, c=c)
    tok = np.random.default_rng(n).integers(0, c, 6)
    for t in (1.0, 1.7):
        lp, rank, top_lp, top_tok = fl.token_logprobs(x, tok, top_n=n, temperature=t)
        w = _exact_logprobs(x, tok, t, top_n=n)
        np.testing.assert_array_equal(rank, w[1])
        np.testing.assert_array_equal(top_tok, w[3])
        assert top_lp.shape == (6, n) and top_lp.dtype == np.float32
        err = assert_ulp_close(top_lp, w[2], _logprob_ulp(x, t)[:, None], np.float32, context=dict(c=c, n=n, t=t))
        accuracy.record("token_logprobs top_n", "float32", err, f"c={c} n={n} T={t}")


def test_token_logprobs_top_n_wherever_the_top_values_lie():
    """The top-n come from the blocks whose maxima reach the n-th largest block maximum: rows
    whose top values share one block (the first, the last), span ties across blocks, or hold
    NaN and +inf in later blocks (NaN ranks first, as topk orders) give the reference's list."""
    c, n = 10000, 6
    x = np.tile(np.linspace(-5, 5, c, dtype=np.float32), (6, 1))   # ascending: all in the last block
    x[1] = x[1][::-1]                                               # all in the first block
    x[2] = np.round(x[2])                                           # ties of the max across blocks
    x[3, [2500, 7000]] = np.nan
    x[4, 9000] = np.inf
    x[5] = np.random.default_rng(1).standard_normal(c).astype(np.float32)
    x[5, 4100:4106] = 30.0                                          # six ties in one block
    tok = np.arange(6) * 17
    for t in (1.0, 0.6):
        got = fl.token_logprobs(x, tok, top_n=n, temperature=t)
        want = ref.token_logprobs(x, tok, top_n=n, temperature=t)
        np.testing.assert_array_equal(got[3], want[3], err_msg=f"T={t}")
        np.testing.assert_array_equal(got[1], want[1], err_msg=f"T={t}")


def test_token_logprobs_axis_and_layouts():
    x = _logits(seed=9, n=5, c=400)
    tok = np.array([1, 2, 3, 4, 5])
    want = fl.token_logprobs(x, tok, top_n=4)
    got = fl.token_logprobs(np.ascontiguousarray(x.T), tok, top_n=4, axis=0)
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b)
    x3 = np.stack([x, x[::-1]])                       # (2, 5, 400), class axis last
    got3 = fl.token_logprobs(np.moveaxis(x3, -1, 1), np.stack([tok, tok[::-1]]), top_n=4, axis=1)
    np.testing.assert_array_equal(got3[0][0], want[0])
    np.testing.assert_array_equal(got3[3][0], want[3])


def test_token_logprobs_errors():
    x = np.zeros((3, 5), dtype=np.float32)
    with pytest.raises(IndexError, match=r"token id 5 at position \(1,\) is out of range \[0, 5\)"):
        fl.token_logprobs(x, [0, 5, 9])
    with pytest.raises(IndexError, match=r"token id -1 at position \(2,\)"):
        fl.token_logprobs(x, [0, 1, -1])
    with pytest.raises(ValueError, match="top_n"):
        fl.token_logprobs(x, [0, 1, 2], top_n=6)
    with pytest.raises(TypeError, match="top_n"):
        fl.token_logprobs(x, [0, 1, 2], top_n=1.0)
    with pytest.raises(ValueError, match="tokens"):
        fl.token_logprobs(x, [0, 1])
    with pytest.raises(TypeError, match="tokens"):
        fl.token_logprobs(x, [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="temperature"):
        fl.token_logprobs(x, [0, 1, 2], temperature=0.0)


# --------------------------------------------------------------------------- apply_penalties

def _history(seed, rows, length, vocab, pad=0.2):
    rng = np.random.default_rng(seed)
    h = rng.integers(0, vocab, (rows, length))
    h[:, : length // 3] = rng.integers(0, 5, (rows, length // 3))   # repeats
    h[rng.random((rows, length)) < pad] = -1
    return h


@pytest.mark.parametrize("penalty", [1.25, 2.0, 0.5, 1.2])
def test_repetition_penalty_equals_transformers(penalty):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    x = _logits(seed=2, n=8, c=1000)
    h = _history(3, 8, 64, 1000, pad=0.0)
    got = fl.apply_penalties(x, h, repetition_penalty=penalty)
    proc = transformers.RepetitionPenaltyLogitsProcessor(penalty=penalty)
    want = proc(torch.from_numpy(h), torch.from_numpy(x.copy())).numpy()
    # PyTorch divides a float32 tensor by a scalar as a product with its rounded reciprocal:
    # the same bits when 1/r is exact, else within one ULP of the quotient we round once
    exact_reciprocal = float(np.float32(1 / penalty)) == 1 / penalty
    assert_ulp_close(got, want, 0 if exact_reciprocal else 1, np.float32)
    # and correctly rounded from the exact result (0.5 ULP and the float64 rounding)
    assert_ulp_close(got, ref.exact(ref.apply_penalties, x, h, repetition_penalty=penalty), 0.5001, np.float32)


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16", "float16"])
def test_penalties_against_the_exact_oracle(dtype, accuracy):
    """Computed in float64 and rounded once: correctly rounded for float32 and half precision
    (0.5 ULP, plus float64's roundings); float64 logits carry the four roundings of x / r,
    f * n, + p and the difference, 2 ULP of the value or of its terms."""
    dt = bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    x = _logits(seed=4, n=10, c=700).astype(dt)
    h = _history(5, 10, 200, 700)
    kw = dict(repetition_penalty=np.linspace(0.8, 1.5, 10), presence_penalty=0.4, frequency_penalty=np.linspace(-0.5, 1.0, 10))
    got = fl.apply_penalties(x, h, **kw)
    assert got.dtype == dt
    want = ref.exact(ref.apply_penalties, x, h, **kw)
    if dtype == "float64":
        n = np.zeros(x.shape)
        for i in range(x.shape[0]):
            np.add.at(n[i], h[i][h[i] >= 0], 1)
        r, f = kw["repetition_penalty"][:, None], kw["frequency_penalty"][:, None]
        terms = np.where(n > 0, np.abs(x) * np.maximum(r, 1 / r) + np.abs(f) * n + 0.4, np.abs(x))
        err = assert_ulp_close(got, want, 2, dt, scale=terms)
    else:
        err = assert_ulp_close(got, want, 0.5001, dt)
    accuracy.record("apply_penalties", dtype, err, "10 x 700, history 200")
    np.testing.assert_array_equal(got, ref.apply_penalties(x, h, **kw))   # the float64 formula, rounded once


def test_penalties_by_hand_and_padding():
    x = np.array([[2.0, -1.0, 0.0, 3.0, -2.0]], dtype=np.float32)
    h = np.array([[1, 1, 0, -1, 4, 4, 4, -7]])
    got = fl.apply_penalties(x, h, repetition_penalty=2.0, presence_penalty=0.5, frequency_penalty=0.25)
    # token 0: 2/2 - (0.25 + 0.5); token 1: -1*2 - (0.5 + 0.5); token 4: -2*2 - (0.75 + 0.5)
    assert got.tolist() == [[0.25, -3.0, 0.0, 3.0, -5.25]]
    assert x.tolist() == [[2.0, -1.0, 0.0, 3.0, -2.0]]   # the input is not modified
    np.testing.assert_array_equal(fl.apply_penalties(x, np.full((1, 3), -1), repetition_penalty=3.0), x)
    np.testing.assert_array_equal(fl.apply_penalties(x, np.zeros((1, 0), dtype=np.int64), presence_penalty=1.0), x)


def test_penalties_in_place_and_out():
    x = _logits(seed=6, n=4, c=50)
    h = _history(7, 4, 30, 50)
    want = fl.apply_penalties(x, h, repetition_penalty=1.3, frequency_penalty=0.2)
    y = x.copy()
    assert fl.apply_penalties(y, h, repetition_penalty=1.3, frequency_penalty=0.2, out=y) is y
    np.testing.assert_array_equal(y, want)
    out = np.empty_like(x)
    fl.apply_penalties(x, h.astype(np.int32), repetition_penalty=1.3, frequency_penalty=0.2, out=out)
    np.testing.assert_array_equal(out, want)
    f = np.asfortranarray(x)                           # rows that do not fit the grid contiguously
    fl.apply_penalties(f, h, repetition_penalty=1.3, frequency_penalty=0.2, out=f)
    np.testing.assert_array_equal(f, want)
    x3 = np.stack([x, x])
    got3 = fl.apply_penalties(x3, np.stack([h, h]), repetition_penalty=1.3, frequency_penalty=0.2)
    np.testing.assert_array_equal(got3[1], want)


def test_penalties_reject_ids_past_the_vocabulary_before_touching_anything():
    x = _logits(seed=8, n=3, c=10)
    y = x.copy()
    h = np.array([[1, 2, 3], [4, 10, 5], [12, 0, 0]])
    with pytest.raises(IndexError, match=r"token id 10 at position \(1, 1\) is out of range for 10 classes"):
        fl.apply_penalties(y, h, repetition_penalty=2.0, out=y)
    np.testing.assert_array_equal(y, x)


def test_penalties_errors():
    x = np.zeros((2, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="prev_tokens"):
        fl.apply_penalties(x, np.zeros((3, 2), dtype=np.int64))
    with pytest.raises(TypeError, match="prev_tokens"):
        fl.apply_penalties(x, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="repetition_penalty"):
        fl.apply_penalties(x, np.zeros((2, 2), dtype=np.int64), repetition_penalty=0.0)
    with pytest.raises(ValueError, match="presence_penalty"):
        fl.apply_penalties(x, np.zeros((2, 2), dtype=np.int64), presence_penalty=np.inf)
    with pytest.raises(ValueError, match="frequency_penalty"):
        fl.apply_penalties(x, np.zeros((2, 2), dtype=np.int64), frequency_penalty=[1.0, np.nan])
    with pytest.raises(TypeError, match="out"):
        fl.apply_penalties(x, np.zeros((2, 2), dtype=np.int64), out=np.zeros((2, 4)))
