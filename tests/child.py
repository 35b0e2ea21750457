"""Test bodies that run in a child process of their own (spawned, so nothing is inherited).

JAX's compiler (XLA) keeps about 0.35 GB of the process that compiles, for the life of that
process. The default layer promises to stay under 1.5 GB (README, Development), so the tests
that compile with JAX run in a child started for their module and ended with it: its memory is
returned to the system when the module ends, and the test process never imports JAX.
"""
import contextlib
import importlib.util
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import pytest


@contextlib.contextmanager
def child_process(framework):
    """One spawned worker for the tests that need `framework`, skipped when it is not
    installed (found without importing it); ended, and its memory returned, on exit."""
    if importlib.util.find_spec(framework) is None:
        pytest.skip(f"{framework} is not installed")
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool
