"""Every reduction is bitwise the same however its rows are split and merged: random chunkings
and random merge trees through the modules' partial/finish interface (what fastlogits.dask and
a streaming scorer use), every ``chunk_rows`` of ``score``, and thread counts 1 to 4. The sums
are order-independent (csrc/fl_rsum.h), so none of this knows a kernel block size."""
import math

import numpy as np
import pytest

import fastlogits as fl
from fastlogits import _bce, _ce, _score_check, _score_finish, _score_state

RNG = np.random.default_rng(2018)


def cuts(n, rng, most=12):
    """Random boundaries 0 = c0 < c1 < ... < ck = n (uneven pieces, some of one row)."""
    if n <= 1:
        return [0, n]
    k = int(rng.integers(1, min(most, n - 1) + 1))
    inner = np.sort(rng.choice(np.arange(1, n), k, replace=False))
    return [0] + [int(c) for c in inner] + [n]


def tree_merge(states, rng):
    """Merge in a random binary tree, operands in random order."""
    states = list(states)
    while len(states) > 1:
        i = int(rng.integers(0, len(states) - 1))
        a, b = states.pop(i), states.pop(i)
        states.insert(int(rng.integers(0, len(states) + 1)), a.merge(b) if rng.random() < 0.5 else b.merge(a))
    return states[0]


def same(got, want):
    if isinstance(want, dict):
        assert got.keys() == want.keys()
        for k in want:
            same(got[k], want[k])
    elif isinstance(want, float) and math.isnan(want):
        assert math.isnan(got)
    else:
        assert got == want, (got, want, got - want)


def with_threads(fn):
    """fn() at 1 to 4 threads: all bitwise equal; returns the result."""
    old = fl.get_num_threads()
    try:
        results = []
        for t in (1, 2, 3, 4):
            fl.set_num_threads(t)
            results.append(fn())
    finally:
        fl.set_num_threads(old)
    for r in results[1:]:
        same(r, results[0])
    return results[0]


# ----------------------------------------------------------------------------- cross_entropy

CE_CASES = [
    # (rows, classes, dtype, options): the tile path (few classes), one row at a time, float64
    (3000, 3, np.float32, {}),
    (2000, 10, np.float32, {"weighted": True}),
    (600, 300, np.float32, {"label_smoothing": 0.1, "z_loss": 1e-3, "weighted": True}),
    (700, 40, np.float64, {"weighted": True}),
    (500, 17, np.float32, {"probabilities": True, "weighted": True}),
]


def _ce_data(n, c, dtype, opts):
    x = (RNG.standard_normal((n, c)) * 4).astype(dtype)
    x[::97, 0] = 1e4  # peaked rows: losses of very different magnitudes
    if opts.get("probabilities"):
        y = fl.softmax(RNG.standard_normal((n, c)))
    else:
        y = RNG.integers(0, c, n)
        y[::11] = -100
    kw = {k: v for k, v in opts.items() if k in ("label_smoothing", "z_loss")}
    sw = RNG.random(n) * 3 if opts.get("weighted") else None
    if opts.get("weighted") and not opts.get("probabilities"):
        kw["weight"] = RNG.random(c) + 0.5
    return x, y, sw, kw


@pytest.mark.parametrize("n,c,dtype,opts", CE_CASES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_any_split_merge_and_threads(n, c, dtype, opts, reduction):
    x, y, sw, kw = _ce_data(n, c, dtype, opts)
    want = with_threads(lambda: fl.cross_entropy(x, y, sample_weight=sw, reduction=reduction, **kw))
    with_threads(lambda: same(fl.cross_entropy_and_grad(x, y, sample_weight=sw, reduction=reduction, **kw)[0], want))
    p = _ce.check(x, y, -1, kw.get("weight"), sw, -100, reduction, kw.get("label_smoothing", 0.0),
                  kw.get("z_loss", 0.0))
    for _ in range(5):
        b = cuts(n, RNG)
        states = [_ce.partial(_ce.check(x[lo:hi], y[lo:hi], -1, kw.get("weight"), None if sw is None else sw[lo:hi],
                                        -100, reduction, kw.get("label_smoothing", 0.0), kw.get("z_loss", 0.0)))
                  for lo, hi in zip(b[:-1], b[1:])]
        same(_ce.finish(p, tree_merge(states, RNG)), want)


# ----------------------------------------------------------------------------- binary losses

BCE_CASES = [(2000, 37, np.float32), (40000, None, np.float32), (300, 1, np.float64), (50, 20000, np.float32)]


@pytest.mark.parametrize("n,c,dtype", BCE_CASES)
@pytest.mark.parametrize("kind", ["bce", "focal"])
def test_binary_losses_any_split_merge_and_threads(n, c, dtype, kind):
    shape = (n,) if c is None else (n, c)
    x = (RNG.standard_normal(shape) * 5).astype(dtype)
    y = (RNG.random(shape) < 0.3).astype(np.float32)
    if kind == "bce":
        w = RNG.random(shape[:1] + (1,) * (len(shape) - 1)) + 0.1
        fn, kw, kernel = fl.bce_with_logits, {"weight": w}, _bce.BCE
    else:
        w = None
        fn, kw, kernel = fl.sigmoid_focal_loss, {"alpha": 0.3, "gamma": 1.5}, _bce.FOCAL
    for reduction in ("sum", "mean"):
        want = with_threads(lambda: fn(x, y, reduction=reduction, **kw))
        p = _bce.check(kernel, x, y, w, None, reduction, kw.get("alpha", -1.0), kw.get("gamma", 0.0))
        for _ in range(4):
            b = cuts(n, RNG)
            states = [_bce.partial(_bce.check(kernel, x[lo:hi], y[lo:hi], None if w is None else w[lo:hi], None,
                                              reduction, kw.get("alpha", -1.0), kw.get("gamma", 0.0)))
                      for lo, hi in zip(b[:-1], b[1:])]
            same(_bce.finish(p, tree_merge(states, RNG)), want)


def test_bce_sum_does_not_depend_on_memory_layout():
    """Rows of the last axis whatever the strides (a Fortran-ordered copy used to be summed in
    the other direction, and reversed rows in other blocks: both moved the last bits)."""
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((3000, 70)) * 10.0 ** rng.integers(-3, 4, (3000, 1))).astype(np.float32)
    y = (rng.random((3000, 70)) < 0.5).astype(np.float32)
    want = fl.bce_with_logits(x, y, reduction="sum")
    same(fl.bce_with_logits(np.asfortranarray(x), np.asfortranarray(y), reduction="sum"), want)
    same(fl.bce_with_logits(x[::-1], y[::-1], reduction="sum"), want)


# ----------------------------------------------------------------------------- score

def _score_data(task, n):
    if task == "multiclass":
        x = (RNG.standard_normal((n, 9)) * 3).astype(np.float32)
        return x, RNG.integers(0, 9, n), {"k": 3}
    if task == "binary":
        return RNG.standard_normal(n) * 2, RNG.random(n) < 0.4, {}
    return RNG.standard_normal((n, 4)).astype(np.float32), RNG.random((n, 4)) < 0.3, {"temperature": 1.3, "bins": 7}


@pytest.mark.parametrize("task", ["multiclass", "binary", "multilabel"])
@pytest.mark.parametrize("weighted", [False, True])
def test_score_any_split_merge_chunk_rows_and_threads(task, weighted):
    n = 5000
    x, y, kw = _score_data(task, n)
    w = RNG.random(n) if weighted else None
    want = with_threads(lambda: fl.score(x, y, sample_weight=w, **kw))
    for chunk_rows in (1, 7, 999, 4096, None):
        same(fl.score(x, y, sample_weight=w, chunk_rows=chunk_rows, **kw), want)
    p = _score_check.check(x, y, None, -1, w)
    s = _score_check.spec(p, None, kw.get("k", 5), kw.get("bins", 15), kw.get("temperature", 1.0))
    for _ in range(4):
        b = cuts(n, RNG)
        states = [_score_state.partial(_score_check.check(x[lo:hi], y[lo:hi], p.task, -1, None if w is None else w[lo:hi]), s)
                  for lo, hi in zip(b[:-1], b[1:])]
        same(_score_finish.finish(p, s, tree_merge(states, RNG)), want)


def test_fit_temperature_same_for_every_thread_count():
    x = RNG.standard_normal((3000, 6)) * 3
    y = (RNG.random(3000)[:, None] < np.cumsum(fl.softmax(x / 2), axis=1)).argmax(axis=1)
    with_threads(lambda: fl.fit_temperature(x, y))
