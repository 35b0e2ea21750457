"""The benchmark table behind ``fastlogits bench`` and ``benchmarks/`` (fastlogits/bench.py).

Each case checks fastlogits against the reference as it runs, so the bench is also a smoke
test: the checks must pass on the real results and fail on a wrong one. A case reports every
column of the printed table, computed from its own timings and the bandwidth it is given, and
the PyTorch column appears exactly when PyTorch is installed (``fastlogits bench`` on a fresh
install with only NumPy is run by ``.ci/run``)."""
import json

import numpy as np
import pytest

import fastlogits as fl
from fastlogits import bench

TINY = {"none": (64, 10), "class": (64, 10), "masked": (64, 16), "binary": (32, 8)}
BANDWIDTH = {"read_GBps": 10.0, "copy_GBps": 20.0}
OPS = list(bench._ops())


def _perturbed(result):
    """The result with its first output wrong: indices moved by one, values by 1%."""
    if isinstance(result, tuple):
        return (_perturbed(result[0]),) + tuple(result[1:])
    a = np.asarray(result)
    return a + 1 if a.dtype.kind in "iu" else a * 1.01 + 0.01


@pytest.mark.parametrize("name", OPS)
def test_every_case_checks_its_result_against_the_reference(name):
    op = bench._ops()[name]
    assert op.check is not None, f"{name}: the bench would not check its result"
    d = bench.make_data(op, TINY[op.targets])
    got, want = op.fast(d), op.reference(d)
    op.check(got, want)
    with pytest.raises(AssertionError, match="differs from the reference"):
        op.check(_perturbed(got), want)
    if op.fast_warm is not None:
        op.check(op.fast_warm(d), want)


def test_cases_cover_the_table():
    full, quick = bench.cases(), bench.cases(quick=True)
    assert {name for name, _ in full} == set(OPS)
    assert {name for name, _ in quick} <= set(OPS)
    assert len(set(full)) == len(full)
    for name, shape in full:
        op = bench._ops()[name]
        shapes = {"binary": bench.BINARY_SHAPES, "masked": bench.MASKED_SHAPES}.get(op.targets, bench.STANDARD_SHAPES)
        if op.shapes:  # cases with shapes of their own (decoding)
            assert shape in op.shapes, (name, shape)
            continue
        if op.dtype != "float32":
            shapes = bench.HALF_SHAPES
            assert bench._ops()[name.split("/")[0]].dtype == "float32"
        assert shape in shapes, (name, shape)


@pytest.mark.parametrize("name", [n for n in OPS if "/" in n and not bench._ops()[n].shapes])
def test_half_precision_cases_run_on_their_dtype(name):
    op = bench._ops()[name]
    d = bench.make_data(op, TINY[op.targets])
    assert d.x.dtype.name == op.dtype and op.dtype in ("float16", "bfloat16")
    out = op.fast(d)
    array_out = out[1] if isinstance(out, tuple) else out  # a gradient, or an elementwise/row output
    if op.name.split("/")[0] not in ("predict", "cross_entropy"):  # int64 classes, a float loss
        assert np.asarray(array_out).dtype.name == op.dtype
    assert set(op.peers) <= {"torch"}


@pytest.mark.parametrize("with_torch", [False, True], ids=["numpy_only", "torch"])
def test_run_case_reports_every_column(monkeypatch, with_torch):
    if with_torch:
        pytest.importorskip("torch")
    else:
        monkeypatch.setattr(bench, "_torch", lambda: None)
    shape = (128, 10)
    r = bench.run_case("cross_entropy_and_grad", shape, threads=1, bandwidth=BANDWIDTH,
                       repeats=1, peer_repeats=1, budget_s=1.0)
    assert r["op"] == "cross_entropy_and_grad" and r["shape"] == list(shape) and r["threads"] == 1
    best = r["fastlogits_warm_s"]
    assert 0 < best and 0 < r["fastlogits_cold_s"]
    assert r["gelem_per_s"] == pytest.approx(shape[0] * shape[1] / best / 1e9)
    # a copy-bound case moves logits and targets in and a gradient out
    moved = 2 * shape[0] * shape[1] * 4 + shape[0] * 8
    assert r["bound"] == "copy"
    assert r["pct_of_bandwidth"] == pytest.approx(100 * moved / best / 1e9 / BANDWIDTH["copy_GBps"])
    assert r["speedup_vs_reference"] == pytest.approx(r["reference_s"] / best)
    assert ("speedup_vs_torch" in r) is with_torch

    report = {"fastlogits": fl.__version__, "isa": "test", "threads": 1, "torch": None,
              "bandwidth": BANDWIDTH, "results": [r]}
    lines = bench.format_table(report).splitlines()
    assert len(lines) == 4
    for column in ("fl warm ms", "fl cold ms", "Gelem/s", "% bw", "x ref", "x scipy", "x numpy", "x torch"):
        assert column in lines[1]
    row = lines[2].split()
    assert row[0] == "cross_entropy_and_grad" and row[1] == "128x10"
    assert (row[-1] == "-") is not with_torch
    assert json.loads(bench.to_json(report))["results"][0]["op"] == "cross_entropy_and_grad"


def test_run_measures_bandwidth_and_restores_the_thread_count(monkeypatch):
    monkeypatch.setattr(bench, "cases", lambda quick=False: [("softmax", (64, 10)), ("cross_entropy", (64, 10))])
    monkeypatch.setattr(bench, "measure_bandwidth", lambda nbytes=0, repeats=5: dict(BANDWIDTH))
    before = fl.get_num_threads()
    seen = []
    report = bench.run(quick=True, threads=1, progress=seen.append)
    assert fl.get_num_threads() == before
    assert seen == ["softmax 64x10", "cross_entropy 64x10"]
    assert report["threads"] == 1 and report["bandwidth"] == BANDWIDTH
    assert [r["op"] for r in report["results"]] == ["softmax", "cross_entropy"]


def test_measure_bandwidth_is_positive():
    bw = bench.measure_bandwidth(nbytes=1 << 20, repeats=1)
    assert bw["read_GBps"] > 0 and bw["copy_GBps"] > 0


# ---- decoding (API section 8)
@pytest.mark.parametrize("name", [n for n in OPS if bench._ops()[n].shapes])
def test_decoding_cases_run_on_their_dtype_next_to_their_baseline(name):
    op = bench._ops()[name]
    d = bench.make_data(op, TINY[op.targets])
    assert d.x.dtype.name == op.dtype and "baseline" in op.peers
    assert {n for n, _ in bench.cases() if n == name} == {name}
    op.peers["baseline"](d)

