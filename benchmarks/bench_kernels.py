"""pytest-benchmark view of the benchmark table in ``fastlogits.bench`` (the same cases, peers
and inputs as ``fastlogits bench``, so the numbers of the suite, the command and the README
agree).

    python -m pytest benchmarks/bench_kernels.py --benchmark-only --benchmark-group-by=param:case
    FASTLOGITS_BENCH_QUICK=1 ...   # the --quick subset

Each case is grouped by (operation, shape); the rows of a group are fastlogits (warm: with a
preallocated output where the operation has one; cold: fresh outputs) and each installed peer,
all at fastlogits' thread count (PyTorch is set to the same).
"""
import os

import pytest

import fastlogits as fl
from fastlogits import bench

QUICK = os.environ.get("FASTLOGITS_BENCH_QUICK") == "1"
TABLE = bench._ops()
CASES = [f"{name}-{n}x{c}" for name, (n, c) in bench.cases(quick=QUICK)]


def _impls(op):
    impls = {"fastlogits_cold": op.fast, "reference": op.reference, **op.peers}
    if op.fast_warm is not None:
        impls["fastlogits_warm"] = op.fast_warm
    return impls


PARAMS = [(case, impl) for case in CASES for impl in _impls(TABLE[case.rsplit("-", 1)[0]])]

_data_cache = {}


def _data(case):
    """Inputs of a case, made once per case (the table's own generator)."""
    if case not in _data_cache:
        _data_cache.clear()
        name, shape = case.rsplit("-", 1)
        n, c = (int(v) for v in shape.split("x"))
        _data_cache[case] = bench.make_data(TABLE[name], (n, c))
    return _data_cache[case]


@pytest.mark.parametrize("case, impl", PARAMS)
def test_kernel(benchmark, case, impl):
    name = case.rsplit("-", 1)[0]
    op = TABLE[name]
    data = _data(case)
    torch = bench._torch()
    if torch is not None:
        torch.set_num_threads(fl.get_num_threads())
    fn = _impls(op)[impl]
    benchmark.extra_info.update({"operation": name, "implementation": impl})
    benchmark.pedantic(fn, args=(data,), rounds=3 if impl in ("reference",) else 5, warmup_rounds=1)
