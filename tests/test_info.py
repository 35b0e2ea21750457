"""``fl.show_config(mode="dicts")`` and ``fastlogits info --json``: the report for bug reports,
gathered without importing ml_dtypes or any optional dependency."""
import importlib.util
import json
import os
import platform
import subprocess
import sys
from importlib import metadata

import numpy as np
import pytest

import fastlogits as fl
from fastlogits import _core


def _version(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def test_show_config_dicts(threads):
    fl.set_num_threads(2)
    info = fl.show_config(mode="dicts")
    json.dumps(info)  # plain data throughout
    me = info["fastlogits"]
    assert me["version"] == fl.__version__
    assert me["simd"] == {"chosen": _core.isa_name(), "best": _core.isa_best()}
    assert me["threads"]["num_threads"] == 2 and me["threads"]["default"] >= 1
    build = me["build"]
    assert build["compiler"].split()[0] in ("GNU", "Clang", "AppleClang", "MSVC", "IntelLLVM")
    assert build["simd_paths"][-1] == "scalar" and _core.isa_best() in build["simd_paths"]
    assert info["python"]["version"] == platform.python_version()
    assert info["numpy"]["version"] == np.__version__
    assert info["ml_dtypes"]["version"] == _version("ml_dtypes")
    assert info["os"]["system"] == platform.system() and info["os"]["machine"] == platform.machine()
    assert info["cpu"]["count"] == os.cpu_count()
    deps = info["optional_dependencies"]
    for dist in ("scipy", "scikit-learn", "torch", "jax", "dask", "pyarrow", "tqdm"):
        assert deps[dist] == _version(dist), dist
    assert (deps["torch"] is None) == (importlib.util.find_spec("torch") is None)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/cpuinfo")
def test_cpu_model_and_flags_on_linux():
    cpu = fl.show_config(mode="dicts")["cpu"]
    assert cpu["model"]
    with open("/proc/cpuinfo") as f:
        text = f.read()
    assert all(flag in text for flag in cpu["flags"][:20])
    if platform.machine() in ("x86_64", "AMD64") and _core.isa_best() in ("avx2", "avx512"):
        assert {"avx2", "fma", "f16c"} <= set(cpu["flags"])
    if _core.isa_best() == "avx512":
        assert {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= set(cpu["flags"])


def test_show_config_default_printing_is_unchanged(capsys):
    assert fl.show_config() is None
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"fastlogits {fl.__version__}"
    assert out[1].startswith("  SIMD path:") and out[2].startswith("  threads:")


def test_show_config_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="mode: expected 'stdout' or 'dicts', got 'json'"):
        fl.show_config(mode="json")


def test_info_json_command_imports_nothing_optional():
    """`fastlogits info --json` gives the same report, and neither it nor show_config imports
    ml_dtypes or an optional dependency to learn its version."""
    code = ("import json, sys\n"
            "from fastlogits.cli import main\n"
            "main(['info', '--json'])\n"
            "heavy = ('ml_dtypes', 'torch', 'jax', 'scipy', 'sklearn', 'dask', 'pyarrow', 'matplotlib')\n"
            "print(json.dumps(sorted(m for m in heavy if m in sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    report, imported = out.rsplit("\n", 2)[0], out.rsplit("\n", 2)[1]
    assert json.loads(imported) == []
    data = json.loads(report)
    want = fl.show_config(mode="dicts")
    assert data["fastlogits"]["build"] == want["fastlogits"]["build"]
    assert data["optional_dependencies"] == want["optional_dependencies"]
    assert data["cpu"]["model"] == want["cpu"]["model"]
