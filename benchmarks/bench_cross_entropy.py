"""Cross-entropy benchmarks (pytest-benchmark): loss only and loss + gradient, float32 logits
with class-index targets, fastlogits against its NumPy reference, SciPy (log_softmax + gather)
and PyTorch (forward, forward + backward) at the same thread count.

Run: pytest benchmarks/bench_cross_entropy.py --benchmark-min-rounds=3
The gradient is written into a preallocated grad_out (warm), so page faults of a fresh N x C
array are not counted; PyTorch allocates its gradient as it always does.
"""
import numpy as np
import pytest

import fastlogits as fl
from fastlogits import reference as ref

SHAPES = [(8192, 1000), (1_000_000, 10), (65536, 2), (4096, 32000), (512, 128256)]
IDS = [f"{n}x{c}" for n, c in SHAPES]


@pytest.fixture(scope="module", params=SHAPES, ids=IDS)
def data(request):
    n, c = request.param
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c), dtype=np.float32) * 3
    y = rng.integers(0, c, n)
    return x, y


def _label(benchmark, x, what):
    benchmark.group = f"{x.shape[0]}x{x.shape[1]} {what}"


def test_fastlogits_loss(benchmark, data):
    x, y = data
    _label(benchmark, x, "loss")
    benchmark(fl.cross_entropy, x, y)


def test_fastlogits_loss_grad(benchmark, data):
    x, y = data
    _label(benchmark, x, "loss+grad")
    g = np.empty_like(x)
    benchmark(fl.cross_entropy_and_grad, x, y, grad_out=g)


def test_reference_loss(benchmark, data):
    x, y = data
    if x.size > 50_000_000:
        pytest.skip("the NumPy reference works in float64 N x C temporaries: too big")
    _label(benchmark, x, "loss")
    benchmark(ref.cross_entropy, x, y)


def test_reference_loss_grad(benchmark, data):
    x, y = data
    if x.size > 50_000_000:
        pytest.skip("the NumPy reference works in float64 N x C temporaries: too big")
    _label(benchmark, x, "loss+grad")
    benchmark(ref.cross_entropy_and_grad, x, y)


def test_scipy_log_softmax_gather(benchmark, data):
    special = pytest.importorskip("scipy.special")
    x, y = data
    _label(benchmark, x, "loss")
    rows = np.arange(x.shape[0])

    def run():
        return float(-np.mean(special.log_softmax(x, axis=-1)[rows, y], dtype=np.float64))

    benchmark(run)


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(fl.get_num_threads())
    return torch


def test_torch_forward(benchmark, data, torch):
    x, y = data
    _label(benchmark, x, "loss")
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def run():
        with torch.no_grad():
            return torch.nn.functional.cross_entropy(xt, yt).item()

    benchmark(run)


def test_torch_forward_backward(benchmark, data, torch):
    x, y = data
    _label(benchmark, x, "loss+grad")
    xt, yt = torch.from_numpy(x).requires_grad_(True), torch.from_numpy(y)

    def run():
        xt.grad = None
        loss = torch.nn.functional.cross_entropy(xt, yt)
        loss.backward()
        return loss.item()

    benchmark(run)
