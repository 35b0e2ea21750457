"""``mypy --strict`` over the package sources (configuration: ``[tool.mypy]`` in pyproject.toml).

Opt-in with ``FASTLOGITS_MYPY=1`` (.ci/run sets it; mypy comes with the ``test`` extra);
skipped without mypy or outside a source checkout (the test needs ``src/fastlogits``).
"""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src", "fastlogits")

pytestmark = pytest.mark.skipif(os.environ.get("FASTLOGITS_MYPY") != "1",
                                reason="set FASTLOGITS_MYPY=1 to type-check the package with mypy --strict")


def test_mypy_strict():
    pytest.importorskip("mypy", reason="mypy is not installed (pip install -e '.[test]')")
    if not os.path.isdir(SRC):
        pytest.skip("needs the source tree (src/fastlogits next to tests/)")
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", SRC], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
