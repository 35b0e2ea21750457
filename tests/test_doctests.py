"""The Examples sections of the docstrings: every module of the installed package is run.

Modules are discovered with pkgutil (subpackages included), so a module added to fastlogits
is covered without editing this file. Skipped: the compiled binding (``_core*``, no Python
docstrings) and ``__main__`` (the ``python -m fastlogits`` entry point, not an importable
API). Examples are compared with NORMALIZE_WHITESPACE and ELLIPSIS; a failing example fails
the test with doctest's report (expected and got).
"""
import doctest
import glob
import importlib
import io
import os
import pkgutil
import re
import sys

import pytest
from child import child_process

import fastlogits

FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


def _module_names():
    names = ["fastlogits"]
    for info in pkgutil.walk_packages(fastlogits.__path__, prefix="fastlogits."):
        short = info.name.rsplit(".", 1)[1]
        if not short.startswith("_core") and short != "__main__":
            names.append(info.name)
    return sorted(names)


MODULES = _module_names()

_IMPORT = re.compile(r"^\s*import\s+([\w., ]+?)\s*$|^\s*from\s+([\w.]+)\s+import\b", re.M)


def _optional_imports(test):
    """The modules an example imports, except the standard library and NumPy: a module's
    examples may use an optional dependency that the module imports lazily (the examples of
    fastlogits._dask_npy import fastlogits.dask, which needs dask)."""
    names = set()
    for example in test.examples:
        for plain, source in _IMPORT.findall(example.source):
            names.update(part.split()[0] for part in plain.split(",") if part.strip())
            if source:
                names.add(source)
    return {n for n in names if n.split(".")[0] not in sys.stdlib_module_names and n.split(".")[0] != "numpy"}


def test_public_modules_are_discovered():
    for name in ("fastlogits", "fastlogits._post", "fastlogits._bce", "fastlogits._config",
                 "fastlogits.reference", "fastlogits.recipes.torch", "fastlogits.recipes.jax"):
        assert name in MODULES


# Modules whose examples compile with JAX run them in a child process (tests/child.py says why).
IN_CHILD = {"fastlogits.recipes.jax": "jax"}


def run_module_examples(name):
    """Run the docstring examples of module `name`: (None, report) when they ran, where the
    report is empty if none failed; (reason, "") when an optional dependency is missing."""
    try:
        module = importlib.import_module(name)
    except ImportError as exc:  # a module built on an optional dependency (e.g. dask)
        return f"{name} needs an optional dependency that is not installed: {exc}", ""
    # DocTestFinder keeps only objects defined in the module itself, so re-exports (the
    # package namespace) are not run twice.
    tests = [t for t in doctest.DocTestFinder(exclude_empty=True).find(module, name) if t.examples]
    for library in sorted({lib for t in tests for lib in _optional_imports(t)}):
        try:
            importlib.import_module(library)
        except ImportError as exc:
            return f"{name}'s examples import {library}, which is not usable here: {exc}", ""
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report = io.StringIO()
    for test in tests:
        runner.run(test, out=report.write)
    result = runner.summarize(verbose=False)
    return None, (f"{result.failed} failing docstring example(s) in {name}:\n{report.getvalue()}"
                  if result.failed else "")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, threads):
    if name in IN_CHILD:
        with child_process(IN_CHILD[name]) as pool:
            skip, failure = pool.submit(run_module_examples, name).result()
    else:
        skip, failure = run_module_examples(name)
    if skip:
        pytest.skip(skip)
    assert not failure, failure


DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
GUIDES = sorted(glob.glob(os.path.join(DOCS, "*.md")))


@pytest.mark.skipif(not GUIDES, reason="needs the source tree (docs/ is not installed)")
@pytest.mark.parametrize("path", GUIDES, ids=os.path.basename)
def test_user_guide_examples(path, threads):
    """The ``>>>`` examples of the user guide (docs/*.md) run as written."""
    result = doctest.testfile(path, module_relative=False, optionflags=FLAGS, verbose=False)
    assert result.failed == 0, f"{result.failed} failing example(s) in {path} (see the output above)"
