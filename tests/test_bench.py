"""The benchmark table behind ``fastlogits bench`` and ``benchmarks/`` (fastlogits/bench.py).

Each case checks fastlogits against the reference as it runs, so the bench is also a smoke
test: the checks must pass on the real results and fail on a wrong one. A case reports every
column of the printed table, computed from its own timings and the bandwidth it is given, and
the PyTorch column appears exactly when PyTorch is installed (``fastlogits bench`` on a fresh
install with only NumPy is run by ``.ci/run``)."""
import json

import threading

import numpy as np
import pytest

import fastlogits as fl
from fastlogits import bench
from fastlogits._roofline import CACHE_BYTES

TINY = {"none": (64, 10), "class": (64, 10), "masked": (64, 16), "binary": (32, 8), "scored": (64, 10),
        "wide": (64, 40)}
BANDWIDTH = {"read_GBps": 10.0, "copy_GBps": 20.0}
RATES = {"exp": 2.0, "div": 4.0, "log1p": 1.0}  # probe rates, G operations/s per core
OPS = list(bench._ops())


def _perturbed(result):
    """The result with its first output wrong: indices moved by one, values by 1%."""
    if isinstance(result, dict):
        first = next(iter(result))
        return {**result, first: _perturbed(result[first])}
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
        shapes = {"binary": bench.BINARY_SHAPES, "masked": bench.MASKED_SHAPES,
                  "scored": bench.SCORE_SHAPES, "wide": bench.WIDE_SHAPES}.get(op.targets, bench.STANDARD_SHAPES)
        if op.shapes:  # cases with shapes of their own (decoding), float32 ones with arithmetic from cache too
            own = op.shapes + (bench.CACHE_SHAPES if op.dtype == "float32" and bench.arithmetic(name) else [])
            assert shape in own, (name, shape)
            continue
        if op.dtype != "float32":
            shapes = bench.HALF_SHAPES + (bench.LM_SHAPES if name in bench.LM_OPS else [])
            if name.split("/")[0] in bench.HALF_OPS:
                assert bench._ops()[name.split("/")[0]].dtype == "float32"
        elif bench.arithmetic(name) and op.targets not in ("masked", "wide"):
            shapes = shapes + bench.CACHE_SHAPES
        assert shape in shapes, (name, shape)
    # every float32 operation with arithmetic runs once from cache; the others never do
    from_cache = {name for name, shape in full if shape in bench.CACHE_SHAPES}
    assert from_cache == {n for n in OPS if "/" not in n and bench.arithmetic(n)
                          and bench._ops()[n].targets not in ("masked", "wide")}
    assert set(bench.ARITHMETIC) <= {n.split("/")[0] for n in OPS}
    # the language-model case, beside the cross-entropy of the same data, in both runs
    for name in bench.LM_OPS:
        assert (name, bench.LM_SHAPES[0]) in full and (name, bench.LM_QUICK_SHAPES[0]) in quick
    assert all(set(ops) <= set(bench._core.PROBE_OPS) for ops in bench.ARITHMETIC.values())


@pytest.mark.parametrize("name", [n for n in OPS if "/" in n and not bench._ops()[n].shapes])
def test_half_precision_cases_run_on_their_dtype(name):
    op = bench._ops()[name]
    d = bench.make_data(op, TINY[op.targets])
    assert d.x.dtype.name == op.dtype and op.dtype in ("float16", "bfloat16")
    out = op.fast(d)
    array_out = out[1] if isinstance(out, tuple) else out  # a gradient, or an elementwise/row output
    if op.name.split("/")[0] not in ("predict", "cross_entropy", "sequence_scores"):  # not in the logits' dtype
        assert np.asarray(array_out).dtype.name == op.dtype
    assert set(op.peers) <= {"torch"}


@pytest.mark.parametrize("with_torch", [False, True], ids=["numpy_only", "torch"])
def test_run_case_reports_every_column(monkeypatch, with_torch):
    if with_torch:
        pytest.importorskip("torch")
    else:
        monkeypatch.setattr(bench, "_torch", lambda: None)
    shape = (128, 10)
    r = bench.run_case("cross_entropy_and_grad", shape, threads=1, bandwidth=BANDWIDTH, rates=RATES,
                       repeats=3, peer_repeats=1, budget_s=1.0)
    assert r["op"] == "cross_entropy_and_grad" and r["shape"] == list(shape) and r["threads"] == 1
    best = r["fastlogits_warm_s"]
    assert 0 < best and 0 < r["fastlogits_cold_s"]
    for kind in ("warm", "cold"):  # the spread: best and median of the repeats
        assert r[f"fastlogits_{kind}_s"] <= r[f"fastlogits_{kind}_median_s"]
    assert r["gelem_per_s"] == pytest.approx(shape[0] * shape[1] / best / 1e9)
    # a copy-bound case moves logits and targets in and a gradient out
    moved = 2 * shape[0] * shape[1] * 4 + shape[0] * 8
    assert r["bound"] == "copy"
    assert r["pct_of_bandwidth"] == pytest.approx(100 * moved / best / 1e9 / BANDWIDTH["copy_GBps"])
    # the roofline: the larger of the memory bound (none: 10 KB stay in cache) and one exponential
    # per element at the probe's rate
    mem, arith = 0.0, shape[0] * shape[1] / (RATES["exp"] * 1e9)
    assert r["memory_bound_s"] == pytest.approx(mem) and r["arithmetic_bound_s"] == pytest.approx(arith)
    assert r["roofline_by"] == ("memory" if mem > arith else "arithmetic")
    assert r["pct_of_roofline"] == pytest.approx(100 * max(mem, arith) / best)
    assert r["exp_equivalents"] == 1.0
    assert r["speedup_vs_reference"] == pytest.approx(r["reference_s"] / best)
    assert ("speedup_vs_torch" in r) is with_torch

    report = {"fastlogits": fl.__version__, "isa": "test", "threads": 1, "torch": None,
              "bandwidth": BANDWIDTH, "results": [r]}
    lines = bench.format_table(report).splitlines()
    assert len(lines) == 4
    columns = ("fl warm ms", "fl cold ms", "med ms", "Gelem/s", "% bw", "% roof", "x ref", "x scipy", "x numpy",
               "x torch")
    for column in columns:
        assert column in lines[1]
    row = lines[2].split()
    assert row[0] == "cross_entropy_and_grad" and row[1] == "128x10"
    assert float(row[4]) == pytest.approx(r["fastlogits_warm_median_s"] * 1e3, abs=0.006)
    assert row[7] == f"{r['pct_of_roofline']:.0f}%{r['roofline_by'][0]}"
    assert (row[-1] == "-") is not with_torch
    assert json.loads(bench.to_json(report))["results"][0]["op"] == "cross_entropy_and_grad"
    report["stream"], report["subnormals"] = "never", None
    assert bench.format_table(report).splitlines()[0].endswith("; non-temporal stores: never")
    report["subnormals"] = "plain"
    assert bench.format_table(report).splitlines()[0].endswith("; non-temporal stores: never; subnormal products: plain")


@pytest.mark.parametrize("name, per_element, work", [
    ("softmax", 1 / 2.0, 1 / 2.0), ("sigmoid", 1 / 2.0, 1 / 2.0 + 1 / 4.0),
    ("log_sigmoid/f16", 1 / 2.0 + 1 / 1.0, 1 / 2.0 + 1 / 1.0),
    ("sigmoid_focal_loss_and_grad", 1 / 2.0 + 1 / 1.0, 1 / 2.0 + 1 / 1.0 + 2 / 4.0), ("predict", 0.0, 0.0)])
def test_roofline_follows_from_bandwidth_and_probe(name, per_element, work):
    """Each operation's arithmetic at the probe's rates (ns per element here), per core times
    the threads: exponentials and log1p add (the same FMA ports), divisions run beside them (a
    division-bound case would take max); from cache (the cache shapes, or no more bytes than
    CACHE_BYTES) only the arithmetic bound applies; without arithmetic the roofline is the
    memory bound."""
    shape, moved = (1000, 100), 80_000_000
    for threads in (1, 2):
        b = bench.roofline(name, shape, moved, "copy", threads, BANDWIDTH, RATES)
        assert b["memory_bound_s"] == pytest.approx(moved / 20e9)
        assert b["arithmetic_bound_s"] == pytest.approx(1e5 * per_element * 1e-9 / threads)
        assert b["roofline_s"] == max(b["memory_bound_s"], b["arithmetic_bound_s"])
        assert b["exp_equivalents"] == pytest.approx(work * RATES["exp"])
    cached = bench.roofline(name, bench.CACHE_SHAPES[0], moved, "read", 1, BANDWIDTH, RATES)
    assert cached["memory_bound_s"] == 0.0 and cached["roofline_s"] == cached["arithmetic_bound_s"]
    small = bench.roofline(name, shape, CACHE_BYTES, "read", 1, BANDWIDTH, RATES)
    assert small["memory_bound_s"] == 0.0 and small["roofline_s"] == small["arithmetic_bound_s"]
    just_over = bench.roofline(name, shape, CACHE_BYTES + 1, "read", 1, BANDWIDTH, RATES)
    assert just_over["memory_bound_s"] == pytest.approx((CACHE_BYTES + 1) / 10e9)
    no_probe = bench.roofline(name, shape, moved, "read", 1, BANDWIDTH, None)
    assert no_probe["arithmetic_bound_s"] == 0.0 and no_probe["roofline_s"] == pytest.approx(moved / 10e9)


def test_divisions_bound_the_arithmetic_when_they_take_longer_than_the_rest():
    slow_divider = {**RATES, "div": 0.5}  # two ns a division against half a ns an exponential
    b = bench.roofline("sigmoid", (1000, 100), 0, "copy", 1, BANDWIDTH, slow_divider)
    assert b["arithmetic_bound_s"] == pytest.approx(1e5 * 2.0 * 1e-9)


@pytest.mark.parametrize("end_read, unstable", [(10.0, False), (11.4, False), (8.4, True), (11.6, True)])
def test_run_measures_bandwidth_and_restores_the_thread_count(monkeypatch, end_read, unstable):
    monkeypatch.setattr(bench, "cases", lambda quick=False, ops=None: [("softmax", (64, 10)), ("cross_entropy", (64, 10))])
    measured = iter([dict(BANDWIDTH), dict(BANDWIDTH, read_GBps=end_read)])
    monkeypatch.setattr(bench, "measure_bandwidth", lambda nbytes=0, repeats=5: next(measured))
    monkeypatch.setattr(bench, "measure_arithmetic", lambda threads=1: dict(RATES))
    before = fl.get_num_threads()
    seen = []
    report = bench.run(quick=True, threads=1, progress=seen.append)
    assert fl.get_num_threads() == before
    assert seen == ["softmax 64x10", "cross_entropy 64x10"]
    assert report["threads"] == 1 and report["bandwidth"] == BANDWIDTH and report["rates"] == RATES
    from fastlogits._config import _stream_text, _subnormal_text

    assert report["stream"] == _stream_text()  # the policy that decided the warm times
    assert report["subnormals"] == _subnormal_text()
    assert report["bandwidth_end"]["read_GBps"] == end_read
    assert report["drift"]["read_GBps"] == pytest.approx(end_read / 10.0 - 1) and report["drift"]["copy_GBps"] == 0
    assert report["unstable"] is unstable
    assert ("UNSTABLE" in bench.format_table(report)) is unstable
    assert [r["op"] for r in report["results"]] == ["softmax", "cross_entropy"]
    assert all(r["arithmetic_bound_s"] == pytest.approx(64 * 10 / 2e9) for r in report["results"])


def test_cases_of_named_operations_only():
    every = bench.cases()
    some = bench.cases(ops=["softmax", "cross_entropy/bf16"])
    assert some == [c for c in every if c[0] in ("softmax", "cross_entropy/bf16")]
    assert {name for name, _ in some} == {"softmax", "cross_entropy/bf16"}
    assert bench.LM_SHAPES[0] in [s for name, s in some if name == "cross_entropy/bf16"]
    with pytest.raises(ValueError, match="softmix; valid: softmax"):
        bench.cases(ops=["softmix"])


def test_run_with_ops_times_only_those(monkeypatch):
    monkeypatch.setattr(bench, "measure_bandwidth", lambda nbytes=0, repeats=5: dict(BANDWIDTH))
    monkeypatch.setattr(bench, "measure_arithmetic", lambda threads=1: dict(RATES))
    monkeypatch.setattr(bench, "run_case", lambda name, shape, **kw: {"op": name, "shape": list(shape)})
    report = bench.run(quick=True, threads=1, ops=["logsumexp"])
    assert [(r["op"], tuple(r["shape"])) for r in report["results"]] == [("logsumexp", s) for s in bench.QUICK_SHAPES]


def test_measure_bandwidth_is_positive():
    bw = bench.measure_bandwidth(nbytes=1 << 20, repeats=1)
    assert bw["read_GBps"] > 0 and bw["copy_GBps"] > 0


def test_probe_measures_every_operation_and_computes_it(isa):
    """The probe's rates are positive on every ISA, and its loop computes what it says: the sums
    of exp(x - 80), 1/(1 + x) and log1p(x/80) over its 1024 arguments, per pass."""
    rates = bench.measure_arithmetic(repeats=1, reps=10)
    assert set(rates) == {"exp", "div", "log1p"} and all(v > 0 for v in rates.values())
    x = (np.arange(1024) % 97).astype(np.float32) * np.float32(80.0 / 96.0)
    want = {"exp": np.exp(x.astype(np.float64) - 80).sum(), "div": (1 / (1 + x.astype(np.float64))).sum(),
            "log1p": np.log1p(x.astype(np.float64) / 80).sum()}
    for what, total in want.items():
        assert bench._core.math_probe(what, 3) == pytest.approx(3 * total, rel=1e-4), what


def test_probe_runs_on_every_thread_at_once(monkeypatch):
    """With threads=3 the probe runs three times at once (a barrier that only three calls in
    flight together can pass), so the rate per core is what each core does while the others
    work too, not one core's rate alone."""
    together = threading.Barrier(3, timeout=10)
    calls = []

    def probe(what, reps):
        together.wait()  # raises BrokenBarrierError unless three calls run at once
        calls.append(threading.get_ident())
        return 0.0

    monkeypatch.setattr(bench._core, "math_probe", probe)
    rates = bench.measure_arithmetic(repeats=1, reps=10, threads=3)
    assert set(rates) == set(bench._core.PROBE_OPS)
    assert len(set(calls)) == 3 and len(calls) == 3 * 2 * len(rates)  # warm-up and one repeat


def test_plot_has_both_panels(tmp_path):
    pytest.importorskip("matplotlib")
    r = bench.run_case("softmax", (64, 10), threads=1, bandwidth=BANDWIDTH, rates=RATES, repeats=1, peer_repeats=1)
    report = {"fastlogits": fl.__version__, "isa": "test", "threads": 1, "torch": None, "bandwidth": BANDWIDTH,
              "rates": RATES, "unstable": True, "results": [r]}
    path = tmp_path / "bench.png"
    bench.plot(report, str(path))
    assert path.stat().st_size > 0


# ---- decoding (API section 8)
@pytest.mark.parametrize("name", [n for n in OPS if bench._ops()[n].shapes])
def test_decoding_cases_run_on_their_dtype_next_to_their_baseline(name):
    op = bench._ops()[name]
    d = bench.make_data(op, TINY[op.targets])
    assert d.x.dtype.name == op.dtype and "baseline" in op.peers
    assert {s for n, s in bench.cases() if n == name} >= set(op.shapes)
    op.peers["baseline"](d)



@pytest.mark.parametrize("name", ["cross_entropy/bf16", "softmax/f16", "cross_entropy"])
def test_make_data_holds_no_float32_copy_of_half_logits(name):
    """The LM case's 8 x 2048 x 128256 bfloat16 logits are 4 GiB; drawn as one float32 array,
    scaled and converted (as the bench did), they took 21 GB and the full run was killed by the
    kernel's OOM killer on a 24 GB machine. The case's arrays are drawn in row blocks now."""
    import tracemalloc

    op = bench._ops()[name]
    shape = (2048, 8192)
    tracemalloc.start()
    try:
        d = bench.make_data(op, shape)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    held = sum(a.nbytes for a in (d.x, d.target, d.out) if a is not None)
    assert peak <= held + 16 * bench.DRAW_ELEMS, (name, peak, held)
    if d.torch_x is not None:  # PyTorch reads the same memory (bfloat16 through its bits)
        assert d.torch_x.data_ptr() == d.x.ctypes.data
        assert str(d.torch_x.dtype) == f"torch.{op.dtype}"
        assert tuple(d.torch_x.shape) == d.x.shape
        assert tuple(s * d.x.itemsize for s in d.torch_x.stride()) == d.x.strides
        rows = slice(0, 64)  # the same values, read through each library (a float32 copy of all is 64 MB)
        np.testing.assert_array_equal(d.torch_x[rows].float().numpy(), d.x[rows].astype(np.float32))


def test_the_reference_is_not_timed_where_its_float64_temporaries_would_not_fit(monkeypatch):
    monkeypatch.setattr(bench, "REFERENCE_MAX_ELEMS", 64 * 10 - 1)
    r = bench.run_case("logsumexp", (64, 10), threads=1, bandwidth=BANDWIDTH, rates=RATES, repeats=1, peer_repeats=1)
    assert "reference_s" not in r and "speedup_vs_reference" not in r
    monkeypatch.setattr(bench, "REFERENCE_MAX_ELEMS", 64 * 10)
    r = bench.run_case("logsumexp", (64, 10), threads=1, bandwidth=BANDWIDTH, rates=RATES, repeats=1, peer_repeats=1)
    assert r["speedup_vs_reference"] > 0


def test_the_evaluation_peers_get_columns_only_where_they_ran():
    """score_per_class's scikit-learn and torchmetrics peers (issue 20: 'peer columns where the
    peer is installed') were in the JSON but not in the printed table."""
    r = bench.run_case("softmax", (64, 10), threads=1, bandwidth=BANDWIDTH, rates=RATES, repeats=1, peer_repeats=1)
    report = {"fastlogits": fl.__version__, "isa": "test", "threads": 1, "bandwidth": BANDWIDTH, "results": [r]}
    assert "x sklearn" not in bench.format_table(report)
    scored = dict(r, op="score_per_class", speedup_vs_sklearn=48.25)
    lines = bench.format_table(dict(report, results=[r, scored])).splitlines()
    assert lines[1].split()[-2:] == ["x", "sklearn"] and "tmetrics" not in lines[1]
    assert lines[3].split()[-1] == "48.2" and lines[2].split()[-1] == "-"


def _targets_module():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "targets.py"
    spec = importlib.util.spec_from_file_location("bench_targets", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _case(op, shape, best, roof, torch=None, by="memory", mem=None):
    mem = roof if mem is None else mem
    c = {"op": op, "shape": list(shape), "fastlogits_cold_s": best, "roofline_s": roof, "roofline_by": by,
         "pct_of_roofline": 100 * roof / best, "memory_bound_s": mem,
         "arithmetic_bound_s": roof / 2, "pct_of_bandwidth": 100 * mem / best,
         "gelem_per_s": shape[0] * shape[1] / best / 1e9}
    if torch is not None:
        c.update(torch_s=torch, speedup_vs_torch=torch / best)
    return c


def test_targets_verdicts_follow_the_roofline():
    """benchmarks/targets.py: met when fast enough; 'beyond the roofline' when the target asks
    for less time than the case's roofline (nothing could meet it); else 'short'."""
    t = _targets_module()
    assert t.verdict(1.0, 0.5, 0.9) == "met"
    assert t.verdict(1.0, 2.0, 3.0) == "beyond the roofline (needs 200% of it)"
    assert t.verdict(1.0, 0.5, 4.0) == "short: 25% of the target's speed"
    run = {"isa": "avx2", "threads": 1, "results": [
        _case("softmax", (8192, 1000), best=4.0, roof=3.0, torch=6.0),      # 3x needs 2 < 3: beyond
        _case("logsumexp", (8192, 1000), best=4.0, roof=1.0, torch=6.0),    # 3x needs 2 > 1: short
        _case("sigmoid", (8192, 1000), best=1.0, roof=0.5, torch=6.0),      # 6x: met
        _case("cross_entropy", (4096, 32000), best=2.0, roof=1.5, by="memory"),
        _case("predict", (4096, 32000), best=2.0, roof=1.5), _case("predict/f16", (4096, 32000), best=1.0, roof=0.8),
    ]}
    out = t.report([run])
    assert "| softmax | 8192x1000 | 1.5x | 3x | 3e+03 ms (torch 6e+03 ms) | beyond the roofline (needs 150% of it) |" in out
    assert "| logsumexp | 8192x1000 | 1.5x | 3x | 1e+03 ms (torch 6e+03 ms) | short: 50% of the target's speed |" in out
    assert "| sigmoid | 8192x1000 | 6.0x | 3x | 500 ms (torch 6e+03 ms) | met |" in out
    assert "| cross_entropy | 4096x32000 | 75% (m) | 80% | 1.5e+03 ms | short: 94% of the target's speed |" in out
    assert "| predict/f16 | 4096x32000 | 2.00x | 1.7x | 800 ms (m) | met |" in out
    # two threads: 1.8x needs 4/1.8 = 2.22, 85% of the bandwidth 1/0.85: the easier is 2.22 < 2.4
    two = {"isa": "avx2", "threads": 2, "results": [_case("softmax", (8192, 1000), best=2.5, roof=2.4, mem=1.0)]}
    assert ("| softmax | 8192x1000 | 1.60x, 40% bw | 1.8x or 85% bw | 2.4e+03 ms | beyond the roofline (needs 108% of it) |"
            in t.report([run, two]))
