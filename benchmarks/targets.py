"""The speed targets of issue 19 checked against runs of ``fastlogits bench --json``.

    python benchmarks/targets.py avx512_t1.json avx2_t1.json [avx512_t2.json ...]

Each run is one SIMD path at one thread count. For every target and case the script prints the
measured value, what the target needs, and a verdict decided by the run's own roofline (the
larger of the memory bound and the arithmetic bound of the bench, see docs/performance.md):

- ``met``;
- ``beyond the roofline``: the target needs the case faster than its roofline, that is faster
  than the bytes it must move at the measured bandwidth or than the exponentials (and other
  probe operations) it must compute at the probe's measured rate. No kernel can meet it on
  this machine; for a ratio to PyTorch this means PyTorch itself already runs above 1/ratio
  of the roofline;
- ``short``: the target is below the roofline, so it is possible in principle; the percentage
  says how far the case is from it.

Two-thread targets pair a 1-thread and a 2-thread run of the same path (``--ops`` runs are
fine). Output is a markdown table per target, for docs/performance.md.
"""
from __future__ import annotations

import json
import sys
from typing import Any, Dict, Iterable, List, Optional, Tuple

EXP_KERNELS = ["logsumexp", "softmax", "log_softmax", "entropy", "sigmoid", "log_sigmoid", "bce_with_logits",
               "bce_with_logits_and_grad", "sigmoid_focal_loss", "sigmoid_focal_loss_and_grad", "cross_entropy",
               "cross_entropy_and_grad"]
LARGE = [(4096, 32000), (512, 128256), (4096, 4096), (65536, 1000)]
CACHE = [(64, 32000)]
STANDARD = [(8192, 1000), (1_000_000, 10), (65536, 2), (4096, 32000), (512, 128256)]
BINARY = [(4096, 4096), (65536, 1000)]
FEW = [(1_000_000, 10), (65536, 2)]
Case = Dict[str, Any]
Row = Tuple[str, str, str, str, str, str]


def best(c: Case) -> float:
    return float(c.get("fastlogits_warm_s", c["fastlogits_cold_s"]))


def path(run: Dict[str, Any]) -> str:
    return f"{run['isa']}, {run['threads']} thread{'s' if run['threads'] > 1 else ''}"


def index(run: Dict[str, Any]) -> Dict[Tuple[str, Tuple[int, int]], Case]:
    return {(c["op"], tuple(c["shape"])): c for c in run["results"]}


def present(run: Dict[str, Any], ops: List[str], shapes: List[Tuple[int, int]]) -> List[Tuple[str, Tuple[int, int], Case]]:
    """The run's cases of these operations and shapes (a run may lack some: --ops, no peer)."""
    cases = index(run)
    return [(op, shape, cases[(op, shape)]) for op in ops for shape in shapes if (op, shape) in cases]


def verdict(need_s: float, roof_s: float, got_s: float) -> str:
    """Met when the case takes no longer than the target allows; beyond the roofline when the
    target allows less time than the roofline; else short, by the time still to gain."""
    if got_s <= need_s:
        return "met"
    if need_s < roof_s:
        return f"beyond the roofline (needs {100 * roof_s / need_s:.0f}% of it)"
    return f"short: {100 * need_s / got_s:.0f}% of the target's speed"


def shape_name(s: Iterable[int]) -> str:
    return "x".join(map(str, s))


def roofline_80(run: Dict[str, Any]) -> List[Row]:
    """Every exponential kernel at 80% of its roofline, from cache and on the large shapes."""
    rows = []
    for (op, shape), c in index(run).items():
        if op in EXP_KERNELS and shape in LARGE + CACHE and c.get("roofline_s"):
            need = c["roofline_s"] / 0.8
            rows.append((op, shape_name(shape), f"{c['pct_of_roofline']:.0f}% ({c['roofline_by'][0]})", "80%",
                         f"{1e3 * c['roofline_s']:.3g} ms", verdict(need, c["roofline_s"], best(c))))
    return rows


def versus_torch(run: Dict[str, Any], ops: List[str], shapes: List[Tuple[int, int]], ratio: float) -> List[Row]:
    """At least ``ratio`` times PyTorch: beyond the roofline when PyTorch's time over the ratio
    is below our roofline."""
    return [(op, shape_name(shape), f"{c['speedup_vs_torch']:.1f}x", f"{ratio:g}x",
             f"{1e3 * c['roofline_s']:.3g} ms (torch {1e3 * c['torch_s']:.3g} ms)",
             verdict(c["torch_s"] / ratio, c["roofline_s"], best(c)))
            for op, shape, c in present(run, ops, shapes) if "torch_s" in c]


def bandwidth_share(run: Dict[str, Any]) -> List[Row]:
    """Cross-entropy loss at 85% of the read bandwidth and loss+gradient at 75% of the copy
    bandwidth on the long rows: beyond the roofline when the exponentials alone take longer."""
    share = {"cross_entropy": 0.85, "cross_entropy_and_grad": 0.75}
    return [(op, shape_name(shape), f"{c['pct_of_bandwidth']:.0f}%", f"{100 * share[op]:.0f}%",
             f"memory {1e3 * c['memory_bound_s']:.3g} ms, arithmetic {1e3 * c['arithmetic_bound_s']:.3g} ms",
             verdict(c["memory_bound_s"] / share[op], c["roofline_s"], best(c)))
            for op, shape, c in present(run, list(share), [(4096, 32000), (512, 128256)])]


def few_classes(run: Dict[str, Any]) -> List[Row]:
    """3 Gelem/s on 1000000x10 and 65536x2 for the class-axis exponential kernels."""
    rows = []
    for (op, shape), c in index(run).items():
        if op in EXP_KERNELS and shape in FEW and c.get("roofline_s") is not None:
            need = shape[0] * shape[1] / 3e9
            rows.append((op, shape_name(shape), f"{c['gelem_per_s']:.2f} Gelem/s", "3 Gelem/s",
                         f"{1e3 * c['roofline_s']:.3g} ms", verdict(need, c["roofline_s"], best(c))))
    return rows


def half_precision(run: Dict[str, Any]) -> List[Row]:
    """float16/bfloat16 at 1.7x the float32 rate for the kernels memory binds in float32; the
    bound is the half case's own roofline (its exponentials do not halve)."""
    rows = []
    cases = index(run)
    for (op, shape), c in cases.items():
        if "/" not in op or shape not in LARGE:
            continue
        base = cases.get((op.split("/")[0], shape))
        if base is None or base.get("roofline_by") != "memory":
            continue
        need = best(base) / 1.7
        rows.append((op, shape_name(shape), f"{best(base) / best(c):.2f}x", "1.7x",
                     f"{1e3 * c['roofline_s']:.3g} ms ({c['roofline_by'][0]})", verdict(need, c["roofline_s"], best(c))))
    return rows


def two_threads(one: Dict[str, Any], two: Dict[str, Any]) -> List[Row]:
    """Two threads at 1.8x the one-thread speed, or at 85% of the two-thread bandwidth, whichever
    is easier: the time allowed is the larger of the two."""
    rows = []
    ones = index(one)
    for (op, shape), c in index(two).items():
        base = ones.get((op, shape))
        if base is None or op not in EXP_KERNELS:
            continue
        need = max(best(base) / 1.8, c["memory_bound_s"] / 0.85)
        rows.append((op, shape_name(shape), f"{best(base) / best(c):.2f}x, {c['pct_of_bandwidth']:.0f}% bw",
                     "1.8x or 85% bw", f"{1e3 * c['roofline_s']:.3g} ms", verdict(need, c["roofline_s"], best(c))))
    return rows


def table(title: str, rows: List[Row]) -> str:
    if not rows:
        return ""
    head = f"**{title}**\n\n| case | shape | measured | target | bound | verdict |\n|---|---|---|---|---|---|\n"
    return head + "".join("| " + " | ".join(r) + " |\n" for r in rows) + "\n"


def pair_two_threads(runs: List[Dict[str, Any]]) -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
    ones = {r["isa"]: r for r in runs if r["threads"] == 1}
    return [(ones[r["isa"]], r) for r in runs if r["threads"] == 2 and r["isa"] in ones]


def report(runs: List[Dict[str, Any]]) -> str:
    out = []
    for run in runs:
        if run["threads"] != 1:
            continue
        p = path(run)
        out.append(table(f"80% of the roofline ({p})", roofline_80(run)))
        out.append(table(f"3x PyTorch ({p})", versus_torch(run, ["softmax", "log_softmax", "sigmoid", "logsumexp"],
                                                           STANDARD, 3.0)))
        out.append(table(f"10x PyTorch forward+backward ({p})",
                         versus_torch(run, ["cross_entropy_and_grad"], STANDARD, 10.0)
                         + versus_torch(run, ["bce_with_logits_and_grad"], BINARY, 10.0)))
        out.append(table(f"Share of the bandwidth ({p})", bandwidth_share(run)))
        out.append(table(f"3 Gelem/s on few classes ({p})", few_classes(run)))
        out.append(table(f"Half precision at 1.7x float32 ({p})", half_precision(run)))
    for one, two in pair_two_threads(runs):
        out.append(table(f"Two threads ({two['isa']})", two_threads(one, two)))
    return "".join(out)


def main(argv: Optional[List[str]] = None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    runs = []
    for p in paths:
        with open(p) as f:
            runs.append(json.load(f))
    print(report(runs), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
