"""The fixed cost of a call: microseconds per call on tiny inputs, and Gelem/s on the small-class
shapes where that cost is a large share of the time (issue 19: 3 Gelem/s on 65536 x 2 and
1000000 x 10).

    python benchmarks/call_overhead.py [--shapes 8x2,65536x2,1000000x10] [--repeat 7] [--json]

One thread (``fl.set_num_threads(1)``), float32 C-contiguous logits, int64 class indices
(int32 too for the cross-entropy), 0/1 float32 binary targets. Each case is timed as the best
of ``--repeat`` rounds of a loop sized to about 20 ms; the machine is shared, so compare two
builds by alternating processes and keeping the best of each (see docs/performance.md).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

import fastlogits as fl

Case = Tuple[str, Callable[[], Any]]


def cases(n: int, c: int) -> List[Case]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c), dtype=np.float32)
    y64 = rng.integers(0, c, n, dtype=np.int64)
    y32 = y64.astype(np.int32)
    b = (rng.random((n, c)) < 0.5).astype(np.float32)
    out = np.empty_like(x)
    grad = np.empty_like(x)
    return [
        ("softmax", lambda: fl.softmax(x)),
        ("softmax(out=)", lambda: fl.softmax(x, out=out)),
        ("log_softmax", lambda: fl.log_softmax(x)),
        ("log_softmax(out=)", lambda: fl.log_softmax(x, out=out)),
        ("logsumexp", lambda: fl.logsumexp(x)),
        ("entropy", lambda: fl.entropy(x)),
        ("predict", lambda: fl.predict(x)),
        ("sigmoid", lambda: fl.sigmoid(x)),
        ("sigmoid(out=)", lambda: fl.sigmoid(x, out=out)),
        ("cross_entropy int64", lambda: fl.cross_entropy(x, y64)),
        ("cross_entropy int32", lambda: fl.cross_entropy(x, y32)),
        ("cross_entropy none", lambda: fl.cross_entropy(x, y64, reduction="none")),
        ("ce_and_grad int64", lambda: fl.cross_entropy_and_grad(x, y64)),
        ("ce_and_grad int32", lambda: fl.cross_entropy_and_grad(x, y32)),
        ("ce_and_grad(grad_out=)", lambda: fl.cross_entropy_and_grad(x, y64, grad_out=grad)),
        ("bce_with_logits", lambda: fl.bce_with_logits(x, b)),
        ("bce_and_grad", lambda: fl.bce_with_logits_and_grad(x, b)),
        ("bce_and_grad(grad_out=)", lambda: fl.bce_with_logits_and_grad(x, b, grad_out=grad)),
    ]


def best_seconds(f: Callable[[], Any], repeat: int) -> float:
    f()
    t0 = time.perf_counter()
    f()
    once = max(time.perf_counter() - t0, 1e-7)
    loops = max(1, int(0.02 / once))
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(loops):
            f()
        best = min(best, (time.perf_counter() - t0) / loops)
    return best


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="8x2,65536x2,1000000x10")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    args = ap.parse_args(argv)
    fl.set_num_threads(1)
    results: Dict[str, Dict[str, float]] = {}
    for shape in args.shapes.split(","):
        n, c = (int(v) for v in shape.split("x"))
        for name, f in cases(n, c):
            results.setdefault(name, {})[shape] = best_seconds(f, args.repeat)
    if args.json:
        print(json.dumps(results))
        return 0
    shapes = args.shapes.split(",")
    print("| function | " + " | ".join(shapes) + " |")
    print("|---|" + "---|" * len(shapes))
    for name, by_shape in results.items():
        cells = []
        for shape in shapes:
            n, c = (int(v) for v in shape.split("x"))
            s = by_shape[shape]
            cells.append(f"{s * 1e6:.1f} us" if n * c <= 4096 else f"{n * c / s / 1e9:.2f} Gelem/s")
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
