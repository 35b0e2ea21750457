"""The roofline of ``fastlogits bench``: what this machine can do, measured in the run, and the
bounds of a case.

A case's roofline is the larger of two bounds: the memory bound (the bytes the case must move
over the read bandwidth for loss-only work, over the copy bandwidth for an output as large as
the input; STREAM-like, arrays of at least 256 MiB) and the arithmetic bound (its elements times
the operations each needs, ``ARITHMETIC``, over the rates of those operations on this core and
ISA, measured by the probe loop of csrc/fl_probe.c; divisions overlap the rest). Cases on ``CACHE_SHAPES``, and
any case moving at most ``CACHE_BYTES``, run from cache: only their arithmetic bound applies. Also the timing helpers every measurement uses.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from . import _core

# from cache: the float32 operations with arithmetic (see ARITHMETIC) again on an input that
# stays in the last-level cache between calls (8 MB), where only the arithmetic bound applies
CACHE_SHAPES = [(64, 32000)]
# and any case that moves no more bytes than that (65536 x 2: 1 MiB in and out) stays in cache
# too: a DRAM bound would be no bound for it
CACHE_BYTES = 8 << 20

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
    "softmax_wide": {"exp": 1},
    "logsumexp_wide": {"exp": 1},
    "cross_entropy": {"exp": 1},
    "cross_entropy_masked": {"exp": 1},
    "cross_entropy_and_grad": {"exp": 1},
    "sequence_scores": {"exp": 1},
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
# probe operations done by a unit of their own, in parallel with the FMA ports' work (_arithmetic_s)
UNITS_BESIDE = ("div",)
# a run whose read or copy bandwidth moved more than this between its start and its end is flagged
DRIFT_LIMIT = 0.15


def arithmetic(name: str) -> Dict[str, int]:
    """The operations per element of a case's operation (ARITHMETIC), half precision included."""
    return ARITHMETIC.get(name.split("/")[0], {})


def times(fn: Callable[[], Any], repeats: int, budget_s: float) -> List[float]:
    """Wall times of up to ``repeats`` calls; a call slower than the budget is not repeated
    (slow peers run once). The first call is a warm-up when there is time for another, and only
    then left out."""
    t0 = time.perf_counter()
    fn()
    got = [time.perf_counter() - t0]
    spent = got[0]
    for _ in range(repeats):
        if spent + min(got) > budget_s:
            break
        t0 = time.perf_counter()
        fn()
        t = time.perf_counter() - t0
        got.append(t)
        spent += t
    return got[1:] if len(got) > 1 else got


def best_time(fn: Callable[[], Any], repeats: int, budget_s: float) -> float:
    return min(times(fn, repeats, budget_s))


def measure_arithmetic(repeats: int = 7, reps: int = 20000, threads: int = 1) -> Dict[str, float]:
    """Rates of the probe's operations (csrc/fl_probe.c) per core of the active ISA, in
    G operations/s, best of ``repeats`` rounds of ``reps`` passes over 1024 floats in L1, with
    ``threads`` cores running the probe at once. Measured together because cores need not add
    up: on a VM two virtual cores may share a physical core or its turbo budget (on the 2-core
    test machine two probes at once ran at 0.7 of one alone), and a roofline that multiplies one
    core's rate by the threads would blame the kernels for it."""
    n = _core.PROBE_ELEMENTS * reps
    return {what: n / best_time(lambda: _probe_together(what, reps, threads), repeats, 10.0) / 1e9
            for what in _core.PROBE_OPS}


def _probe_together(what: str, reps: int, threads: int) -> None:
    """``threads`` calls of the probe at once (it releases the GIL), started together; returns
    when the last one ends."""
    if threads <= 1:
        _core.math_probe(what, reps)
        return
    start = threading.Barrier(threads)
    workers = [threading.Thread(target=lambda: (start.wait(), _core.math_probe(what, reps))) for _ in range(threads - 1)]
    for w in workers:
        w.start()
    start.wait()
    _core.math_probe(what, reps)
    for w in workers:
        w.join()


def measure_bandwidth(nbytes: int = 256 << 20, repeats: int = 5) -> Dict[str, float]:
    """Read and non-temporal copy bandwidth in GB/s (copy counts read + write bytes), with the
    current thread count."""
    n = nbytes // 4
    src = np.ones(n, dtype=np.float32)
    dst = np.empty_like(src)
    dst.fill(0.0)  # touch the pages first: this measures bandwidth, not page faults
    read = best_time(lambda: _core.stream_read(src), repeats, 30.0)
    copy = best_time(lambda: _core.stream_copy(dst, src), repeats, 30.0)
    return {"read_GBps": nbytes / read / 1e9, "copy_GBps": 2 * nbytes / copy / 1e9}


def _arithmetic_s(ops: Dict[str, int], elems: int, threads: int, rates: Dict[str, float]) -> float:
    """The time the operations need at the probe's rates. The exponential and the log1p
    polynomial compete for the same FMA ports, so their times add; the divider is a unit of its
    own that works beside them, so the divisions bound the time only when they take longer than
    the rest (adding them bounded sigmoid at 2.6 Gelem/s on AVX-512, which it beat: 3.1)."""
    def seconds(what: str) -> float:
        return elems * ops.get(what, 0) / (rates[what] * 1e9 * threads)

    return max(sum(seconds(what) for what in ops if what not in UNITS_BESIDE), max(map(seconds, UNITS_BESIDE)))


def roofline(name: str, shape: Tuple[int, int], moved: int, bound: str, threads: int,
             bandwidth: Dict[str, float], rates: Optional[Dict[str, float]]) -> Dict[str, Any]:
    """The bounds of a case: memory (``moved`` bytes over the read or copy bandwidth; none from
    cache), arithmetic (each element's operations over the probe's rates, per core times the
    threads; none without rates), the roofline (the larger) and which one it is, and the
    operations per element in exponentials (each weighed by the exponential's rate over its own)."""
    elems = shape[0] * shape[1]
    limit = bandwidth["read_GBps"] if bound == "read" else bandwidth["copy_GBps"]
    mem_s = 0.0 if shape in CACHE_SHAPES or moved <= CACHE_BYTES else moved / limit / 1e9
    ops = arithmetic(name)
    arith_s = _arithmetic_s(ops, elems, threads, rates) if rates else 0.0
    exps = sum(count * rates["exp"] / rates[what] for what, count in ops.items()) if rates else None
    return {"memory_bound_s": mem_s, "arithmetic_bound_s": arith_s, "roofline_s": max(mem_s, arith_s),
            "roofline_by": "arithmetic" if arith_s > mem_s else "memory", "exp_equivalents": exps}
