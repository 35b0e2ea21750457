"""Benchmarks: one table of cases and peers, shared by ``fastlogits bench`` and ``benchmarks/``.

Every case runs fastlogits and each installed peer (the NumPy reference, SciPy, PyTorch) on the
same data at the same thread count, and checks fastlogits' result against the reference on a
sample of rows as it goes, so a benchmark run is also a smoke test. The machine's read and copy
bandwidth and the rates of the probe's operations are measured in the same run
(``_roofline``), so "% of bandwidth" and "% roofline" (the case's larger bound over its best
time) are honest on whatever machine runs it. Bandwidth and probe are measured again at the
end; a run whose bandwidth moved more than ``DRIFT_LIMIT`` is flagged (its timings are not
comparable). The table, its JSON and its plot are made by ``_bench_report``.
"""
from __future__ import annotations

import functools
import gc
import statistics
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import fastlogits as fl
from fastlogits import _core
from fastlogits._config import _stream_text, _subnormal_text
from fastlogits._input import bfloat16
from fastlogits import reference as ref
from fastlogits._bench_eval import accuracy_f1, per_class_pair, sequences, sklearn_per_class, torchmetrics_per_class
from fastlogits._bench_report import format_table as format_table, plot as plot, to_json as to_json
from fastlogits._roofline import (
    ARITHMETIC as ARITHMETIC, CACHE_SHAPES as CACHE_SHAPES, DRIFT_LIMIT as DRIFT_LIMIT, arithmetic as arithmetic,
    best_time, measure_arithmetic as measure_arithmetic, measure_bandwidth as measure_bandwidth,
    roofline as roofline, times,
)

# ---------------------------------------------------------------------------- the table

STANDARD_SHAPES = [(8192, 1000), (1_000_000, 10), (65536, 2), (4096, 32000), (512, 128256)]
BINARY_SHAPES = [(4096, 4096), (65536, 1000)]
# masked logits (three classes in four at -inf, as a constrained vocabulary leaves them)
MASKED_SHAPES = [(4096, 32000)]
# wide rows (randn * 20: exponentials exp(x - max) down in float32's subnormal range and the
# exact-reduction sums' gap, whose products would take microcode assists on x86)
WIDE_SHAPES = [(256, 32000)]
WIDE_SCALE = 20.0
# fl.score with and without the per-class block on a large multiclass shape (400 MB of float32)
SCORE_SHAPES = [(100_000, 1000)]
QUICK_SHAPES = [(8192, 1000), (1_000_000, 10), (512, 32000)]
# half-precision logits: these operations again on float16 and bfloat16 ("<name>/f16",
# "<name>/bf16"), to set against their float32 rows of the same shape
HALF_OPS = ["softmax", "log_softmax", "logsumexp", "sigmoid", "predict", "cross_entropy", "cross_entropy_and_grad"]
HALF_DTYPES = {"f16": "float16", "bf16": "bfloat16"}
HALF_SHAPES = [(4096, 32000)]
# language-model evaluation: per-sequence scores of 8 sequences of 2048 positions over a
# 128256-token vocabulary in bfloat16, beside the cross-entropy loss of the same data
# (rows = positions; the sequence operation sees them as (8, rows / 8, V))
LM_SHAPES = [(8 * 2048, 128256)]
LM_QUICK_SHAPES = [(8 * 32, 128256)]
LM_OPS = ["sequence_scores/bf16", "cross_entropy/bf16"]
# the NumPy reference works in float64 with temporaries of the logits' size (about 32 bytes an
# element at its peak): above this it is not timed (the LM case would need 70 GB)
REFERENCE_MAX_ELEMS = 1 << 28
# logits are drawn in float32 blocks of about this many elements (make_data)
DRAW_ELEMS = 1 << 20


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
    targets: str                                    # "none", "class", "masked", "binary", "scored", "wide"
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


def _ops(with_peers: bool = True) -> Dict[str, Op]:
    """Every operation of the bench by name; without ``with_peers``, the same table with no
    SciPy or PyTorch peer (naming and shaping the cases needs neither import, which costs
    seconds)."""
    sp, torch = (_scipy(), _torch()) if with_peers else (None, None)
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
    # the same operations on inputs that take other paths (the targets field names the data)
    plain = {op.name: op for op in ops}
    ops.extend(replace(plain[name], name=f"{name}_{kind}", targets=kind)
               for name, kind in (("softmax", "masked"), ("softmax", "wide"), ("logsumexp", "wide")))
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
    ops.append(Op(
        "score", "scored", "read",
        lambda d: (fl.score(d.x, d.target)["accuracy"],), None,
        lambda d: (accuracy_f1(d)[0],), {}, _close(1e-9)))
    ops.append(Op(
        "score_per_class", "scored", "read",
        lambda d: per_class_pair(fl.score(d.x, d.target, per_class=True)), None, accuracy_f1,
        peers(torchmetrics=torchmetrics_per_class() if torch else None, sklearn=sklearn_per_class() if with_peers else None),
        _close(1e-9)))
    ops.append(Op(
        "sequence_scores/bf16", "class", "read",
        lambda d: fl.sequence_scores(*sequences(d)), None,
        lambda d: ref.sequence_scores(*sequences(d)),
        peers(torch=torch and (lambda d: F.cross_entropy(d.torch_x, d.torch_target, reduction="none")
                               .view(*sequences(d)[1].shape).sum(1))),
        _sequence_check, dtype="bfloat16"))
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


def _sequence_check(got: Any, want: Any) -> None:
    _close(1e-5)(got["logprob"], want["logprob"])
    _equal(got["count"], want["count"])
    _equal(got["greedy"], want["greedy"])


def _k5(d: Data) -> int:
    """k of the top-k case: 5, or every class when there are fewer."""
    return min(5, int(d.x.shape[-1]))


def _torch_fwd_bwd(torch: Any, d: Data, loss_fn: Callable[[Any], Any]) -> Any:
    t = d.torch_x.detach().requires_grad_(True)
    loss = loss_fn(t)
    loss.backward()
    return float(loss.detach()), t.grad


def cases(quick: bool = False, ops: Optional[Sequence[str]] = None) -> List[Tuple[str, Tuple[int, int]]]:
    """(operation, shape) pairs of a run; with ``ops``, only those operations' cases (names as in
    the table, e.g. ``cross_entropy/bf16``; an unknown name raises ValueError naming the valid ones)."""
    class_shapes = QUICK_SHAPES if quick else STANDARD_SHAPES
    binary_shapes = [(2048, 2048)] if quick else BINARY_SHAPES
    names = ["softmax", "logsumexp", "sigmoid", "cross_entropy", "cross_entropy_and_grad", "bce_with_logits",
             "bce_with_logits_and_grad"] if quick else list(_ops(with_peers=False))
    table = _ops(with_peers=False)
    out: List[Tuple[str, Tuple[int, int]]] = []
    for name in names:
        op = table[name]
        if name == "sequence_scores/bf16":
            shapes = []  # with its cross-entropy, below
        elif op.shapes:
            shapes = op.shapes
        elif op.dtype != "float32":
            shapes = QUICK_SHAPES[-1:] if quick else HALF_SHAPES
        else:
            shapes = {"binary": binary_shapes, "masked": MASKED_SHAPES, "scored": SCORE_SHAPES,
                      "wide": WIDE_SHAPES}.get(op.targets, class_shapes)
        out.extend((name, s) for s in shapes)
        if op.dtype == "float32" and op.targets not in ("masked", "wide") and arithmetic(name) and not quick:
            out.extend((name, s) for s in CACHE_SHAPES)
    out.extend((name, s) for name in LM_OPS for s in (LM_QUICK_SHAPES if quick else LM_SHAPES))
    if ops is None:
        return out
    unknown = [o for o in ops if o not in table]
    if unknown or not ops:
        raise ValueError(f"unknown bench operation(s) {', '.join(unknown) or 'none named'}; valid: {', '.join(table)}")
    return [(name, s) for name, s in out if name in ops]


# ---------------------------------------------------------------------------- measuring

def _logits(rng: np.random.Generator, shape: Tuple[int, int], dtype: Any) -> np.ndarray:
    """randn * 3 of ``shape`` in ``dtype``, drawn in row blocks of float32: a half-precision
    case of 8 x 2048 x 128256 holds its 4 GiB and no float32 copy of 8 GiB beside it."""
    x = np.empty(shape, dtype)
    step = max(1, DRAW_ELEMS // max(1, shape[1]))
    for lo in range(0, shape[0], step):
        block = rng.standard_normal((min(step, shape[0] - lo), shape[1]), dtype=np.float32)
        block *= 3
        x[lo:lo + step] = block
    return x


def _torch_view(torch: Any, a: np.ndarray) -> Any:
    """A tensor sharing ``a``'s memory (bfloat16 through its bits: torch cannot read ml_dtypes)."""
    if a.dtype == bfloat16():
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def make_data(op: Op, shape: Tuple[int, int], seed: int = 0) -> Data:
    rng = np.random.default_rng(seed)
    x = _logits(rng, shape, bfloat16() if op.dtype == "bfloat16" else np.dtype(op.dtype))
    d = Data(x)
    if op.targets in ("class", "scored"):
        d.target = rng.integers(0, shape[1], size=shape[0]).astype(np.int64)
    elif op.targets == "masked":
        x[:, np.arange(shape[1]) % 4 != 0] = -np.inf
        d.target = 4 * rng.integers(0, (shape[1] + 3) // 4, size=shape[0]).astype(np.int64)
    elif op.targets == "binary":
        d.target = (rng.random(shape, dtype=np.float32) < 0.3).astype(np.float32)
    elif op.targets == "wide":
        x *= np.float32(WIDE_SCALE / 3)
    if op.fast_warm is not None:
        d.out = np.empty_like(d.x)
        d.out.fill(0.0)
    torch = _torch()
    if torch is not None:
        d.torch_x = _torch_view(torch, d.x)
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
            got = times(functools.partial(fn, d), repeats, budget_s)
            res[f"fastlogits_{kind}_s"] = min(got)
            res[f"fastlogits_{kind}_median_s"] = statistics.median(got)
    best = res.get("fastlogits_warm_s", res["fastlogits_cold_s"])
    elems = shape[0] * shape[1]
    res["gelem_per_s"] = elems / best / 1e9
    limit = bandwidth["read_GBps"] if op.bound == "read" else bandwidth["copy_GBps"]
    res["bound"] = op.bound
    res["pct_of_bandwidth"] = 100.0 * (_bytes(op, d) / best / 1e9) / limit
    res.update(roofline(name, shape, _bytes(op, d), op.bound, threads, bandwidth, rates))
    res["pct_of_roofline"] = 100.0 * res["roofline_s"] / best
    peer_fns = dict(op.peers)
    if elems <= REFERENCE_MAX_ELEMS:
        peer_fns["reference"] = op.reference  # timed once when slow: see _roofline.times
    for peer, fn in peer_fns.items():
        t = best_time(lambda: fn(d), peer_repeats, budget_s)
        res[f"{peer}_s"] = t
        res[f"speedup_vs_{peer}"] = t / best
    del d
    gc.collect()
    return res


def run(quick: bool = False, threads: Optional[int] = None, progress: Optional[Callable[[str], None]] = None,
        ops: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Run the table; returns {"fastlogits", "isa", "threads", "stream", "subnormals", "torch",
    "bandwidth", "rates", "bandwidth_end", "rates_end", "drift", "unstable", "results": [...]}:
    the streaming policy of out= arrays in words (it decides the warm times), the form of
    products of subnormal values (it decides the wide rows' times), bandwidth and probe
    rates at the start (used by every case) and again at the end, and the bandwidth's relative
    change (``unstable`` when above DRIFT_LIMIT). ``ops``: only these operations (see cases)."""
    table = cases(quick, ops)
    threads = threads or fl.get_num_threads()
    old = fl.get_num_threads()
    fl.set_num_threads(threads)
    try:
        bw = measure_bandwidth(repeats=3 if quick else 5)
        rates = measure_arithmetic(threads=threads)
        results = []
        for name, shape in table:
            if progress:
                progress(f"{name} {shape[0]}x{shape[1]}")
            results.append(run_case(name, shape, threads=threads, bandwidth=bw, rates=rates,
                                    repeats=3 if quick else 7, peer_repeats=1 if quick else 3,
                                    budget_s=0.5 if quick else 5.0))
        bw_end = measure_bandwidth(repeats=3 if quick else 5)
        rates_end = measure_arithmetic(threads=threads)
    finally:
        fl.set_num_threads(old)
    torch = _torch()
    drift = {k: bw_end[k] / bw[k] - 1.0 for k in bw}
    return {
        "fastlogits": fl.__version__,
        "isa": _core.isa_name(),
        "threads": threads,
        "stream": _stream_text(),
        "subnormals": _subnormal_text(),
        "torch": getattr(torch, "__version__", None),
        "bandwidth": bw,
        "rates": rates,
        "bandwidth_end": bw_end,
        "rates_end": rates_end,
        "drift": drift,
        "unstable": any(abs(v) > DRIFT_LIMIT for v in drift.values()),
        "results": results,
    }


