"""Threads, fork, memory and input immutability (issue 8).

- 8 Python threads calling every kernel at once give bitwise the serial results (the kernels
  release the GIL and share the built-in pool);
- the kernels work in a child made by fork() (the pool is rebuilt there);
- 100,000 small calls do not grow the resident memory;
- inputs are never modified, with or without out=/grad_out=;
- results are bitwise identical for 1 to 4 built-in threads.
"""
import hashlib
import multiprocessing
import os
import threading

import numpy as np
import pytest

import fastlogits as fl

from arrays import bfloat16

RNG = np.random.default_rng(88)


def _inputs(n, c, dtype):
    x = (RNG.standard_normal((n, c)) * 4).astype(dtype)
    x[::17, 3] = np.inf if n > 17 else x[::17, 3]
    x[5::23, 1] = np.nan if n > 23 else x[5::23, 1]
    return {
        "x": x,
        "yi": (np.arange(n) * 7) % c,
        "yp": fl.softmax(RNG.standard_normal((n, c))),
        "yb": (RNG.random((n, c)) < 0.4).astype(np.float32),
        "w": RNG.random(c) + 0.5,
        "sw": RNG.random(n) + 0.5,
    }


# name -> f(inputs) -> result; every public kernel, with options that reach every code path
KERNELS = {
    "softmax": lambda d: fl.softmax(d["x"]),
    "log_softmax": lambda d: fl.log_softmax(d["x"]),
    "softmax_axis0": lambda d: fl.softmax(d["x"], axis=0),
    "logsumexp": lambda d: fl.logsumexp(d["x"]),
    "entropy": lambda d: fl.entropy(d["x"]),
    "sigmoid": lambda d: fl.sigmoid(d["x"]),
    "log_sigmoid": lambda d: fl.log_sigmoid(d["x"]),
    "predict": lambda d: fl.predict(d["x"]),
    "topk": lambda d: fl.topk(d["x"], 3),
    "predict_binary": lambda d: fl.predict_binary(d["x"], 0.3),
    "cross_entropy": lambda d: fl.cross_entropy(d["x"], d["yi"], weight=d["w"], sample_weight=d["sw"],
                                                label_smoothing=0.1, z_loss=1e-3),
    "cross_entropy_none": lambda d: fl.cross_entropy(d["x"], d["yi"], reduction="none"),
    "cross_entropy_and_grad": lambda d: fl.cross_entropy_and_grad(d["x"], d["yi"], weight=d["w"], label_smoothing=0.2),
    "cross_entropy_probs_and_grad": lambda d: fl.cross_entropy_and_grad(d["x"], d["yp"], reduction="sum"),
    "bce_with_logits": lambda d: fl.bce_with_logits(d["x"], d["yb"], pos_weight=d["w"]),
    "bce_with_logits_and_grad": lambda d: fl.bce_with_logits_and_grad(d["x"], d["yb"], weight=d["w"], reduction="sum"),
    "sigmoid_focal_loss": lambda d: fl.sigmoid_focal_loss(d["x"], d["yb"]),
    "sigmoid_focal_loss_and_grad": lambda d: fl.sigmoid_focal_loss_and_grad(d["x"], d["yb"], gamma=1.5),
    "score": lambda d: fl.score(d["x"], d["yi"], sample_weight=d["sw"]),
    "score_multilabel": lambda d: fl.score(d["x"], d["yb"] > 0),
}


def _flat(r):
    """A result as a list of comparable byte strings (bitwise equality, nan included)."""
    if isinstance(r, dict):
        return [k.encode() + np.float64(v).tobytes() for k, v in sorted(r.items())]
    if isinstance(r, tuple):
        return [b for part in r for b in _flat(part)]
    a = np.asarray(r)
    return [str(a.dtype).encode() + str(a.shape).encode() + a.tobytes()]


def _run_all(data):
    return {name: _flat(f(data)) for name, f in KERNELS.items()}


def _data_sets():
    return [_inputs(n, c, dt) for n, c, dt in [(300, 37, np.float32), (129, 8, np.float64), (40, 1000, np.float32),
                                                (64, 5, np.float16), (33, 9, bfloat16)]]


def test_eight_threads_at_once_match_serial():
    data = _data_sets()
    serial = [_run_all(d) for d in data]
    errors = []
    barrier = threading.Barrier(8)

    def worker(tid):
        try:
            barrier.wait()
            for rep in range(2):
                for j in range(len(data)):
                    i = (j + tid + rep) % len(data)       # threads run different kernels at once
                    got = _run_all(data[i])
                    for name in got:
                        if got[name] != serial[i][name]:
                            errors.append((tid, i, name))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append((tid, repr(exc)))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors[:10]


def _calls_while_switching(switch, calls, want, reps):
    """Three threads run calls[j](out) (out: a fresh output per thread, shaped as want[0]) reps
    times each, in turn, while a fourth calls switch(i) for i = 0, 1, 2, ... until they end;
    returns the (thread, rep, call) whose result was not want[j] bit for bit (or the exception
    a thread met). Hangs fail the test."""
    stop = threading.Event()
    errors = []

    def switcher():
        i = 0
        while not stop.is_set():
            switch(i)
            i += 1

    def worker(tid):
        try:
            out = np.empty_like(want[0])
            for rep in range(reps):
                j = (tid + rep) % len(calls)
                if calls[j](out).tobytes() != want[j].tobytes():
                    errors.append((tid, rep, j))
        except Exception as exc:  # pragma: no cover - reported by the caller
            errors.append((tid, repr(exc)))

    sw = threading.Thread(target=switcher)
    workers = [threading.Thread(target=worker, args=(t,)) for t in range(3)]
    sw.start()
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=600)
    stop.set()
    sw.join(timeout=60)
    assert not any(w.is_alive() for w in workers + [sw]), "a thread hung"
    return errors


def test_streaming_policy_changed_while_kernels_run():
    """One thread switches the streaming policy (csrc/fl_dispatch.c) back and forth while three
    write 8 MB outputs (streamed or not, by the policy each call reads once): every result is the
    serial one, and the policy's atomics are race-free (this module runs under TSan in CI)."""
    from fastlogits import _core

    rng = np.random.default_rng(89)
    x = (rng.standard_normal((128, 16400)) * 4).astype(np.float32)
    t = rng.integers(0, x.shape[1], x.shape[0])
    calls = [lambda out: fl.softmax(x, out=out), lambda out: fl.log_softmax(x, out=out),
             lambda out: fl.cross_entropy_and_grad(x, t, grad_out=out)[1], lambda out: fl.sigmoid(x, out=out)]
    want = [call(np.empty_like(x)).copy() for call in calls]
    before = _core.stream_policy()
    policies = [(8 << 20, 0, 0, True), (-1, 0, 0, True), (8 << 20, 64 << 10, 64, False), (0, 0, 0, True)]
    try:
        errors = _calls_while_switching(lambda i: _core.set_stream_policy(*policies[i % len(policies)]), calls, want, 6)
    finally:
        _core.set_stream_policy(*before)
    assert not errors, errors[:10]


def test_subnormal_policy_changed_while_kernels_run():
    """One thread switches the form of subnormal products (csrc/fl_dispatch.c) while three run
    the kernels that take it on wide rows (subnormal exponentials, scaled softmax outputs and
    gradients, the BCE's tiny t): each vector may take either form, and every result is still
    the serial one, bit for bit; the policy's atomic is race-free (TSan in CI)."""
    from fastlogits import _core

    rng = np.random.default_rng(97)
    x = (rng.standard_normal((64, 4099)) * 20).astype(np.float32)
    t = rng.integers(0, x.shape[1], x.shape[0])
    y = (rng.random(x.shape) < 0.5).astype(np.float32)
    calls = [lambda out: fl.softmax(x, out=out), lambda out: fl.log_softmax(x, out=out),
             lambda out: fl.cross_entropy_and_grad(x, t, grad_out=out)[1],
             lambda out: fl.bce_with_logits_and_grad(x, y, grad_out=out)[1]]
    want = [call(np.empty_like(x)).copy() for call in calls]
    try:
        errors = _calls_while_switching(lambda i: _core.set_subnormal_policy(i % 2), calls, want, 8)
    finally:
        _core.set_subnormal_policy(-1)
    assert not errors, errors[:10]


def _child(conn):
    try:
        fl.set_num_threads(2)
        d = _inputs(500, 33, np.float32)
        conn.send({"softmax": fl.softmax(d["x"]),
                   "ce": fl.cross_entropy_and_grad(d["x"], d["yi"]),
                   "threads": fl.get_num_threads()})
    except BaseException as exc:  # pragma: no cover
        conn.send(repr(exc))
    finally:
        conn.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")
def test_kernels_work_after_fork(threads):
    fl.set_num_threads(2)
    state = RNG.bit_generator.state
    d = _inputs(500, 33, np.float32)
    want_sm = fl.softmax(d["x"])                      # the parent's pool is running at the fork
    want_ce = fl.cross_entropy_and_grad(d["x"], d["yi"])
    RNG.bit_generator.state = state                   # the child draws the same inputs
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_child, args=(child,))
    p.start()
    child.close()
    assert parent.poll(120), "the forked child did not answer (hung?)"
    got = parent.recv()
    p.join(30)
    assert p.exitcode == 0, p.exitcode
    assert isinstance(got, dict), got
    assert got["threads"] == 2
    assert _flat(got["softmax"]) == _flat(want_sm)
    assert _flat(got["ce"]) == _flat(want_ce)
    np.testing.assert_array_equal(fl.softmax(d["x"]), want_sm)   # the parent still works


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow  # 110,000 calls: several seconds
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
@pytest.mark.skipif(os.environ.get("FASTLOGITS_SANITIZED") == "1",
                    reason="AddressSanitizer's quarantine holds freed memory (leaks are its own job)")
def test_repeated_small_calls_do_not_grow_memory():
    d = _inputs(4, 5, np.float32)
    names = list(KERNELS)

    def calls(n):
        for i in range(n):
            KERNELS[names[i % len(names)]](d)

    calls(10_000)                  # warm-up: caches, interned objects, allocator arenas
    before = _rss_bytes()
    calls(100_000)
    grown = _rss_bytes() - before
    # 100,000 calls leaking even 64 bytes each would be 6.4 MB; allow 4 MB of allocator noise
    assert grown < 4 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 100,000 calls"


def _digest(a):
    a = np.asarray(a)
    return hashlib.sha256(str(a.dtype).encode() + str(a.shape).encode() + str(a.strides).encode()
                          + np.ascontiguousarray(a).tobytes()).hexdigest()


def _with_outputs(d):
    """Calls with out=/grad_out= given as separate arrays."""
    x, n = d["x"], d["x"].shape
    return {
        "softmax out": lambda: fl.softmax(x, out=np.empty(n, x.dtype)),
        "log_softmax out": lambda: fl.log_softmax(x, out=np.empty(n, np.float64), dtype=np.float64),
        "sigmoid out": lambda: fl.sigmoid(x, out=np.empty(n, x.dtype)),
        "log_sigmoid out strided": lambda: fl.log_sigmoid(x, out=np.empty((n[0], 2 * n[1]), x.dtype)[:, ::2]),
        "ce grad_out": lambda: fl.cross_entropy_and_grad(x, d["yi"], weight=d["w"], sample_weight=d["sw"],
                                                         grad_out=np.empty(n, x.dtype)),
        "ce probs grad_out": lambda: fl.cross_entropy_and_grad(x, d["yp"], grad_out=np.empty(n, x.dtype)),
        "bce grad_out": lambda: fl.bce_with_logits_and_grad(x, d["yb"], weight=d["w"], pos_weight=d["w"],
                                                            grad_out=np.empty(n, x.dtype)),
        "focal grad_out": lambda: fl.sigmoid_focal_loss_and_grad(x, d["yb"], grad_out=np.empty(n, x.dtype)),
        "fit_temperature": lambda: fl.fit_temperature(x, d["yi"], sample_weight=d["sw"]),
    }


def test_inputs_are_never_modified():
    for d in _data_sets():
        calls = {name: (lambda f=f: f(d)) for name, f in KERNELS.items()}
        calls.update(_with_outputs(d))
        for name, call in calls.items():
            before = {k: _digest(v) for k, v in d.items()}
            call()
            after = {k: _digest(v) for k, v in d.items()}
            assert before == after, f"{name} modified {[k for k in before if before[k] != after[k]]}"


@pytest.mark.slow  # every kernel at 1-8 threads (4-10 s); the default run keeps test_reproducible.py's thread checks
def test_bitwise_identical_for_every_thread_count(threads):
    data = [_inputs(n, c, dt) for n, c, dt in [(20000, 33, np.float32), (3000, 130, np.float64),
                                                (5000, 7, np.float16), (300, 3000, np.float32)]]
    results = []
    for n_threads in (1, 2, 3, 4):
        fl.set_num_threads(n_threads)
        assert fl.get_num_threads() == n_threads
        results.append([_run_all(d) for d in data])
    for n_threads, r in zip((2, 3, 4), results[1:]):
        for i, (got, want) in enumerate(zip(r, results[0])):
            bad = [name for name in want if got[name] != want[name]]
            assert not bad, f"{n_threads} threads differ from 1 thread on data set {i}: {bad}"



def test_one_long_row_elementwise_is_split_and_identical(threads):
    """A 1-D (or single-row) contiguous input is one span cut into fixed blocks for the pool:
    any thread count gives the same bytes, which are those of small separate calls and of the
    row-by-row path (a strided view of the same values)."""
    rng = np.random.default_rng(5)
    for dtype in (np.float32, np.float64):
        x = (rng.standard_normal(3 * 16384 + 1001) * 20).astype(dtype)
        for f in (fl.sigmoid, fl.log_sigmoid):
            outs = []
            for n_threads in (1, 2, 3, 4):
                fl.set_num_threads(n_threads)
                outs.append(f(x).tobytes())
            assert all(o == outs[0] for o in outs[1:]), f"{f.__name__} {np.dtype(dtype)}"
            got = f(x)
            np.testing.assert_array_equal(got, np.concatenate([f(x[i:i + 5000]) for i in range(0, x.size, 5000)]))
            np.testing.assert_array_equal(got, f(np.repeat(x, 2)[::2]))     # strided: the row path
            np.testing.assert_array_equal(f(x[None, :])[0], got)
