"""The per-class block of fl.score (csrc/fl_score_pc.h, csrc/fl_score_row.h) where the small
inputs of test_scorer.py do not reach: many more rows than the fixed-point lanes hold between
two flushes, wide rows whose predicted class lies in any vector or in the tail of the row,
ties and special values in the vectorised argmax, temperatures, every dtype."""

import numpy as np
import pytest

import fastlogits as fl
from arrays import as_dtype, assert_same_result
from fastlogits._score_check import DEFAULT_METRICS

# several times the rows between two flushes of the per-class lanes (2048), and not a multiple
N_MANY = 3 * 2048 + 77


def _softmax64(x, t=1.0):
    z = np.asarray(x, np.float64) / t
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _classwise_ece(p, y, bins, w=None):
    n, c = p.shape
    w = np.ones(n) if w is None else w
    eces = []
    for k in range(c):
        b = np.minimum((p[:, k] * bins).astype(int), bins - 1)
        gap = sum(abs(np.sum(w[b == j] * (y[b == j] == k)) - np.sum(w[b == j] * p[b == j, k])) for j in range(bins))
        eces.append(gap / w.sum())
    return float(np.mean(eces))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("temperature", [1.0, 1.7])
def test_classwise_ece_without_weights_over_many_rows(dtype, temperature):
    """The unweighted fixed-point sums (flushed several times) against the float64 definition,
    and against the weighted path with unit weights (the same sums by another road)."""
    rng = np.random.default_rng(40)
    x = (rng.normal(size=(N_MANY, 5)) * 2).astype(dtype)
    y = rng.integers(0, 5, N_MANY)
    kw = dict(metrics=["classwise_ece"], bins=10, temperature=temperature)
    got = fl.score(x, y, **kw)["classwise_ece"]
    want = _classwise_ece(_softmax64(x, temperature), y, 10)
    assert got == pytest.approx(want, rel=1e-5 if dtype == np.float32 else 1e-12)
    unit = fl.score(x, y, sample_weight=np.ones(N_MANY), **kw)["classwise_ece"]
    assert got == pytest.approx(unit, rel=1e-13)


@pytest.mark.parametrize("c", [5, 37])
def test_per_class_bitwise_over_chunks_and_threads_beyond_a_flush(c):
    rng = np.random.default_rng(41)
    x = (rng.normal(size=(N_MANY, c)) * 3).astype(np.float32)
    y = rng.integers(0, c, N_MANY)
    y[::17] = -100
    kw = dict(per_class=True, auc_bins=16,
              metrics=list(DEFAULT_METRICS["multiclass"]) + ["roc_auc_ovr", "average_precision_ovr"])
    want = fl.score(x, y, **kw)
    old = fl.get_num_threads()
    try:
        for threads in (1, 2, 3):
            fl.set_num_threads(threads)
            for chunk_rows in (1000, 2047, 2049, 4096, None):
                assert_same_result(fl.score(x, y, chunk_rows=chunk_rows, **kw), want)
    finally:
        fl.set_num_threads(old)
    s = fl.Scorer(**kw)
    for lo, hi in ((0, 3000), (3000, 3001), (3001, N_MANY)):
        s.update(x[lo:hi], y[lo:hi])
    assert_same_result(s.compute(), want)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64"])
@pytest.mark.parametrize("c", [3, 8, 37, 1000])
def test_confusion_matrix_of_wide_rows_with_ties_and_special_values(dtype, c):
    """The predicted class (first NaN, else first max) wherever it lies: in the first vector,
    a later one, the tail; ties between maxima; NaN, +inf and all -inf rows."""
    rng = np.random.default_rng(42 + c)
    n = 600
    x = rng.integers(-4, 5, size=(n, c)).astype(np.float32)   # many ties
    x[::7, -1] = 9.0                                           # the max in the last element
    x[1::7, c // 2] = 9.0
    x[2::7, [0, c - 1]] = 9.0                                  # a tie: the first one wins
    x[3::29, c // 3] = np.nan
    x[4::29, (2 * c) // 3] = np.inf
    x[5::29] = -np.inf
    x = x.astype(as_dtype(dtype))
    y = rng.integers(0, c, n)
    r = fl.score(x, y, per_class=True, metrics=["count"])
    pred = fl.predict(x)
    np.testing.assert_array_equal(pred, np.argmax(x.astype(np.float32), axis=1))
    cm = np.zeros((c, c), np.int64)
    np.add.at(cm, (y, pred), 1)
    np.testing.assert_array_equal(r["confusion_matrix"], cm)


@pytest.mark.parametrize("c", [40, 200])
def test_large_probabilities_anywhere_in_the_row_on_every_isa(isa, c):
    """The unweighted block bins only the few p_c at or above min(1/bins, 1/(B-1)), found in the
    row's exponentials by vector masks; the weighted block bins every p_c. With unit weights
    both give the same classwise ECE and AUC, wherever the large ones lie (each lane of a block of
    four vectors, the partial tail), with one, two or five of them in a row."""
    rng = np.random.default_rng(43 + c)
    n = 400
    x = (rng.normal(size=(n, c)) * 0.5).astype(np.float32)
    for r in range(n):
        big = rng.choice(c, size=(1, 2, 5)[r % 3], replace=False)
        big[0] = r % c                                          # every position, in turn
        x[r, big] += rng.uniform(3.0, 9.0, big.size).astype(np.float32)
    y = rng.integers(0, c, n)
    kw = dict(per_class=True, auc_bins=9, metrics=["classwise_ece", "roc_auc_ovr"])
    got = fl.score(x, y, **kw)
    unit = fl.score(x, y, sample_weight=np.ones(n), **kw)
    assert got["classwise_ece"] == pytest.approx(unit["classwise_ece"], rel=1e-12), isa
    assert got["roc_auc_ovr"] == pytest.approx(unit["roc_auc_ovr"], rel=1e-12), isa


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_rows_of_many_large_probabilities_on_every_isa(isa, task):
    """Without weights only the p_c at or above min(1/bins, 1/(B-1)) are binned one by one
    (fl_pc_add_high; sigmoid elements: fl_pc_elem), the rest derived from the totals. Rows with
    none, a few and 200 of them (near-uniform rows of 200 classes, or 150 labels, against
    1/(B-1) for B = 1000 or 50) give the sums of unit weights (which bin every p_c)."""
    rng = np.random.default_rng(45)
    n = 301
    if task == "multiclass":
        x = (rng.normal(size=(n, 200)) * 0.05).astype(np.float32)
        x[::3] *= 100.0                                         # peaked rows: a few large p_c
        y = rng.integers(0, 200, n)
        kw = dict(per_class=True, auc_bins=1000, metrics=["classwise_ece", "roc_auc_ovr", "average_precision_ovr"])
    else:
        x = rng.normal(size=(n, 150)).astype(np.float32)
        x[::3] -= 8.0                                           # rows of small probabilities
        y = (rng.random((n, 150)) < 0.3).astype(np.int64)
        kw = dict(auc_bins=50, metrics=["roc_auc", "average_precision"])
    got = fl.score(x, y, **kw)
    unit = fl.score(x, y, sample_weight=np.ones(n), **kw)
    for name in kw["metrics"]:
        assert got[name] == pytest.approx(unit[name], rel=1e-12), (isa, name)


@pytest.mark.parametrize("shift", [0.0, 40.0, -63.5, 64.5, -300.0])
def test_peaked_rows_fixed_point_on_every_isa(isa, shift):
    """At T = 1 the statistics pass takes exp(x_k) 2^-round(max log2 e) for rows with |max| <= 64
    (the others: exp(x_k - max)), and the per-class block divides those exponentials by the
    max's own (a float32 value near exp(max - round(max log2 e) ln 2), not 1). The unweighted
    sums' fixed point needs every p_c <= 1 + 2^-52: rows whose other classes lie 25-40 below the
    max (p_max within 2^-30 of 1), one max or two, must give the classwise ECE of unit weights
    (exact double sums) to 1e-13, and the float64 definition's to float32 accuracy."""
    rng = np.random.default_rng(44)
    n, c = 500, 100
    x = (rng.normal(size=(n, c)) - 30).astype(np.float32)
    top = rng.integers(0, c, n)
    x[np.arange(n), top] = 0.0
    x[::5, (top[::5] + 7) % c] = 0.0                       # two maxima: p = 1/2 each
    x += np.float32(shift)
    y = np.where(np.arange(n) % 3 == 0, top, rng.integers(0, c, n))
    kw = dict(per_class=True, bins=10, metrics=["classwise_ece", "nll", "brier"])
    got = fl.score(x, y, **kw)
    unit = fl.score(x, y, sample_weight=np.ones(n), **kw)
    assert got["classwise_ece"] == pytest.approx(unit["classwise_ece"], rel=1e-13), (isa, shift)
    want = _classwise_ece(_softmax64(x), y, 10)
    assert got["classwise_ece"] == pytest.approx(want, rel=1e-5), (isa, shift)


def test_exact_per_class_sums_across_updates_merges_and_state_dicts():
    """Unweighted rows' per-class sums stay exact integers in the state (fixed-point sums of p_c
    in 128 bits) and go into the sum states only when a result or a state_dict is made. Near
    uniform rows over 3 classes put every p_c (about 1/3) in one of 10 ECE bins, whose sums pass
    2^64 units of 2^-52 (4096): the low words wrap and carry, in the kernel and in the merges (a
    merge without the carry fails here). Every road gives the bits of one call: merges in both
    orders, compute() between updates, a state_dict round trip with rows still to come; and
    unit weights (exact double sums) agree."""
    rng = np.random.default_rng(45)
    n, c = 40000, 3
    x = (rng.normal(size=(n, c)) * 0.01).astype(np.float32)
    y = rng.integers(0, c, n)
    kw = dict(per_class=True, bins=10, auc_bins=7, metrics=["classwise_ece", "roc_auc_ovr", "macro_f1"])
    want = fl.score(x, y, **kw)
    halves = []
    for lo, hi in ((0, n // 2), (n // 2, n)):
        s = fl.Scorer(**kw)
        for a in range(lo, hi, 3000):
            s.update(x[a:min(a + 3000, hi)], y[a:min(a + 3000, hi)])
        halves.append(s)
    for first, second in ((0, 1), (1, 0)):
        merged = fl.Scorer(**kw)
        merged.merge(halves[first])
        merged.merge(halves[second])
        assert_same_result(merged.compute(), want)
    s = fl.Scorer(**kw)
    s.update(x[:7000], y[:7000])
    s.compute()                                     # the exact sums folded in, then more rows
    s.update(x[7000:25000], y[7000:25000])
    restored = fl.Scorer.from_state_dict(s.state_dict())
    restored.update(x[25000:], y[25000:])
    assert_same_result(restored.compute(), want)
    s.update(x[25000:], y[25000:])
    assert_same_result(s.compute(), want)
    unit = fl.score(x, y, sample_weight=np.ones(n), **kw)
    assert want["classwise_ece"] == pytest.approx(unit["classwise_ece"], rel=1e-13)
    assert want["roc_auc_ovr"] == pytest.approx(unit["roc_auc_ovr"], rel=1e-13)
