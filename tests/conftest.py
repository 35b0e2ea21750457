"""Shared fixtures: every SIMD path this CPU supports, and the thread count restored."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests/arrays.py, the shared generator

import fastlogits as fl  # noqa: E402
from fastlogits import _core  # noqa: E402


def supported_isas():
    """The dispatch paths this CPU and build can run, best first."""
    best = _core.isa_name()
    names = []
    for name in ("avx512", "avx2", "neon", "scalar"):
        if _core.isa_select(name) == 0:
            names.append(name)
    _core.isa_select(best)
    return names


ISAS = supported_isas()


@pytest.fixture(params=ISAS)
def isa(request):
    """Run the test under one SIMD path, then restore the path chosen at import."""
    before = _core.isa_name()
    assert _core.isa_select(request.param) == 0
    yield request.param
    _core.isa_select(before)


@pytest.fixture
def threads():
    """Restore the thread count after a test that changes it."""
    before = fl.get_num_threads()
    yield
    fl.set_num_threads(before)
