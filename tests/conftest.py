"""Shared fixtures: every SIMD path this CPU supports, the thread count restored, the accuracy
table, and a deterministic hypothesis profile for the default run."""
import ctypes
import gc
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests/arrays.py, the shared generator

import fastlogits as fl  # noqa: E402
from fastlogits import _core  # noqa: E402
from fastlogits import reference  # noqa: E402

try:  # hypothesis is a test requirement; the modules that use it say so if it is missing
    from hypothesis import settings as _hypothesis_settings
except ImportError:  # pragma: no cover
    _hypothesis_settings = None

if _hypothesis_settings is not None:
    # The default run is deterministic: examples derived from each test alone, no example
    # database. The fuzz layer (tests/fuzz, marker `fuzz`) asks for fresh random examples itself.
    _hypothesis_settings.register_profile("deterministic", derandomize=True, database=None,
                                          print_blob=True)
    _hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))


def cpu_vendor():
    """the vendor string of /proc/cpuinfo (None where there is none)"""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


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


def _glibc_allocator():
    """glibc's malloc (None elsewhere). By default it raises its mmap threshold up to 32 MB
    as large blocks are freed, so the arrays of later tests come from heaps that are not given
    back, and it keeps an arena per thread (torch, JAX and the kernels' pools): the test
    process grew by about 0.3 GB of freed memory over the default layer. A fixed threshold,
    two arenas and a trim when each module ends keep it near the memory really in use."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:  # musl and others
        return None


_LIBC = _glibc_allocator()
if _LIBC is not None:
    _M_ARENA_MAX, _M_MMAP_THRESHOLD = -8, -3  # <malloc.h>
    _LIBC.mallopt(_M_MMAP_THRESHOLD, 256 * 1024)
    _LIBC.mallopt(_M_ARENA_MAX, 2)


@pytest.fixture(autouse=True, scope="module")
def module_caches_end_with_the_module(request):
    """Modules cache their arrays and exact values (functools caches) so that every SIMD path
    compares against one computation; those caches are emptied when the module ends, so the
    default layer's memory is its largest module's and not the sum of them all. The objects
    that survive the collection (the imported libraries: torch, dask, scikit-learn) are then
    frozen, so each later collection, this one's and the interpreter's own, walks only the
    objects made since instead of some 300,000 (0.15-0.3 s a module)."""
    yield
    for value in vars(request.module).values():
        if callable(getattr(value, "cache_clear", None)):
            value.cache_clear()
    gc.collect()
    gc.freeze()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


@pytest.fixture
def threads():
    """Restore the thread count after a test that changes it."""
    before = fl.get_num_threads()
    yield
    fl.set_num_threads(before)


class Accuracy:
    """The worst error (ULP) seen per (function, dtype) in this run, with its case."""

    def __init__(self):
        self.worst = {}

    def record(self, function, dtype, err, case):
        key = (function, str(dtype))
        if err > self.worst.get(key, (-1.0, ""))[0]:
            self.worst[key] = (float(err), case)


_ACCURACY = Accuracy()


@pytest.fixture(scope="session")
def accuracy():
    """Parity tests record their worst errors here; the table is printed after the run."""
    return _ACCURACY


def pytest_report_header(config):
    return f"fastlogits exact oracle: {reference.backend()} backend (FASTLOGITS_ORACLE=portable forces double-double)"


def peak_rss_gb():
    """This process's peak resident memory, in GB (ru_maxrss counts KiB on Linux, bytes on
    macOS); None where the resource module does not exist (Windows)."""
    try:
        import resource
    except ImportError:  # pragma: no cover
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e9 if sys.platform == "darwin" else peak * 1024 / 1e9


def _over_memory_budget():
    """FASTLOGITS_RSS_BUDGET_GB (set by .ci/run for the default layer): the peak it may reach."""
    budget, peak = os.environ.get("FASTLOGITS_RSS_BUDGET_GB"), peak_rss_gb()
    return budget is not None and peak is not None and peak > float(budget)


class _PeakWatch:
    """The test during which the peak resident memory last rose (by 10 MB or more), so that a
    run over its budget names where to look."""

    def __init__(self):
        self.peak, self.test = 0.0, None

    def after(self, nodeid):
        peak = peak_rss_gb()
        if peak is not None and peak > self.peak + 0.01:
            self.peak, self.test = peak, nodeid


_PEAK = _PeakWatch()


def pytest_runtest_teardown(item, nextitem):
    _PEAK.after(item.nodeid)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    if _over_memory_budget() and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    peak = peak_rss_gb()
    if peak is not None:
        verdict = "  OVER FASTLOGITS_RSS_BUDGET_GB" if _over_memory_budget() else ""
        where = f" (last raised during {_PEAK.test})" if _PEAK.test else ""
        terminalreporter.write_line(f"peak resident memory of the test process: {peak:.2f} GB{where}{verdict}")
    if not _ACCURACY.worst:
        return
    terminalreporter.section(f"worst errors against the exact oracle ({reference.backend()} backend), ULP")
    for (function, dtype), (err, case) in sorted(_ACCURACY.worst.items()):
        terminalreporter.write_line(f"{function:30s} {dtype:9s} {err:8.3f}  {case[:90]}")
