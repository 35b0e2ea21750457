"""Benchmarks: one table of cases and peers, shared by ``fastlogits bench`` and ``benchmarks/``.

Every case runs fastlogits and each installed peer (the NumPy reference, SciPy, PyTorch) on the
same data at the same thread count, and checks fastlogits' result against the reference on a
sample of rows as it goes, so a benchmark run is also a smoke test. The machine's read and copy
bandwidth are measured in the same run (STREAM-like, arrays of at least 256 MiB, best of 5),
so "% of bandwidth" is honest on whatever machine runs it.

The roofline of a case is the larger of two bounds measured in the same run: the memory bound
(the bytes the case must move over the read bandwidth for loss-only work, over the copy
bandwidth for an output as large as the input) and the arithmetic bound (its elements times
the operations each needs, ``ARITHMETIC``, over the rates of those operations on this core and
ISA, measured by the probe loop of csrc/fl_probe.c). ``% roofline`` is that bound over the best
time. Cases on ``CACHE_SHAPES`` run from cache: only their arithmetic bound applies. Bandwidth
and probe are measured again at the end; a run whose bandwidth moved more than
``DRIFT_LIMIT`` is flagged (its timings are not comparable).
"""
from __future__ import annotations

import functools
import gc
import json
import math
import statistics
import time
from dataclasses import dataclass, field, replace
from typing import IO, Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np

import fastlogits as fl
from fastlogits import _core
from fastlogits._input import bfloat16
from fastlogits import reference as ref

# ---------------------------------------------------------------------------- the table

STANDARD_SHAPES = [(8192, 1000), (1_000_000, 10), (65536, 2), (4096, 32000), (512, 128256)]
BINARY_SHAPES = [(4096, 4096), (65536, 1000)]
# masked logits (three classes in four at -inf, as a constrained vocabulary leaves them)
MASKED_SHAPES = [(4096, 32000)]
QUICK_SHAPES = [(8192, 1000), (1_000_000, 10), (512, 32000)]
# half-precision logits: these operations again on float16 and bfloat16 ("<name>/f16",
# "<name>/bf16"), to set against their float32 rows of the same shape
HALF_OPS = ["softmax", "log_softmax", "logsumexp", "sigmoid", "predict", "cross_entropy", "cross_entropy_and_grad"]
HALF_DTYPES = {"f16": "float16", "bf16": "bfloat16"}
HALF_SHAPES = [(4096, 32000)]
# from cache: the float32 operations with arithmetic (see ARITHMETIC) again on an input that
# stays in the last-level cache between calls (8 MB), where only the arithmetic bound applies
CACHE_SHAPES = [(64, 32000)]

# The arithmetic each element of an operation needs at least, by the operations of the probe
# (csrc/fl_probe.c): "exp" an exponential, "div" a division, "log1p" the log1p polynomial of the
# sigmoid family. Half-precision cases share their float32 operation's entry; an operation not
# listed needs none (argmax, top-k: comparisons only), and its roofline is its memory bound.
ARITHMETIC: Dict[str, Dict[str, int]] = {
    "softmax": {"exp": 1},
    "log_softmax": {"exp": 1},
    "logsumexp": {"exp": 1},
    "entropy": {"exp": 1},
    "softmax_masked": {"exp": 1},
    "cross_entropy": {"exp": 1},
    "cross_entropy_masked": {"exp": 1},
    "cross_entropy_and_grad": {"exp": 1},
    "sigmoid": {"exp": 1, "div": 1},                       # exp(-|x|), 1/(1 + t)
    "log_sigmoid": {"exp": 1, "log1p": 1},                 # exp(-|x|), log1p(t)
    "bce_with_logits": {"exp": 1, "log1p": 1},             # softplus terms
    "bce_with_logits_and_grad": {"exp": 1, "log1p": 1, "div": 1},   # and the sigmoid
    "sigmoid_focal_loss": {"exp": 1, "log1p": 1, "div": 1},         # ce and q = 1 - p_t
    "sigmoid_focal_loss_and_grad": {"exp": 1, "log1p": 1, "div": 2},  # and s+ s- / q
    "token_logprobs": {"exp": 1},                          # the row's logsumexp
    # sample (top-k, top-p, min-p) needs none per element: top-k's selection compares, and only
    # the few candidates it keeps take an exponential
}
# a run whose read or copy bandwidth moved more than this between its start and its end is flagged
DRIFT_LIMIT = 0.15


@dataclass
class Data:
    """Inputs of one case, made once and shared by fastlogits and every peer."""

    x: np.ndarray
    target: Optional[np.ndarray] = None
    out: Optional[np.ndarray] = None   # preallocated output for the warm runs
    torch_x: Any = None
    torch_target: Any = None


@dataclass(frozen=True)
class Op:
    """A benchmarked operation: how to run it with fastlogits (warm: preallocated outputs;
    cold: fresh ones), with each peer, how many bytes it must move at least, and which
    bandwidth bounds it ("read": loss-only work; "copy": an output as large as the input)."""

    name: str
    targets: str                                    # "none", "class", "masked", "binary"
    bound: str                                      # "read" or "copy"
    fast: Callable[[Data], Any]
    fast_warm: Optional[Callable[[Data], Any]]
    reference: Callable[[Data], Any]
    peers: Dict[str, Callable[[Data], Any]] = field(default_factory=dict)
    check: Optional[Callable[[Any, Any], None]] = None
    dtype: str = "float32"                          # of the logits (and of the outputs)
    shapes: Optional[List[Tuple[int, int]]] = None  # the shapes of its cases, when not the table's


def _scipy() -> Any:
    try:
        import scipy.special as sp

        return sp
    except ImportError:
        return None


def _torch() -> Any:
    try:
        import torch

        return torch
    except ImportError:
        return None


def _close(rtol: float) -> Callable[[Any, Any], None]:
    def check(got: Any, want: Any) -> None:
        got_t = got if isinstance(got, tuple) else (got,)
        want_t = want if isinstance(want, tuple) else (want,)
        for g, w in zip(got_t, want_t):
            g = np.asarray(g, dtype=np.float64)
            w = np.asarray(w, dtype=np.float64)
            if not np.allclose(g, w, rtol=rtol, atol=rtol * 1e-3, equal_nan=True):
                worst = np.nanmax(np.abs(g - w) / np.maximum(np.abs(w), 1e-30))
                raise AssertionError(f"result differs from the reference (worst relative error {worst:.3g})")

    return check


def _equal(got: Any, want: Any) -> None:
    got_t = got if isinstance(got, tuple) else (got,)
    want_t = want if isinstance(want, tuple) else (want,)
    for g, w in zip(got_t, want_t):
        if not np.array_equal(np.asarray(g), np.asarray(w)):
            raise AssertionError("result differs from the reference")


def _ops() -> Dict[str, Op]:
    sp, torch = _scipy(), _torch()
    F: Any = torch.nn.functional if torch else None
    ops: List[Op] = []

    def peers(**kw: Optional[Callable[[Data], Any]]) -> Dict[str, Callable[[Data], Any]]:
        return {k: v for k, v in kw.items() if v is not None}

    ops.append(Op(
        "softmax", "none", "copy",
        lambda d: fl.softmax(d.x), lambda d: fl.softmax(d.x, out=d.out), lambda d: ref.softmax(d.x),
        peers(scipy=sp and (lambda d: sp.softmax(d.x, axis=-1)),
              torch=torch and (lambda d: torch.softmax(d.torch_x, -1))),
        _close(1e-5)))
    ops.append(Op(
        "log_softmax", "none", "copy",
        lambda d: fl.log_softmax(d.x), lambda d: fl.log_softmax(d.x, out=d.out), lambda d: ref.log_softmax(d.x),
        peers(scipy=sp and (lambda d: sp.log_softmax(d.x, axis=-1)),
              torch=torch and (lambda d: torch.log_softmax(d.torch_x, -1))),
        _close(1e-5)))
    ops.append(Op(
        "logsumexp", "none", "read",
        lambda d: fl.logsumexp(d.x), None, lambda d: ref.logsumexp(d.x),
        peers(scipy=sp and (lambda d: sp.logsumexp(d.x, axis=-1)),
              torch=torch and (lambda d: torch.logsumexp(d.torch_x, -1))),
        _close(1e-5)))
    ops.append(Op(
        "sigmoid", "none", "copy",
        lambda d: fl.sigmoid(d.x), lambda d: fl.sigmoid(d.x, out=d.out), lambda d: ref.sigmoid(d.x),
        peers(scipy=sp and (lambda d: sp.expit(d.x)), torch=torch and (lambda d: torch.sigmoid(d.torch_x))),
        _close(1e-5)))
    ops.append(Op(
        "log_sigmoid", "none", "copy",
        lambda d: fl.log_sigmoid(d.x), lambda d: fl.log_sigmoid(d.x, out=d.out), lambda d: ref.log_sigmoid(d.x),
        peers(scipy=sp and (lambda d: sp.log_expit(d.x)),
              torch=torch and (lambda d: F.logsigmoid(d.torch_x))),
        _close(1e-5)))
    ops.append(Op(
        "entropy", "none", "read",
        lambda d: fl.entropy(d.x), None, lambda d: ref.entropy(d.x),
        peers(scipy=sp and (lambda d: -np.sum(sp.softmax(d.x, axis=-1) * sp.log_softmax(d.x, axis=-1), axis=-1)),
              torch=torch and (lambda d: torch.distributions.Categorical(logits=d.torch_x).entropy())),
        _close(1e-4)))
    ops.append(Op(
        "topk5", "none", "read",
        lambda d: fl.topk(d.x, _k5(d))[1], None, lambda d: ref.topk(d.x, _k5(d))[1],
        peers(numpy=lambda d: np.argpartition(-d.x, _k5(d) - 1, axis=-1)[:, :_k5(d)],
              torch=torch and (lambda d: torch.topk(d.torch_x, _k5(d), dim=-1))),
        _equal))
    ops.append(Op(
        "predict", "none", "read",
        lambda d: fl.predict(d.x), None, lambda d: ref.predict(d.x),
        peers(numpy=lambda d: np.argmax(d.x, axis=-1), torch=torch and (lambda d: torch.argmax(d.torch_x, -1))),
        _equal))
    ops.append(Op(
        "cross_entropy", "class", "read",
        lambda d: fl.cross_entropy(d.x, d.target), None, lambda d: ref.cross_entropy(d.x, d.target),
        peers(scipy=sp and (lambda d: -np.mean(np.take_along_axis(sp.log_softmax(d.x, axis=-1), d.target[:, None], -1))),
              torch=torch and (lambda d: F.cross_entropy(d.torch_x, d.torch_target))),
        _close(1e-5)))
    ops.append(Op(
        "softmax_masked", "masked", "copy",
        lambda d: fl.softmax(d.x), lambda d: fl.softmax(d.x, out=d.out), lambda d: ref.softmax(d.x),
        peers(scipy=sp and (lambda d: sp.softmax(d.x, axis=-1)),
              torch=torch and (lambda d: torch.softmax(d.torch_x, -1))),
        _close(1e-5)))
    ops.append(Op(
        "cross_entropy_masked", "masked", "read",
        lambda d: fl.cross_entropy(d.x, d.target), None, lambda d: ref.cross_entropy(d.x, d.target),
        peers(torch=torch and (lambda d: F.cross_entropy(d.torch_x, d.torch_target))),
        _close(1e-5)))
    ops.append(Op(
        "cross_entropy_and_grad", "class", "copy",
        lambda d: fl.cross_entropy_and_grad(d.x, d.target),
        lambda d: fl.cross_entropy_and_grad(d.x, d.target, grad_out=d.out),
        lambda d: ref.cross_entropy_and_grad(d.x, d.target),
        peers(torch=torch and (lambda d: _torch_fwd_bwd(torch, d, lambda t: F.cross_entropy(t, d.torch_target)))),
        _close(1e-5)))
    ops.append(Op(
        "bce_with_logits", "binary", "read",
        lambda d: fl.bce_with_logits(d.x, d.target), None, lambda d: ref.bce_with_logits(d.x, d.target),
        peers(scipy=sp and (lambda d: -np.mean(d.target * sp.log_expit(d.x) + (1 - d.target) * sp.log_expit(-d.x))),
              torch=torch and (lambda d: F.binary_cross_entropy_with_logits(d.torch_x, d.torch_target))),
        _close(1e-5)))
    ops.append(Op(
        "bce_with_logits_and_grad", "binary", "copy",
        lambda d: fl.bce_with_logits_and_grad(d.x, d.target),
        lambda d: fl.bce_with_logits_and_grad(d.x, d.target, grad_out=d.out),
        lambda d: ref.bce_with_logits_and_grad(d.x, d.target),
        peers(torch=torch and (lambda d: _torch_fwd_bwd(
            torch, d, lambda t: F.binary_cross_entropy_with_logits(t, d.torch_target)))),
        _close(1e-5)))
    ops.append(Op(
        "sigmoid_focal_loss", "binary", "read",
        lambda d: fl.sigmoid_focal_loss(d.x, d.target), None, lambda d: ref.sigmoid_focal_loss(d.x, d.target),
        peers(torch=torch and (lambda d: _torch_focal(torch, d.torch_x, d.torch_target))),
        _close(1e-5)))
    ops.append(Op(
        "sigmoid_focal_loss_and_grad", "binary", "copy",
        lambda d: fl.sigmoid_focal_loss_and_grad(d.x, d.target),
        lambda d: fl.sigmoid_focal_loss_and_grad(d.x, d.target, grad_out=d.out),
        lambda d: ref.sigmoid_focal_loss_and_grad(d.x, d.target),
        peers(torch=torch and (lambda d: _torch_fwd_bwd(torch, d, lambda t: _torch_focal(torch, t, d.torch_target)))),
        _close(1e-5)))
    by_name = {op.name: op for op in ops}
    for name in HALF_OPS:
        for tag, dtype in HALF_DTYPES.items():
            # half-precision outputs hold 8 (bfloat16) or 11 significant bits; the peer is
            # PyTorch on tensors of the same dtype
            half = by_name[name]
            ops.append(replace(half, name=f"{name}/{tag}", dtype=dtype, peers=peers(torch=half.peers.get("torch")),
                               check=_close(1e-2) if half.check is not _equal else _equal))
    # decoding (API section 8): sample and token_logprobs, with fastlogits' own baseline peer
    from ._bench_decode import decode_ops

    ops.extend(decode_ops(Op, torch, _close))
    return {op.name: op for op in ops}


def _torch_focal(torch: Any, x: Any, y: Any, alpha: float = 0.25, gamma: float = 2.0) -> Any:
    """torchvision.ops.sigmoid_focal_loss(reduction="mean"), written out (torchvision is optional)."""
    p = torch.sigmoid(x)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(x, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * (1 - p_t) ** gamma
    loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    return loss.mean()


def _k5(d: Data) -> int:
    """k of the top-k case: 5, or every class when there are fewer."""
    return min(5, int(d.x.shape[-1]))


def _torch_fwd_bwd(torch: Any, d: Data, loss_fn: Callable[[Any], Any]) -> Any:
    t = d.torch_x.detach().requires_grad_(True)
    loss = loss_fn(t)
    loss.backward()
    return float(loss.detach()), t.grad


def cases(quick: bool = False) -> List[Tuple[str, Tuple[int, int]]]:
    """(operation, shape) pairs of a run."""
    class_shapes = QUICK_SHAPES if quick else STANDARD_SHAPES
    binary_shapes = [(2048, 2048)] if quick else BINARY_SHAPES
    names = ["softmax", "logsumexp", "sigmoid", "cross_entropy", "cross_entropy_and_grad", "bce_with_logits",
             "bce_with_logits_and_grad"] if quick else list(_ops())
    table = _ops()
    out: List[Tuple[str, Tuple[int, int]]] = []
    for name in names:
        op = table[name]
        if op.shapes:
            shapes = op.shapes
        elif op.dtype != "float32":
            shapes = QUICK_SHAPES[-1:] if quick else HALF_SHAPES
        else:
            shapes = {"binary": binary_shapes, "masked": MASKED_SHAPES}.get(op.targets, class_shapes)
        out.extend((name, s) for s in shapes)
        if op.dtype == "float32" and op.targets != "masked" and arithmetic(name) and not quick:
            out.extend((name, s) for s in CACHE_SHAPES)
    return out


def arithmetic(name: str) -> Dict[str, int]:
    """The operations per element of a case's operation (ARITHMETIC), half precision included."""
    return ARITHMETIC.get(name.split("/")[0], {})


# ---------------------------------------------------------------------------- measuring

def _times(fn: Callable[[], Any], repeats: int, budget_s: float) -> List[float]:
    """Wall times of up to ``repeats`` calls; a call slower than the budget is not repeated
    (slow peers run once). The first call is a warm-up when there is time for another, and only
    then left out."""
    t0 = time.perf_counter()
    fn()
    times = [time.perf_counter() - t0]
    spent = times[0]
    for _ in range(repeats):
        if spent + min(times) > budget_s:
            break
        t0 = time.perf_counter()
        fn()
        t = time.perf_counter() - t0
        times.append(t)
        spent += t
    return times[1:] if len(times) > 1 else times


def _best_time(fn: Callable[[], Any], repeats: int, budget_s: float) -> float:
    return min(_times(fn, repeats, budget_s))


def measure_arithmetic(repeats: int = 7, reps: int = 20000) -> Dict[str, float]:
    """Rates of the probe's operations (csrc/fl_probe.c) on one core of the active ISA, in
    G operations/s, best of ``repeats`` calls of ``reps`` passes over 1024 floats in L1."""
    n = _core.PROBE_ELEMENTS * reps
    return {what: n / _best_time(lambda: _core.math_probe(what, reps), repeats, 10.0) / 1e9
            for what in _core.PROBE_OPS}


def measure_bandwidth(nbytes: int = 256 << 20, repeats: int = 5) -> Dict[str, float]:
    """Read and non-temporal copy bandwidth in GB/s (copy counts read + write bytes), with the
    current thread count."""
    n = nbytes // 4
    src = np.ones(n, dtype=np.float32)
    dst = np.empty_like(src)
    dst.fill(0.0)  # touch the pages first: this measures bandwidth, not page faults
    read = _best_time(lambda: _core.stream_read(src), repeats, 30.0)
    copy = _best_time(lambda: _core.stream_copy(dst, src), repeats, 30.0)
    return {"read_GBps": nbytes / read / 1e9, "copy_GBps": 2 * nbytes / copy / 1e9}


def make_data(op: Op, shape: Tuple[int, int], seed: int = 0) -> Data:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape, dtype=np.float32) * 3).astype(np.float32)
    d = Data(x)
    if op.targets == "class":
        d.target = rng.integers(0, shape[1], size=shape[0]).astype(np.int64)
    elif op.targets == "masked":
        x[:, np.arange(shape[1]) % 4 != 0] = -np.inf
        d.target = 4 * rng.integers(0, (shape[1] + 3) // 4, size=shape[0]).astype(np.int64)
    elif op.targets == "binary":
        d.target = (rng.random(shape, dtype=np.float32) < 0.3).astype(np.float32)
    if op.dtype != "float32":
        d.x = x.astype(bfloat16() if op.dtype == "bfloat16" else np.dtype(op.dtype))
    if op.fast_warm is not None:
        d.out = np.empty_like(d.x)
        d.out.fill(0.0)
    torch = _torch()
    if torch is not None:
        d.torch_x = torch.from_numpy(x).to(getattr(torch, op.dtype))
        if d.target is not None:
            d.torch_target = torch.from_numpy(d.target)
    return d


def _sample(op: Op, d: Data, rows: int = 64) -> Data:
    s = Data(d.x[:rows])
    if d.target is not None:
        s.target = d.target[:rows]
    return s


def _bytes(op: Op, d: Data) -> int:
    b = d.x.nbytes
    if d.target is not None:
        b += d.target.nbytes
    if op.bound == "copy":
        b += d.x.nbytes
    return b


def roofline(name: str, shape: Tuple[int, int], moved: int, bound: str, threads: int,
             bandwidth: Dict[str, float], rates: Optional[Dict[str, float]]) -> Dict[str, Any]:
    """The bounds of a case: memory (``moved`` bytes over the read or copy bandwidth; none from
    cache), arithmetic (each element's operations over the probe's rates, per core times the
    threads; none without rates), the roofline (the larger) and which one it is, and the
    operations per element in exponentials (each weighed by the exponential's rate over its own)."""
    elems = shape[0] * shape[1]
    limit = bandwidth["read_GBps"] if bound == "read" else bandwidth["copy_GBps"]
    mem_s = 0.0 if shape in CACHE_SHAPES else moved / limit / 1e9
    ops = arithmetic(name)
    arith_s = sum(elems * count / (rates[what] * 1e9 * threads) for what, count in ops.items()) if rates else 0.0
    exps = sum(count * rates["exp"] / rates[what] for what, count in ops.items()) if rates else None
    return {"memory_bound_s": mem_s, "arithmetic_bound_s": arith_s, "roofline_s": max(mem_s, arith_s),
            "roofline_by": "arithmetic" if arith_s > mem_s else "memory", "exp_equivalents": exps}


def run_case(name: str, shape: Tuple[int, int], *, threads: int, bandwidth: Dict[str, float],
             rates: Optional[Dict[str, float]] = None, repeats: int = 5, peer_repeats: int = 3,
             budget_s: float = 10.0) -> Dict[str, Any]:
    """Time one (operation, shape) for fastlogits and every peer; check against the reference.
    ``rates``: the probe's operations per second (measure_arithmetic), for the arithmetic bound."""
    op = _ops()[name]
    d = make_data(op, shape)
    small = _sample(op, d)
    if op.check is not None:
        op.check(op.fast(small), op.reference(small))
    torch = _torch()
    if torch is not None:
        torch.set_num_threads(threads)
    fl.set_num_threads(threads)
    res: Dict[str, Any] = {"op": name, "shape": list(shape), "dtype": op.dtype, "threads": threads}
    runs: Dict[str, Optional[Callable[[Data], Any]]] = {"cold": op.fast, "warm": op.fast_warm}
    for kind, fn in runs.items():
        if fn is not None:
            times = _times(functools.partial(fn, d), repeats, budget_s)
            res[f"fastlogits_{kind}_s"] = min(times)
            res[f"fastlogits_{kind}_median_s"] = statistics.median(times)
    best = res.get("fastlogits_warm_s", res["fastlogits_cold_s"])
    elems = shape[0] * shape[1]
    res["gelem_per_s"] = elems / best / 1e9
    limit = bandwidth["read_GBps"] if op.bound == "read" else bandwidth["copy_GBps"]
    res["bound"] = op.bound
    res["pct_of_bandwidth"] = 100.0 * (_bytes(op, d) / best / 1e9) / limit
    res.update(roofline(name, shape, _bytes(op, d), op.bound, threads, bandwidth, rates))
    res["pct_of_roofline"] = 100.0 * res["roofline_s"] / best
    peer_fns = dict(op.peers)
    peer_fns["reference"] = op.reference  # timed once when slow: see _best_time
    for peer, fn in peer_fns.items():
        t = _best_time(lambda: fn(d), peer_repeats, budget_s)
        res[f"{peer}_s"] = t
        res[f"speedup_vs_{peer}"] = t / best
    del d
    gc.collect()
    return res


def run(quick: bool = False, threads: Optional[int] = None, progress: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Run the table; returns {"fastlogits", "isa", "threads", "torch", "bandwidth", "rates",
    "bandwidth_end", "rates_end", "drift", "unstable", "results": [...]}: bandwidth and probe
    rates at the start (used by every case) and again at the end, and the bandwidth's relative
    change (``unstable`` when above DRIFT_LIMIT)."""
    threads = threads or fl.get_num_threads()
    old = fl.get_num_threads()
    fl.set_num_threads(threads)
    try:
        bw = measure_bandwidth(repeats=3 if quick else 5)
        rates = measure_arithmetic()
        results = []
        for name, shape in cases(quick):
            if progress:
                progress(f"{name} {shape[0]}x{shape[1]}")
            results.append(run_case(name, shape, threads=threads, bandwidth=bw, rates=rates,
                                    repeats=3 if quick else 7, peer_repeats=1 if quick else 3,
                                    budget_s=0.5 if quick else 5.0))
        bw_end = measure_bandwidth(repeats=3 if quick else 5)
        rates_end = measure_arithmetic()
    finally:
        fl.set_num_threads(old)
    torch = _torch()
    drift = {k: bw_end[k] / bw[k] - 1.0 for k in bw}
    return {
        "fastlogits": fl.__version__,
        "isa": _core.isa_name(),
        "threads": threads,
        "torch": getattr(torch, "__version__", None),
        "bandwidth": bw,
        "rates": rates,
        "bandwidth_end": bw_end,
        "rates_end": rates_end,
        "drift": drift,
        "unstable": any(abs(v) > DRIFT_LIMIT for v in drift.values()),
        "results": results,
    }


# ---------------------------------------------------------------------------- reporting

def _cell(value: Optional[float], width: int, fmt: str) -> str:
    """A right-aligned table cell; '-' where a peer is not installed or does not apply."""
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{fmt}}"


def _rates(r: Optional[Dict[str, float]]) -> str:
    return "-" if not r else ", ".join(f"{k} {v:.2f}" for k, v in r.items())


def format_table(report: Dict[str, Any]) -> str:
    bw = report["bandwidth"]
    lines = [
        f"fastlogits {report['fastlogits']} ({report['isa']}), {report['threads']} thread(s); "
        f"measured bandwidth: read {bw['read_GBps']:.1f} GB/s, non-temporal copy {bw['copy_GBps']:.1f} GB/s; "
        f"probe (G op/s per core): {_rates(report.get('rates'))}",
        f"{'operation':<28}{'shape':>14}{'fl warm ms':>11}{'fl cold ms':>11}{'med ms':>9}{'Gelem/s':>9}{'% bw':>7}"
        f"{'% roof':>8}{'x ref':>8}{'x scipy':>9}{'x numpy':>9}{'x base':>8}{'x torch':>9}",
    ]
    for r in report["results"]:
        warm = r.get("fastlogits_warm_s")
        median = r.get("fastlogits_warm_median_s", r.get("fastlogits_cold_median_s"))
        by = {"arithmetic": "a", "memory": "m"}[r["roofline_by"]] if r.get("roofline_s") else " "
        roof = f"{r['pct_of_roofline']:>6.0f}%{by}" if r.get("roofline_s") else f"{'-':>8}"
        lines.append(
            f"{r['op']:<28}{r['shape'][0]:>8}x{r['shape'][1]:<6}"
            f"{_cell(warm and warm * 1e3, 10, '.2f')} {r['fastlogits_cold_s'] * 1e3:>10.2f}"
            f"{_cell(median and median * 1e3, 9, '.2f')}"
            f"{r['gelem_per_s']:>9.2f}{r['pct_of_bandwidth']:>6.0f}%{roof}"
            + _cell(r.get("speedup_vs_reference"), 8, ".1f")
            + "".join(_cell(r.get(f"speedup_vs_{p}"), 9, ".1f") for p in ("scipy", "numpy"))
            + _cell(r.get("speedup_vs_baseline"), 8, ".2f")
            + _cell(r.get("speedup_vs_torch"), 9, ".1f")
        )
    lines.append("x peer = peer time / fastlogits time (warm where there is an output); % bw = bytes that must "
                 "move / time, over the read bandwidth (loss, reductions) or the copy bandwidth (outputs); "
                 "med ms = median of the repeats of the best path (warm where there is one); % roof = "
                 "max(memory bound, arithmetic bound) / time, m or a for the bound that is larger (from "
                 f"cache, {', '.join(f'{n}x{c}' for n, c in CACHE_SHAPES)}: arithmetic only); x base = "
                 "fastlogits' baseline on the same logits (decoding: one logsumexp for sample, "
                 "cross_entropy(reduction='none') for token_logprobs) / this one.")
    if "drift" in report:
        drift = ", ".join(f"{k.split('_')[0]} {100 * v:+.0f}%" for k, v in report["drift"].items())
        lines.append(f"bandwidth at the end: {drift}"
                     + (f"; UNSTABLE: moved more than {100 * DRIFT_LIMIT:.0f}%, the timings are not comparable"
                        if report["unstable"] else ""))
    return "\n".join(lines)


def to_json(report: Dict[str, Any]) -> str:
    return json.dumps(report, indent=2)


def plot(report: Dict[str, Any], path: Union[str, IO[bytes]]) -> None:
    """Bar charts of the speed-ups against each peer and of the % of the roofline of each case
    (needs matplotlib, the ``plot`` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["results"]
    labels = [f"{r['op']}\n{r['shape'][0]}x{r['shape'][1]}" for r in results]
    peers = [p for p in ("reference", "scipy", "numpy", "torch") if any(f"speedup_vs_{p}" in r for r in results)]
    fig, (ax, ax_roof) = plt.subplots(2, 1, figsize=(max(8, 0.6 * len(labels) * len(peers)), 9), sharex=True)
    width = 0.8 / max(1, len(peers))
    for i, p in enumerate(peers):
        vals = [r.get(f"speedup_vs_{p}", 0.0) for r in results]
        ax.bar([j + i * width for j in range(len(results))], vals, width, label=p)
    ax.set_yscale("log")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_ylabel("speed-up of fastlogits (x)")
    unstable = " (bandwidth UNSTABLE during the run)" if report.get("unstable") else ""
    ax.set_title(f"fastlogits {report['fastlogits']} ({report['isa']}, {report['threads']} threads){unstable}")
    ax.legend()
    centres = [j + 0.4 - width / 2 for j in range(len(results))]
    ax_roof.bar(centres, [r.get("pct_of_roofline", 0.0) for r in results], 0.6,
                color=["tab:blue" if r.get("roofline_by") == "memory" else "tab:orange" for r in results])
    ax_roof.axhline(100.0, color="black", linewidth=0.8)
    ax_roof.axhline(80.0, color="grey", linewidth=0.8, linestyle="--")
    ax_roof.set_ylabel("% of roofline (blue: memory, orange: arithmetic)")
    ax_roof.set_xticks(centres)
    ax_roof.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
