"""`import fastlogits` stays cheap (every CLI call pays it): ml_dtypes, the oracle, Dask and the
recipes' frameworks are imported only when used. Import time is measured against NumPy's in
the same run, as a ratio, in fresh interpreters (best of several)."""
import subprocess
import sys

import pytest

import fastlogits as fl

# `import fastlogits` against `import numpy`: our modules, the extension and threadpoolctl
# (when installed) may add a fraction of NumPy's time; ml_dtypes alone cost about 9 NumPys.
# Both are timed alternately in fresh interpreters and the best of each is kept, so a loaded
# machine slows both alike.
RATIO, MARGIN_S, RUNS = 1.6, 0.02, 5


def _fresh(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def _import_seconds(module):
    """Wall time of `import module` in a fresh interpreter (Python's own start excluded)."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    return float(_fresh(code))


def test_import_is_about_as_fast_as_numpy():
    numpy_s = ours_s = float("inf")
    for _ in range(RUNS):
        numpy_s = min(numpy_s, _import_seconds("numpy"))
        ours_s = min(ours_s, _import_seconds("fastlogits"))
    assert ours_s <= RATIO * numpy_s + MARGIN_S, (
        f"import fastlogits took {ours_s * 1e3:.0f} ms, import numpy {numpy_s * 1e3:.0f} ms "
        f"(allowed: {RATIO} x numpy + {MARGIN_S * 1e3:.0f} ms)")


def test_import_does_not_load_heavy_modules():
    heavy = ("ml_dtypes", "fastlogits.reference", "fastlogits.dask", "dask", "torch", "jax", "scipy")
    code = f"import sys, fastlogits; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    assert _fresh(code).strip() == "[]"


def test_bfloat16_is_still_recognised_and_produced():
    """ml_dtypes is imported on first need: a bfloat16 output asked for by name, and bfloat16
    inputs (whose creator imported ml_dtypes) are read as before."""
    code = ("import sys, numpy as np, fastlogits as fl\n"
            "y = fl.softmax(np.zeros((2, 3)), dtype='bfloat16')\n"
            "print(y.dtype, 'ml_dtypes' in sys.modules)\n"
            "import ml_dtypes\n"
            "x = np.ones((2, 3), ml_dtypes.bfloat16)\n"
            "print(fl.logsumexp(x).dtype, fl.predict(x).tolist())\n")
    assert _fresh(code).split() == ["bfloat16", "True", "bfloat16", "[0,", "0]"]


def test_submodules_are_reachable_lazily():
    assert fl.reference.softmax([0.0, 0.0]).tolist() == [0.5, 0.5]
    assert fl.recipes.__name__ == "fastlogits.recipes"
    with pytest.raises(AttributeError, match="has no attribute 'no_such_thing'"):
        fl.no_such_thing  # noqa: B018
    code = "import fastlogits as fl; print(fl.reference.__name__)"
    assert _fresh(code).strip() == "fastlogits.reference"


def test_dask_submodule_lazily():
    pytest.importorskip("dask")
    import fastlogits.dask

    assert fl.dask is fastlogits.dask
