"""The thread pool from Python: threadpoolctl control, FASTLOGITS_NUM_THREADS, the default."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastlogits as fl


def test_set_and_get(threads):
    fl.set_num_threads(3)
    assert fl.get_num_threads() == 3
    with pytest.raises(ValueError, match="n: expected a positive int, got 0"):
        fl.set_num_threads(0)
    with pytest.raises(TypeError, match="n"):
        fl.set_num_threads(1.5)


def test_threadpoolctl_controls_the_pool(threads):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    fl.set_num_threads(2)
    info = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "fastlogits"]
    assert len(info) == 1 and info[0]["num_threads"] == 2 and info[0]["version"] == fl.__version__
    with threadpoolctl.threadpool_limits(limits=1, user_api="fastlogits"):
        assert fl.get_num_threads() == 1
        x = np.random.default_rng(0).standard_normal((5000, 300)).astype(np.float32)
        one = fl.softmax(x)
    assert fl.get_num_threads() == 2
    np.testing.assert_array_equal(fl.softmax(x), one)
    with threadpoolctl.threadpool_limits(limits=1):
        assert fl.get_num_threads() == 1


def _child(code, **env):
    full = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, check=True).stdout


def test_environment_variable_and_default():
    assert _child("import fastlogits as fl; print(fl.get_num_threads())", FASTLOGITS_NUM_THREADS="3").strip() == "3"
    default = _child("import fastlogits as fl; print(fl.get_num_threads())", FASTLOGITS_NUM_THREADS="")
    assert int(default) == len(os.sched_getaffinity(0))


def test_forced_isa_falls_back_with_a_warning():
    out = _child("import warnings; warnings.simplefilter('error');\n"
                 "try:\n import fastlogits\nexcept RuntimeWarning as w: print('warned', w)",
                 FASTLOGITS_ISA="no-such-path")
    assert "warned" in out and "FASTLOGITS_ISA" in out
    out = _child("import fastlogits as fl; from fastlogits import _core; print(_core.isa_name())", FASTLOGITS_ISA="scalar")
    assert out.strip() == "scalar"


def _sequence_scores(x):
    return fl.sequence_scores(x[None], np.zeros((1, x.shape[0]), np.int64))


@pytest.mark.parametrize("func", [fl.logsumexp, fl.predict, _sequence_scores],
                         ids=["logsumexp", "predict", "sequence_scores"])
def test_allocation_failure_in_every_task_at_once(threads, func):
    """Every task of the pool fails to allocate its scratch row at the same moment (a class axis
    of 2**40 zero-stride elements): each records the failure (an atomic flag, which the
    ThreadSanitizer run of scripts/tsan.sh checks), and the call raises MemoryError."""
    fl.set_num_threads(2)
    x = np.broadcast_to(np.float32(1), (8, 2**40))
    for _ in range(500):  # the two tasks overlap only when the worker claims its range in time
        with pytest.raises(MemoryError):
            func(x)


def test_first_kernel_calls_from_many_threads_at_once():
    """The dispatch table is chosen by the first kernel call, which runs without the GIL: in a
    fresh process, 8 threads make their first call together (under scripts/tsan.sh the child
    inherits ThreadSanitizer, which fails it on a race over the table pointer). The rows are
    long enough for the calls to overlap."""
    code = (
        "import threading, numpy as np, fastlogits as fl\n"
        "x = np.linspace(-3, 3, 400000, dtype=np.float32).reshape(100, 4000)\n"
        "want = None\n"
        "out = [None] * 8\n"
        "go = threading.Barrier(8)\n"
        "def run(i):\n"
        "    go.wait()\n"
        "    out[i] = fl.softmax(x)\n"
        "ts = [threading.Thread(target=run, args=(i,)) for i in range(8)]\n"
        "[t.start() for t in ts]\n"
        "[t.join() for t in ts]\n"
        "print(all(np.array_equal(o, out[0]) for o in out))\n"
    )
    assert _child(code).strip() == "True"


def test_isa_select_while_kernels_run(threads):
    """Switching the SIMD path while other threads run kernels: each call runs wholly on one
    path, so every result is bitwise one of the paths' own results. The calls are long enough
    (1.6 MB) for the switches to land while kernels run (which scripts/tsan.sh checks)."""
    from conftest import ISAS
    from fastlogits import _core
    import threading

    before = _core.isa_name()
    x = (np.random.default_rng(5).standard_normal((100, 4000)) * 4).astype(np.float32)
    per_path = {}
    for name in ISAS:
        assert _core.isa_select(name) == 0
        per_path[name] = fl.softmax(x).tobytes()
    _core.isa_select(before)
    fl.set_num_threads(2)
    stop = threading.Event()
    bad = []

    def work():
        while not stop.is_set():
            r = fl.softmax(x).tobytes()
            if r not in per_path.values():
                bad.append(r)

    workers = [threading.Thread(target=work) for _ in range(3)]
    for t in workers:
        t.start()
    try:
        for i in range(100):
            assert _core.isa_select(ISAS[i % len(ISAS)]) == 0
    finally:
        stop.set()
        for t in workers:
            t.join()
        _core.isa_select(before)
    assert not bad, f"{len(bad)} results matched no path's own result"


def test_threadpoolctl_command_line_lists_the_pool():
    """`python -m threadpoolctl -i fastlogits` runs threadpoolctl as __main__, a second copy of
    the module: the pool is registered with that copy too."""
    pytest.importorskip("threadpoolctl")
    env = dict(os.environ, FASTLOGITS_NUM_THREADS="3")
    out = subprocess.run([sys.executable, "-m", "threadpoolctl", "-i", "fastlogits"], env=env,
                         capture_output=True, text=True, check=True).stdout
    import json

    pools = [p for p in json.loads(out) if p["user_api"] == "fastlogits"]
    assert len(pools) == 1, out
    assert pools[0]["num_threads"] == 3 and pools[0]["version"] == fl.__version__
    assert os.path.basename(pools[0]["filepath"]).startswith("_core")


def test_threadpoolctl_registration_is_not_repeated():
    """Importing fastlogits again (a reload) does not list the pool twice."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from fastlogits import _threadpool

    _threadpool.register()
    assert sum(i["user_api"] == "fastlogits" for i in threadpoolctl.threadpool_info()) == 1
