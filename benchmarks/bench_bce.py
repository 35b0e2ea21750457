"""Benchmarks of bce_with_logits and sigmoid_focal_loss (pytest-benchmark).

    python -m pytest benchmarks/bench_bce.py --benchmark-only --benchmark-group-by=param:case

Cases, float32: a 4096 x 4096 "dense" array (16.7M elements) and a (65536, 1000) multi-label
batch with a pos_weight of shape (1000,). Competitors: the NumPy reference, SciPy
(log_expit/expit compositions), PyTorch's binary_cross_entropy_with_logits forward and forward +
backward at the same thread count as fastlogits.
"""
import numpy as np
import pytest

import fastlogits as fl
from fastlogits import reference as R

CASES = {"dense_4096x4096": (4096, 4096), "multilabel_65536x1000": (65536, 1000)}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    shape = CASES[request.param]
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape, dtype=np.float32) * 3).astype(np.float32)
    y = (rng.random(shape, dtype=np.float32) < 0.1).astype(np.float32)
    pw = (1 + rng.random(shape[1])).astype(np.float32)
    return request.param, x, y, pw


def _torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(fl.get_num_threads())
    return torch


def test_fl_bce_mean(benchmark, case):
    _, x, y, pw = case
    benchmark(fl.bce_with_logits, x, y, pos_weight=pw)


def test_fl_bce_mean_bool_target(benchmark, case):
    _, x, y, pw = case
    yb = y.astype(bool)
    benchmark(fl.bce_with_logits, x, yb, pos_weight=pw)


def test_fl_bce_and_grad(benchmark, case):
    _, x, y, pw = case
    benchmark(fl.bce_with_logits_and_grad, x, y, pos_weight=pw)


def test_fl_bce_and_grad_into_buffer(benchmark, case):
    _, x, y, pw = case
    g = np.empty_like(x)
    benchmark(fl.bce_with_logits_and_grad, x, y, pos_weight=pw, grad_out=g)


def test_fl_focal_and_grad(benchmark, case):
    _, x, y, _ = case
    benchmark(fl.sigmoid_focal_loss_and_grad, x, y)


def test_reference_bce_and_grad(benchmark, case):
    _, x, y, pw = case
    benchmark.pedantic(R.bce_with_logits_and_grad, args=(x, y), kwargs=dict(pos_weight=pw), rounds=1, iterations=1)


def test_scipy_bce_and_grad(benchmark, case):
    """The usual SciPy composition in float32: loss from log_expit, gradient from expit."""
    special = pytest.importorskip("scipy.special")
    _, x, y, pw = case

    def run():
        lw = 1 + (pw - 1) * y
        loss = np.mean((1 - y) * x - lw * special.log_expit(x))
        grad = (special.expit(x) * lw - pw * y) / x.size
        return loss, grad

    benchmark(run)


def test_torch_bce_forward(benchmark, case):
    torch = _torch()
    _, x, y, pw = case
    tx, ty, tp = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(pw)
    f = torch.nn.functional.binary_cross_entropy_with_logits
    benchmark(lambda: f(tx, ty, pos_weight=tp).item())


def test_torch_bce_forward_backward(benchmark, case):
    torch = _torch()
    _, x, y, pw = case
    ty, tp = torch.from_numpy(y), torch.from_numpy(pw)
    f = torch.nn.functional.binary_cross_entropy_with_logits

    def run():
        tx = torch.from_numpy(x).requires_grad_(True)
        loss = f(tx, ty, pos_weight=tp)
        loss.backward()
        return loss.item(), tx.grad

    benchmark(run)
