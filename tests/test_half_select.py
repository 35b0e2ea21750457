"""predict on float16/bfloat16 rows compares the halves' bit patterns as integer keys
(csrc/fl_select.c): the map must order every one of the 2^16 patterns as its value, -0 equal
to +0, NaN (either sign, any payload) above everything, on every SIMD path.

The oracle is NumPy's argmax of the rows widened to float32 (first NaN, else the first of the
maxima; -0 == +0), and reference.topk for the top-k."""
import ml_dtypes
import numpy as np
import pytest

import fastlogits as fl
from fastlogits import reference as ref

F16 = np.dtype(np.float16)
BF16 = np.dtype(ml_dtypes.bfloat16)
HALVES = [F16, BF16]
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered in cast")  # NaN in the reference


def all_patterns(dt):
    return np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(dt)


def sorted_non_nan(dt):
    """every pattern that is not NaN, by value (stable: -0 before +0 as they come)"""
    h = all_patterns(dt)
    w = h.astype(np.float32)
    keep = ~np.isnan(w)
    return h[keep][np.argsort(w[keep], kind="stable")]


def adjacent_pairs(dt, c):
    """Rows of c halves filled with -inf holding each non-NaN pattern and the next larger value
    (the pair of zeros: -0 and +0), first the smaller before, then after the larger, at
    positions that move through every place of the row for both"""
    s = sorted_non_nan(dt)
    lo, hi = s[:-1], s[1:]
    n = lo.size
    x = np.full((2 * n, c), -np.inf, dtype=dt)
    r = np.arange(n)
    p, q = (r * 7) % c, (r * 7 + 1 + r % (c - 1)) % c  # p != q, every position for both
    x[r, p], x[r, q] = lo, hi
    x[n + r, p], x[n + r, q] = hi, lo
    return x


def assert_argmax(x):
    got = fl.predict(x)
    want = np.argmax(x.astype(np.float32), axis=-1)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, (
        f"{bad.size} rows differ, first row {bad[0]}: got {got[bad[0]]} want {want[bad[0]]}, "
        f"values {x[bad[0], got[bad[0]]]!r} vs {x[bad[0], want[bad[0]]]!r}"
    )


def assert_same_values(v, rv):
    """bitwise, except that a NaN may come out quiet"""
    nan = np.isnan(v.astype(np.float32))
    np.testing.assert_array_equal(nan, np.isnan(rv.astype(np.float32)))
    np.testing.assert_array_equal(v.view(np.uint16)[~nan], rv.view(np.uint16)[~nan])


@pytest.mark.parametrize("dt", HALVES, ids=["float16", "bfloat16"])
def test_every_adjacent_pair_of_values_is_ordered_in_every_lane(dt, isa):
    """Each pattern against the next larger value (and every pair of equal values: -0, +0):
    the larger placed first and last, at positions moving through the vector lanes and the
    scalar tail of a row of 70 filled with -inf."""
    assert_argmax(adjacent_pairs(dt, 70))


@pytest.mark.parametrize("dt", HALVES, ids=["float16", "bfloat16"])
def test_every_pattern_in_one_row_and_nan_first(dt, isa):
    """All 2^16 patterns in one row (the first NaN wins), then without the NaNs, shuffled,
    across runs of the row (512 halves) and with the maximum repeated in a later run."""
    rng = np.random.default_rng(1)
    h = all_patterns(dt)
    rows = [rng.permutation(h) for _ in range(3)]
    w = h.astype(np.float32)
    finite = h[~np.isnan(w)]
    for _ in range(3):
        row = rng.permutation(finite)
        top = np.flatnonzero(row.astype(np.float32) == np.float32(np.inf))
        row[rng.integers(top[0] + 1, row.size)] = np.inf  # a tie after the first +inf
        rows.append(row)
        rows.append(row[row.astype(np.float32) < 1000])
    for row in rows:
        assert_argmax(row[None, :])


@pytest.mark.parametrize("dt", HALVES, ids=["float16", "bfloat16"])
@pytest.mark.parametrize("c", [1, 15, 31, 33, 511, 512, 513, 1500, 4097])
def test_predict_and_topk_random_rows_with_ties_zeros_and_nans(dt, c, isa):
    """Rows of few distinct values (many ties, -0 beside +0), some with NaNs of either sign
    in any run; topk equals the reference (values bitwise, indices exactly)."""
    rng = np.random.default_rng(c)
    pool = np.array([-np.inf, -3, -0.0, 0.0, 1.5, 2, np.inf], np.float32)
    x = rng.choice(pool, size=(40, c)).astype(dt)
    x[::5] = (rng.standard_normal((8, c)) * 4).astype(dt)
    nan_bits = [0x7E00, 0xFE01, 0x7C01, 0xFFFF] if dt == F16 else [0x7FC0, 0xFF81, 0x7F81, 0xFFFF]
    nan_bits = np.array(nan_bits, np.uint16)
    for i in range(1, 40, 3):
        x[i, rng.integers(c)] = nan_bits[i % 4].view(dt)
    x[::7, :] = np.asarray(-0.0, dt)
    assert_argmax(x)
    for k in sorted({1, min(c, 3), min(c, 20)}):
        v, i = fl.topk(x, k)
        rv, ri = ref.topk(x, k)
        assert v.dtype == x.dtype
        np.testing.assert_array_equal(i, ri)
        assert_same_values(v, np.asarray(rv, x.dtype))


@pytest.mark.parametrize("dt", HALVES, ids=["float16", "bfloat16"])
def test_predict_matches_torch_argmax_on_half(dt):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((64, 3000)) * 3).astype(dt)
    x[:, ::97] = np.asarray(-0.0, dt)
    x[3, 1700] = np.nan
    x[4, :] = np.asarray(1.0, dt)
    tdt = torch.float16 if dt == F16 else torch.bfloat16
    t = torch.from_numpy(x.view(np.int16)).view(tdt)
    np.testing.assert_array_equal(fl.predict(x), torch.argmax(t, dim=-1).numpy())


@pytest.mark.parametrize("dt", HALVES, ids=["float16", "bfloat16"])
def test_strided_half_rows(dt, isa):
    """rows whose classes are not contiguous are gathered (float32): the same answers"""
    rng = np.random.default_rng(9)
    x = (rng.standard_normal((700, 30)) * 2).astype(dt)
    x[5, 3] = np.nan
    assert_argmax(x.T.copy())
    np.testing.assert_array_equal(fl.predict(x, axis=0), np.argmax(x.astype(np.float32), axis=0))
    v, i = fl.topk(x, 4, axis=0)
    rv, ri = ref.topk(x, 4, axis=0)
    np.testing.assert_array_equal(i, ri)
    assert_same_values(v, np.asarray(rv, x.dtype))


def assert_topk_stable(x, k):
    """topk against a stable sort of the rows widened to float32 (no NaNs): ties to the lower
    index, -0 == +0; the values bitwise those at the indices"""
    v, i = fl.topk(x, k)
    for start in range(0, x.shape[0], 8192):  # the sort's int64 indices in blocks of rows
        rows = slice(start, start + 8192)
        want = np.argsort(-x[rows].astype(np.float32), axis=-1, kind="stable")[:, :k]
        bad = np.flatnonzero((i[rows] != want).any(axis=1))
        assert bad.size == 0, (
            f"{bad.size} rows differ, first row {start + bad[0]}: got {i[start + bad[0]]} want {want[bad[0]]}, "
            f"values {x[start + bad[0], i[start + bad[0]]]!r} vs {x[start + bad[0], want[bad[0]]]!r}"
        )
        np.testing.assert_array_equal(v[rows].view(np.uint16),
                                      np.take_along_axis(x[rows], want, axis=-1).view(np.uint16))


@pytest.mark.parametrize("dt", HALVES, ids=["float16", "bfloat16"])
def test_topk_every_adjacent_pair_of_values_in_every_lane(dt, isa):
    """topk on half rows skips runs by integer keys (fl_topk_scan_h): each pattern against the
    next larger value, at positions moving through the first k, the vector runs (32 to 64
    halves) and the scalar tail of a row of 150 filled with -inf (k = 1, 2); then rows of 75
    copies of each value of a pair, shuffled (ties everywhere; k = 2, 17: list and heap)."""
    c = 150
    x = adjacent_pairs(dt, c)
    for k in (1, 2):
        assert_topk_stable(x, k)
    # 4096 of the pairs, each value 75 times in a shuffled row
    s = sorted_non_nan(dt)
    lo, hi, n, m = s[:-1], s[1:], s.size - 1, 4096
    y = np.empty((m, c), dtype=dt)
    pick = np.linspace(0, n - 1, m).astype(np.int64)
    y[:, : c // 2], y[:, c // 2 :] = lo[pick, None], hi[pick, None]
    y = np.take_along_axis(y, np.random.default_rng(3).random((m, c)).argsort(axis=1), axis=1)
    for k in (2, 17):
        assert_topk_stable(y, k)


@pytest.mark.parametrize("dt", HALVES, ids=["float16", "bfloat16"])
@pytest.mark.parametrize("c", [40, 300, 3000])
def test_topk_rows_with_many_nans(dt, c, isa):
    """NaN (either sign, any payload) ranks above everything, the first first: rows with 0 to
    30 NaNs, so that the worst kept is a NaN (nothing later can beat it) or not; reference.topk"""
    rng = np.random.default_rng(c)
    x = (rng.standard_normal((31, c)) * 3).astype(dt)
    nan_bits = [0x7E00, 0xFE01, 0x7C01, 0xFFFF] if dt == F16 else [0x7FC0, 0xFF81, 0x7F81, 0xFFFF]
    for i in range(31):
        at = rng.choice(c, size=i, replace=False)
        x[i, at] = np.array(nan_bits, np.uint16)[rng.integers(4, size=i)].view(dt)
    for k in (1, 5, 17, 20):
        v, idx = fl.topk(x, k)
        rv, ri = ref.topk(x, k)
        np.testing.assert_array_equal(idx, ri)
        assert_same_values(v, np.asarray(rv, x.dtype))
