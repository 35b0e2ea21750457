"""The order-independent accumulator (csrc/fl_rsum.h, fastlogits._rsum) against an exact model
of its definition (Fractions), and its properties: the state and the sum are bitwise the same
for every permutation, split into partial states and merge tree; non-finite values behave as a
float sum's; the sum is as accurate as math.fsum's on non-negative values."""
import math
import pickle
from fractions import Fraction

import numpy as np
import pytest

from fastlogits import _rsum

RNG = np.random.default_rng(18)
BITS, FOLD, TOP_MAX = 48, 3, 43


# ----------------------------------------------------------------------------- the exact model

def model_state(values):
    """The words of the state of ``values`` by the definition in fl_rsum.h, in exact arithmetic."""
    flags = 0
    finite = []
    for v in map(float, values):
        if math.isnan(v):
            flags |= 4
        elif math.isinf(v):
            flags |= 1 if v > 0 else 2
        else:
            finite.append(Fraction(v))
    top = FOLD - 1
    m = max((abs(v) for v in finite), default=Fraction(0))
    while top < TOP_MAX and m > Fraction(2) ** (BITS * top - 1027):
        top += 1
    counts = [0] * FOLD
    for r in finite:
        for k in range(FOLD):
            u = Fraction(2) ** (BITS * (top - k) - 1074)
            q = round(r / u)  # ties to even
            counts[k] += q
            r -= q * u
    words = [top, flags]
    for c in counts:
        words += [c >> 32, c & 0xFFFFFFFF]
    return np.array(words, dtype=np.int64), counts, top


def model_value(values):
    words, counts, top = model_state(values)
    flags = int(words[1])
    if flags & 4 or flags & 3 == 3:
        return math.nan
    if flags:
        return math.inf if flags & 1 else -math.inf
    exact = sum(Fraction(c) * Fraction(2) ** (BITS * (top - k) - 1074) for k, c in enumerate(counts))
    try:
        return float(exact)  # correctly rounded
    except OverflowError:
        return math.inf if exact > 0 else -math.inf  # copysign would convert exact again


def same(a, b):
    return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))


# ----------------------------------------------------------------------------- value sets

def wide(n):
    """Mixed signs over 1e-300..1e300, subnormals included."""
    v = RNG.standard_normal(n) * 10.0 ** RNG.integers(-300, 301, n)
    v[: n // 10] = RNG.standard_normal(n // 10) * 5e-324 * RNG.integers(1, 2**40, n // 10)
    return v


def cancelling(n):
    """Large values that cancel exactly, leaving small and tiny ones."""
    big = RNG.standard_normal(n // 3) * 1e250
    small = RNG.standard_normal(n - 2 * (n // 3)) * 10.0 ** RNG.integers(-30, 5, n - 2 * (n // 3))
    return np.concatenate([big, -big, small])


def boundaries(n):
    """Values on the slice boundaries (ties), powers of two across the bins, the largest double."""
    g = RNG.integers(0, 44, n)
    e = np.minimum(BITS * g - 1074 + RNG.integers(-2, 3, n), 1023)
    v = np.ldexp(RNG.choice([0.5, 1.0, 1.5, -0.5, -1.0, 3.0], n), e)
    v[::17] = np.finfo(np.float64).max
    v[1::17] = -np.finfo(np.float64).max
    return v


def losses(n):
    """Non-negative per-row losses of many magnitudes (the kernels' case)."""
    return np.abs(RNG.standard_normal(n)) * 10.0 ** RNG.integers(-12, 4, n)


SETS = {"wide": wide, "cancelling": cancelling, "boundaries": boundaries, "losses": losses}


# ----------------------------------------------------------------------------- tests

@pytest.mark.parametrize("name", list(SETS))
@pytest.mark.parametrize("n", [1, 7, 513, 3000])
def test_state_is_the_exact_model(name, n):
    v = SETS[name](n)
    words, _, _ = model_state(v)
    np.testing.assert_array_equal(_rsum.of(v), words)
    assert same(_rsum.value(_rsum.of(v)), model_value(v))


@pytest.mark.parametrize("name", list(SETS))
def test_any_order_split_and_merge_tree(name):
    v = SETS[name](5000)
    want = _rsum.of(v)
    for _ in range(8):
        p = RNG.permutation(v)
        np.testing.assert_array_equal(_rsum.of(p), want)
        cuts = np.sort(RNG.choice(np.arange(1, len(p)), RNG.integers(1, 40), replace=False))
        parts = [_rsum.of(c) for c in np.split(p, cuts)]
        while len(parts) > 1:  # a random merge tree
            i = int(RNG.integers(0, len(parts) - 1))
            a, b = parts.pop(i), parts.pop(i)
            parts.insert(int(RNG.integers(0, len(parts) + 1)), _rsum.merge(a, b) if RNG.random() < 0.5
                         else _rsum.merge(b, a))
        np.testing.assert_array_equal(parts[0], want)


def test_largest_value_last_raises_the_window_mid_stream():
    """Ascending magnitudes: every run of the array deposit raises the window, and value by
    value (a NaN in the run sends it down the one-by-one path) it rises at each value."""
    v = np.sort(np.abs(wide(4000)))
    want, _, _ = model_state(v)
    np.testing.assert_array_equal(_rsum.of(v), want)
    s = _rsum.empty()
    for chunk in np.array_split(v, 40):
        _rsum.add(s, np.append(chunk, np.nan))  # a NaN in every run: deposited value by value
    np.testing.assert_array_equal(np.delete(s, 1), np.delete(want, 1))
    assert s[1] == 4
    np.testing.assert_array_equal(_rsum.of(v[::-1]), want)


def test_strided_values_and_buffer_path():
    v = wide(3001)
    s = _rsum.empty()
    _rsum.add(s, v[::3])  # strided: through the kernels' row buffer
    np.testing.assert_array_equal(s, _rsum.of(np.ascontiguousarray(v[::3])))


def test_many_large_values_carry_between_words():
    v = np.full(1 << 20, np.finfo(np.float64).max / 4)
    s = _rsum.of(v)
    assert s[2] != 0  # the count passed 2^32 units
    assert _rsum.value(s) == math.inf  # 2^20 * DBL_MAX / 4 overflows
    half = _rsum.merge(_rsum.of(v[: 1 << 19]), _rsum.of(-v[: 1 << 19]))
    assert _rsum.value(half) == 0.0
    w = np.full(1 << 20, 2.0 ** 900)
    assert _rsum.value(_rsum.of(w)) == 2.0 ** 920


@pytest.mark.parametrize("values,want", [
    ([math.inf, 1.0], math.inf), ([-math.inf, 5.0, -math.inf], -math.inf), ([math.inf, -math.inf], math.nan),
    ([math.nan, 1.0], math.nan), ([math.inf, math.nan], math.nan), ([1e308, 1e308], math.inf),
    ([-1e308, -1e308, 1.0], -math.inf), ([1e308, 1e308, -1e308], 1e308), ([], 0.0), ([-0.0], 0.0),
    ([5e-324, 5e-324], 1e-323), ([1.0, -1.0], 0.0),
])
def test_specials(values, want):
    for perm in (values, values[::-1]):
        for path in (np.array(perm, dtype=np.float64), np.array(perm * 600, dtype=np.float64)[: len(perm)]):
            assert same(_rsum.value(_rsum.of(path)), want)
    if values:
        s = _rsum.merge(_rsum.of(values[:1]), _rsum.of(values[1:]))
        assert same(_rsum.value(s), want)


def test_nan_payload_does_not_matter():
    a = np.frombuffer(np.array([0x7FF8000000000123], np.uint64).tobytes(), np.float64)
    b = np.frombuffer(np.array([0xFFF8000000000456], np.uint64).tobytes(), np.float64)
    np.testing.assert_array_equal(_rsum.of(np.concatenate([a, b, [1.0]])), _rsum.of(np.concatenate([b, [1.0], a])))


def _neumaier(values):
    s = c = 0.0
    for v in values:
        t = s + v
        c += (s - t) + v if abs(s) >= abs(v) else (v - t) + s
        s = t
    return s + c


@pytest.mark.parametrize("dist", ["uniform", "lognormal", "peaked", "float32"])
def test_accuracy_against_fsum_on_nonnegative_losses(dist):
    """Non-negative per-row losses: the sum is math.fsum's (correctly rounded) and never less
    accurate than the compensated sum it replaces; the worst case is printed."""
    worst_ours = worst_comp = 0.0
    for trial in range(20):
        n = int(RNG.integers(1, 20000))
        if dist == "uniform":
            v = RNG.random(n)
        elif dist == "lognormal":
            v = RNG.lognormal(0.0, 8.0, n)
        elif dist == "peaked":
            v = np.concatenate([[1e6], RNG.random(n) * 1e-12])
        else:
            v = (RNG.random(n) * 30).astype(np.float32).astype(np.float64)
        exact = math.fsum(v)
        got = _rsum.value(_rsum.of(v))
        ulp = math.ulp(exact)
        worst_ours = max(worst_ours, abs(got - exact) / ulp)
        worst_comp = max(worst_comp, abs(_neumaier(v) - exact) / ulp)
        assert got == exact, (dist, trial, got, exact)
    print(f"{dist}: worst error {worst_ours} ulp (compensated: {worst_comp} ulp)")
    assert worst_ours <= worst_comp


def test_accuracy_bound_with_cancellation():
    """Mixed signs: within 0.5 ulp of the result plus n * 2^-96 * max|x| of the exact sum."""
    for make in (wide, cancelling, boundaries):
        v = make(3000)
        v = v[np.isfinite(v)]
        exact = sum(map(Fraction, v))
        got = _rsum.value(_rsum.of(v))
        if math.isinf(got):
            continue
        bound = Fraction(math.ulp(got)) / 2 + len(v) * Fraction(float(np.max(np.abs(v)))) / 2**96
        assert abs(Fraction(got) - exact) <= bound


def words_value(words):
    """The value of a state's words: its exact sum rounded once (the definition)."""
    top = int(words[0])
    exact = sum(Fraction((int(words[2 + 2 * k]) << 32) + int(words[3 + 2 * k])) * Fraction(2) ** (BITS * (top - k) - 1074)
                for k in range(FOLD))
    try:
        return float(exact)
    except OverflowError:
        return math.inf if exact > 0 else -math.inf


def test_value_of_one_count_states_at_the_fast_path_edges():
    """States with one non-zero count (fl_rsum_value_simple) in every bin of every window,
    counts around 2^53 and the units around the normal range's ends, against the definition;
    and states of two counts (the general path) beside them."""
    states, rng = [], np.random.default_rng(26)
    for top in range(FOLD - 1, TOP_MAX + 1):
        for k in range(FOLD):
            for c in (1, -1, 3, (1 << 53) - 1, -(1 << 53) + 1, 1 << 53, -(1 << 53), (1 << 53) + 1,
                      int(rng.integers(1, 1 << 60)), -int(rng.integers(1, 1 << 40)), (1 << 21) << 32, -(1 << 21) << 32):
                w = np.zeros(_rsum.WORDS, np.int64)
                w[0] = top
                w[2 + 2 * k], w[3 + 2 * k] = c >> 32, c & 0xFFFFFFFF
                states.append(w.copy())
                w[2 + 2 * ((k + 1) % FOLD) + 1] = 5
                states.append(w)
    states = np.stack(states)
    got = _rsum.value(states)
    bad = [(list(s), g, words_value(s)) for s, g in zip(states, got) if not same(g, words_value(s))]
    assert not bad, f"{len(bad)} states valued wrongly, first: {bad[0]}"


def test_merge_is_commutative_and_associative_bitwise():
    a, b, c = (_rsum.of(wide(700)) for _ in range(3))
    np.testing.assert_array_equal(_rsum.merge(a, b), _rsum.merge(b, a))
    np.testing.assert_array_equal(_rsum.merge(_rsum.merge(a, b), c), _rsum.merge(a, _rsum.merge(b, c)))
    np.testing.assert_array_equal(_rsum.merge(a, _rsum.empty()), a)


def test_export_import_round_trip():
    states = np.stack([_rsum.of(SETS[k](900)) for k in SETS])
    for back in (pickle.loads(pickle.dumps(states)), np.frombuffer(states.tobytes(), np.int64).reshape(states.shape),
                 np.array(states.tolist(), dtype=np.int64)):
        checked = _rsum.check(back)
        np.testing.assert_array_equal(checked, states)
        np.testing.assert_array_equal(_rsum.value(checked), _rsum.value(states))


@pytest.mark.parametrize("word,bad", [(0, 1), (0, 44), (1, 8), (1, -1), (3, -1), (5, 1 << 32)])
def test_check_rejects_states_no_deposit_makes(word, bad):
    s = np.stack([_rsum.of([1.0, 2.0]), _rsum.of([3.0])])
    s[1, word] = bad
    with pytest.raises(ValueError, match=r"state at \(1,\)"):
        _rsum.check(s)
    with pytest.raises(ValueError, match="int64"):
        _rsum.check(s.astype(np.float64))
