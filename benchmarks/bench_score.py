"""fl.score against a NumPy/scikit-learn pipeline and fl.logsumexp (a one-pass lower bound).

Run: pytest benchmarks/bench_score.py --benchmark-only --benchmark-group-by=param:shape
"""
import numpy as np
import pytest

import fastlogits as fl

SHAPES = {"1000000x10": (1_000_000, 10), "4096x32000": (4096, 32000)}


@pytest.fixture(scope="module", params=list(SHAPES))
def data(request):
    n, c = SHAPES[request.param]
    rng = np.random.default_rng(0)
    return request.param, rng.standard_normal((n, c), dtype=np.float32), rng.integers(0, c, n)


@pytest.mark.parametrize("threads", [1, 2])
def test_score_all_metrics(benchmark, data, threads):
    shape, x, y = data
    old = fl.get_num_threads()
    fl.set_num_threads(threads)
    try:
        benchmark.extra_info.update(shape=shape, threads=threads)
        benchmark(fl.score, x, y)
    finally:
        fl.set_num_threads(old)


def test_score_nll_only(benchmark, data):
    shape, x, y = data
    benchmark.extra_info["shape"] = shape
    benchmark(fl.score, x, y, metrics="nll")


def test_logsumexp_floor(benchmark, data):
    shape, x, _ = data
    benchmark.extra_info["shape"] = shape
    benchmark(fl.logsumexp, x)


def test_numpy_pipeline(benchmark, data):
    """What a user would write: log_softmax, NLL, argmax accuracy, entropy in NumPy."""
    shape, x, y = data
    benchmark.extra_info["shape"] = shape

    def pipeline():
        m = x.max(axis=1, keepdims=True)
        z = x - m
        lse = np.log(np.exp(z).sum(axis=1, keepdims=True))
        logp = z - lse
        p = np.exp(logp)
        return (-logp[np.arange(len(y)), y].mean(), (x.argmax(axis=1) == y).mean(), -(p * logp).sum(axis=1).mean())

    benchmark.pedantic(pipeline, rounds=3, iterations=1)
