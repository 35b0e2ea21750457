"""A/B timing of the reduced losses and ``score`` across two builds (docs/performance.md,
"The order-independent sums"). Run it with each build's interpreter in turn, several times,
alternating; it prints one JSON object {case: best seconds} on one thread::

    for i in 1 2 3 4 5; do envA/bin/python ab_reductions.py > a.$i.json
                           envB/bin/python ab_reductions.py > b.$i.json; done

and compare the minimum of each case over the runs of a build."""
import json
import sys
import time

import numpy as np

import fastlogits as fl

CLASS_SHAPES = [(8192, 1000), (1_000_000, 10), (65536, 2), (4096, 32000), (512, 128256), (64, 32000)]
BINARY_SHAPES = [(4096, 4096), (65536, 1000), (64, 32000)]


def best(fn, budget_s=3.0, most=15):
    """The best of up to ``most`` calls after a warm-up (at least 3 whatever the budget)."""
    fn()
    got = []
    end = time.perf_counter() + budget_s
    while len(got) < most and (len(got) < 3 or time.perf_counter() < end):
        t0 = time.perf_counter()
        fn()
        got.append(time.perf_counter() - t0)
    return min(got)


def logits(rng, shape):
    x = rng.standard_normal(shape, dtype=np.float32)
    x *= 3
    return x


def main():
    fl.set_num_threads(1)
    rng = np.random.default_rng(0)
    out = {}
    for shape in CLASS_SHAPES:
        x, y = logits(rng, shape), rng.integers(0, shape[1], size=shape[0])
        g = np.empty_like(x)
        out[f"cross_entropy {shape}"] = best(lambda: fl.cross_entropy(x, y))
        out[f"cross_entropy_and_grad {shape}"] = best(lambda: fl.cross_entropy_and_grad(x, y, grad_out=g))
        if shape[1] >= 10:
            out[f"score {shape}"] = best(lambda: fl.score(x, y))
    for shape in BINARY_SHAPES:
        x = logits(rng, shape)
        t = (rng.random(shape, dtype=np.float32) < 0.3).astype(np.float32)
        g = np.empty_like(x)
        out[f"bce_with_logits {shape}"] = best(lambda: fl.bce_with_logits(x, t))
        out[f"bce_with_logits_and_grad {shape}"] = best(lambda: fl.bce_with_logits_and_grad(x, t, grad_out=g))
        out[f"sigmoid_focal_loss {shape}"] = best(lambda: fl.sigmoid_focal_loss(x, t))
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
