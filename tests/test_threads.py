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
