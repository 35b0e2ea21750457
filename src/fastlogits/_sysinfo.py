"""What a bug report needs to know about this installation (``show_config(mode="dicts")`` and
``fastlogits info --json``): fastlogits' build, SIMD path and threads, Python, NumPy, the OS,
the CPU, and which optional dependencies are installed.

Nothing is imported to find a version: installed packages are read from their metadata
(``importlib.metadata``), so ml_dtypes, PyTorch or JAX cost nothing here.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from typing import Any, Dict, List, Optional

import numpy as np

from . import _core
from ._version import __version__

# the optional dependencies of pyproject.toml's extras and the frameworks of fastlogits.recipes
# (distribution names)
OPTIONAL = ("scipy", "scikit-learn", "threadpoolctl", "tqdm", "pyarrow", "matplotlib", "dask",
            "distributed", "h5py", "zarr", "safetensors", "torch", "jax", "jaxlib")


def installed_version(dist: str) -> Optional[str]:
    """The installed version of a distribution, or None, without importing it."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _linux_cpu() -> Dict[str, Any]:
    """Model and flags of the first CPU listed in /proc/cpuinfo (x86: "model name"/"flags";
    AArch64: "Features", and "CPU implementer"/"CPU part" where there is no model name)."""
    fields: Dict[str, str] = {}
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                if fields:
                    break  # the first processor's block is enough
                continue
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    model = fields.get("model name") or fields.get("Hardware") or " ".join(
        f"{k} {fields[k]}" for k in ("CPU implementer", "CPU part") if k in fields)
    flags = (fields.get("flags") or fields.get("Features") or "").split()
    return {"model": model or None, "flags": flags}


def _sysctl(name: str) -> Optional[str]:
    try:
        out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _macos_cpu() -> Dict[str, Any]:
    """Model from machdep.cpu.brand_string; flags from machdep.cpu.features (+ leaf 7) on x86,
    from the hw.optional.* switches that are on elsewhere (Apple silicon)."""
    flags: List[str] = []
    for name in ("machdep.cpu.features", "machdep.cpu.leaf7_features"):
        flags += (_sysctl(name) or "").lower().split()
    if not flags:
        for line in (_sysctl("hw.optional") or "").splitlines():
            key, _, value = line.partition(":")
            if value.strip() == "1" and key.startswith("hw.optional."):
                flags.append(key[len("hw.optional."):])
    return {"model": _sysctl("machdep.cpu.brand_string"), "flags": flags}


def cpu_info() -> Dict[str, Any]:
    """The CPU's model and feature flags, as the OS reports them; flags may be empty."""
    info: Dict[str, Any] = {"model": None, "flags": []}
    try:
        if sys.platform.startswith("linux"):
            info = _linux_cpu()
        elif sys.platform == "darwin":
            info = _macos_cpu()
    except OSError:
        pass
    if not info["model"]:
        info["model"] = platform.processor() or None
    info["count"] = os.cpu_count()
    return info


def collect() -> Dict[str, Any]:
    """Everything show_config(mode="dicts") reports."""
    return {
        "fastlogits": {
            "version": __version__,
            "simd": {"chosen": _core.isa_name(), "best": _core.isa_best()},
            "threads": {"num_threads": int(_core.get_num_threads()),
                        "default": int(_core.default_num_threads())},
            "stream_policy": {"min_bytes_row_bytes_store_bytes_in_place": list(_core.stream_policy()),
                              "default": list(_core.stream_default_policy())},
            "subnormal_products": {"plain": _core.subnormal_policy(), "default": _core.subnormal_default_policy()},
            "build": _core.build_info(),
            "environment": {k: os.environ.get(k) for k in ("FASTLOGITS_ISA", "FASTLOGITS_NUM_THREADS",
                                                          "FASTLOGITS_STREAM_BYTES", "FASTLOGITS_SUBNORMALS")},
        },
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "numpy": {"version": np.__version__},
        "ml_dtypes": {"version": installed_version("ml_dtypes")},
        "os": {"system": platform.system(), "release": platform.release(), "version": platform.version(),
               "machine": platform.machine()},
        "cpu": cpu_info(),
        "optional_dependencies": {dist: installed_version(dist) for dist in OPTIONAL},
    }
